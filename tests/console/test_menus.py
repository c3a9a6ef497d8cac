"""Boot menus over scripted devices: GRUB, ISOLINUX and pxelinux, recorded and synthetic."""

from __future__ import annotations

import re

import pytest
from console_fakes import (
    DEBIAN_MENU,
    Device,
    GrubDevice,
    GrubEfiDevice,
    IsolinuxDevice,
    PxelinuxDevice,
    recorded,
)

from pytest_starlingx.console import Console, ConsoleTimeout, MenuError
from pytest_starlingx.stages import secondaries
from pytest_starlingx.stages.secondaries import _skip_pxe_countdowns
from pytest_starlingx.stages.shells import Shells
from pytest_starlingx.waits import Deadline, poll

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def menu_error(console: Console, entry: str, settle: float) -> tuple[str, Deadline]:
    """The MenuError message of selecting ``entry`` in the install stage, and its deadline."""
    deadline = Deadline(30)
    with console.stage("install"), pytest.raises(MenuError) as info:
        console.select_menu(entry, deadline=deadline, settle=settle)
    return str(info.value), deadline


def test_select_top_level_entry(make_console):
    grub = GrubDevice({"Disk": "BOOT disk", "Controller": "BOOT controller", "AIO": "BOOT aio"})
    console = make_console(grub.transport)
    console.select_menu("AIO", deadline=Deadline(10))
    console.expect("BOOT aio", Deadline(5))
    assert grub.keys == ["down", "down", "enter"]


@pytest.mark.parametrize(
    ("path", "label", "keys"),
    [
        (("Debian All-in-one Install", "Serial Console"), "3", ["esc", "down", "enter", "enter"]),
        (("Debian Controller Install", "Serial Console"), "1", ["enter"]),
    ],
    ids=["aio", "controller"],
)
def test_the_real_isolinux_menu_is_driven_from_its_default_submenu(make_console, path, label, keys):
    """StarlingX's ISOLINUX menu opens inside 'Debian Controller Install' (recorded bytes)."""
    isolinux = IsolinuxDevice()
    console = make_console(isolinux.transport)
    console.select_menu(*path, deadline=Deadline(30))
    console.expect("Loading /initrd.img", Deadline(5))
    assert (isolinux.booted, isolinux.keys) == (label, keys)


def test_the_real_uefi_grub_menu_is_driven_through_its_submenu(make_console):
    """Under UEFI the ISO boots GRUB, whose menu OVMF copies to the serial port in CP437 on a
    100-column screen (recorded bytes): the entry is found, highlighted and entered, and so is
    its Serial Console."""
    grub = GrubEfiDevice()
    console = make_console(grub.transport)
    console.select_menu("UEFI Debian All-in-one Install", "Serial Console", deadline=Deadline(30))
    poll(lambda: grub.booted, Deadline(5), "the Serial Console entry to boot", poll_every=0.05)
    assert grub.keys == ["down", "enter", "enter"]


def test_an_entry_on_no_level_of_the_isolinux_menu_fails_without_a_second_esc(make_console):
    """ESC at vesamenu's top level opens the boot: prompt, which boots label 1 by itself."""
    isolinux = IsolinuxDevice()
    message, _ = menu_error(make_console(isolinux.transport), "Debian Storage Install", 0.3)
    assert "no menu entry 'Debian Storage Install' in the menu" in message
    assert "[Select kernel options and boot kernel]" in message
    assert isolinux.keys.count("esc") == 1 and "enter" not in isolinux.keys


def test_a_doubled_menu_says_why_it_is_unreadable(make_console):
    """SeaBIOS's serial console (<bios useserial='yes'/>, no video) doubles ISOLINUX's output."""
    device = Device()
    console = make_console(device.transport)
    device.write(recorded("isolinux_doubled.json")[0][1])
    with pytest.raises(MenuError, match=r"every character twice.*useserial") as info:
        console.select_menu("Debian All-in-one Install", deadline=Deadline(2), settle=0.5)
    assert "SSeerriiaall" in str(info.value)  # the console tail shows it


class LossyGrub(GrubDevice):
    """GRUB drops serial output on a slow host: a CI run saw the highlighted row read '*tall'."""

    def entry(self, index: int, highlighted: bool) -> bytes:
        drawn = super().entry(index, highlighted)
        if highlighted and index == 1 and len(self.stack) == 1:
            drawn = drawn.replace(b"Debian All-in-one Ins", b"")
        return drawn


@pytest.mark.parametrize("device", [GrubDevice, LossyGrub], ids=["clean", "highlight-garbled"])
def test_select_nested_entries(make_console, device):
    grub = device(DEBIAN_MENU)
    console = make_console(grub.transport)
    console.select_menu("Debian All-in-one Install", "Serial Console", deadline=Deadline(10))
    console.expect("SELECTED: ", Deadline(5))
    assert grub.booted == "SELECTED: aio serial"
    assert grub.keys == ["down", "enter", "enter"]


def test_a_highlight_that_never_arrives_fails_with_the_menu(make_console):
    class MuteGrub(GrubDevice):
        def move(self, step: int) -> None:
            self.keys.append("down" if step > 0 else "up")
            self.stack[-1] = (self.current[0], self.current[1] + step)

    grub = MuteGrub(DEBIAN_MENU)
    message, _ = menu_error(make_console(grub.transport), "Debian All-in-one Install", 0.2)
    assert "the highlight to move towards menu entry 'Debian All-in-one Install'" in message
    assert "after 5 redraws" in message
    assert "*'Debian Controller Install'" in message  # the menu as last seen
    assert "enter" not in grub.keys


def test_select_upwards_from_a_lower_default(make_console):
    grub = GrubDevice(DEBIAN_MENU, draw=False)
    grub.stack[-1] = (DEBIAN_MENU, 2)
    grub.draw()
    console = make_console(grub.transport)
    console.select_menu("Debian Controller Install", "Graphical Console", deadline=Deadline(10))
    console.expect("SELECTED: ", Deadline(5))
    assert grub.booted == "SELECTED: controller graphical"
    assert grub.keys == ["up", "up", "enter", "down", "enter"]


def test_select_by_regex(make_console):
    grub = GrubDevice(DEBIAN_MENU)
    console = make_console(grub.transport)
    console.select_menu(re.compile(r".*lowlatency.*"), "Serial Console", deadline=Deadline(10))
    console.expect("SELECTED: ", Deadline(5))
    assert grub.booted == "SELECTED: lowlatency serial"


def test_missing_entry_fails_with_the_menu_listed(make_console):
    grub = GrubDevice(DEBIAN_MENU)
    message, deadline = menu_error(make_console(grub.transport), "Debian Storage Install", 0.3)
    assert "no menu entry 'Debian Storage Install' in the menu" in message
    assert "'Debian All-in-one (lowlatency) Install'" in message
    assert deadline.elapsed < 10


class FlakyGrub(GrubDevice):
    """GRUB on a slow host. ``cut``: the first draw cuts 'Debian All-in-one Install' short to
    'Debian All-in-one' (GRUB on QEMU did, reproducibly). ``lost``: which row draw of the first
    move never arrives: the new highlight (a CI run saw no highlight at all) or the old row's
    un-highlighting (two rows read highlighted)."""

    def __init__(self, *, cut: bool = False, lost: str | None = None) -> None:
        self.cut, self.lost = cut, lost
        self.drawn = False
        self.moves = 0
        super().__init__(DEBIAN_MENU)

    def draw(self) -> None:
        super().draw()
        self.drawn = True

    def move(self, step: int) -> None:
        self.moves += 1
        super().move(step)

    def entry(self, index: int, highlighted: bool) -> bytes:
        drawn = super().entry(index, highlighted)
        if self.cut and not self.drawn and index == 1:
            drawn = drawn.replace(b"-one Install" + b" " * 50 + b"\x1b[m", b"-one")
        first_move = self.moves == 1 and len(self.stack) == 1
        if first_move and self.lost == ("new highlight" if highlighted else "old row"):
            return b""
        return drawn


@pytest.mark.parametrize(
    ("cut", "lost", "keys"),
    [
        (True, None, ["down", "enter", "enter"]),
        (False, "new highlight", ["down", "up", "down", "enter", "enter"]),
        (False, "old row", ["down", "up", "down", "enter", "enter"]),
        (True, "new highlight", ["down", "up", "down", "enter", "enter"]),
    ],
    ids=["cut-short-found-by-walking", "highlight-lost", "unhighlight-lost", "lost-while-walking"],
)
def test_a_menu_garbled_by_grub_is_repaired(make_console, cut, lost, keys):
    """A cut-short entry is found by walking the menu; a lost highlight is redrawn."""
    grub = FlakyGrub(cut=cut, lost=lost)
    console = make_console(grub.transport)
    console.select_menu(
        "Debian All-in-one Install", "Serial Console", deadline=Deadline(30), settle=2
    )
    console.expect("SELECTED: ", Deadline(5))
    assert grub.booted == "SELECTED: aio serial"
    assert grub.keys == keys


def test_menu_timeout_names_the_entry(make_console):
    console = make_console(Device().transport)
    with console.stage("install"), pytest.raises(ConsoleTimeout) as info:
        console.select_menu("Debian All-in-one Install", deadline=Deadline(0.5))
    assert "menu entry 'Debian All-in-one Install'" in str(info.value)
    assert "menu on screen: none" in str(info.value)


# ------------------------------------------------------------------------- network boot menus


class NodeInstall:
    """What the install stage of a network-booting node works with: its console and deadline."""

    def __init__(self, console: Console) -> None:
        self.consoles = {"worker-0": console}
        self.shells = Shells(self.consoles, {}, set(), self.deadline)

    def deadline(self, phase: str) -> Deadline:
        return Deadline(60, phase)


def test_pxelinux_countdowns_are_skipped_with_enter(make_console):
    """metal's retry menu, then the node's own install menu: Enter at each (recorded bytes)."""
    node = PxelinuxDevice()
    console = make_console(node.transport, "worker-0")
    _skip_pxe_countdowns(NodeInstall(console), "worker-0")
    console.expect("Loading rel-24.09/initrd", Deadline(5))
    assert (node.state, node.keys) == ("booted", ["enter", "enter"])


def test_a_node_without_its_own_pxelinux_file_is_left_to_its_countdown(make_console):
    """Enter at the retry menu brings the retry menu back: the node has no install menu yet
    and is left to retry by itself."""
    node = PxelinuxDevice(configured=False)
    console = make_console(node.transport, "worker-0")
    _skip_pxe_countdowns(NodeInstall(console), "worker-0")
    with pytest.raises(ConsoleTimeout):  # nothing more is sent, so the menu stays
        console.expect("Loading", Deadline(1))
    assert (node.state, node.keys) == ("waiting", ["enter"])


def test_a_node_past_its_menus_gets_no_key(make_console, monkeypatch):
    monkeypatch.setattr(secondaries, "PXE_MENU_WAIT", 0.5)
    device = Device()
    console = make_console(device.transport, "worker-0")
    _skip_pxe_countdowns(NodeInstall(console), "worker-0")
    assert device.received == b""
