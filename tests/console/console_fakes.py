"""Scripted counterparts for the console layer: transports and devices at the byte boundary."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

from ptyprocess import PtyProcess


class SocketTransport:
    """One end of a socketpair as a Transport; the other end belongs to a scripted device."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.written = bytearray()

    def connect(self) -> None:
        """Nothing to open: the pair exists already."""

    def read(self, size: int, timeout: float) -> bytes:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return b""
        try:
            data = self.sock.recv(size)
        except OSError as exc:
            raise EOFError(str(exc)) from exc
        if not data:
            raise EOFError("device hung up")
        return data

    def write(self, data: bytes) -> None:
        self.written += data
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class Device:
    """A scripted device thread: ``on_input`` sees every byte the console sends."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.transport = SocketTransport(theirs)
        self.received = bytearray()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Output from the device to the console."""
        self.sock.sendall(data)

    def hang_up(self) -> None:
        """Close the device end: the console sees EOF."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def on_input(self, data: bytes) -> None:
        """React to what the console sent; override."""

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.received += data
            self.on_input(data)


class GrubDevice(Device):
    """GRUB 2.06's text menu on a serial line, byte for byte as recorded in data/grub.cfg runs.

    ``menu`` maps entry titles to submenus (dict) or to the text printed when booted (str).
    """

    HEADER = b"\x1b[2;24HGNU GRUB  version 2.06-13+deb12u2\r\n\r\r\n\r"

    def __init__(self, menu: dict[str, object], *, draw: bool = True) -> None:
        super().__init__()
        self.stack: list[tuple[dict[str, object], int]] = [(menu, 0)]
        self.booted: str | None = None
        self.keys: list[str] = []
        self._escape = b""
        if draw:
            self.write(b"\x1b[0;30;47mWelcome to GRUB!\r\r\n\r\n")
            self.draw()

    @property
    def current(self) -> tuple[dict[str, object], int]:
        return self.stack[-1]

    def entry(self, index: int, highlighted: bool) -> bytes:
        """One entry row as GRUB's print_entry draws it."""
        titles = list(self.current[0])
        row = 5 + index
        text = titles[index] if index < len(titles) else ""
        mark = b"*" if highlighted else b" "
        attr = b"\x1b[7m" if highlighted else b"\x1b[m"
        return (
            attr
            + f"\x1b[{row};3H".encode()
            + mark
            + text.encode().ljust(75)
            + f"\x1b[m\x1b[{row};78H\x1b[m".encode()
        )

    def draw(self) -> None:
        """Clear the screen and draw box, help text and entries."""
        sub = len(self.stack) > 1
        bottom = 16 if sub else 17
        out = bytearray(b"\x1b[H\x1b[J\x1b[1;1H\x1b[?25l\x1b[m\x1b[H\x1b[J\x1b[1;1H" + self.HEADER)
        out += b"\x1b[m\x1b[4;2H+" + b"-" * 76 + b"+"
        for row in range(5, bottom):
            out += f"\x1b[{row};2H|\x1b[{row};79H|".encode()
        out += f"\x1b[{bottom};2H+".encode() + b"-" * 76 + b"+\x1b[m"
        out += f"\x1b[{bottom + 1};2H\x1b[{bottom + 2};2H\x1b[m".encode()
        out += b"     Use the ^ and v keys to select which entry is highlighted.          \r\n\r"
        out += b"      Press enter to boot the selected OS, `e' to edit the commands       \r\n\r"
        out += b"      before booting or `c' for a command-line."
        out += b" ESC to return             \r\n\r      previous menu.  " if sub else b"  "
        _, selected = self.current
        for index in range(bottom - 5):
            out += self.entry(index, index == selected)
        out += f"\x1b[5;80H \x1b[{5 + selected};78H".encode()
        self.write(bytes(out))

    def on_input(self, data: bytes) -> None:
        data = self._escape + data
        self._escape = b""
        while data:
            if data.startswith((b"\x1b[A", b"\x1b[B")):
                self.move(-1 if data[2:3] == b"A" else 1)
                data = data[3:]
            elif data in (b"\x1b", b"\x1b["):
                self._escape = data  # an arrow key split across reads
                return
            elif data.startswith(b"\x1b"):
                self.keys.append("esc")
                if len(self.stack) > 1:
                    self.stack.pop()
                    self.draw()
                data = data[1:]
            elif data[:1] in (b"\r", b"\n"):
                self.enter()
                data = data[1:]
            else:
                data = data[1:]

    def move(self, step: int) -> None:
        self.keys.append("down" if step > 0 else "up")
        menu, selected = self.current
        new = min(max(selected + step, 0), len(menu) - 1)
        if new == selected:
            return
        self.stack[-1] = (menu, new)
        self.write(self.entry(selected, False) + self.entry(new, True))

    def enter(self) -> None:
        self.keys.append("enter")
        menu, selected = self.current
        chosen = menu[list(menu)[selected]]
        if isinstance(chosen, dict):
            self.stack.append((chosen, 0))
            self.write(b"\x1b[?25h\x1b[H\x1b[J\x1b[1;1H")
            self.draw()
        else:
            self.booted = str(chosen)
            self.write(b"\x1b[?25h\x1b[H\x1b[J\x1b[1;1H" + self.booted.encode() + b"\r\n\r")


DEBIAN_MENU: dict[str, object] = {
    "Debian Controller Install": {
        "Serial Console": "SELECTED: controller serial",
        "Graphical Console": "SELECTED: controller graphical",
    },
    "Debian All-in-one Install": {
        "Serial Console": "SELECTED: aio serial",
        "Graphical Console": "SELECTED: aio graphical",
    },
    "Debian All-in-one (lowlatency) Install": {
        "Serial Console": "SELECTED: lowlatency serial",
        "Graphical Console": "SELECTED: lowlatency graphical",
    },
}


def recorded(name: str) -> list[tuple[str, bytes]]:
    """The steps of a console recording in data/ (label, bytes)."""
    steps = json.loads(Path(__file__).with_name("data").joinpath(name).read_text())
    return [(label, base64.b64decode(data)) for label, data in steps]


class IsolinuxDevice(Device):
    """The real ISOLINUX 6.04 vesamenu of a StarlingX 10.0 ISO, replayed from the recording in
    data/isolinux_serial.json (data/record_isolinux.py: power-on, then esc, down, up, down,
    enter, down, up, enter). Each recorded step is one transition between menu states; a key
    with no recorded transition is kept in ``keys`` and answered with nothing.

    States: ``controller`` (the default submenu, where the menu opens), ``top`` and ``aio``
    with the highlighted row. Enter on a Serial Console row boots its label: the recorded
    Loading lines, the same for every label (one kernel and initrd on the ISO).
    """

    LABELS: ClassVar[dict[tuple[str, int], str]] = {("controller", 0): "1", ("aio", 0): "3"}

    def __init__(self) -> None:
        super().__init__()
        steps = recorded("isolinux_serial.json")
        (_, boot), *moves = steps
        path = [("controller", 0), ("top", 0), ("top", 1), ("top", 0), ("top", 1), ("aio", 0),
                ("aio", 1), ("aio", 0), ("booted", 0)]  # fmt: skip
        self.moves = {
            (path[i], label): (path[i + 1], data) for i, (label, data) in enumerate(moves)
        }
        self.loading = steps[-1][1]
        self.state = ("controller", 0)
        self.keys: list[str] = []
        self.booted: str | None = None
        self.write(boot)

    def on_input(self, data: bytes) -> None:
        names = {b"\x1b": "esc", b"\x1b[B": "down", b"\x1b[A": "up", b"\r": "enter"}
        key = names.get(data, repr(data))
        self.keys.append(key)
        if key == "enter" and self.state in self.LABELS:
            self.booted, self.state = self.LABELS[self.state], ("booted", 0)
            self.write(self.loading)
        elif (self.state, key) in self.moves:
            self.state, output = self.moves[self.state, key]
            self.write(output)


class GrubEfiDevice(Device):
    """A StarlingX ISO's UEFI menu as OVMF copies it to the serial port (GRUB 2.06 with LAT's
    grub.cfg around ``iso-grub-entry``; CP437 line drawing, a 100x31 text screen), replayed from
    data/grub_efi_serial.json (data/record_grub_efi.py: power-on, then down, up, down, enter,
    enter). States: ``top`` and ``aio`` with the highlighted row; Enter on the All-in-one
    submenu's Serial Console boots it (the recorded screen clear and kernel output)."""

    def __init__(self) -> None:
        super().__init__()
        (_, boot), *moves, (_, self.loading) = recorded("grub_efi_serial.json")
        path = [("top", 0), ("top", 1), ("top", 0), ("top", 1), ("aio", 0)]
        self.moves = {
            (path[i], label): (path[i + 1], data) for i, (label, data) in enumerate(moves)
        }
        self.state = ("top", 0)
        self.keys: list[str] = []
        self.booted = False
        self.write(boot)

    def on_input(self, data: bytes) -> None:
        key = {b"\x1b[B": "down", b"\x1b[A": "up", b"\r": "enter"}.get(data, repr(data))
        self.keys.append(key)
        if key == "enter" and self.state == ("aio", 0):
            self.booted, self.state = True, ("booted", 0)
            self.write(self.loading)
        elif (self.state, key) in self.moves:
            self.state, output = self.moves[self.state, key]
            self.write(output)


class PxelinuxDevice(Device):
    """A network-booting node's serial port, replayed from data/pxelinux_serial.json
    (data/record_pxelinux.py): metal's "Waiting for this node to be configured." menu counting
    down; Enter reloads pxelinux, which finds the node's own file and shows its "Worker" menu
    counting down; Enter there loads the kernel. ``configured=False``: the node's own file never
    comes, so Enter shows the waiting menu again."""

    TICK_EVERY = 0.3  # seconds between countdown redraws (pxelinux: every second)

    def __init__(self, configured: bool = True) -> None:
        super().__init__()
        (_, self.waiting), (_, self.worker), (_, self.loading) = recorded("pxelinux_serial.json")
        # each menu's last countdown redraw (from its cursor move), repeated while it counts
        self.ticks = {
            state: menu[menu.rfind(b"\x1b[20;26H") :]
            for state, menu in (("waiting", self.waiting), ("worker", self.worker))
        }
        self.configured = configured
        self.state = "waiting"
        self.keys: list[str] = []
        self.lock = threading.Lock()  # a redraw never lands after the next menu
        self.write(self.waiting)
        threading.Thread(target=self._count_down, daemon=True).start()

    def _count_down(self) -> None:
        while self.state in self.ticks:
            time.sleep(self.TICK_EVERY)
            with self.lock:
                tick = self.ticks.get(self.state)
                try:
                    if tick:
                        self.write(tick)
                except OSError:
                    return

    def on_input(self, data: bytes) -> None:
        with self.lock:
            self._on_input(data)

    def _on_input(self, data: bytes) -> None:
        self.keys.append("enter" if data == b"\r" else repr(data))
        if data != b"\r":
            return
        if self.state == "waiting":
            self.state = "worker" if self.configured else "waiting"
            self.write(self.worker if self.configured else self.waiting)
        elif self.state == "worker":
            self.state = "booted"
            self.write(self.loading)


class PtyTransport:
    """A program on a pseudo-terminal as a Transport: real echo, line discipline and Ctrl-C."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = env
        self.proc: PtyProcess | None = None

    def connect(self) -> None:
        self.proc = PtyProcess.spawn(self.argv, env=self.env, dimensions=(24, 80))

    def read(self, size: int, timeout: float) -> bytes:
        assert self.proc is not None
        ready, _, _ = select.select([self.proc.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            data = os.read(self.proc.fd, size)
        except OSError as exc:  # EIO: the program has exited
            raise EOFError(str(exc)) from exc
        if not data:
            raise EOFError("program exited")
        return data

    def write(self, data: bytes) -> None:
        assert self.proc is not None
        while data:
            data = data[os.write(self.proc.fd, data) :]

    def close(self) -> None:
        if self.proc is not None and self.proc.isalive():
            self.proc.terminate(force=True)


FAKE_STX = Path(__file__).with_name("fake_stx.py")


def fake_stx(tmp_path: Path, *args: str) -> PtyTransport:
    """A PtyTransport running fake_stx.py (a StarlingX serial console) with ``args``."""
    state = tmp_path / "fake-stx"
    state.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PS1", "TMOUT"))}
    return PtyTransport([sys.executable, str(FAKE_STX), "--state", str(state), *args], env=env)
