"""Fake labs for the gateway tests, made with iproute2, and what the tests look at.

A fake lab is what libvirt makes of an isolated network, a bridge with no address (IPv6 off, as
libvirt leaves it), plus a "guest": a network namespace on the bridge at 10.10.10.2/24 running
an echo server that answers with its lab's label and the address the connection came from.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from pytest_starlingx.backends.gateway import remove_gateway
from pytest_starlingx.ownership import Holder
from pytest_starlingx.waits import Deadline

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2",
)

GATEWAY = "10.10.10.1/24"
GUEST = "10.10.10.2"
PORT = 7000
WAIT = 20.0  # seconds any one event may take on a busy host

ECHO_SERVER = """
import socket, sys
label, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = socket.create_server((address, port))
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    with conn:
        line = conn.makefile("rb").readline()
        conn.sendall(f"{label} from {peer[0]}: ".encode() + line)
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
    """Names of the network namespaces in /run/netns."""
    return {entry["name"] for entry in json.loads(ip("-j", "netns", "list") or "[]")}


def links() -> dict[str, dict[str, Any]]:
    """The host namespace's links with their addresses, by name."""
    return {link["ifname"]: link for link in json.loads(ip("-j", "addr", "show"))}


def read_line(stream: IO[bytes], deadline: Deadline) -> bytes:
    """One line from a child's stdout, waiting for it (never past the deadline)."""
    ready, _, _ = select.select([stream], [], [], deadline.remaining)
    assert ready, f"nothing to read within {deadline.timeout:.0f}s"
    return stream.readline()


def ask(port: int, text: str) -> str:
    """Send a line to 127.0.0.1:``port``, half-close, read the answer to its end. A connection
    the other end resets (a relay whose target refused closes it, maybe before the line
    arrives) ends the answer there."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        try:
            sock.sendall(text.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(4096):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:  # shutdown() of a connection reset already
                raise
    return answer.decode()


def refused(port: int) -> bool:
    """Whether nothing listens at 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


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


@dataclass
class FakeLab:
    """A bridge with no address and a guest namespace on it answering at GUEST:PORT."""

    label: str
    bridge: str
    guest: str
    guest_veth: str
    server: subprocess.Popen[bytes]

    @classmethod
    def make(cls, label: str, bridge: str, guest: str, guest_veth: str) -> FakeLab:
        """Bridge ``bridge`` (made unless it exists), namespace ``guest`` on it through veth
        ``guest_veth``, its echo server answering with ``label``, ready."""
        if bridge not in links():
            ip("link", "add", bridge, "type", "bridge")
            no_ipv6(bridge)
            ip("link", "set", bridge, "up")
        ip("netns", "add", guest)
        ip("link", "add", guest_veth, "type", "veth", "peer", "name", "eth0", "netns", guest)
        no_ipv6(guest_veth)
        ip("link", "set", guest_veth, "master", bridge)
        ip("link", "set", guest_veth, "up")
        ip("-n", guest, "addr", "add", f"{GUEST}/24", "dev", "eth0")
        ip("-n", guest, "link", "set", "eth0", "up")
        argv = [sys.executable, "-c", ECHO_SERVER, label, GUEST, str(PORT)]
        server = subprocess.Popen(["ip", "netns", "exec", guest, *argv], stdout=subprocess.PIPE)
        lab = cls(label, bridge, guest, guest_veth, server)
        try:
            assert server.stdout is not None
            assert read_line(server.stdout, Deadline(WAIT)) == b"ready\n"
        except BaseException:
            lab.stop()
            raise
        return lab

    def stop(self) -> None:
        """Stop the echo server (the namespace and links go with :func:`sweep`)."""
        self.server.kill()
        self.server.wait()


def sweep(prefixes: tuple[str, ...], run_dir: Path) -> None:
    """Remove every namespace and link whose name starts with one of ``prefixes`` (a test's
    own): gateway namespaces (``-gw`` in the name) with their relays, recorded in ``run_dir``."""
    for namespace in namespaces():
        if not namespace.startswith(prefixes):
            continue
        if "-gw" in namespace:
            remove_gateway(namespace, None, run_dir)
        else:
            subprocess.run(["ip", "netns", "del", namespace], check=False)
    for link in links():
        if link.startswith(prefixes):  # a namespace's veth may be going meanwhile
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


PING = """
import os, socket, struct, sys, time
target, size = sys.argv[1], int(sys.argv[2])

def checksum(data):
    data += b"\\0" * (len(data) % 2)
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

ident, payload = os.getpid() & 0xFFFF, bytes(i % 251 for i in range(size))
header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER, IP_PMTUDISC_DO: DF, never fragment
sock.settimeout(1)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:  # the first requests may go before ARP is answered
    sock.sendto(packet, (target, 0))
    try:
        data, (peer, _) = sock.recvfrom(4096)
    except TimeoutError:
        continue
    offset = (data[0] & 0x0F) * 4
    kind, _, _, rid, _ = struct.unpack("!BBHHH", data[offset:offset + 8])
    if peer == target and kind == 0 and rid == ident and data[offset + 8:] == payload:
        print(f"{len(data)} bytes from {peer}")
        sys.exit(0)
print(f"no reply from {target}")
sys.exit(1)
"""


def ping_reply(namespace: str, address: str, timeout: float, size: int = 8) -> str | None:
    """From ``namespace``, ICMP echoes of ``size`` payload bytes with DF (a raw socket: root,
    no ping binary needed) to ``address``, one a second, until a full reply comes back (its
    line, ``<IP packet size> bytes from <address>``) or ``timeout`` seconds pass (None)."""
    argv = ["ip", "netns", "exec", namespace, sys.executable, "-c", PING, address, str(size),
            str(timeout)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + WAIT)
    assert proc.returncode in (0, 1), f"ping {address} from {namespace}: {proc.stderr}"
    return proc.stdout.strip() if proc.returncode == 0 else None


def ping(namespace: str, address: str, timeout: float = 5.0) -> bool:
    """Whether ``address`` answers ICMP echoes sent from ``namespace`` within ``timeout``."""
    return ping_reply(namespace, address, timeout) is not None


CONNECT = """
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((address, port), timeout=float(sys.argv[3])) as sock:
        sock.sendall(b"hello\\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    print("answer", answer.decode().strip())
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("error", exc)
"""


def connect_from(namespace: str, address: str, port: int, timeout: float = 10.0) -> str:
    """From ``namespace``: send a line to ``address:port``; ``answer <text>``, ``refused`` or
    ``error <what>``."""
    argv = [
        "ip", "netns", "exec", namespace, sys.executable, "-c", CONNECT, address, str(port),
        str(timeout),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + WAIT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def netns_exec(namespace: str, *argv: str) -> str:
    """Run ``argv`` in ``namespace``; its stdout (fails the test on an error)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, timeout=WAIT
    )
    assert proc.returncode == 0, f"{' '.join(argv)} in {namespace}: {proc.stderr}"
    return proc.stdout
