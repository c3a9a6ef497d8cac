"""A lab network's gateway: the host reaches lab addresses at loopback ports, while its own
network stack never has an address on a lab network and never sends to a lab address.

A gateway is a network namespace on the lab network's bridge that holds the gateway address,
and a relay that listens on ``127.0.0.1`` in the host's namespace and connects to lab addresses
from inside the gateway namespace (:mod:`pytest_starlingx.backends.relay`). Two labs with the
same addressing (both ``10.10.10.0/24``) each get their own namespace, so they never meet.

What :func:`open_gateway` makes, through iproute2 (argv lists, no shell):

* network namespace ``name`` (``/run/netns/<name>``), its ``lo`` up;
* a veth pair: the host end ``host_veth`` enslaved to the bridge and up, with no address (IPv6
  is switched off on it before it goes up, so not even a link-local one); the other end, moved
  into the namespace as ``gw0``, with the gateway address, up;
* the relay, detached (its own session, reparented away from the caller), logging to
  ``<run_dir>/<name>.relay.log`` and recording itself and its ports in
  ``<run_dir>/<name>.relay.json`` (none when there are no targets: a gateway for its uplink);
* with ``uplink=True``, a way out for the lab network (see *Uplink* below): in the namespace,
  ``net.ipv4.ip_forward=1`` and nftables table ``ip stx_uplink`` (forwarding from the lab
  network out of ``up0`` and back, masquerading it there), then ``slirp4netns`` attached to the
  namespace, which makes ``up0`` and carries its traffic out through ordinary sockets of the
  host; it records itself in ``<run_dir>/<name>.uplink.json`` (before it runs: see
  :mod:`pytest_starlingx.backends.uplink`) and logs to ``<run_dir>/<name>.uplink.log``.

:func:`remove_gateway` takes these recorded names only, so it works after the process that
opened the gateway was killed: it stops the relay and the uplink process if each is still that
process (pid and start time), deletes the host veth (which takes ``gw0`` with it) and the
namespace. A relay that was never recorded (its opener killed before the report) exits by
itself within a second of its namespace going; the uplink process records itself before it
runs (:mod:`pytest_starlingx.backends.uplink`).

Why not passt's ``pasta``? It was considered first (Debian 12 ships passt 0.0~git20230309; it
is not installed here). Its ``-t 22`` "forward[s] local port 22 to 22 in the target namespace"
(pasta(1)): for local traffic it splices the connection to a socket it opens in the namespace,
to the namespace's own address; it never connects to another host behind the namespace.
Reaching the lab's controller that way would need DNAT rules inside the namespace for
connections to its loopback (nftables plus ``route_localnet``); pasta would also add a tap
device of its own to the namespace, and its default ``-T auto``/``-U auto`` forward ports the
other way, from the namespace to the host's loopback, which a lab must not reach. A new host
package and NAT rules, against the relay's ~200 lines of standard library that connect to the
target directly: the relay it is.

Uplink. StarlingX's own libvirt set-up (starlingx/tools ``deployment/libvirt/setup_network.sh``,
commit 6e0fbcfd, before ``deployment`` moved to a repository of its own) gives the host the
OAM gateway address on the OAM bridge (``ip addr add $EXTERNAL_IP dev stxbr1``, 10.10.10.1/24)
and masquerades the OAM network in the host's own tables (``iptables -t nat -A POSTROUTING -s
$EXTERNAL_NETWORK -j MASQUERADE``), so that the bootstrap can pull its images. Here the same
address and masquerading live in the lab's gateway namespace instead: the host gets no address
on the lab network, its firewall tables, routes and sysctls are not touched, and two NAT labs
with the same addressing do not collide. The namespace's way out is ``slirp4netns`` (Debian's
``slirp4netns``, 1.2.0 in Debian 12), a user-mode TCP/IP stack: it owns the namespace's ``up0``
(``10.0.2.100`` on ``10.0.2.0/24`` with the default route via ``10.0.2.2``, or another private
/24 when the lab network overlaps that one) and turns what leaves through it into connections
and datagrams of its own, from the host's namespace. It forwards no port into the namespace
(that needs its API socket, which is not opened), ``--disable-host-loopback`` refuses
connections to the host's loopback (``10.0.2.2``), ``--disable-dns`` switches off its DNS
forwarder (the lab's own ``dns_servers`` are reached through the NAT). Its ``--enable-sandbox``
must not be used: tried once here, it unmounted the namespace's ``/run/netns`` entry in the
host's mount namespace. ``ip netns add`` makes ``/run/netns`` a shared mount, so what the
sandbox's new mount namespace unmounts under it is, most likely, unmounted on the host too:
every named namespace of the host, not only the lab's, would lose its entry. passt's ``pasta`` was
the other candidate (not tried here): by default "guest and host share IP addresses, routes, and
port bindings" (pasta(1)), so it needs ``-t none -u none -T none -U none`` and ``--no-map-gw`` to
keep the lab off the host, and its sandbox cannot be switched off, where slirp4netns keeps a private
network of its own and forwards nothing in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pytest_starlingx.errors import BackendError, LeakError
from pytest_starlingx.ownership import Holder, process_start
from pytest_starlingx.waits import Deadline

logger = logging.getLogger("pytest_starlingx.backend")

RUN_NETNS = Path("/run/netns")
GATEWAY_IFNAME = "gw0"
READY_TIMEOUT = 15.0  # seconds the relay gets to report its ports (a busy 2-core host)
STOP_TIMEOUT = 5.0  # seconds the relay gets to exit after SIGTERM, then again after SIGKILL
IP_TIMEOUT = 30.0  # seconds one `ip` command may take
NAMESPACE_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
IFNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # IFNAMSIZ - 1
_LOG_TAIL = 10  # lines of a relay's or uplink's log quoted in an error
UPLINK_IFNAME = "up0"
#: slirp4netns's side of an uplink: its default network, or the next one that does not overlap
#: the lab network (the namespace would have two routes to the same addresses).
UPLINK_NETWORKS = ("10.0.2.0/24", "172.31.254.0/24", "192.168.254.0/24")
NFT_TABLE = "stx_uplink"  # in the gateway namespace only
UPLINK_TOOLS = {"slirp4netns": "slirp4netns", "nft": "nftables"}  # program: Debian package

Target = tuple[str, int]


def _holder_json(holder: Holder) -> dict[str, Any]:
    return {"host": holder.host, "pid": holder.pid, "start": holder.start}


@dataclass(frozen=True)
class Uplink:
    """A gateway's way out: the slirp4netns process and its side's network (the namespace
    is ``.100`` on it, with the default route via ``.2``)."""

    process: Holder
    network: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {"process": _holder_json(self.process), "network": self.network}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Uplink:
        """The inverse of :meth:`to_json`."""
        return cls(Holder(**data["process"]), data["network"])


@dataclass(frozen=True)
class Gateway:
    """An open gateway: ``ports[(address, port)]`` is the loopback port that reaches it.

    ``relay`` is None when the gateway has no targets (opened for its uplink only);
    ``uplink`` is None when the lab network has no way out."""

    namespace: str
    host_veth: str
    relay: Holder | None
    ports: dict[Target, int]
    run_dir: Path
    uplink: Uplink | None = None

    def processes(self) -> list[Holder]:
        """The gateway's processes: relay and uplink, where there are."""
        uplink = None if self.uplink is None else self.uplink.process
        return [h for h in (self.relay, uplink) if h is not None]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {
            "namespace": self.namespace,
            "host_veth": self.host_veth,
            "relay": None if self.relay is None else _holder_json(self.relay),
            "ports": [[host, port, local] for (host, port), local in self.ports.items()],
            "run_dir": str(self.run_dir),
            "uplink": None if self.uplink is None else self.uplink.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Gateway:
        """The inverse of :meth:`to_json`."""
        relay, uplink = data["relay"], data.get("uplink")
        return cls(
            namespace=data["namespace"],
            host_veth=data["host_veth"],
            relay=None if relay is None else Holder(**relay),
            ports={(host, port): local for host, port, local in data["ports"]},
            run_dir=Path(data["run_dir"]),
            uplink=None if uplink is None else Uplink.from_json(uplink),
        )


@dataclass(frozen=True)
class GatewayRecord:
    """What a lab's ledger keeps of a gateway: its names, address and targets, written before
    anything is made, then the open :class:`Gateway`."""

    namespace: str
    host_veth: str
    address: str
    targets: tuple[Target, ...]
    gateway: Gateway | None = None
    uplink: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {
            "namespace": self.namespace,
            "host_veth": self.host_veth,
            "address": self.address,
            "targets": [[host, port] for host, port in self.targets],
            "gateway": None if self.gateway is None else self.gateway.to_json(),
            "uplink": self.uplink,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GatewayRecord:
        """The inverse of :meth:`to_json`."""
        gateway = data["gateway"]
        return cls(
            namespace=data["namespace"],
            host_veth=data["host_veth"],
            address=data["address"],
            targets=tuple((host, port) for host, port in data["targets"]),
            gateway=None if gateway is None else Gateway.from_json(gateway),
            uplink=bool(data.get("uplink", False)),
        )


def existing(namespace: str, host_veth: str) -> list[str]:
    """Which of a gateway's names are taken on this host."""
    taken = [f"namespace {namespace}"] if _namespace_exists(namespace) else []
    if _link(host_veth) is not None:
        taken.append(f"link {host_veth}")
    return taken


def state_path(run_dir: Path, namespace: str) -> Path:
    """Where the relay of gateway ``namespace`` records itself and its ports."""
    return run_dir / f"{namespace}.relay.json"


def log_path(run_dir: Path, namespace: str) -> Path:
    """The relay's log."""
    return run_dir / f"{namespace}.relay.log"


def uplink_state_path(run_dir: Path, namespace: str) -> Path:
    """Where the uplink process of gateway ``namespace`` records itself."""
    return run_dir / f"{namespace}.uplink.json"


def uplink_log_path(run_dir: Path, namespace: str) -> Path:
    """The uplink process's log."""
    return run_dir / f"{namespace}.uplink.log"


# --------------------------------------------------------------------------- iproute2


def _ip(*argv: str, what: str, stdin: str | None = None) -> str:
    """Run ``ip argv``; its stdout, or ``BackendError`` naming ``what`` and ip's stderr."""
    cmd = ["ip", *argv]
    logger.debug("%s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"{what}: `{' '.join(cmd)}` did not run: {exc}") from exc
    if proc.returncode != 0:
        raise BackendError(f"{what}: `{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def _link(name: str) -> dict[str, Any] | None:
    """The host-namespace link ``name`` (``ip -j -d link``), or None when there is none."""
    proc = subprocess.run(
        ["ip", "-j", "-d", "link", "show", "dev", name],
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            return None
        raise BackendError(f"looking up link {name}: {proc.stderr.strip()}")
    links: list[dict[str, Any]] = json.loads(proc.stdout)
    return links[0] if links else None


def _link_kind(link: dict[str, Any]) -> str:
    return str(link.get("linkinfo", {}).get("info_kind", ""))


def _namespace_exists(name: str) -> bool:
    return (RUN_NETNS / name).exists()


def _disable_ipv6(ifname: str) -> None:
    """No IPv6 (not even a link-local address) on a host interface; nothing to do without
    IPv6 on the host."""
    knob = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
    if knob.parent.parent.exists():
        try:
            knob.write_text("1")
        except OSError as exc:
            raise BackendError(f"switching IPv6 off on {ifname}: {exc}") from exc


# --------------------------------------------------------------------------- checks


def _check(
    name: str,
    host_veth: str,
    bridge: str,
    address: str,
    targets: Sequence[Target],
    uplink: bool = False,
) -> list[Target]:
    """The targets, checked with the rest; ``BackendError`` listing every problem."""
    problems = []
    if not NAMESPACE_PATTERN.fullmatch(name):
        problems.append(f"namespace name {name!r} must match {NAMESPACE_PATTERN.pattern}")
    for what, ifname in (("host veth", host_veth), ("bridge", bridge)):
        if not IFNAME_PATTERN.fullmatch(ifname):
            problems.append(f"{what} name {ifname!r} must match {IFNAME_PATTERN.pattern}")
    network = None
    if "/" not in address:
        problems.append(f"gateway address {address!r} needs a prefix length (e.g. 10.10.10.1/24)")
    else:
        try:
            network = ipaddress.ip_interface(address).network
        except ValueError as exc:
            problems.append(f"gateway address {address!r}: {exc}")
    if not targets and not uplink:
        problems.append("no targets to relay to and no uplink")
    if uplink and network is not None and network.version != 4:
        problems.append(f"an uplink is for an IPv4 lab network, not {network}")
    if uplink:
        missing = {p: pkg for p, pkg in UPLINK_TOOLS.items() if shutil.which(p) is None}
        if missing:
            problems.append(
                f"an uplink needs {', '.join(missing)} (Debian: apt-get install "
                f"{' '.join(missing.values())}, or `stx-lab host-setup`)"
            )
    checked = _check_targets(network, targets, problems)
    if problems:
        raise BackendError(f"gateway {name}: " + "; ".join(problems))
    return checked


def _check_targets(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
    targets: Sequence[Target],
    problems: list[str],
) -> list[Target]:
    """The targets as (address, port), their problems added to ``problems``."""
    checked: list[Target] = []
    for host, port in targets:
        try:
            target = ipaddress.ip_address(host)
        except ValueError:
            problems.append(f"target {host!r} is not an IP address")
            continue
        if network is not None and target not in network:
            problems.append(
                f"target {host} is not on the gateway's network {network} (the gateway "
                "namespace has no other route)"
            )
        if not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"target {host} port {port!r} is not a port number (1-65535)")
        checked.append((str(target), port))
    if len(set(checked)) != len(checked):
        problems.append("targets repeat")
    return checked


# --------------------------------------------------------------------------- open


def open_gateway(
    name: str,
    bridge: str,
    address: str,
    targets: Sequence[Target],
    run_dir: Path,
    *,
    host_veth: str,
    uplink: bool = False,
) -> Gateway:
    """Open a gateway on ``bridge``: namespace ``name`` holding ``address`` (CIDR), reached
    from the host through veth ``host_veth``, and a relay from a loopback port per target
    (no relay without targets); with ``uplink``, the lab network's way out through it.

    Refuses (``BackendError``) a bridge that does not exist, a namespace or host veth that
    does. A failure in the middle removes what this call made and raises ``BackendError``
    naming the step (and ip's stderr, or the relay's or uplink's log).
    """
    checked = _check(name, host_veth, bridge, address, targets, uplink)
    link = _link(bridge)
    if link is None:
        raise BackendError(f"gateway {name}: bridge {bridge} does not exist")
    if _link_kind(link) != "bridge":
        raise BackendError(f"gateway {name}: {bridge} is not a bridge ({_link_kind(link)})")
    made_namespace = made_veth = False
    try:
        _ip("netns", "add", name, what=f"gateway {name}: creating the namespace")
        made_namespace = True
        _ip(
            "link", "add", host_veth, "type", "veth", "peer", "name", GATEWAY_IFNAME, "netns", name,
            what=f"gateway {name}: creating veth {host_veth}",
        )  # fmt: skip
        made_veth = True
        _disable_ipv6(host_veth)
        _ip("link", "set", host_veth, "master", bridge, what=f"gateway {name}: enslaving veth")
        _ip("link", "set", host_veth, "up", what=f"gateway {name}: bringing {host_veth} up")
        inside = f"gateway {name}: in the namespace,"
        _ip("-n", name, "addr", "add", address, "dev", GATEWAY_IFNAME, what=f"{inside} {address}")
        _ip("-n", name, "link", "set", GATEWAY_IFNAME, "up", what=f"{inside} bringing gw0 up")
        _ip("-n", name, "link", "set", "lo", "up", what=f"{inside} bringing lo up")
        way_out = (
            _open_uplink(name, ipaddress.ip_interface(address).network, run_dir) if uplink else None
        )
        relay, ports = _start_relay(name, checked, run_dir) if checked else (None, {})
    except BaseException as exc:
        leftovers = remove_gateway(
            name if made_namespace else None, host_veth if made_veth else None, run_dir
        )
        if leftovers:
            exc.add_note("could not remove what was made: " + "; ".join(leftovers))
        raise
    logger.info(
        "gateway %s on %s (%s)%s: %s",
        name,
        bridge,
        address,
        "" if way_out is None else f", uplink out of {UPLINK_IFNAME} ({way_out.network})",
        ", ".join(f"{h}:{p} at 127.0.0.1:{lp}" for (h, p), lp in ports.items()) or "no relay",
    )
    return Gateway(name, host_veth, relay, ports, run_dir, way_out)


def add_relay(gateway: Gateway, address: str, targets: Sequence[Target]) -> Gateway:
    """Start the relay of an open gateway that has none (one opened for its uplink only):
    ``gateway`` with its relay and ports. ``address`` is the gateway's (CIDR), which the
    targets must be on; ``BackendError`` when they are not, or the gateway has a relay."""
    name = gateway.namespace
    if gateway.relay is not None:
        raise BackendError(f"gateway {name}: it has a relay already ({gateway.relay})")
    problems: list[str] = []
    checked = _check_targets(ipaddress.ip_interface(address).network, targets, problems)
    if not checked:
        problems.append("no targets to relay to")
    if problems:
        raise BackendError(f"gateway {name}: " + "; ".join(problems))
    relay, ports = _start_relay(name, checked, gateway.run_dir)
    logger.info(
        "gateway %s: %s",
        name,
        ", ".join(f"{h}:{p} at 127.0.0.1:{lp}" for (h, p), lp in ports.items()),
    )
    return replace(gateway, relay=relay, ports=ports)


def _open_uplink(
    name: str, lab_network: ipaddress.IPv4Network | ipaddress.IPv6Network, run_dir: Path
) -> Uplink:
    """Forwarding and masquerading in the namespace, then slirp4netns on it."""
    side = uplink_network(lab_network)
    if side is None:
        raise BackendError(
            f"gateway {name}: the lab network {lab_network} overlaps every network the uplink "
            f"may use ({', '.join(UPLINK_NETWORKS)})"
        )
    inside = f"gateway {name}: in the namespace,"
    _ip(
        "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1",
        what=f"{inside} switching forwarding on",
    )  # fmt: skip
    _ip(
        "netns", "exec", name, "nft", "-f", "-",
        what=f"{inside} adding nftables table {NFT_TABLE}",
        stdin=uplink_ruleset(lab_network),
    )  # fmt: skip
    argv = partial(_slirp4netns_argv, name, side)
    data = _launch(name, "uplink", argv, run_dir, b"1")
    process = _holder(data)
    if process is None:
        raise BackendError(f"gateway {name}: the uplink's report does not name it: {data}")
    return Uplink(process, side)


def uplink_network(lab_network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """slirp4netns's side of the uplink: the first of :data:`UPLINK_NETWORKS` that does not
    overlap the lab network (None when all do: only a lab network wider than a /24 can)."""
    return next(
        (n for n in UPLINK_NETWORKS if not ipaddress.ip_network(n).overlaps(lab_network)), None
    )


def uplink_ruleset(lab_network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The gateway namespace's nftables table: the lab network may go out of the uplink and
    its answers come back; nothing else is forwarded; what goes out is masqueraded."""
    out = f'iifname "{GATEWAY_IFNAME}" oifname "{UPLINK_IFNAME}" ip saddr {lab_network}'
    return (
        f"table ip {NFT_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy drop;\n"
        f'    ct state established,related iifname "{UPLINK_IFNAME}" '
        f'oifname "{GATEWAY_IFNAME}" accept\n'
        f"    {out} accept\n"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{UPLINK_IFNAME}" ip saddr {lab_network} masquerade\n'
        "  }\n"
        "}\n"
    )


def _slirp4netns_argv(name: str, side: str, ready_fd: int, state: Path) -> list[str]:
    """The uplink's launcher, then slirp4netns: no port forwards (no API socket), no access to
    the host's loopback, no DNS forwarder."""
    return [
        sys.executable, "-m", "pytest_starlingx.backends.uplink", "--state", str(state), "--",
        "slirp4netns", "--configure", "--disable-host-loopback", "--disable-dns",
        f"--cidr={side}", f"--ready-fd={ready_fd}", "--netns-type=path",
        str(RUN_NETNS / name), UPLINK_IFNAME,
    ]  # fmt: skip


def _start_relay(
    name: str, targets: list[Target], run_dir: Path
) -> tuple[Holder, dict[Target, int]]:
    """Start the relay and wait for its report: its identity and ports."""

    def argv(ready_fd: int, state: Path) -> list[str]:
        cmd = [
            sys.executable, "-m", "pytest_starlingx.backends.relay",
            "--netns", name, "--state", str(state), "--ready-fd", str(ready_fd),
        ]  # fmt: skip
        for host, port in targets:
            cmd += ["--target", host, str(port)]
        return cmd

    data = _launch(name, "relay", argv, run_dir, b"ready\n")
    relay = _holder(data)
    try:
        ports = data["ports"]
    except KeyError as exc:
        raise BackendError(f"gateway {name}: the relay's report has no ports: {data}") from exc
    if relay is None:
        raise BackendError(f"gateway {name}: the relay's report does not name it: {data}")
    return relay, {(host, port): local for host, port, local in ports}


def _launch(
    name: str,
    role: str,
    argv_for: Callable[[int, Path], list[str]],
    run_dir: Path,
    ready: bytes,
) -> dict[str, Any]:
    """Start a gateway process that detaches, records itself in its state file and writes
    ``ready`` to the fd it is given; wait for that, and return its state file's data."""
    paths = {"relay": (state_path, log_path), "uplink": (uplink_state_path, uplink_log_path)}
    state, log = (path(run_dir, name) for path in paths[role])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        state.unlink(missing_ok=True)
        log.touch()
    except OSError as exc:
        raise BackendError(f"gateway {name}: the {role}'s files in {run_dir}: {exc}") from exc
    deadline = Deadline(READY_TIMEOUT, f"the {role} of gateway {name}")
    read_fd, write_fd = os.pipe()
    argv = argv_for(write_fd, state)
    problem = partial(_process_problem, name, role, deadline=deadline, log=log)
    try:
        with log.open("ab") as out:
            try:
                launcher = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            finally:
                os.close(write_fd)
        try:
            code = launcher.wait(deadline.remaining)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            raise BackendError(problem("did not start")) from None
        if code != 0:
            raise BackendError(problem(f"failed (exit code {code})"))
        if not _readable(read_fd, deadline):
            raise BackendError(problem("did not report that it is ready"))
        if not os.read(read_fd, 64).startswith(ready):
            raise BackendError(problem("exited before it was ready"))
    finally:
        os.close(read_fd)
    try:
        data: dict[str, Any] = json.loads(state.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"gateway {name}: the {role}'s report {state}: {exc}") from exc
    return data


def _readable(fd: int, deadline: Deadline) -> bool:
    """Whether ``fd`` has something to read (or its end of file) before the deadline."""
    while True:
        ready, _, _ = select.select([fd], [], [], deadline.remaining)
        if ready:
            return True
        if deadline.expired:
            return False


def _process_problem(name: str, role: str, what: str, *, deadline: Deadline, log: Path) -> str:
    try:
        tail = log.read_text(errors="replace").splitlines()[-_LOG_TAIL:]
    except OSError:
        tail = []
    shown = "\n  ".join(tail) if tail else "(empty)"
    return (
        f"gateway {name}: the {role} {what} ({deadline.elapsed:.1f}s of "
        f"{deadline.timeout:.0f}s); last lines of {log}:\n  {shown}"
    )


# --------------------------------------------------------------------------- close


def close_gateway(gateway: Gateway) -> None:
    """Stop the relay, remove the namespace and veth; ``LeakError`` lists what remains."""
    uplink = None if gateway.uplink is None else gateway.uplink.process
    leftovers = remove_gateway(
        gateway.namespace, gateway.host_veth, gateway.run_dir, relay=gateway.relay, uplink=uplink
    )
    if leftovers:
        raise LeakError(f"gateway {gateway.namespace}: " + "; ".join(leftovers))


def remove_gateway(
    namespace: str | None,
    host_veth: str | None,
    run_dir: Path,
    relay: Holder | None = None,
    uplink: Holder | None = None,
) -> list[str]:
    """Remove a gateway from its recorded names; what could not be removed (empty: all gone).

    The relay is ``relay`` and the one its state file in ``run_dir`` names, the uplink process
    likewise; each is stopped only while it is still that process (pid and start time). Then
    the host veth (``gw0`` goes with it), only if it is a veth, and the namespace (with the
    uplink's ``up0`` and nftables table). Idempotent: what is gone already is fine. ``None``
    skips a name.
    """
    leftovers: list[str] = []
    states = []
    if namespace is not None:
        states = [state_path(run_dir, namespace), uplink_state_path(run_dir, namespace)]
        processes = {
            (role, h)
            for role, given, state in zip(("relay", "uplink"), (relay, uplink), states, strict=True)
            for h in (given, _recorded_process(state))
            if h is not None
        }
        stuck = [problem for problem in (_stop(h, role) for role, h in processes) if problem]
        leftovers += stuck
    if host_veth is not None:
        with _collect(leftovers):
            link = _link(host_veth)
            if link is not None and _link_kind(link) == "veth":
                _ip("link", "del", host_veth, what=f"removing veth {host_veth}")
    if namespace is not None:
        if _namespace_exists(namespace):
            with _collect(leftovers):
                _ip("netns", "del", namespace, what=f"removing namespace {namespace}")
        if not stuck:
            for state in states:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    state.unlink()
    for problem in leftovers:
        logger.warning("gateway teardown: %s", problem)
    return leftovers


@contextlib.contextmanager
def _collect(leftovers: list[str]) -> Iterator[None]:
    """Add a ``BackendError`` raised inside to ``leftovers`` instead."""
    try:
        yield
    except BackendError as exc:
        leftovers.append(str(exc))


def _holder(data: Any) -> Holder | None:
    """The process a state file's data names, if it does."""
    try:
        return Holder(data["host"], data["pid"], data["start"])
    except (KeyError, TypeError):
        return None


def _recorded_process(state: Path) -> Holder | None:
    """The process a state file names, if it is there and readable."""
    try:
        return _holder(json.loads(state.read_text()))
    except (OSError, ValueError):
        return None


def _stop(process: Holder, role: str) -> str | None:
    """Stop a gateway's ``role`` process if it is still that process; a problem, or None."""
    if not process.local:
        return f"{role} {process} runs on another host; stop it there"
    if process.start is None:
        return f"{role} {process}: its start time is unknown, so it is left alone"
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return None
    try:
        if process_start(process.pid) != process.start:  # the pid was reused: not ours
            return None
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signum)
            ready, _, _ = select.select([pidfd], [], [], STOP_TIMEOUT)
            if ready:
                logger.debug("stopped %s %s", role, process)
                return None
        return f"{role} {process} did not exit after SIGTERM and SIGKILL"
    finally:
        os.close(pidfd)
