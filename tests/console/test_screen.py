"""Reading boot menus from the screen model: real GRUB and ISOLINUX output, other styles."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from console_fakes import DEBIAN_MENU, GrubDevice, recorded

from pytest_starlingx.console.screen import Screen

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

# Recorded from GRUB 2.06 (Debian 12) on QEMU's serial port with data/grub.cfg: power-on, then
# down, down, up, Enter (into "Debian All-in-one Install"), down, Enter.
CAPTURE = [
    (label, base64.b64decode(data))
    for label, data in json.loads((Path(__file__).parent / "data" / "grub_serial.json").read_text())
]


def highlighted(screen: Screen) -> str | None:
    entry = screen.menu().highlighted
    return entry.text if entry else None


def test_recorded_grub_session_is_read_step_by_step():
    screen = Screen()
    seen = []
    for _, data in CAPTURE:
        screen.feed(data)
        seen.append(highlighted(screen))
    assert seen == [
        "Debian Controller Install",
        "Debian All-in-one Install",
        "Debian All-in-one (lowlatency) Install",
        "Debian All-in-one Install",
        "Serial Console",
        "Graphical Console",
        None,  # booted: the menu is gone
    ]


def test_recorded_isolinux_session_is_read_with_titles_and_without_submenu_marks():
    """StarlingX 10.0's vesamenu (data/record_isolinux.py): DEC line drawing, a title above a
    separator, '>' on rows that open a submenu."""
    screen = Screen()
    seen = []
    for _, data in recorded("isolinux_serial.json"):
        screen.feed(data)
        menu = screen.menu()
        seen.append((menu.title, [e.text for e in menu.entries], highlighted(screen)))
    top = ["Debian Controller Install", "Debian All-in-one Install"]
    consoles = ["Serial Console", "Graphical Console"]
    assert seen == [
        ("Debian Controller Install", consoles, "Serial Console"),
        ("Select kernel options and boot kernel", top, "Debian Controller Install"),
        ("Select kernel options and boot kernel", top, "Debian All-in-one Install"),
        ("Select kernel options and boot kernel", top, "Debian Controller Install"),
        ("Select kernel options and boot kernel", top, "Debian All-in-one Install"),
        ("Debian All-in-one Install", consoles, "Serial Console"),
        ("Debian All-in-one Install", consoles, "Graphical Console"),
        ("Debian All-in-one Install", consoles, "Serial Console"),
        ("Debian All-in-one Install", consoles, "Serial Console"),  # Loading below the box
    ]


def test_recorded_grub_menu_lists_all_entries_in_screen_order():
    screen = Screen()
    for _, data in CAPTURE[:2]:
        screen.feed(data)
    menu = screen.menu()
    assert [e.text for e in menu.entries] == list(DEBIAN_MENU)
    assert [e.row for e in menu.entries] == [4, 5, 6]
    assert menu.find("Debian   All-in-one Install") == menu.entries[1]
    assert menu.find(re.compile(r".*lowlatency.*")) == menu.entries[2]
    assert menu.find("Debian All-in-one") is None  # whole text only


def test_menu_read_byte_by_byte_never_shows_two_highlights():
    screen = Screen()
    for _, data in CAPTURE[:2]:
        for i in range(len(data)):
            screen.feed(data[i : i + 1])
            menu = screen.menu()
            assert sum(e.highlighted for e in menu.entries) <= 1
    assert highlighted(screen) == "Debian All-in-one Install"


def test_emulated_grub_draws_what_real_grub_drew():
    """The GrubDevice used by the console tests writes the recorded bytes for arrow keys."""
    device = GrubDevice(DEBIAN_MENU, draw=False)
    device.stack[-1] = (DEBIAN_MENU, 0)
    redraws = []
    device.write = redraws.append  # type: ignore[method-assign]
    device.move(1)
    device.move(1)
    device.move(-1)
    recorded = [data for label, data in CAPTURE[1:4]]
    # The first key press also blanks GRUB's countdown lines; the redraw itself is identical.
    assert recorded[0].endswith(redraws[0])
    assert recorded[1:] == redraws[1:]


def test_emulated_grub_full_draw_reads_like_the_recording():
    device = GrubDevice(DEBIAN_MENU, draw=False)
    frames = []
    device.write = frames.append  # type: ignore[method-assign]
    device.draw()
    ours, real = Screen(), Screen()
    ours.feed(b"".join(frames))
    real.feed(CAPTURE[0][1] + CAPTURE[1][1][: CAPTURE[1][1].index(b"\x1b[22;1H")])
    ours_lines, real_lines = ours.lines()[:20], real.lines()[:20]
    # Real GRUB cut the second entry short in its first draw (reproducibly); a redraw repairs it.
    assert real_lines[5].split() == ["|", "Debian", "All-in-one", "|"]
    assert ours_lines[5].split() == ["|", "Debian", "All-in-one", "Install", "|"]
    assert ours_lines[:5] + ours_lines[6:] == real_lines[:5] + real_lines[6:]


def test_marker_without_reverse_video_counts_as_highlight():
    screen = Screen()
    screen.feed(b"\x1b[2J\x1b[3;5H  Disk boot\x1b[4;5H> Controller Install\x1b[5;5H  AIO Install")
    menu = screen.menu()
    assert [e.text for e in menu.entries] == ["Disk boot", "Controller Install", "AIO Install"]
    assert menu.highlighted is not None and menu.highlighted.text == "Controller Install"


def test_syslinux_style_colour_highlight_in_a_unicode_box():
    """menu.c32 draws a box and marks the current entry by colour only."""
    screen = Screen()
    rows = ["Debian Controller Install", "Debian All-in-one Install", "Boot from hard disk"]
    out = "\x1b[2J\x1b[0;37;40m\x1b[2;10H┌" + "─" * 40 + "┐"
    for i, text in enumerate(rows):
        colour = "\x1b[0;30;47m" if i == 1 else "\x1b[0;37;44m"
        out += f"\x1b[{3 + i};10H\x1b[0;37;40m│{colour} {text:<39}\x1b[0;37;40m│"
    out += f"\x1b[6;10H└{'─' * 40}┘"
    screen.feed(out.encode())
    menu = screen.menu()
    assert [e.text for e in menu.entries] == rows
    assert menu.highlighted is not None and menu.highlighted.text == rows[1]


@pytest.mark.parametrize("noise", [b"\xff\xfe\x00garbage\x1b[99;99H", b"\x1b[?1049h\x1b]0;x\x07"])
def test_garbage_does_not_break_the_screen(noise):
    screen = Screen()
    screen.feed(noise + CAPTURE[0][1])
    assert highlighted(screen) == "Debian Controller Install"
