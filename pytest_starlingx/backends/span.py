"""Lab networks spanning several libvirt hosts: a bridge per host joined by VXLAN.

On every host a lab network is the bridge of its libvirt network (``bridge_name(lab_id, i)`` in
:mod:`pytest_starlingx.backends.libvirt`). :func:`open_span` adds to it, on each host, a kernel
VXLAN device ``stx<id>v<i>`` (at most 14 characters, like the bridge's name), made with
iproute2 through the host's :class:`HostCommands`:

* ``ip link add stx<id>v<i> type vxlan id <vni> dstport 4789 local <underlay> dev <ifname>``:
  one VNI per lab network, the same on every host of the span, chosen by :func:`plan_spans`
  so that no VXLAN device on any of the hosts has it already; UDP port 4789, IANA's VXLAN port
  (RFC 7348 section 5; Linux's default is 8472, so it is given); bound to the interface that
  holds the host's underlay address;
* MTU 1500 (:data:`LAB_MTU`), no IPv6 address generation (``addrgenmode none``: the host gets
  no address on the lab network, not even a link-local one), enslaved to the bridge, up;
* one all-zero FDB entry per other host (``bridge fdb append 00:00:00:00:00:00 dev <vx> dst
  <peer>``): broadcasts, unknown unicast and multicast go to every peer by unicast (head-end
  replication, no multicast needed of the network between the hosts); learning stays on, so a
  known MAC goes to its host only. The same for two hosts as for more.

MTU. StarlingX gives every interface it creates from a host's reported NICs an MTU of 1500:
sysinv's ``DEFAULT_MTU = 1500`` (starlingx/config ``sysinv/common/constants.py``), used by the
conductor's ``iport_update_by_ihost`` (``'imtu': mtu`` with ``mtu = constants.DEFAULT_MTU``,
commit b62963d4); the bootstrap's ``host_vars/bootstrap/default.yml`` (starlingx/ansible-playbooks)
has no MTU for the management network (only ``calico_mtu`` for the cluster's pods). An
interface's MTU can be changed later (``system host-if-modify -m``), but a node's network boot,
its installer's downloads and controller-0's bootstrap all run before, with full 1500-byte
frames, and PXE firmware does no path MTU discovery. So the lab keeps 1500 and the underlay
carries it: a frame of 1500 bytes of payload becomes an IPv4 packet of 1550 bytes (outer IPv4
20 + UDP 8 + VXLAN 8 + the inner Ethernet header 14; :data:`UNDERLAY_MTU`). :func:`open_span`
refuses, naming the host and the interface, an underlay interface whose MTU is smaller. What it
cannot see is the path between the hosts: every hop there must carry 1550-byte packets too
(Linux sends VXLAN without DF by default, so a smaller hop fragments them: slow, and lost where
fragments are filtered).

What the network between the hosts must give, then: unicast IPv4 between the hosts' underlay
addresses (no multicast), UDP port 4789 open between them in both directions (host firewalls
included), and 1550-byte packets along the whole path.

Ownership. The devices are named for the lab (``stx<id>v<i>``) and recorded, with their VNI and
hosts, in a :class:`NetworkSpan` that the lab's ledger keeps (:meth:`NetworkSpan.to_json`)
before anything is made. :func:`remove_span` deletes, on every host, the device of that name
only while it is a VXLAN device with the recorded VNI; anything else of that name is reported
and left alone. It is idempotent, and a host it cannot reach is reported by name, so the next
gc retries it.

Commands on a host. :class:`HostCommands` runs argv lists (no shell) with a prefix: none for
this host, ``ip netns exec <ns>`` for a test host in a network namespace, ``ssh root@hv2`` for a
hypervisor reached by ``qemu+ssh://root@hv2/system`` (:meth:`HostCommands.for_uri`; ssh runs
the command through the remote shell, so the argv is quoted for it). The commands need root
(CAP_NET_ADMIN) on the host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pytest_starlingx.errors import BackendError

logger = logging.getLogger("pytest_starlingx.backend")

VXLAN_PORT = 4789  # IANA's VXLAN port (RFC 7348 section 5)
LAB_MTU = 1500  # StarlingX's DEFAULT_MTU (sysinv), every lab network's MTU
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet header 14
UNDERLAY_MTU = LAB_MTU + VXLAN_OVERHEAD
ALL_ZERO_MAC = "00:00:00:00:00:00"
#: A lab's VNIs are a block of this many (network ``i`` is the block's first VNI + ``i``).
VNI_BLOCK = 16
_VNI_BLOCKS = (1 << 24) // VNI_BLOCK  # VNIs are 24 bits; block 0 (VNI 0 and its neighbours) unused
COMMAND_TIMEOUT = 30.0  # seconds one command on a host may take (ssh's connection included)
#: libvirt's remote transports that run over SSH (``qemu+ssh://``, ``qemu+libssh2://``, ...).
_SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")


def vxlan_name(lab_id: str, index: int) -> str:
    """VXLAN device of a lab's ``index``-th network on every host: like ``bridge_name``,
    unique per lab id, <= 15 characters."""
    return f"stx{lab_id}v{index}"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class HostCommands:
    """How commands reach one libvirt host: ``prefix`` goes before every argv.

    ``host`` names the host in messages (its libvirt URI, say). With ``remote_shell`` (ssh)
    the argv is passed as one command line, quoted for the remote shell."""

    host: str
    prefix: tuple[str, ...] = ()
    remote_shell: bool = False

    @classmethod
    def for_uri(cls, uri: str) -> HostCommands:
        """The commands of the host a libvirt URI names: this host for a URI without a host
        name (``qemu:///system``, ``qemu+unix:///system?socket=...``), ssh for
        ``qemu+ssh://[user@]host[:port]/...`` (its ``keyfile`` and ``no_verify`` too).
        ``BackendError`` for other remote transports (tcp, tls): give the commands yourself."""
        parts = urlsplit(uri)
        transport = parts.scheme.partition("+")[2]
        if parts.hostname in (None, "", "localhost"):
            return cls(uri)
        if transport not in _SSH_TRANSPORTS:
            raise BackendError(
                f"host {uri}: cannot tell how to run commands on it (transport "
                f"{transport or 'tls'!r}); its network commands go over ssh, so give "
                "HostCommands(host, ('ssh', 'root@<host>'), remote_shell=True)"
            )
        query = parse_qs(parts.query)
        ssh = ["ssh", "-o", "BatchMode=yes"]
        if parts.port is not None:
            ssh += ["-p", str(parts.port)]
        if "keyfile" in query:
            ssh += ["-i", query["keyfile"][0]]
        if query.get("no_verify", ["0"])[0] == "1":
            ssh += ["-o", "StrictHostKeyChecking=no"]
        target = parts.hostname if parts.username is None else f"{parts.username}@{parts.hostname}"
        return cls(uri, (*ssh, target), remote_shell=True)

    @classmethod
    def in_namespace(cls, host: str, namespace: str) -> HostCommands:
        """The commands of a host that is network namespace ``namespace`` of this machine."""
        return cls(host, ("ip", "netns", "exec", namespace))

    def argv(self, argv: Sequence[str]) -> list[str]:
        """What runs here for ``argv`` on the host."""
        return [*self.prefix, shlex.join(argv)] if self.remote_shell else [*self.prefix, *argv]

    def run(self, argv: Sequence[str], *, what: str) -> str:
        """Run ``argv`` on the host; its stdout, or ``BackendError`` naming the host, ``what``
        was being done, the command and its stderr."""
        cmd = self.argv(argv)
        logger.debug("host %s: %s", self.host, shlex.join(cmd))
        shown = shlex.join(argv)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"host {self.host}: {what}: `{shown}` did not run: {exc}") from exc
        if proc.returncode == 255 and self.remote_shell:
            raise BackendError(
                f"host {self.host}: {what}: could not reach it with `{shlex.join(self.prefix)}`: "
                f"{proc.stderr.strip()}"
            )
        if proc.returncode != 0:
            raise BackendError(
                f"host {self.host}: {what}: `{shown}` failed (exit status {proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        return proc.stdout

    def json(self, argv: Sequence[str], *, what: str) -> list[dict[str, Any]]:
        """:meth:`run` for a command printing JSON (``ip -j``, ``bridge -j``)."""
        out = self.run(argv, what=what)
        try:
            data: list[dict[str, Any]] = json.loads(out or "[]")
        except ValueError as exc:
            raise BackendError(f"host {self.host}: {what}: not JSON: {out[:200]!r}") from exc
        return data

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {"host": self.host, "prefix": list(self.prefix), "remote_shell": self.remote_shell}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostCommands:
        """The inverse of :meth:`to_json`."""
        return cls(data["host"], tuple(data["prefix"]), bool(data["remote_shell"]))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SpanHost:
    """One host of a span: how to reach it, and the IPv4 address its tunnels use."""

    commands: HostCommands
    underlay: str

    @property
    def name(self) -> str:
        """The host's name in messages."""
        return self.commands.host

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {"commands": self.commands.to_json(), "underlay": self.underlay}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpanHost:
        """The inverse of :meth:`to_json`."""
        return cls(HostCommands.from_json(data["commands"]), data["underlay"])


@dataclass(frozen=True)
class NetworkSpan:
    """A lab network over several hosts: on each, VXLAN ``device`` (VNI ``vni``) on ``bridge``."""

    lab_id: str
    index: int
    bridge: str
    device: str
    vni: int
    hosts: tuple[SpanHost, ...]

    def peers(self, host: SpanHost) -> list[str]:
        """The underlay addresses of the other hosts."""
        return [h.underlay for h in self.hosts if h is not host]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for a ledger)."""
        return {
            "lab_id": self.lab_id,
            "index": self.index,
            "bridge": self.bridge,
            "device": self.device,
            "vni": self.vni,
            "hosts": [h.to_json() for h in self.hosts],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkSpan:
        """The inverse of :meth:`to_json`."""
        return cls(
            lab_id=data["lab_id"],
            index=data["index"],
            bridge=data["bridge"],
            device=data["device"],
            vni=data["vni"],
            hosts=tuple(SpanHost.from_json(h) for h in data["hosts"]),
        )


# --------------------------------------------------------------------------- plan


def plan_spans(
    lab_id: str, bridges: Sequence[str], hosts: Sequence[SpanHost]
) -> tuple[NetworkSpan, ...]:
    """The spans of a lab's networks (``bridges[i]`` is network ``i``'s bridge on every host),
    nothing made yet: record them, then :func:`open_span` each.

    The lab's VNIs are a block of :data:`VNI_BLOCK`, the first block, from one derived from
    the lab id on, of which no VXLAN device on any of the hosts has a VNI. ``BackendError``
    for bad hosts (fewer than two, repeated, an underlay that is no IPv4 address) or a host
    that cannot be asked."""
    problems = _host_problems(hosts)
    if not 1 <= len(bridges) <= VNI_BLOCK:
        problems.append(f"a lab spans 1 to {VNI_BLOCK} networks, not {len(bridges)}")
    if problems:
        raise BackendError(f"lab {lab_id}: spanning its networks: " + "; ".join(problems))
    used: set[int] = set()
    for host in hosts:
        used |= {_vni(link) for link in _vxlans(host.commands).values()}
    start = int(hashlib.sha256(lab_id.encode()).hexdigest(), 16) % (_VNI_BLOCKS - 1)
    for step in range(_VNI_BLOCKS - 1):
        first = (1 + (start + step) % (_VNI_BLOCKS - 1)) * VNI_BLOCK
        if not used & set(range(first, first + len(bridges))):
            break
    else:  # 2^20 blocks, each with a VNI in use: not on a real host
        raise BackendError(f"lab {lab_id}: every VNI block is in use on its hosts")
    return tuple(
        NetworkSpan(lab_id, i, bridge, vxlan_name(lab_id, i), first + i, tuple(hosts))
        for i, bridge in enumerate(bridges)
    )


def _host_problems(hosts: Sequence[SpanHost]) -> list[str]:
    problems = []
    if len(hosts) < 2:
        problems.append(f"a span needs two hosts or more, got {len(hosts)}")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        problems.append(f"host names repeat: {', '.join(names)}")
    underlays = []
    for host in hosts:
        try:
            underlays.append(ipaddress.IPv4Address(host.underlay))
        except ValueError:
            problems.append(f"host {host.name}: underlay {host.underlay!r} is no IPv4 address")
    if len(set(underlays)) != len(underlays):
        problems.append(f"underlay addresses repeat: {', '.join(h.underlay for h in hosts)}")
    return problems


# --------------------------------------------------------------------------- open


def open_span(span: NetworkSpan, on: Sequence[str] | None = None) -> None:
    """Make or mend the span on every host (``on``: on the hosts of these names only): its
    VXLAN device made where missing, enslaved to the bridge, up, with an FDB entry per peer
    (whether or not the peer has its device yet). Idempotent; call it whenever a host's
    bridge was (re)made: libvirt makes a bridge when its network starts and deletes it when
    the network stops, which leaves the device behind, unattached.

    Checked on each host before anything is made: the bridge exists, an interface holds the
    underlay address and its MTU is at least :data:`UNDERLAY_MTU`, no other device has the
    span's name and no other VXLAN device its VNI. ``BackendError`` lists every problem, each
    naming its host. A failure while making removes the devices this call made."""
    hosts = [h for h in span.hosts if on is None or h.name in on]
    unknown = set(on or ()) - {h.name for h in span.hosts}
    if unknown:
        raise BackendError(f"lab network {span.bridge}: no host {', '.join(sorted(unknown))}")
    checked = [(host, _check_host(span, host)) for host in hosts]
    problems = [problem for _, (_, problem) in checked if problem]
    if problems:
        raise BackendError(f"lab network {span.bridge} over hosts: " + "; ".join(problems))
    made: list[SpanHost] = []
    try:
        for host, (state, _) in checked:
            assert state is not None
            if _attach(span, host, state):
                made.append(host)
    except BaseException as exc:
        leftovers = [p for host in made for p in _remove_on(span, host)]
        if leftovers:
            exc.add_note("could not remove what was made: " + "; ".join(leftovers))
        raise
    logger.info(
        "lab network %s spans %s over VXLAN %d (%s)",
        span.bridge,
        ", ".join(f"{h.name} ({h.underlay})" for h in hosts),
        span.vni,
        span.device,
    )


@dataclass(frozen=True)
class _HostState:
    underlay_ifname: str
    device: dict[str, Any] | None  # the span's device as ``ip -j -d link`` shows it


def _check_host(span: NetworkSpan, host: SpanHost) -> tuple[_HostState | None, str | None]:
    """What :func:`open_span` found on ``host``, or the problem that stops it there."""
    cmd = host.commands
    try:
        links = _links(cmd)
        addresses = cmd.json(["ip", "-j", "-4", "addr", "show"], what="listing addresses")
    except BackendError as exc:
        return None, str(exc)
    where = f"host {host.name}"
    if _kind(links.get(span.bridge)) != "bridge":
        return None, f"{where}: bridge {span.bridge} does not exist (is the lab network started?)"
    device = links.get(span.device)
    if device is not None and _kind(device) != "vxlan":
        return None, f"{where}: {span.device} exists and is no VXLAN device: not ours, left alone"
    vxlans = {name: link for name, link in links.items() if _kind(link) == "vxlan"}
    if device is not None and _vni(device) != span.vni:
        return None, (
            f"{where}: VXLAN device {span.device} has VNI {_vni(device)}, not the span's "
            f"{span.vni}: not ours, left alone"
        )
    clash = [n for n, link in vxlans.items() if _vni(link) == span.vni and n != span.device]
    if clash:
        return None, f"{where}: VNI {span.vni} is taken by VXLAN device {clash[0]}"
    holder = next(
        (
            link
            for link in addresses
            for info in link.get("addr_info", [])
            if info.get("local") == host.underlay
        ),
        None,
    )
    if holder is None:
        return None, f"{where}: no interface has the underlay address {host.underlay}"
    ifname, mtu = holder["ifname"], int(holder.get("mtu", 0))
    if mtu < UNDERLAY_MTU:
        return None, (
            f"{where}: the underlay interface {ifname} ({host.underlay}) has MTU {mtu}; "
            f"the lab network's {LAB_MTU}-byte frames need {UNDERLAY_MTU} over VXLAN "
            f"(StarlingX's management MTU is {LAB_MTU}): raise it, e.g. `ip link set {ifname} "
            f"mtu {UNDERLAY_MTU}`, on this host and along the path between the hosts"
        )
    return _HostState(ifname, device), None


def _attach(span: NetworkSpan, host: SpanHost, state: _HostState) -> bool:
    """Make (unless it exists) and attach the device on ``host``; whether it was made here."""
    cmd, dev = host.commands, span.device
    made = state.device is None
    if made:
        cmd.run(
            [
                "ip", "link", "add", dev, "type", "vxlan", "id", str(span.vni),
                "dstport", str(VXLAN_PORT), "local", host.underlay, "dev", state.underlay_ifname,
            ],
            what=f"creating VXLAN device {dev} (VNI {span.vni})",
        )  # fmt: skip
        cmd.run(
            ["ip", "link", "set", dev, "mtu", str(LAB_MTU), "addrgenmode", "none"],
            what=f"setting MTU {LAB_MTU} and no IPv6 address on {dev}",
        )
    cmd.run(["ip", "link", "set", dev, "master", span.bridge], what=f"enslaving {dev}")
    cmd.run(["ip", "link", "set", dev, "up"], what=f"bringing {dev} up")
    entries = cmd.json(["bridge", "-j", "fdb", "show", "dev", dev], what=f"listing {dev}'s FDB")
    flooded = {e.get("dst") for e in entries if e.get("mac") == ALL_ZERO_MAC}
    for peer in span.peers(host):
        if peer not in flooded:
            cmd.run(
                ["bridge", "fdb", "append", ALL_ZERO_MAC, "dev", dev, "dst", peer],
                what=f"flooding {dev} to {peer}",
            )
    return made


# --------------------------------------------------------------------------- remove


def remove_span(span: NetworkSpan) -> list[str]:
    """Delete the span's VXLAN device on every host; what could not be removed, each naming
    its host (empty: all gone). Only a VXLAN device of the span's name and VNI is deleted;
    idempotent; a host that cannot be reached is reported and the others are still done."""
    leftovers = [problem for host in span.hosts for problem in _remove_on(span, host)]
    for problem in leftovers:
        logger.warning("lab network %s teardown: %s", span.bridge, problem)
    return leftovers


def _remove_on(span: NetworkSpan, host: SpanHost) -> list[str]:
    cmd = host.commands
    try:
        device = _vxlans(cmd).get(span.device)
        if device is None:
            return []
        if _vni(device) != span.vni:
            return [
                f"host {host.name}: VXLAN device {span.device} has VNI {_vni(device)}, not the "
                f"recorded {span.vni}: not ours, left alone"
            ]
        cmd.run(["ip", "link", "del", span.device], what=f"removing VXLAN device {span.device}")
    except BackendError as exc:
        return [str(exc)]
    return []


# --------------------------------------------------------------------------- iproute2


def _links(cmd: HostCommands) -> dict[str, dict[str, Any]]:
    """The host's links (``ip -j -d link``), by name."""
    return {
        link["ifname"]: link
        for link in cmd.json(["ip", "-j", "-d", "link", "show"], what="listing links")
    }


def _vxlans(cmd: HostCommands) -> dict[str, dict[str, Any]]:
    """The host's VXLAN devices, by name."""
    return {name: link for name, link in _links(cmd).items() if _kind(link) == "vxlan"}


def _kind(link: dict[str, Any] | None) -> str | None:
    return None if link is None else link.get("linkinfo", {}).get("info_kind")


def _vni(link: dict[str, Any]) -> int:
    return int(link.get("linkinfo", {}).get("info_data", {}).get("id", -1))
