"""Lab gateways (``backends/gateway.py``) on fake labs made here with iproute2
(``netns_helpers.FakeLab``). Every name made here starts with the test's own token
(``tgw<hex>``) and is removed at teardown, even when the test fails."""

from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import socket
import subprocess
import sys
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
    ip,
    links,
    namespaces,
    needs_netns,
    read_line,
    refused,
    running,
    sweep,
    wait_exit,
)

from pytest_starlingx.backends.gateway import (
    Gateway,
    close_gateway,
    open_gateway,
    remove_gateway,
    state_path,
)
from pytest_starlingx.errors import BackendError
from pytest_starlingx.waits import Deadline

pytestmark = [pytest.mark.fast, needs_netns]  # no VM, no libvirt daemon; root and iproute2

LAB_NET = ipaddress.ip_network("10.10.10.0/24")

OPENER = """
import json, sys
from pathlib import Path
from pytest_starlingx.backends.gateway import open_gateway
namespace, bridge, run_dir, host_veth = sys.argv[1:5]
gateway = open_gateway(
    namespace, bridge, "10.10.10.1/24", [("10.10.10.2", 7000)], Path(run_dir), host_veth=host_veth
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
        [sys.executable, "-c", OPENER, recorded[0], lab.bridge, str(run_dir), recorded[1]],
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
        (GATEWAY, [], "no targets"),
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
