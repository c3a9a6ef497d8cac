"""Lab networks spanning hosts (``backends/span.py``): the command runner, planning, and spans
over "hosts" that are bare network namespaces (a bridge made with iproute2 in each), joined by
an underlay switch namespace. Every name starts with the test's token and is removed at the
end; the netns tests need root and iproute2 (skipped without), no libvirt daemon."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import replace

import pytest
from netns_helpers import ip, namespaces, needs_netns, ping, sweep

from pytest_starlingx.backends.span import (
    UNDERLAY_MTU,
    VNI_BLOCK,
    HostCommands,
    NetworkSpan,
    SpanHost,
    open_span,
    plan_spans,
    remove_span,
    vxlan_name,
)
from pytest_starlingx.errors import BackendError

pytestmark = pytest.mark.fast

SSH_URI = "qemu+ssh://root@hv2:2222/system?keyfile=/root/.ssh/lab&no_verify=1"


def test_commands_for_uri() -> None:
    assert HostCommands.for_uri("qemu:///system") == HostCommands("qemu:///system")
    unix = "qemu+unix:///system?socket=/x/libvirt-sock"
    assert HostCommands.for_uri(unix).prefix == ()
    ssh = HostCommands.for_uri(SSH_URI)
    assert ssh.host == SSH_URI and ssh.remote_shell
    assert ssh.prefix == (
        "ssh", "-o", "BatchMode=yes", "-p", "2222", "-i", "/root/.ssh/lab",
        "-o", "StrictHostKeyChecking=no", "root@hv2",
    )  # fmt: skip
    assert HostCommands.for_uri("qemu+ssh://hv3/system").prefix[-1] == "hv3"
    with pytest.raises(BackendError, match=r"host qemu\+tcp://hv2/system: .*over ssh"):
        HostCommands.for_uri("qemu+tcp://hv2/system")


def test_ssh_commands_are_quoted_for_the_remote_shell() -> None:
    ssh = HostCommands.for_uri("qemu+ssh://root@hv2/system")
    assert ssh.argv(["ip", "link", "add", "a b;x"])[-1] == "ip link add 'a b;x'"
    netns = HostCommands.in_namespace("h", "ns1")
    assert netns.argv(["ip", "link"]) == ["ip", "netns", "exec", "ns1", "ip", "link"]


def test_failed_command_names_host_command_and_stderr() -> None:
    commands = HostCommands("hv9", ("sh", "-c", 'echo "no such device" >&2; exit 3', "sh"))
    with pytest.raises(BackendError) as caught:
        commands.run(["ip", "link", "del", "x"], what="removing x")
    assert str(caught.value) == (
        "host hv9: removing x: `ip link del x` failed (exit status 3): no such device"
    )
    unreachable = HostCommands("hv9", ("sh", "-c", "echo refused >&2; exit 255", "sh"), True)
    with pytest.raises(BackendError, match=r"host hv9: removing x: could not reach it with .*"):
        unreachable.run(["ip", "link", "del", "x"], what="removing x")


def test_span_records_round_trip() -> None:
    hosts = (
        SpanHost(HostCommands("a"), "198.18.0.1"),
        SpanHost(HostCommands.for_uri(SSH_URI), "198.18.0.2"),
    )
    span = NetworkSpan("ab12cd34", 1, "stxab12cd34n1", vxlan_name("ab12cd34", 1), 4097, hosts)
    assert NetworkSpan.from_json(json.loads(json.dumps(span.to_json()))) == span
    assert span.device == "stxab12cd34v1" and len(span.device) <= 15
    assert span.peers(hosts[0]) == ["198.18.0.2"]


def test_plan_refuses_bad_hosts_before_asking_them() -> None:
    one = SpanHost(HostCommands("a", ("false",)), "198.18.0.1")
    with pytest.raises(BackendError) as caught:
        plan_spans("ab12", ["b0"], [one, SpanHost(HostCommands("a", ("false",)), "hv2")])
    assert str(caught.value) == (
        "lab ab12: spanning its networks: host names repeat: a, a; "
        "host a: underlay 'hv2' is no IPv4 address"
    )
    with pytest.raises(BackendError, match="two hosts or more, got 1"):
        plan_spans("ab12", ["b0"], [one])


# --------------------------------------------------------------------------- over namespaces

HOSTS = 3
LAB_BRIDGE = "labbr0"


class Fabric:
    """Hosts ``<token>h<i>`` (namespaces, each with bridge ``labbr0``), on an underlay switch
    (bridge ``sw`` in namespace ``<token>sw``) at 198.18.200.<i+1>/24 over ``up0`` (MTU 1550),
    and a client namespace ``<token>c<i>`` on each host's bridge at 192.168.204.<i+11>/24."""

    def __init__(self, token: str) -> None:
        self.token = token
        switch = f"{token}sw"
        ip("netns", "add", switch)
        ip("-n", switch, "link", "add", "sw", "mtu", str(UNDERLAY_MTU), "type", "bridge")
        ip("-n", switch, "link", "set", "sw", "up")
        for i in range(HOSTS):
            host, client = self.host(i), self.client(i)
            ip("netns", "add", host)
            ip("-n", switch, "link", "add", f"p{i}", "mtu", str(UNDERLAY_MTU), "type", "veth",
               "peer", "name", "up0", "mtu", str(UNDERLAY_MTU), "netns", host)  # fmt: skip
            ip("-n", switch, "link", "set", f"p{i}", "master", "sw", "up")
            ip("-n", host, "addr", "add", f"{self.underlay(i)}/24", "dev", "up0")
            ip("-n", host, "link", "set", "up0", "up")
            ip("-n", host, "link", "add", LAB_BRIDGE, "type", "bridge")
            ip("-n", host, "link", "set", LAB_BRIDGE, "addrgenmode", "none", "up")
            ip("netns", "add", client)
            ip("-n", host, "link", "add", "c", "type", "veth", "peer", "name", "eth0",
               "netns", client)  # fmt: skip
            ip("-n", host, "link", "set", "c", "master", LAB_BRIDGE, "up")
            ip("-n", client, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            ip("-n", client, "link", "set", "eth0", "up")

    def host(self, i: int) -> str:
        return f"{self.token}h{i}"

    def client(self, i: int) -> str:
        return f"{self.token}c{i}"

    @staticmethod
    def underlay(i: int) -> str:
        return f"198.18.200.{i + 1}"

    @staticmethod
    def address(i: int) -> str:
        return f"192.168.204.{i + 11}"

    def span_hosts(self, count: int = HOSTS) -> list[SpanHost]:
        return [
            SpanHost(HostCommands.in_namespace(f"host-{i}", self.host(i)), self.underlay(i))
            for i in range(count)
        ]

    def vxlans(self, i: int) -> dict[str, int]:
        links = json.loads(ip("-n", self.host(i), "-j", "-d", "link", "show", "type", "vxlan"))
        return {link["ifname"]: link["linkinfo"]["info_data"]["id"] for link in links}


@pytest.fixture
def fabric(tmp_path) -> Iterator[Fabric]:
    token = f"tsp{secrets.token_hex(3)}"
    try:
        yield Fabric(token)
    finally:
        sweep((token,), tmp_path)
        assert not {n for n in namespaces() if n.startswith(token)}


@needs_netns
def test_three_hosts_flood_to_every_peer_and_remove_cleanly(fabric: Fabric) -> None:
    lab_id = secrets.token_hex(4)
    (span,) = plan_spans(lab_id, [LAB_BRIDGE], fabric.span_hosts())
    assert span.vni % VNI_BLOCK == 0 and span.vni >= VNI_BLOCK
    assert not ping(fabric.client(0), fabric.address(1), timeout=1)
    open_span(span)
    for i in range(HOSTS):
        (device,) = json.loads(ip("-n", fabric.host(i), "-j", "-d", "link", "show", span.device))
        assert (device["mtu"], device["master"]) == (1500, LAB_BRIDGE)
        assert device["linkinfo"]["info_data"]["port"] == 4789
        bridge_fdb = ["bridge", "-j", "fdb", "show", "dev", span.device]
        fdb = json.loads(ip("netns", "exec", fabric.host(i), *bridge_fdb))
        flooded = sorted(e["dst"] for e in fdb if e["mac"] == "00:00:00:00:00:00")
        assert flooded == sorted(h.underlay for h in span.hosts if h.name != f"host-{i}")
    for a, b in ((0, 1), (0, 2), (1, 2), (2, 0)):
        assert ping(fabric.client(a), fabric.address(b)), f"client {a} -> client {b}"
    # A bridge made again (a libvirt network restarted) leaves the device unattached; open_span
    # mends it, and a second call changes nothing.
    ip("-n", fabric.host(1), "link", "set", span.device, "nomaster")
    open_span(span, on=["host-1"])
    open_span(span)
    assert ping(fabric.client(0), fabric.address(1))
    assert remove_span(span) == [] and remove_span(span) == []
    assert all(span.device not in fabric.vxlans(i) for i in range(HOSTS))


@needs_netns
def test_vnis_in_use_on_any_host_are_skipped(fabric: Fabric) -> None:
    lab_id = secrets.token_hex(4)
    first = plan_spans(lab_id, [LAB_BRIDGE, "b1"], fabric.span_hosts())
    taken = first[1].vni  # the block's second VNI, in use on host 2 only
    vxlan = ["type", "vxlan", "id", str(taken), "dstport", "4789"]
    ip("-n", fabric.host(2), "link", "add", "other", *vxlan)
    again = plan_spans(lab_id, [LAB_BRIDGE, "b1"], fabric.span_hosts())
    assert again[0].vni != first[0].vni and again[1].vni == again[0].vni + 1
    with pytest.raises(
        BackendError, match=f"host host-2: VNI {taken} is taken by VXLAN device other"
    ):
        open_span(replace(first[0], vni=taken))


@needs_netns
def test_refusals_name_the_host_and_make_nothing(fabric: Fabric) -> None:
    lab_id = secrets.token_hex(4)
    (span,) = plan_spans(lab_id, [LAB_BRIDGE], fabric.span_hosts(2))
    ip("-n", fabric.host(1), "link", "set", "up0", "mtu", "1500")
    ip("-n", fabric.host(0), "link", "add", span.device, "type", "bridge")
    with pytest.raises(BackendError) as caught:
        open_span(span)
    message = str(caught.value)
    assert message.startswith(
        f"lab network {LAB_BRIDGE} over hosts: host host-0: {span.device} exists and is no "
        "VXLAN device: not ours, left alone; "
    )
    assert (
        f"; host host-1: the underlay interface up0 ({fabric.underlay(1)}) has MTU 1500; the lab "
        f"network's 1500-byte frames need {UNDERLAY_MTU} over VXLAN"
    ) in message
    assert span.device not in fabric.vxlans(1)
    with pytest.raises(BackendError, match="no host host-9"):
        open_span(span, on=["host-9"])
    # The bridge of our name is not ours: removal leaves it alone.
    assert remove_span(span) == []
    assert span.device in ip("-n", fabric.host(0), "link", "show")
