"""A small private libvirt helper for the simulator tests (until the libvirt backend lands).

Domains are transient, type ``qemu`` (software emulation), q35 with SeaBIOS and a VGA device
as StarlingX's libvirt domains have (firmware text stays on the screen), the serial console on a
unix socket (started paused, connected, then resumed so nothing is lost) plus a log file.
Networks are isolated: no ``<ip>``, no ``<forward>``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import libvirt
import pexpect
import pexpect.fdpexpect

from pytest_starlingx.console.screen import Menu, Screen

URI = "qemu:///system"
ESC = "\x1b"


PREFIX = "stxsimtest-"
_OWNED = re.compile(rf"{PREFIX}(\d+)-[0-9a-f]{{6}}-")  # the pid of the test process that made it


def unique_prefix() -> str:
    """Names of this process's domains and networks: the pid, so that a later run can tell
    what a killed run left (a worker killed with its run skips its fixtures' teardown)."""
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


def remove_orphans(conn: libvirt.virConnect) -> list[str]:
    """Destroy the transient domains and networks of test processes that are gone (this
    host's pids); returns their names."""
    removed = []
    for obj in [*conn.listAllDomains(), *conn.listAllNetworks()]:
        owner = _OWNED.match(obj.name())
        if owner is None or Path(f"/proc/{owner.group(1)}").exists():
            continue
        with contextlib.suppress(libvirt.libvirtError):
            obj.destroy()
            removed.append(obj.name())
    return removed


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = text
    return el


@dataclass
class NodeSpec:
    """What a test node looks like; boot order is disk, CD, then the mgmt NIC."""

    name: str
    workdir: Path
    networks: list[str]
    iso: Path | None = None
    disk_gib: int = 0  # a new blank disk of this size; 0: none (unless disk_image)
    disk_image: Path | None = None  # an existing disk (e.g. installed by another node)
    memory_mib: int = 512
    knobs: dict[str, str] = field(default_factory=dict)
    netboot: bool = False  # network boot from the second NIC (the mgmt NIC)

    def xml(self) -> str:
        dom = ET.Element("domain", type="qemu")
        _sub(dom, "name", self.name)
        _sub(dom, "memory", str(self.memory_mib), unit="MiB")
        _sub(dom, "vcpu", "1")
        if self.knobs:
            oem = _sub(_sub(dom, "sysinfo", type="smbios"), "oemStrings")
            spec = ",".join(f"{k}={v}" for k, v in self.knobs.items())
            _sub(oem, "entry", f"stx-sim:{spec}")
        os_el = _sub(dom, "os")
        _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
        if self.knobs:
            _sub(os_el, "smbios", mode="sysinfo")
        _sub(_sub(dom, "features"), "acpi")
        _sub(dom, "on_reboot", "restart")
        devices = _sub(dom, "devices")
        order = 1
        if self.disk_gib or self.disk_image:
            disk = _sub(devices, "disk", type="file", device="disk")
            _sub(disk, "driver", name="qemu", type="raw")
            _sub(disk, "source", file=str(self.disk_path))
            _sub(disk, "target", dev="sda", bus="sata")
            _sub(disk, "boot", order=str(order))
            order += 1
        if self.iso:
            cd = _sub(devices, "disk", type="file", device="cdrom")
            _sub(cd, "driver", name="qemu", type="raw")
            _sub(cd, "source", file=str(self.iso))
            _sub(cd, "target", dev="sdb", bus="sata")
            _sub(cd, "readonly")
            _sub(cd, "boot", order=str(order))
            order += 1
        for i, net in enumerate(self.networks):
            nic = _sub(devices, "interface", type="network")
            _sub(nic, "source", network=net)
            _sub(nic, "model", type="virtio")
            if self.netboot and i == 1:
                _sub(nic, "boot", order=str(order))
        _sub(_sub(devices, "video"), "model", type="vga")
        serial = _sub(devices, "serial", type="unix")
        _sub(serial, "source", mode="bind", path=str(self.socket_path))
        _sub(serial, "log", file=str(self.log_path))
        _sub(serial, "target", port="0")
        return ET.tostring(dom, encoding="unicode")

    @property
    def disk_path(self) -> Path:
        return self.disk_image or self.workdir / f"{self.name}.img"

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.console.log"


class ConsoleTimeout(AssertionError):
    """A console did not show what a test waited for."""


class Console:
    """pexpect over the domain's serial socket; every byte is also in ``transcript``."""

    def __init__(self, path: Path, transcript: Path) -> None:
        self.name = transcript.name.removesuffix(".console.log")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self._log = open(transcript, "w", encoding="utf-8")  # noqa: SIM115
        self.child = pexpect.fdpexpect.fdspawn(
            self.sock.fileno(), encoding="utf-8", codec_errors="replace"
        )
        self.screen = Screen()
        self.child.logfile_read = _Tee(self._log, self.screen)

    def expect(self, pattern: str | list[str], timeout: float) -> int:
        """``pexpect.expect``; a timeout raises ConsoleTimeout with the console's tail."""
        try:
            return self.child.expect(pattern, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            tail = str(self.child.before)[-1500:]
            raise ConsoleTimeout(
                f"{self.name}: waited {timeout}s for {pattern!r} ({type(exc).__name__}); "
                f"console tail:\n{tail}"
            ) from None

    def send(self, text: str) -> None:
        self.child.send(text)

    def sendline(self, text: str = "") -> None:
        self.child.send(text + "\r")

    def close(self) -> None:
        self.child.close()  # closes the socket's descriptor
        self.sock.detach()
        self._log.close()

    def select_menu(self, *path: str, timeout: float = 60) -> None:
        """Walk ISOLINUX's menu to the entry ``path`` names, read from the screen: ESC out of
        a submenu not on the path, down to each entry, Enter."""
        keys = {"esc": ESC, "down": f"{ESC}[B", "enter": "\r"}
        deadline = time.monotonic() + timeout
        level = 0
        while level < len(path):
            menu = self._settled_menu(deadline)
            target = menu.find(path[level])
            if menu.title == path[level]:
                level += 1
                continue
            if target is None:
                self.screen.reset()
                self.send(keys["esc"])
                continue
            assert menu.highlighted is not None
            for _ in range(target.row - menu.highlighted.row):
                self.send(keys["down"])
                self._pump(1.0)
            self.screen.reset()
            self.send(keys["enter"])
            level += 1

    def _settled_menu(self, deadline: float) -> Menu:
        """The menu on screen once it has a highlight and stayed the same for a second."""
        last = None
        while time.monotonic() < deadline:
            self._pump(1.0)
            menu = self.screen.menu()
            if menu.highlighted is not None and menu == last:
                return menu
            last = menu
        raise ConsoleTimeout(
            f"{self.name}: no settled menu; screen:\n" + "\n".join(self.screen.lines())
        )

    def _pump(self, seconds: float) -> None:
        """Read the console for ``seconds``."""
        with contextlib.suppress(pexpect.TIMEOUT):
            self.child.expect("(?!)", timeout=seconds)


class _Tee:
    """The console's transcript file, also fed to a screen model."""

    def __init__(self, log: TextIO, screen: Screen) -> None:
        self.log = log
        self.screen = screen

    def write(self, text: str) -> None:
        self.log.write(text)
        self.screen.feed(text.encode())

    def flush(self) -> None:
        self.log.flush()


class Node:
    """A transient domain with its console; ``destroy`` is idempotent."""

    def __init__(self, conn: libvirt.virConnect, spec: NodeSpec, transcripts: Path) -> None:
        self.spec = spec
        if spec.disk_gib and not spec.disk_image:
            with open(spec.disk_path, "wb") as f:
                f.truncate(spec.disk_gib << 30)
        self.dom = conn.createXML(spec.xml(), libvirt.VIR_DOMAIN_START_PAUSED)
        try:
            self.console = Console(spec.socket_path, transcripts / f"{spec.name}.console.log")
            self.dom.resume()
        except BaseException:
            self.dom.destroy()
            raise
        self.started = time.monotonic()

    def destroy(self) -> None:
        self.console.close()
        with contextlib.suppress(libvirt.libvirtError):  # already gone
            self.dom.destroy()


def isolated_network(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork:
    """A started transient network with no host address and no forwarding."""
    net = ET.Element("network")
    _sub(net, "name", name)
    return conn.networkCreateXML(ET.tostring(net, encoding="unicode"))
