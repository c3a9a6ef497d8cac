"""A second libvirt host on this machine, and lab networks spanning it and this host
(``backends/span.py``). Root, iproute2 and libvirt's daemons; no StarlingX guest."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from libvirt_helpers import READY, everything, lab_resources, new_lab_id, ours, read_until
from netns_helpers import ping_reply
from second_host import NEEDS_SECOND_HOST, SYSTEM_URI, SecondHost, leftovers, run, second_host

from pytest_starlingx.backends.libvirt import (
    CPU_SHARES,
    DomainType,
    LibvirtBackend,
    LibvirtConfig,
    bridge_name,
)
from pytest_starlingx.backends.span import (
    LAB_MTU,
    UNDERLAY_MTU,
    NetworkSpan,
    open_span,
    plan_spans,
    remove_span,
    vxlan_name,
)
from pytest_starlingx.errors import BackendError

pytestmark = NEEDS_SECOND_HOST

PAYLOAD = LAB_MTU - 28  # an ICMP echo filling a 1500-byte IPv4 packet: 1472 bytes


def ping(namespace: str, address: str, timeout: float = 10.0) -> str | None:
    """From ``namespace``: :data:`PAYLOAD`-byte ICMP echoes with DF to ``address``; the reply's
    line, or None when none came within ``timeout`` seconds."""
    return ping_reply(namespace, address, timeout, PAYLOAD)


def vxlan_devices(ip_prefix: list[str]) -> dict[str, int]:
    """VXLAN devices of a namespace (``[]``: this host's) and their VNIs."""
    links = json.loads(run("ip", *ip_prefix, "-j", "-d", "link", "show", "type", "vxlan"))
    return {link["ifname"]: link["linkinfo"]["info_data"]["id"] for link in links}


def tiny_domain_xml(name: str, network: str) -> str:
    """A domain with no disk and one NIC on ``network``: enough to start a QEMU paused."""
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = "32"
    ET.SubElement(ET.SubElement(root, "os"), "type").text = "hvm"
    nic = ET.SubElement(ET.SubElement(root, "devices"), "interface", type="network")
    ET.SubElement(nic, "source", network=network)
    return ET.tostring(root, encoding="unicode")


def test_second_host_is_a_host_of_its_own(
    host2: SecondHost, system_conn: libvirt.virConnect, lab_network, token: str
) -> None:
    bridge = lab_network(host2.uri, token[3:], 0)
    conn = libvirt.open(host2.uri)
    try:
        assert conn.getHostname() == token
        assert system_conn.getHostname() != token
        network = f"stx-t-{token[3:]}-net0"
        assert network in conn.listNetworks()
        assert network not in system_conn.listNetworks()
        assert bridge in host2.ip("-j", "link", "show")
        assert bridge not in run("ip", "-j", "link", "show")

        dom = conn.createXML(
            tiny_domain_xml(f"{token}-vm", network), libvirt.VIR_DOMAIN_START_PAUSED
        )
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        assert f"{token}-vm" not in [d.name() for d in system_conn.listAllDomains()]
        pid = int((host2.base / "run" / "qemu" / f"{token}-vm.pid").read_text())
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == host2.netns_inode
        assert "qemu-system" in Path(f"/proc/{pid}/cmdline").read_text()
        taps = json.loads(host2.ip("-j", "link", "show", "master", bridge))
        assert [t["ifname"] for t in taps] == ["vnet0"]  # the NIC's tap, on its bridge there
    finally:
        conn.close()


def test_lab_network_spans_both_hosts_with_full_frames(
    host2: SecondHost, system_conn: libvirt.virConnect, lab_network, plug, token: str
) -> None:
    lab_id = token[3:]
    bridges = [lab_network(SYSTEM_URI, lab_id, 0), lab_network(host2.uri, lab_id, 0)]
    assert bridges == [bridge_name(lab_id, 0)] * 2
    (span,) = plan_spans(lab_id, bridges[:1], [host2.local_span_host(), host2.span_host()])
    here = plug(None, span.bridge, "192.168.204.11/24")
    there = plug(host2.namespace, span.bridge, "192.168.204.12/24")
    assert ping(here, "192.168.204.12", timeout=2) is None  # two bridges, not joined yet
    try:
        open_span(span)
        open_span(span)  # idempotent
        assert ping(here, "192.168.204.12") == f"{LAB_MTU} bytes from 192.168.204.12"
        assert ping(there, "192.168.204.11") == f"{LAB_MTU} bytes from 192.168.204.11"
        for prefix in ([], ["-n", host2.namespace]):
            assert vxlan_devices(prefix)[vxlan_name(lab_id, 0)] == span.vni
            (device,) = json.loads(run("ip", *prefix, "-j", "-d", "link", "show", span.device))
            assert (device["mtu"], device["master"]) == (LAB_MTU, span.bridge)
            data = device["linkinfo"]["info_data"]
            assert (data["port"], data["id"]) == (4789, span.vni)
    finally:
        assert remove_span(span) == []


def test_too_small_underlay_is_refused_naming_host_and_interface(
    host2: SecondHost, lab_network, token: str
) -> None:
    lab_id = token[3:]
    lab_network(host2.uri, lab_id, 0)
    host2.ip("link", "set", "underlay0", "mtu", str(UNDERLAY_MTU - 1))
    hosts = [host2.local_span_host(), host2.span_host()]
    run("ip", "link", "add", bridge_name(lab_id, 0), "type", "bridge")  # this host's side
    try:
        (span,) = plan_spans(lab_id, [bridge_name(lab_id, 0)], hosts)
        with pytest.raises(BackendError) as caught:
            open_span(span)
        message = str(caught.value)
        assert f"host {host2.uri}: the underlay interface underlay0 ({host2.underlay})" in message
        assert f"has MTU {UNDERLAY_MTU - 1}" in message and f"need {UNDERLAY_MTU}" in message
        assert "qemu:///system" not in message  # this host's side is fine
        assert span.device not in vxlan_devices([]) | vxlan_devices(["-n", host2.namespace])
    finally:
        run("ip", "link", "del", bridge_name(lab_id, 0))


def test_removal_leaves_nothing(lab_network, token: str) -> None:
    lab_id = token[3:]
    with second_host(token) as host2:
        lab_network(host2.uri, lab_id, 0)
        conn = libvirt.open(host2.uri)
        try:
            conn.createXML(tiny_domain_xml(f"{token}-vm", f"stx-t-{lab_id}-net0"),
                           libvirt.VIR_DOMAIN_START_PAUSED)  # fmt: skip
        finally:
            conn.close()
        run("ip", "link", "add", bridge_name(lab_id, 0), "type", "bridge")
        try:
            (span,) = plan_spans(
                lab_id, [bridge_name(lab_id, 0)], [host2.local_span_host(), host2.span_host()]
            )
            open_span(span)
            record = span.to_json()
            # A device of the span's name that is not ours (another VNI) is left alone.
            foreign = NetworkSpan.from_json({**record, "vni": span.vni + 1})
            assert [p for p in remove_span(foreign) if "not ours, left alone" in p] != []
            assert remove_span(NetworkSpan.from_json(record)) == []
            assert remove_span(NetworkSpan.from_json(record)) == []  # idempotent
            assert span.device not in vxlan_devices([])
        finally:
            run("ip", "link", "del", bridge_name(lab_id, 0))
        # A second host gone before the span's removal: reported by name, not forgotten.
        gone = span
    problems = remove_span(gone)
    assert len(problems) == 1 and problems[0].startswith(f"host {host2.uri}:"), problems
    assert leftovers(token, host2) == []
    assert bridge_name(lab_id, 0) not in run("ip", "-j", "link", "show")


def test_libvirt_backend_brings_a_lab_up_on_the_second_host(
    host2: SecondHost, tiny_iso: Path
) -> None:
    state = host2.base / "state"  # on this machine's file system, which the host shares
    state.mkdir(mode=0o755)
    backend = LibvirtBackend(
        LibvirtConfig(uri=host2.uri, state_dir=state, domain_type=DomainType.QEMU)
    )
    lab_id = new_lab_id()
    try:
        lab = backend.create_lab(lab_resources(1, lab_id, cdrom=tiny_iso))
        transport = lab.console("node-0")
        try:
            lab.power_on("node-0", before_resume=lambda _: transport.connect())
            read_until(transport, READY)
        finally:
            transport.close()
        domain = lab.domain_name("node-0")
        pid = int((host2.base / "run" / "qemu" / f"{domain}.pid").read_text())
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == host2.netns_inode
        # Its cgroup (this host's hierarchy, bound into the host's mount namespace) has the
        # machine's CPU weight: libvirt reads it back from there.
        shares = backend.conn.lookupByName(domain).schedulerParameters()["cpu_shares"]
        assert shares == 8 * CPU_SHARES  # lab_resources gives node-0 cpu_weight 8
        assert bridge_name(lab_id, 1) in host2.ip("-j", "link", "show")
    finally:
        backend.destroy_lab(lab_id)
        assert ours(everything(backend.conn), lab_id) == set()
        backend.close()
