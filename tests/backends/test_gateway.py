"""Lab gateways (``backends/gateway.py``) on fake labs made here with iproute2.

A fake lab is what libvirt makes of an isolated network, a bridge with no address (IPv6 off, as
libvirt leaves it), plus a "guest": a network namespace on the bridge at 10.10.10.2/24 running
an echo server that names its lab and the address the connection came from. Every name made
here starts with the test's own token (``tgw<hex>``) and is removed at teardown.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_starlingx.backends.gateway import (
    Gateway,
    close_gateway,
    open_gateway,
    remove_gateway,
    state_path,
)
from pytest_starlingx.errors import BackendError
from pytest_starlingx.ownership import Holder
from pytest_starlingx.waits import Deadline

pytestmark = [
    pytest.mark.fast,  # needs no VM and no libvirt daemon; needs root and iproute2
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="network namespaces need root and iproute2",
    ),
]

LAB_NET = ipaddress.ip_network("10.10.10.0/24")
GATEWAY = "10.10.10.1/24"
GUEST = "10.10.10.2"
PORT = 7000
WAIT = 20.0  # seconds any one event may take on a busy host

ECHO_SERVER = """
import socket, sys
lab, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = socket.create_server((address, port))
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    with conn:
        line = conn.makefile("rb").readline()
        conn.sendall(f"{lab} from {peer[0]}: ".encode() + line)
"""

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


def ip(*argv: str) -> str:
    """Run ``ip argv``; its stdout (fails the test on an error)."""
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, f"ip {' '.join(argv)}: {proc.stderr}"
    return proc.stdout


def no_ipv6(ifname: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
    if knob.parent.exists():
        knob.write_text("1")


def namespaces() -> set[str]:
    return {entry["name"] for entry in json.loads(ip("-j", "netns", "list") or "[]")}


def links() -> dict[str, dict]:
    """The host namespace's links and their addresses, by name."""
    return {link["ifname"]: link for link in json.loads(ip("-j", "addr", "show"))}


def read_line(stream, deadline: Deadline) -> bytes:
    """One line from a child's stdout, waiting for it (never past the deadline)."""
    ready, _, _ = select.select([stream], [], [], deadline.remaining)
    assert ready, f"nothing to read within {deadline.timeout:.0f}s"
    return stream.readline()


def ask(port: int, text: str) -> str:
    """Send a line to 127.0.0.1:``port``, half-close, read the answer to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(text.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode()


def running(holder: Holder) -> bool:
    """Whether the process still runs (a zombie waiting for its reaper does not)."""
    if not holder.alive():
        return False
    try:
        stat = Path(f"/proc/{holder.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_exit(holder: Holder) -> None:
    """Wait for a process that is not our child to exit."""
    try:
        pidfd = os.pidfd_open(holder.pid)
    except ProcessLookupError:
        return
    try:
        if running(holder):
            ready, _, _ = select.select([pidfd], [], [], WAIT)
            assert ready, f"{holder} still runs after {WAIT:.0f}s"
    finally:
        os.close(pidfd)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


@dataclass
class FakeLab:
    """A bridge with no address and a guest namespace on it answering at GUEST:PORT."""

    name: str
    bridge: str
    guest: str
    server: subprocess.Popen


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
def names(tmp_path: Path) -> Iterator[Names]:
    """The test's names; at teardown every gateway, namespace and link carrying them goes."""
    made = Names()
    try:
        yield made
    finally:
        spaces, _ = made.ours()
        for namespace in spaces:
            if "-gw" in namespace:  # stops its relay too
                remove_gateway(namespace, None, tmp_path / "run")
            else:
                subprocess.run(["ip", "netns", "del", namespace], check=False)
        for link in made.ours()[1]:  # a namespace's veth may be going meanwhile
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


@pytest.fixture
def fake_lab(names: Names) -> Iterator[Callable[[int], FakeLab]]:
    """Makes fake lab ``i``: bridge, guest namespace, echo server saying ``lab-<i>``."""
    servers: list[subprocess.Popen] = []

    def make(i: int) -> FakeLab:
        bridge, guest, veth = names.bridge(i), names.guest(i), names.guest_veth(i)
        ip("link", "add", bridge, "type", "bridge")
        no_ipv6(bridge)
        ip("link", "set", bridge, "up")
        ip("netns", "add", guest)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", guest)
        no_ipv6(veth)
        ip("link", "set", veth, "master", bridge)
        ip("link", "set", veth, "up")
        ip("-n", guest, "addr", "add", f"{GUEST}/24", "dev", "eth0")
        ip("-n", guest, "link", "set", "eth0", "up")
        argv = [sys.executable, "-c", ECHO_SERVER, f"lab-{i}", GUEST, str(PORT)]
        server = subprocess.Popen(["ip", "netns", "exec", guest, *argv], stdout=subprocess.PIPE)
        servers.append(server)
        assert read_line(server.stdout, Deadline(WAIT)) == b"ready\n"
        return FakeLab(f"lab-{i}", bridge, guest, server)

    try:
        yield make
    finally:
        for server in servers:
            server.kill()
            server.wait()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


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
    proc = subprocess.run(["ip", "-j", "route", "get", GUEST], capture_output=True, text=True)
    if proc.returncode == 0:  # no route at all is fine too
        route = json.loads(proc.stdout)[0]
        assert not route.get("dev", "").startswith(names.token), route


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
