"""Lab gateways (``backends/gateway.py``) on fake labs made here with iproute2
(``netns_helpers.FakeLab``). Every name made here starts with the test's own token
(``tgw<hex>``) and is removed at teardown, even when the test fails."""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns_helpers import (
    GATEWAY,
    GUEST,
    PORT,
    WAIT,
    FakeLab,
    ask,
    connect_from,
    ip,
    links,
    namespaces,
    needs_netns,
    netns_exec,
    ping,
    read_line,
    refused,
    running,
    sweep,
    wait_exit,
)

from pytest_starlingx.backends import gateway as gateway_module
from pytest_starlingx.backends.gateway import (
    NFT_TABLE,
    UPLINK_IFNAME,
    Gateway,
    add_relay,
    close_gateway,
    open_gateway,
    remove_gateway,
    state_path,
    uplink_network,
    uplink_state_path,
)
from pytest_starlingx.errors import BackendError
from pytest_starlingx.waits import Deadline

pytestmark = [pytest.mark.fast, needs_netns]  # no VM, no libvirt daemon; root and iproute2

LAB_NET = ipaddress.ip_network("10.10.10.0/24")

OPENER = """
import json, sys
from pathlib import Path
from pytest_starlingx.backends.gateway import open_gateway
namespace, bridge, run_dir, host_veth, uplink = sys.argv[1:6]
gateway = open_gateway(
    namespace, bridge, "10.10.10.1/24", [("10.10.10.2", 7000)], Path(run_dir), host_veth=host_veth,
    uplink=uplink == "uplink",
)
print(json.dumps(gateway.to_json()), flush=True)
sys.stdin.read()
"""


class Names:
    """Names of one test's objects, all starting with its token."""

    def __init__(self) -> None:
        self.token = f"tgw{secrets.token_hex(3)}"

    def bridge(self, i: int) -> str:
        return f"{self.token}b{i}"

    def guest(self, i: int) -> str:
        return f"{self.token}-guest{i}"

    def guest_veth(self, i: int) -> str:
        return f"{self.token}v{i}"

    def gateway(self, i: int) -> str:
        return f"{self.token}-gw{i}"

    def host_veth(self, i: int) -> str:
        return f"{self.token}g{i}"

    def ours(self) -> tuple[set[str], set[str]]:
        """Our namespaces and links that exist."""
        return (
            {n for n in namespaces() if n.startswith(self.token)},
            {n for n in links() if n.startswith(self.token)},
        )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def names(run_dir: Path) -> Iterator[Names]:
    """The test's names; at teardown every gateway, namespace and link carrying them goes."""
    made = Names()
    try:
        yield made
    finally:
        sweep((made.token,), run_dir)


@pytest.fixture
def fake_lab(names: Names) -> Iterator[Callable[[int], FakeLab]]:
    """Makes fake lab ``i``, whose guest answers ``lab-<i>``."""
    labs: list[FakeLab] = []

    def make(i: int) -> FakeLab:
        labs.append(FakeLab.make(f"lab-{i}", names.bridge(i), names.guest(i), names.guest_veth(i)))
        return labs[-1]

    try:
        yield make
    finally:
        for lab in labs:
            lab.stop()


def assert_host_isolated(names: Names) -> None:
    """No host interface has an address on the lab network, ours have none at all, and the
    host's route to a lab address does not lead into a fake lab."""
    now = links()
    on_lab = [
        (name, info["local"])
        for name, link in now.items()
        for info in link.get("addr_info", [])
        if ipaddress.ip_address(info["local"]) in LAB_NET
    ]
    assert on_lab == []
    ours = {name: link.get("addr_info", []) for name, link in now.items()}
    assert {n: a for n, a in ours.items() if n.startswith(names.token) and a} == {}
    routes = json.loads(ip("-j", "route", "show", "table", "all"))
    assert [r for r in routes if _overlaps(r.get("dst", ""))] == []
    proc = subprocess.run(["ip", "-j", "route", "get", GUEST], capture_output=True, text=True)
    if proc.returncode == 0:  # no route at all is fine too
        route = json.loads(proc.stdout)[0]
        assert not route.get("dev", "").startswith(names.token), route


def _overlaps(dst: str) -> bool:
    """Whether a route's destination covers lab addresses (``default`` leads elsewhere)."""
    try:
        net = ipaddress.ip_network(dst, strict=False)
    except ValueError:  # "default", "broadcast ..." and the like
        return False
    return net.version == 4 and net.prefixlen > 0 and net.overlaps(LAB_NET)


def open_on(lab: FakeLab, names: Names, i: int, run_dir: Path) -> Gateway:
    return open_gateway(
        names.gateway(i),
        lab.bridge,
        GATEWAY,
        [(GUEST, PORT)],
        run_dir,
        host_veth=names.host_veth(i),
    )


# ------------------------------------------------------------------ reaching a lab


def test_a_loopback_port_reaches_the_guest_from_the_gateway_address(names, fake_lab, run_dir):
    lab = fake_lab(0)
    gateway = open_on(lab, names, 0, run_dir)
    try:
        port = gateway.ports[(GUEST, PORT)]
        assert ask(port, "hello") == "lab-0 from 10.10.10.1: hello\n"
        assert ask(port, "again") == "lab-0 from 10.10.10.1: again\n"
        assert gateway.namespace in namespaces()
        assert links()[gateway.host_veth]["master"] == lab.bridge
        assert running(gateway.relay)
        assert_host_isolated(names)
    finally:
        close_gateway(gateway)


def test_two_labs_with_the_same_addresses_side_by_side(names, fake_lab, run_dir):
    labs = [fake_lab(0), fake_lab(1)]
    assert_host_isolated(names)
    gateways = [open_on(lab, names, i, run_dir) for i, lab in enumerate(labs)]
    try:
        assert_host_isolated(names)
        ports = [g.ports[(GUEST, PORT)] for g in gateways]
        assert ports[0] != ports[1]
        # both connections open at once, each answered by its own lab
        socks = [socket.create_connection(("127.0.0.1", p), timeout=WAIT) for p in ports]
        try:
            assert_host_isolated(names)
            for i, sock in enumerate(socks):
                sock.sendall(f"to {i}\n".encode())
            answers = [sock.makefile("rb").readline().decode() for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        assert answers == ["lab-0 from 10.10.10.1: to 0\n", "lab-1 from 10.10.10.1: to 1\n"]
        assert [ask(p, "x") for p in reversed(ports)] == [
            "lab-1 from 10.10.10.1: x\n",
            "lab-0 from 10.10.10.1: x\n",
        ]
    finally:
        for gateway in gateways:
            close_gateway(gateway)
    assert_host_isolated(names)


def test_a_target_that_refuses_closes_the_connection(names, fake_lab, run_dir):
    lab = fake_lab(0)
    closed = (GUEST, PORT + 1)  # nothing listens there
    gateway = open_gateway(
        names.gateway(0),
        lab.bridge,
        GATEWAY,
        [(GUEST, PORT), closed],
        run_dir,
        host_veth=names.host_veth(0),
    )
    try:
        assert ask(gateway.ports[closed], "anyone?") == ""
        assert ask(gateway.ports[(GUEST, PORT)], "still") == "lab-0 from 10.10.10.1: still\n"
    finally:
        close_gateway(gateway)


# ------------------------------------------------------------------ removal


def test_close_leaves_nothing_and_may_run_again(names, fake_lab, run_dir):
    gateway = open_on(fake_lab(0), names, 0, run_dir)
    port = gateway.ports[(GUEST, PORT)]
    close_gateway(gateway)
    assert gateway.namespace not in namespaces()
    assert gateway.host_veth not in links()
    assert not running(gateway.relay)
    assert not state_path(run_dir, gateway.namespace).exists()
    assert refused(port)
    close_gateway(gateway)  # already gone is fine
    assert_host_isolated(names)


def test_kill_9_of_the_opener_then_removal_from_recorded_names(names, fake_lab, run_dir):
    lab = fake_lab(0)
    recorded = (names.gateway(0), names.host_veth(0), run_dir)  # what a ledger holds beforehand
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, recorded[0], lab.bridge, str(run_dir), recorded[1], "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        gateway = Gateway.from_json(json.loads(read_line(opener.stdout, Deadline(WAIT))))
    finally:
        opener.send_signal(signal.SIGKILL)
        opener.wait(WAIT)
    port = gateway.ports[(GUEST, PORT)]
    assert running(gateway.relay)  # the relay outlives its opener
    assert ask(port, "orphan") == "lab-0 from 10.10.10.1: orphan\n"
    assert remove_gateway(*recorded) == []  # the relay is found from its state file
    assert not running(gateway.relay)
    assert names.ours() == (
        {lab.guest},
        {lab.bridge, names.guest_veth(0)},
    )  # the fake lab only
    assert refused(port)


def test_the_relay_exits_when_its_namespace_is_removed_under_it(names, fake_lab, run_dir):
    gateway = open_on(fake_lab(0), names, 0, run_dir)
    ip("link", "del", gateway.host_veth)
    ip("netns", "del", gateway.namespace)
    wait_exit(gateway.relay)
    assert refused(gateway.ports[(GUEST, PORT)])
    close_gateway(gateway)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("address", "targets", "message"),
    [
        (GATEWAY, [("controller-0", 22)], "target 'controller-0' is not an IP address"),
        (GATEWAY, [("10.10.20.2", 22)], "not on the gateway's network 10.10.10.0/24"),
        (GATEWAY, [(GUEST, 0)], "port 0 is not a port number"),
        (GATEWAY, [(GUEST, 22), (GUEST, 22)], "targets repeat"),
        (GATEWAY, [], "no targets to relay to and no uplink"),
        ("10.10.10.1", [(GUEST, 22)], "needs a prefix length"),
        ("10.10.10.300/24", [(GUEST, 22)], "10.10.10.300/24"),
    ],
)
def test_bad_input_is_named_and_nothing_is_made(
    names, fake_lab, run_dir, address, targets, message
):
    lab = fake_lab(0)
    before = names.ours()
    with pytest.raises(BackendError, match=message):
        open_gateway(
            names.gateway(0), lab.bridge, address, targets, run_dir, host_veth=names.host_veth(0)
        )
    assert names.ours() == before


def test_a_missing_bridge_is_named_and_nothing_is_made(names, run_dir):
    missing = names.bridge(9)
    with pytest.raises(BackendError, match=f"bridge {missing} does not exist"):
        open_gateway(
            names.gateway(0), missing, GATEWAY, [(GUEST, 22)], run_dir, host_veth=names.host_veth(0)
        )
    assert names.ours() == (set(), set())


def test_a_failure_midway_removes_what_was_made_and_leaves_the_rest(names, fake_lab, run_dir):
    lab = fake_lab(0)
    squatter = names.host_veth(0)
    ip("link", "add", squatter, "type", "bridge")  # not ours to remove
    with pytest.raises(BackendError, match=f"creating veth {squatter}.*File exists"):
        open_on(lab, names, 0, run_dir)
    assert names.gateway(0) not in namespaces()
    assert squatter in links()


def test_a_relay_that_cannot_start_is_named_and_nothing_is_left(names, fake_lab, tmp_path):
    lab = fake_lab(0)
    before = names.ours()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(BackendError, match="the relay's files in"):
        open_on(lab, names, 0, not_a_dir)
    assert names.ours() == before


# ------------------------------------------------------------------ uplink
#
# Nothing here sends to an address outside this machine: the guest pings the gateway address,
# and reaches this host's own address (a server of the test's) through the uplink.

needs_uplink_tools = pytest.mark.skipif(
    shutil.which("slirp4netns") is None or shutil.which("nft") is None,
    reason="an uplink needs slirp4netns and nft (stx-lab host-setup installs them)",
)


def assert_host_untouched(names: Names, forwarding: str) -> None:
    """The host's forwarding is as it was, and neither its nftables nor its routes mention the
    uplink or the test's names (other labs may change both meanwhile: not compared whole)."""
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding
    ruleset = subprocess.run(
        ["nft", "-s", "list", "ruleset"], capture_output=True, text=True, check=True, timeout=WAIT
    ).stdout
    assert NFT_TABLE not in ruleset and f'"{UPLINK_IFNAME}"' not in ruleset
    assert names.token not in ruleset and "10.10.10.0/24" not in ruleset
    routes = json.loads(ip("-j", "route", "show", "table", "all"))
    assert [r for r in routes if r.get("dev", "") in (UPLINK_IFNAME, names.host_veth(0))] == []
    assert UPLINK_IFNAME not in links()


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def open_with_uplink(lab: FakeLab, names: Names, i: int, run_dir: Path, targets=None) -> Gateway:
    return open_gateway(
        names.gateway(i),
        lab.bridge,
        GATEWAY,
        [(GUEST, PORT)] if targets is None else targets,
        run_dir,
        host_veth=names.host_veth(i),
        uplink=True,
    )


def assert_uplink_plumbing(gateway: Gateway) -> None:
    """Default route out of the uplink interface, forwarding on, our table with the
    masquerade rule, slirp4netns running on the namespace without host loopback."""
    ns = gateway.namespace
    assert gateway.uplink is not None
    side = ipaddress.ip_network(gateway.uplink.network)
    routes = json.loads(ip("-n", ns, "-j", "route", "show", "default"))
    assert [(r["dev"], r["gateway"]) for r in routes] == [(UPLINK_IFNAME, str(side[2]))]
    addresses = json.loads(ip("-n", ns, "-j", "addr", "show", "dev", UPLINK_IFNAME))
    assert [a["local"] for a in addresses[0]["addr_info"] if a["family"] == "inet"] == [
        str(side[100])
    ]
    assert netns_exec(ns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    table = json.loads(netns_exec(ns, "nft", "-j", "list", "table", "ip", NFT_TABLE))["nftables"]
    rules = [item["rule"] for item in table if "rule" in item]
    masquerades = [r for r in rules if r["chain"] == "postrouting"]
    assert len(masquerades) == 1
    text = json.dumps(masquerades[0]["expr"])
    assert '"masquerade"' in text and UPLINK_IFNAME in text and "10.10.10.0" in text
    chains = {i["chain"]["name"]: i["chain"] for i in table if "chain" in i}
    assert chains["forward"]["policy"] == "drop"
    assert running(gateway.uplink.process)
    argv = cmdline(gateway.uplink.process.pid)
    assert argv[0] == "slirp4netns" and f"/run/netns/{ns}" in argv
    assert "--disable-host-loopback" in argv and not any(a.startswith("--api") for a in argv)


@needs_uplink_tools
def test_an_uplink_is_plumbed_in_the_namespace_and_the_guest_reaches_its_gateway(
    names, fake_lab, run_dir
):
    lab = fake_lab(0)
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    gateway = open_with_uplink(lab, names, 0, run_dir)
    try:
        assert_uplink_plumbing(gateway)
        assert ping(lab.guest, "10.10.10.1")
        assert ask(gateway.ports[(GUEST, PORT)], "hi") == "lab-0 from 10.10.10.1: hi\n"
        assert_host_isolated(names)
        assert_host_untouched(names, forwarding)
        assert uplink_state_path(run_dir, gateway.namespace).exists()
    finally:
        close_gateway(gateway)
    assert gateway.uplink is not None
    assert not running(gateway.uplink.process)
    assert not running(gateway.relay)
    assert names.ours() == ({lab.guest}, {lab.bridge, names.guest_veth(0)})
    assert not uplink_state_path(run_dir, gateway.namespace).exists()
    assert_host_untouched(names, forwarding)


def _host_address() -> str | None:
    """A global IPv4 address of this host, if it has one."""
    for link in links().values():
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and info.get("scope") == "global":
                return str(info["local"])
    return None


@needs_uplink_tools
def test_the_guest_goes_out_through_the_uplink_but_not_to_the_host_loopback(
    names, fake_lab, run_dir
):
    """Out through the uplink to this host's own address (never further), and the host's
    loopback stays closed to the lab (slirp4netns's --disable-host-loopback)."""
    host = _host_address()
    if host is None:
        pytest.skip("this host has no global IPv4 address to be reached at")
    lab = fake_lab(0)
    ip("-n", lab.guest, "route", "add", "default", "via", "10.10.10.1")
    servers = [socket.create_server((host, 0)), socket.create_server(("127.0.0.1", 0))]
    ports = [server.getsockname()[1] for server in servers]
    peers: list[str] = []

    def serve(server: socket.socket) -> None:
        try:
            conn, peer = server.accept()
        except OSError:  # closed at the end of the test, nobody came
            return
        with conn:
            peers.append(peer[0])
            conn.makefile("rb").readline()
            conn.sendall(b"host here\n")

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    gateway = open_with_uplink(lab, names, 0, run_dir, targets=[])
    try:
        assert gateway.relay is None and gateway.ports == {}
        assert gateway.uplink is not None
        assert connect_from(lab.guest, host, ports[0]) == "answer host here"
        assert peers and ipaddress.ip_address(peers[0]) not in LAB_NET  # masqueraded, then slirp
        slirp_gateway = str(ipaddress.ip_network(gateway.uplink.network)[2])
        # slirp4netns answers for its gateway with an ICMP network unreachable
        to_loopback = connect_from(lab.guest, slirp_gateway, ports[1])
        assert to_loopback in ("refused", "error [Errno 101] Network is unreachable")
        assert len(peers) == 1  # the loopback server saw nobody
    finally:
        close_gateway(gateway)
        for server in servers:
            server.close()
    # no way out once the gateway is closed (and the server is gone: nothing could answer)
    assert connect_from(lab.guest, host, ports[0], timeout=2).startswith("error")


@needs_uplink_tools
def test_an_uplink_gateway_gets_its_relay_later(names, fake_lab, run_dir):
    lab = fake_lab(0)
    gateway = open_with_uplink(lab, names, 0, run_dir, targets=[])
    try:
        assert gateway.relay is None
        with pytest.raises(BackendError, match="not on the gateway's network"):
            add_relay(gateway, GATEWAY, [("10.10.20.2", 22)])
        gateway = add_relay(gateway, GATEWAY, [(GUEST, PORT)])
        assert ask(gateway.ports[(GUEST, PORT)], "late") == "lab-0 from 10.10.10.1: late\n"
        with pytest.raises(BackendError, match="has a relay already"):
            add_relay(gateway, GATEWAY, [(GUEST, PORT)])
        assert Gateway.from_json(json.loads(json.dumps(gateway.to_json()))) == gateway
    finally:
        close_gateway(gateway)
    assert not running(gateway.relay) and not running(gateway.uplink.process)
    assert names.ours() == ({lab.guest}, {lab.bridge, names.guest_veth(0)})


@needs_uplink_tools
def test_kill_9_of_the_opener_of_an_uplink_then_removal_from_recorded_names(
    names, fake_lab, run_dir
):
    lab = fake_lab(0)
    recorded = (names.gateway(0), names.host_veth(0), run_dir)  # what a ledger holds beforehand
    argv = [sys.executable, "-c", OPENER, recorded[0], lab.bridge, str(run_dir), recorded[1]]
    opener = subprocess.Popen([*argv, "uplink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        gateway = Gateway.from_json(json.loads(read_line(opener.stdout, Deadline(WAIT))))
    finally:
        opener.send_signal(signal.SIGKILL)
        opener.wait(WAIT)
    assert gateway.uplink is not None
    assert running(gateway.uplink.process) and running(gateway.relay)  # they outlive the opener
    assert ping(lab.guest, "10.10.10.1")
    assert remove_gateway(*recorded) == []  # both are found from their state files
    assert not running(gateway.uplink.process) and not running(gateway.relay)
    assert names.ours() == ({lab.guest}, {lab.bridge, names.guest_veth(0)})
    assert not ping(lab.guest, "10.10.10.1", timeout=2)


def test_an_uplink_without_its_tools_is_refused_and_nothing_is_made(
    names, fake_lab, run_dir, monkeypatch
):
    lab = fake_lab(0)
    before = names.ours()
    monkeypatch.setattr(gateway_module.shutil, "which", lambda program: None)
    with pytest.raises(BackendError, match=r"an uplink needs slirp4netns, nft .*host-setup"):
        open_with_uplink(lab, names, 0, run_dir)
    assert names.ours() == before


@pytest.mark.parametrize(
    ("lab_network", "side"),
    [
        ("10.10.10.0/24", "10.0.2.0/24"),
        ("10.0.2.0/24", "172.31.254.0/24"),
        ("10.0.0.0/8", "172.31.254.0/24"),
        ("0.0.0.0/0", None),
    ],
)
def test_the_uplink_side_never_overlaps_the_lab_network(lab_network, side):
    assert uplink_network(ipaddress.ip_network(lab_network)) == side
