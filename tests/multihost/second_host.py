"""A second libvirt "host" on this machine, made and removed by the tests.

What :func:`second_host` makes, every name starting with the test's token (``tmh<hex>``):

* network namespace ``<token>`` (its own links, bridges, routes and firewall tables);
* directories under ``TEST_ROOT/<token>/`` (mode 0755: libvirt's QEMU user traverses them):
  ``run``, ``lib``, ``log``, ``cache`` and ``etc``, bind-mounted over ``/run/libvirt``,
  ``/var/lib/libvirt``, ``/var/log/libvirt``, ``/var/cache/libvirt`` and ``/etc/libvirt`` in a
  mount namespace of its own (``unshare --mount --uts``, private propagation, so nothing shows
  in this host's mounts), which also has its own hostname (the token) and a sysfs of its
  network namespace (libvirt sets its bridges up through ``/sys/class/net``) with this host's
  cgroup hierarchies bound back under it (domains' CPU shares need them);
* minimal ``libvirtd.conf``, ``virtlogd.conf`` and an empty ``qemu.conf`` (nothing of the
  system's persistent domains or networks), and a copy of the system's QEMU capabilities cache
  (saves a probe of every QEMU binary at start-up);
* its own virtlogd and libvirtd, started in the namespaces as ``virtlogd-<token>`` and
  ``libvirtd-<token>`` (symlinks to the daemons: a ``pgrep -x libvirtd`` for the system's
  daemon does not find them), pid files in the token's directory, reached from here at
  ``qemu+unix:///system?socket=<dir>/run/libvirt-sock``;
* an underlay: veth ``<token>u`` here with ``198.18.<n>.1/30``, its peer ``underlay0`` in the
  namespace with ``.2``, both MTU 1550. 198.18.0.0/15 is RFC 2544's range for network
  benchmark tests: neither a lab range (10.10.10.0/24 OAM, 192.168.204.0/24 management) nor
  one a real network uses; ``<n>`` is random, and a /30 in use here is skipped.

:func:`remove` destroys its domains and networks through its libvirtd, then kills every
process in its network namespace (daemons and QEMU), deletes the veth and the namespace (the
mount namespace goes with its last process) and the directories; :func:`leftovers` lists what
remains of it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from pytest_starlingx.backends.span import UNDERLAY_MTU, HostCommands, SpanHost

logger = logging.getLogger("tests.multihost")

#: Not under /tmp/pytest-of-<user> (mode 0700): libvirt's QEMU user must traverse it.
TEST_ROOT = Path("/var/tmp/pytest-starlingx-tests")
UNDERLAY_RANGE = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544
UNDERLAY_IFNAME = "underlay0"
SYSTEM_URI = "qemu:///system"  # this host's libvirtd
#: The mark of tests that make a second host: skipped where one cannot be made.
NEEDS_SECOND_HOST = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("ip") is None
    or shutil.which("unshare") is None
    or not Path("/usr/sbin/libvirtd").exists(),
    reason="a second libvirt host needs root, iproute2, util-linux and libvirtd",
)
START_TIMEOUT = 60.0  # seconds libvirtd gets to answer (a busy 2-core host)
STOP_TIMEOUT = 10.0  # seconds processes get to exit after SIGTERM, then after SIGKILL
WAIT = 30.0  # seconds one command may take
#: Directories of the host, bound over the system's libvirt directories.
BOUND = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
}
LIBVIRTD_CONF = """\
# Only root reaches the socket (its directory is the test's); no polkit.
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""
VIRTLOGD_CONF = 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n'
#: Run by ``unshare --mount --uts --propagation private`` in this host's network namespace.
#: Arguments: the host's directory, its network namespace, its hostname.
LAUNCHER = """
set -eu
base=$1 netns=/run/netns/$2
hostname "$3"
mount --rbind /sys/fs/cgroup "$base/cgroup"
nsenter --net="$netns" mount -t sysfs sysfs /sys
mount --rbind "$base/cgroup" /sys/fs/cgroup
umount -l "$base/cgroup"
for pair in run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt \\
        cache:/var/cache/libvirt etc:/etc/libvirt; do
    mount --bind "$base/${pair%%:*}" "${pair#*:}"
done
exec nsenter --net="$netns" sh -c '
    ip link set lo up
    "$1/bin/virtlogd-$2" --pid-file "$1/virtlogd.pid" &
    exec "$1/bin/libvirtd-$2" --pid-file "$1/libvirtd.pid"
' launcher "$base" "$3"
"""


class SecondHostError(Exception):
    """The second host did not come up; the message quotes its daemons' logs."""


@dataclass
class SecondHost:
    """A libvirt host in namespaces of this machine."""

    token: str
    base: Path
    daemon: subprocess.Popen[bytes]
    underlay: str  # its end of the underlay
    local_underlay: str  # this host's end
    host_veth: str  # this host's end's name
    netns_inode: int
    mntns_inode: int

    @property
    def namespace(self) -> str:
        """Its network namespace."""
        return self.token

    @property
    def uri(self) -> str:
        """Its libvirt URI."""
        return f"qemu+unix:///system?socket={self.base / 'run' / 'libvirt-sock'}"

    @property
    def commands(self) -> HostCommands:
        """How network commands reach it."""
        return HostCommands.in_namespace(self.uri, self.namespace)

    def span_host(self) -> SpanHost:
        """It as one host of a lab network's span."""
        return SpanHost(self.commands, self.underlay)

    def local_span_host(self, uri: str = SYSTEM_URI) -> SpanHost:
        """This host (the system libvirtd's) as the other end of its underlay."""
        return SpanHost(HostCommands(uri), self.local_underlay)

    def ip(self, *argv: str) -> str:
        """``ip argv`` in its network namespace; stdout."""
        return run("ip", "-n", self.namespace, *argv)


def run(*argv: str) -> str:
    """Run ``argv``; its stdout, or ``AssertionError`` with its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT, check=False)
    assert proc.returncode == 0, f"`{' '.join(argv)}` failed: {proc.stderr.strip()}"
    return proc.stdout


@contextlib.contextmanager
def second_host(token: str) -> Iterator[SecondHost]:
    """A second libvirt host named ``token``, removed on the way out (also after a failure,
    also when its start failed half-way); ``AssertionError`` if anything of it remains."""
    base = TEST_ROOT / token
    host = None
    try:
        host = _start(token, base)
        _wait_ready(host)
        host.mntns_inode = os.stat(f"/proc/{host.daemon.pid}/ns/mnt").st_ino
        logger.info("second host %s: libvirtd %d at %s", token, host.daemon.pid, host.uri)
        yield host
    finally:
        problems = remove(host) if host is not None else _remove_names(token, base)
        remains = leftovers(token, host)
        assert not problems and not remains, f"second host {token}: {problems + remains}"


def _start(token: str, base: Path) -> SecondHost:
    """Its directories, namespace and underlay; its daemons started (not waited for)."""
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    TEST_ROOT.chmod(0o755)
    base.mkdir(mode=0o755)
    for sub in (*BOUND, "cgroup", "bin"):
        (base / sub).mkdir(mode=0o755)
    (base / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    (base / "etc" / "virtlogd.conf").write_text(VIRTLOGD_CONF)
    (base / "etc" / "qemu.conf").write_text("")
    capabilities = Path("/var/cache/libvirt/qemu/capabilities")
    if capabilities.is_dir():
        shutil.copytree(capabilities, base / "cache" / "qemu" / "capabilities")
    for daemon in ("virtlogd", "libvirtd"):
        (base / "bin" / f"{daemon}-{token}").symlink_to(f"/usr/sbin/{daemon}")
    run("ip", "netns", "add", token)
    local, remote = _underlay_pair()
    host_veth = f"{token}u"
    run("ip", "link", "add", host_veth, "mtu", str(UNDERLAY_MTU), "type", "veth", "peer", "name",
        UNDERLAY_IFNAME, "mtu", str(UNDERLAY_MTU), "netns", token)  # fmt: skip
    run("ip", "link", "set", host_veth, "addrgenmode", "none")
    run("ip", "addr", "add", f"{local}/30", "dev", host_veth)
    run("ip", "link", "set", host_veth, "up")
    run("ip", "-n", token, "addr", "add", f"{remote}/30", "dev", UNDERLAY_IFNAME)
    run("ip", "-n", token, "link", "set", UNDERLAY_IFNAME, "up")
    with (base / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", LAUNCHER, "launcher", str(base), token, token],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return SecondHost(
        token, base, daemon, str(remote), str(local), host_veth,
        netns_inode=os.stat(f"/run/netns/{token}").st_ino, mntns_inode=0,
    )  # fmt: skip


def _underlay_pair() -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """This host's and the second host's underlay addresses: a /30 of 198.18.0.0/15 that no
    interface here is on."""
    taken = [
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in json.loads(run("ip", "-j", "-4", "addr", "show"))
        for a in link.get("addr_info", [])
    ]
    subnets = list(UNDERLAY_RANGE.subnets(new_prefix=30))
    for subnet in random.sample(subnets, 64):
        if not any(subnet.overlaps(t) for t in taken):
            first, second = list(subnet.hosts())
            return first, second
    raise AssertionError(f"no free /30 in {UNDERLAY_RANGE} among 64 tried")


def _wait_ready(host: SecondHost) -> None:
    """Wait until its libvirtd answers at its URI and its virtlogd listens."""
    deadline = time.monotonic() + START_TIMEOUT
    sockets = [host.base / "run" / "libvirt-sock", host.base / "run" / "virtlogd-sock"]
    while time.monotonic() < deadline:
        if host.daemon.poll() is not None:
            raise SecondHostError(_problem(host, f"libvirtd exited ({host.daemon.returncode})"))
        if all(s.exists() for s in sockets):
            with contextlib.suppress(libvirt.libvirtError):
                libvirt.open(host.uri).close()
                return
        time.sleep(0.2)
    raise SecondHostError(_problem(host, f"libvirtd did not answer within {START_TIMEOUT:.0f}s"))


def _problem(host: SecondHost, what: str) -> str:
    tails = []
    for log in (host.base / "daemon.log", host.base / "log" / "libvirtd.log"):
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()[-10:]
            tails.append(f"{log}:\n  " + "\n  ".join(lines))
    return f"second host {host.token}: {what}; " + "\n".join(tails)


# --------------------------------------------------------------------------- removal


def remove(host: SecondHost) -> list[str]:
    """Remove the second host; what could not be removed."""
    problems = []
    if host.daemon.poll() is None:
        try:
            _undefine_all(host.uri)
        except libvirt.libvirtError as exc:
            problems.append(f"removing its libvirt objects: {exc}")
    problems += _kill_namespace(host.namespace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        host.daemon.wait(STOP_TIMEOUT)
    return problems + _remove_names(host.token, host.base)


def _undefine_all(uri: str) -> None:
    """Destroy and undefine every domain and network of a libvirtd (all the test's)."""
    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains():
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
        for net in conn.listAllNetworks():
            persistent = net.isPersistent()
            if net.isActive():
                net.destroy()
            if persistent:
                net.undefine()
    finally:
        conn.close()


def _kill_namespace(namespace: str) -> list[str]:
    """SIGTERM, then SIGKILL, every process in network namespace ``namespace``."""
    if not Path(f"/run/netns/{namespace}").exists():
        return []
    for signum in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in run("ip", "netns", "pids", namespace).split()]
        if not pids:
            return []
        _signal_and_wait(pids, signum)
    left = run("ip", "netns", "pids", namespace).split()
    return [f"processes {' '.join(left)} in {namespace} survived SIGKILL"] if left else []


def _signal_and_wait(pids: list[int], signum: int) -> None:
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fd = os.pidfd_open(pid)
            fds.append(fd)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signum)
    deadline = time.monotonic() + STOP_TIMEOUT
    try:
        for fd in fds:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        for fd in fds:
            os.close(fd)


def _remove_names(token: str, base: Path) -> list[str]:
    """Delete the underlay veth and the namespace, then the directories."""
    problems = []
    for argv in (("ip", "link", "del", f"{token}u"), ("ip", "netns", "del", token)):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT, check=False)
        if proc.returncode != 0 and "ot exist" not in proc.stderr and "No such" not in proc.stderr:
            problems.append(f"`{' '.join(argv)}`: {proc.stderr.strip()}")
    shutil.rmtree(base, ignore_errors=True)
    return problems


def leftovers(token: str, host: SecondHost | None = None) -> list[str]:
    """What remains of second host ``token``: its namespace, veth, directory, processes
    (in its network or mount namespace, or its daemons by name), domains' cgroups."""
    found = []
    if Path(f"/run/netns/{token}").exists():
        found.append(f"namespace {token}")
    if any(link["ifname"].startswith(token) for link in json.loads(run("ip", "-j", "link"))):
        found.append(f"links {token}*")
    if (TEST_ROOT / token).exists():
        found.append(f"directory {TEST_ROOT / token}")
    inodes = set() if host is None else {host.netns_inode, host.mntns_inode}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            names = {os.stat(proc / "ns" / ns).st_ino for ns in ("net", "mnt")}
            if names & inodes or token in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(f"process {proc.name}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/machine/*{token}*")]
    return found
