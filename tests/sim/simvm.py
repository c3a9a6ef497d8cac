"""A small private libvirt helper for the simulator tests (until the libvirt backend lands).

Domains are transient, type ``qemu`` (software emulation), q35 with SeaBIOS mirrored on the
serial port, the serial console on a unix socket (started paused, connected, then resumed so
nothing is lost) plus a log file. Networks are isolated: no ``<ip>``, no ``<forward>``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pexpect
import pexpect.fdpexpect

URI = "qemu:///system"
ESC = "\x1b"


def unique_prefix() -> str:
    return f"stxsimtest-{secrets.token_hex(3)}"


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
        _sub(os_el, "bios", useserial="yes")
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
        self.child.logfile_read = self._log

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

    def select_menu(self, title: str, timeout: float = 60) -> None:
        """Highlight the GRUB entry ``title`` with down arrows (reading the highlighted one
        back after each key), then press Enter."""
        highlighted = re.compile(r"\x1b\[7m(?:\x1b\[\d+;\d+H)?\*(?P<title>[^\x1b\r\n]*?)\s*\x1b")
        seen: list[str] = []
        while True:
            self.child.expect(highlighted, timeout=timeout)
            current = self.child.match.group("title")
            if current == title:
                self.send("\r")
                return
            if current in seen:
                raise AssertionError(f"no menu entry {title!r}; entries seen: {seen}")
            seen.append(current)
            self.send(f"{ESC}[B")


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
