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
  ``<run_dir>/<name>.relay.json``.

:func:`remove_gateway` takes these recorded names only, so it works after the process that
opened the gateway was killed: it stops the relay if it is still that process (pid and start
time), deletes the host veth (which takes ``gw0`` with it) and the namespace. A relay that was
never recorded (its opener killed before the report) exits by itself within a second of its
namespace going.

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
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
_LOG_TAIL = 10  # lines of the relay's log quoted in an error

Target = tuple[str, int]


@dataclass(frozen=True)
class Gateway:
    """An open gateway: ``ports[(address, port)]`` is the loopback port that reaches it."""

    namespace: str
    host_veth: str
    relay: Holder
    ports: dict[Target, int]
    run_dir: Path

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {
            "namespace": self.namespace,
            "host_veth": self.host_veth,
            "relay": {"host": self.relay.host, "pid": self.relay.pid, "start": self.relay.start},
            "ports": [[host, port, local] for (host, port), local in self.ports.items()],
            "run_dir": str(self.run_dir),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Gateway:
        """The inverse of :meth:`to_json`."""
        return cls(
            namespace=data["namespace"],
            host_veth=data["host_veth"],
            relay=Holder(**data["relay"]),
            ports={(host, port): local for host, port, local in data["ports"]},
            run_dir=Path(data["run_dir"]),
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

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {
            "namespace": self.namespace,
            "host_veth": self.host_veth,
            "address": self.address,
            "targets": [[host, port] for host, port in self.targets],
            "gateway": None if self.gateway is None else self.gateway.to_json(),
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


# --------------------------------------------------------------------------- iproute2


def _ip(*argv: str, what: str) -> str:
    """Run ``ip argv``; its stdout, or ``BackendError`` naming ``what`` and ip's stderr."""
    cmd = ["ip", *argv]
    logger.debug("%s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
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
    name: str, host_veth: str, bridge: str, address: str, targets: Sequence[Target]
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
    checked: list[Target] = []
    if not targets:
        problems.append("no targets to relay to")
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
    if problems:
        raise BackendError(f"gateway {name}: " + "; ".join(problems))
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
) -> Gateway:
    """Open a gateway on ``bridge``: namespace ``name`` holding ``address`` (CIDR), reached
    from the host through veth ``host_veth``, and a relay from a loopback port per target.

    Refuses (``BackendError``) a bridge that does not exist, a namespace or host veth that
    does. A failure in the middle removes what this call made and raises ``BackendError``
    naming the step (and ip's stderr, or the relay's log).
    """
    checked = _check(name, host_veth, bridge, address, targets)
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
        relay, ports = _start_relay(name, checked, run_dir)
    except BaseException as exc:
        leftovers = remove_gateway(
            name if made_namespace else None, host_veth if made_veth else None, run_dir
        )
        if leftovers:
            exc.add_note("could not remove what was made: " + "; ".join(leftovers))
        raise
    logger.info(
        "gateway %s on %s (%s): %s",
        name,
        bridge,
        address,
        ", ".join(f"{h}:{p} at 127.0.0.1:{lp}" for (h, p), lp in ports.items()),
    )
    return Gateway(name, host_veth, relay, ports, run_dir)


def _start_relay(
    name: str, targets: list[Target], run_dir: Path
) -> tuple[Holder, dict[Target, int]]:
    """Start the relay and wait for its report: its identity and ports."""
    state, log = state_path(run_dir, name), log_path(run_dir, name)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        state.unlink(missing_ok=True)
        log.touch()
    except OSError as exc:
        raise BackendError(f"gateway {name}: the relay's files in {run_dir}: {exc}") from exc
    deadline = Deadline(READY_TIMEOUT, f"the relay of gateway {name}")
    read_fd, write_fd = os.pipe()
    argv = [
        sys.executable, "-m", "pytest_starlingx.backends.relay",
        "--netns", name, "--state", str(state), "--ready-fd", str(write_fd),
    ]  # fmt: skip
    for host, port in targets:
        argv += ["--target", host, str(port)]
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
            raise BackendError(_relay_problem(name, "did not start", deadline, log)) from None
        if code != 0:
            raise BackendError(_relay_problem(name, f"failed (exit code {code})", deadline, log))
        if not _readable(read_fd, deadline):
            raise BackendError(_relay_problem(name, "did not report its ports", deadline, log))
        if os.read(read_fd, 64) != b"ready\n":
            raise BackendError(_relay_problem(name, "exited before it was ready", deadline, log))
    finally:
        os.close(read_fd)
    relay = _recorded_relay(state)
    try:
        ports = json.loads(state.read_text())["ports"]
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(f"gateway {name}: the relay's report {state}: {exc}") from exc
    if relay is None:
        raise BackendError(f"gateway {name}: the relay's report {state} does not name it")
    return relay, {(host, port): local for host, port, local in ports}


def _readable(fd: int, deadline: Deadline) -> bool:
    """Whether ``fd`` has something to read (or its end of file) before the deadline."""
    while True:
        ready, _, _ = select.select([fd], [], [], deadline.remaining)
        if ready:
            return True
        if deadline.expired:
            return False


def _relay_problem(name: str, what: str, deadline: Deadline, log: Path) -> str:
    try:
        tail = log.read_text(errors="replace").splitlines()[-_LOG_TAIL:]
    except OSError:
        tail = []
    shown = "\n  ".join(tail) if tail else "(empty)"
    return (
        f"gateway {name}: the relay {what} ({deadline.elapsed:.1f}s of "
        f"{deadline.timeout:.0f}s); last lines of {log}:\n  {shown}"
    )


# --------------------------------------------------------------------------- close


def close_gateway(gateway: Gateway) -> None:
    """Stop the relay, remove the namespace and veth; ``LeakError`` lists what remains."""
    leftovers = remove_gateway(
        gateway.namespace, gateway.host_veth, gateway.run_dir, relay=gateway.relay
    )
    if leftovers:
        raise LeakError(f"gateway {gateway.namespace}: " + "; ".join(leftovers))


def remove_gateway(
    namespace: str | None,
    host_veth: str | None,
    run_dir: Path,
    relay: Holder | None = None,
) -> list[str]:
    """Remove a gateway from its recorded names; what could not be removed (empty: all gone).

    The relay is ``relay`` or, when not given, the one its state file in ``run_dir`` names;
    it is stopped only while it is still that process (pid and start time). Then the host veth
    (``gw0`` goes with it), only if it is a veth, and the namespace. Idempotent: what is gone
    already is fine. ``None`` skips a name.
    """
    leftovers: list[str] = []
    if namespace is not None:
        state = state_path(run_dir, namespace)
        relays = {h for h in (relay, _recorded_relay(state)) if h is not None}
        stuck = [problem for problem in map(_stop, relays) if problem]
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


def _recorded_relay(state: Path) -> Holder | None:
    """The relay a state file names, if it is there and readable."""
    try:
        data = json.loads(state.read_text())
        return Holder(data["host"], data["pid"], data["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stop(relay: Holder) -> str | None:
    """Stop ``relay`` if it is still that process; a problem, or None."""
    if not relay.local:
        return f"relay {relay} runs on another host; stop it there"
    if relay.start is None:
        return f"relay {relay}: its start time is unknown, so it is left alone"
    try:
        pidfd = os.pidfd_open(relay.pid)
    except ProcessLookupError:
        return None
    try:
        if process_start(relay.pid) != relay.start:  # the pid was reused: not ours
            return None
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signum)
            ready, _, _ = select.select([pidfd], [], [], STOP_TIMEOUT)
            if ready:
                logger.debug("stopped relay %s", relay)
                return None
        return f"relay {relay} did not exit after SIGTERM and SIGKILL"
    finally:
        os.close(pidfd)
