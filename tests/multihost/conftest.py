"""Fixtures of the multi-host tests: a second libvirt host on this machine, lab networks on
both hosts, and namespaces plugged into them. Everything is named after the test's token
(``tmh<hex>``) and removed at its end, also when it fails."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

# The backend tests' helpers (the tiny boot ISO, lab shapes, console reads) serve here too.
sys.path.insert(0, str(Path(__file__).parent.parent / "backends"))

from libvirt_helpers import make_tiny_iso
from second_host import SYSTEM_URI, SecondHost, run, second_host

from pytest_starlingx.backends.base import NetworkSpec, Owner
from pytest_starlingx.backends.libvirt import bridge_name, network_xml


@pytest.fixture
def token() -> str:
    """The test's own prefix for every name it makes (9 characters)."""
    return f"tmh{secrets.token_hex(3)}"


@pytest.fixture
def host2(token: str) -> Iterator[SecondHost]:
    """A second libvirt host, removed at the end (its removal checked)."""
    with second_host(token) as host:
        yield host


@pytest.fixture(scope="session")
def tiny_iso() -> Path:
    """A BIOS-bootable ISO: GRUB on the serial port, Debian's kernel, a busybox initramfs."""
    return make_tiny_iso()


@pytest.fixture
def system_conn() -> Iterator[libvirt.virConnect]:
    """The system libvirtd (this host's)."""
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"no system libvirtd: {exc}")
    yield conn
    conn.close()


LabNetwork = Callable[[str, str, int], str]


@pytest.fixture
def lab_network() -> Iterator[LabNetwork]:
    """``lab_network(uri, lab_id, index)``: a started lab network on a host, as the libvirt
    backend makes it (isolated, bridge ``bridge_name(lab_id, index)``); its bridge's name.
    Removed at the end from the system libvirtd (a second host's go with that host)."""
    made: list[tuple[str, libvirt.virConnect, libvirt.virNetwork]] = []

    def make(uri: str, lab_id: str, index: int) -> str:
        bridge = bridge_name(lab_id, index)
        name = f"stx-t-{lab_id}-net{index}"
        conn = libvirt.open(uri)
        xml = network_xml(NetworkSpec(f"net{index}"), name, bridge, Owner("t", lab_id))
        made.append((uri, conn, conn.networkCreateXML(xml)))
        return bridge

    yield make
    for uri, conn, net in made:
        try:
            if uri == SYSTEM_URI:
                net.destroy()
        finally:
            conn.close()


Plug = Callable[[str | None, str, str], str]


@pytest.fixture
def plug(token: str) -> Iterator[Plug]:
    """``plug(host_namespace, bridge, address)``: a new network namespace on ``bridge`` of a
    host (None: this one) through a veth, ``eth0`` holding ``address`` (CIDR) inside; its name.
    Removed at the end."""
    made: list[str] = []

    def make(host_namespace: str | None, bridge: str, address: str) -> str:
        name = f"{token}c{len(made)}"
        made.append(name)
        run("ip", "netns", "add", name)
        on_host = [] if host_namespace is None else ["-n", host_namespace]
        run("ip", *on_host, "link", "add", name, "type", "veth", "peer", "name", "eth0",
            "netns", name)  # fmt: skip
        run("ip", *on_host, "link", "set", name, "addrgenmode", "none")
        run("ip", *on_host, "link", "set", name, "master", bridge)
        run("ip", *on_host, "link", "set", name, "up")
        run("ip", "-n", name, "addr", "add", address, "dev", "eth0")
        run("ip", "-n", name, "link", "set", "eth0", "up")
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
