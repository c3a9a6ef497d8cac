"""A lab over several libvirt hosts: one libvirt lab per host, its networks spanning them.

A lab whose machines are placed on more than one host (``placement``: machine name to host
name) is made of *parts*: on each host that runs some of its machines, a lab of the
:mod:`~pytest_starlingx.backends.libvirt` backend, with the same name and id, holding that
host's machines and every lab network (so each network's bridge has the same name,
``bridge_name(lab_id, i)``, on every host). Each part has its own :class:`HostBackend`, a
``LibvirtBackend`` with its own connection:

* the first host's part uses the lab backend's state directory (``labs/<id>/owner.json``, the
  console sockets in ``labs/<id>/run``): that host runs the lab's gateways (SSH access, a NAT
  network's uplink: ``backends/gateway.py``), made from this machine on the host's bridges, so
  the first host must be this machine's libvirt (a URI without a host name) and the lab
  backend's own URI;
* every other host's part has the state directory ``labs/<id>/hosts/<name>`` (its ledger,
  console sockets and, with a per-lab pool, its disks there), and its NAT networks become
  isolated ones: their way out is the first host's gateway, across the span.

Each lab network spans the hosts (``backends/span.py``): a VXLAN device per host on the
network's bridge, one VNI per network. The spans are opened once every part exists, and again
on a host whenever a machine there is started (``power_on``) or restored running (``revert``),
while it is still paused: libvirt deletes a bridge when its network stops and makes a new one
when it starts, so the VXLAN device is put back on it before the guest's firmware sends its
first DHCP request.

Ownership. The lab's own ledger, ``labs/<id>/hosts.json`` (:class:`SpanLedger`), names every
host (name, URI, underlay, how its commands run), the placement and the spans (their devices
and VNIs), and is written before anything is made on any host. A part's objects carry the
usual owner records and ledger on their host. :class:`~pytest_starlingx.backends.libvirt.
LibvirtBackend`'s ``open_lab`` and ``destroy_lab`` hand a lab that has this ledger to
:func:`open_lab` and :func:`destroy_lab`, so that ``stx-lab down``, ``stx-lab gc`` and the
gc at a session's start, which find the lab on the first host (its state, its first part's
objects and ledger), open and remove it as a whole. :func:`destroy_lab` removes every part and
span, goes on past a host it cannot reach, reports each such host by name and then keeps the
ledger, so the next teardown or gc tries that host again; it is never forgotten.

Machine operations (power, console, boot order, OEM strings, MACs, snapshots, revert) go to
the part of the machine's host; an error there is a ``BackendError`` naming the host. A lab
snapshot pauses its running machines on every host before it takes any part's snapshot, so
the snapshot is still of one instant (``LabHandleBase.snapshot``).

A part on a host elsewhere (``qemu+ssh://``) keeps its files there, as the libvirt backend
does for a remote URI ("Remote files" in ``backends/libvirt.py``: its disks in a pool there,
the ISO uploaded to that host's image cache, the console over libvirt's stream);
:attr:`LabHost.remote_files` forces that mode on a host of this machine (the tests' second
host), or local files on another.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pytest_starlingx.backends.base import (
    BeforeResume,
    BootDevice,
    LabResources,
    NetworkSpec,
    Owner,
    PowerState,
    SnapshotInfo,
)
from pytest_starlingx.backends.common import LabBackendBase, LabHandleBase, LedgerBase
from pytest_starlingx.backends.gateway import Gateway
from pytest_starlingx.backends.libvirt import (
    LibvirtBackend,
    LibvirtConfig,
    LibvirtLab,
    bridge_name,
)
from pytest_starlingx.backends.span import (
    HostCommands,
    NetworkSpan,
    SpanHost,
    open_span,
    plan_spans,
    remove_span,
)
from pytest_starlingx.errors import BackendError, LeakError
from pytest_starlingx.transport import Transport

logger = logging.getLogger("pytest_starlingx.backend")

SPAN_LEDGER = "hosts.json"  # a spanning lab's ledger, in its lab directory
T = TypeVar("T")


@dataclass(frozen=True)
class LabHost:
    """One libvirt host of a lab: its name (in placements and messages), its libvirt URI, the
    IPv4 address its tunnels use (``underlay``) and how network commands run there."""

    name: str
    uri: str
    underlay: str | None
    commands: HostCommands
    #: Whether its part keeps its files on the host, reached through libvirt's API only
    #: (``LibvirtConfig.remote_files``); None: when its URI names another host.
    remote_files: bool | None = None

    @classmethod
    def of(cls, name: str, uri: str, underlay: str | None, prefix: Sequence[str] = ()) -> LabHost:
        """A host whose commands run behind ``prefix`` (an argv, no shell: ``ip netns exec
        <ns>`` for a host in a network namespace of this machine); without one, as its URI
        says (here, or over ssh for ``qemu+ssh://``: ``HostCommands.for_uri``); for another
        remote URI, ``BackendError`` asking for a prefix."""
        if prefix:
            return cls(name, uri, underlay, HostCommands(name, tuple(prefix)))
        try:
            commands = HostCommands.for_uri(uri)
        except BackendError as exc:
            raise BackendError(
                f"host {name}: the lab networks' tunnels are made there with iproute2, over "
                f"ssh for a qemu+ssh:// URI, but {uri} is not one: use a qemu+ssh:// URI for "
                "the host, or give the prefix its commands run behind (`commands:` in the lab "
                "file)"
            ) from exc
        return cls(name, uri, underlay, replace(commands, host=name))

    def span_host(self) -> SpanHost:
        """The host as one end of the lab's spans."""
        if self.underlay is None:
            raise BackendError(
                f"host {self.name}: no underlay address; a lab spanning hosts needs each "
                "host's address on the network between them"
            )
        return SpanHost(self.commands, self.underlay)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (for the ledger)."""
        return {
            "name": self.name,
            "uri": self.uri,
            "underlay": self.underlay,
            "commands": self.commands.to_json(),
            "remote_files": self.remote_files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabHost:
        """The inverse of :meth:`to_json`."""
        commands = HostCommands.from_json(data["commands"])
        return cls(data["name"], data["uri"], data["underlay"], commands, data["remote_files"])


@dataclass
class SpanLedger(LedgerBase):
    """A spanning lab's ledger (``labs/<id>/hosts.json``): the whole lab's resources, its
    hosts (the first host first), which host each machine runs on, and the spans."""

    hosts: list[dict[str, Any]]  # LabHost.to_json()
    placement: dict[str, str]  # machine -> host name
    spans: list[dict[str, Any]] = field(default_factory=list)  # NetworkSpan.to_json()

    def lab_hosts(self) -> list[LabHost]:
        """The hosts."""
        return [LabHost.from_json(h) for h in self.hosts]

    def network_spans(self) -> list[NetworkSpan]:
        """The spans."""
        return [NetworkSpan.from_json(s) for s in self.spans]


class HostBackend(LibvirtBackend):
    """The backend of one host's part of a spanning lab: the single-host libvirt backend, so
    that its own teardown after a failed creation removes its part only."""

    def open_lab(self, lab_id: str) -> LibvirtLab:
        """The part on this host."""
        return LabBackendBase.open_lab(self, lab_id)

    def destroy_lab(self, lab_id: str) -> None:
        """Remove the part on this host."""
        LabBackendBase.destroy_lab(self, lab_id)


_PARTS = threading.Lock()  # held while a lab backend's host backends are looked up or opened


def host_backend(backend: LibvirtBackend, lab_id: str, host: LabHost, first: bool) -> HostBackend:
    """The backend of ``host``'s part of lab ``lab_id``, opened once per lab backend (closed
    with it); see the module's doc for its state directory. ``BackendError`` naming the host
    when it cannot be reached."""
    state_dir = backend.config.state_dir
    if not first:
        state_dir = backend.lab_dir(lab_id) / "hosts" / host.name
    key = (host.uri, state_dir)
    with _PARTS:
        if key not in backend.host_backends:
            config: LibvirtConfig = replace(backend.config, uri=host.uri, state_dir=state_dir)
            if not first:  # a pool the lab backend names is on its host; files as the host's
                config = replace(config, pool=None, remote_files=host.remote_files)
            with _on(host):
                backend.host_backends[key] = HostBackend(config)
        found = backend.host_backends[key]
    assert isinstance(found, HostBackend)
    return found


@contextlib.contextmanager
def _on(host: LabHost) -> Iterator[None]:
    """A ``BackendError`` raised inside names ``host``."""
    try:
        yield
    except BackendError as exc:
        if str(exc).startswith(f"host {host.name}"):
            raise
        raise BackendError(f"host {host.name} ({host.uri}): {exc}") from exc


def is_spanning(backend: LabBackendBase[Any, Any], lab_id: str) -> bool:
    """Whether lab ``lab_id`` of ``backend``'s state directory spans hosts (has their ledger)."""
    return (backend.lab_dir(lab_id) / SPAN_LEDGER).exists()


# --------------------------------------------------------------------------- creation


def create_lab(
    backend: LibvirtBackend,
    resources: LabResources,
    hosts: Sequence[LabHost],
    placement: dict[str, str],
) -> LibvirtLab | SpanningLab:
    """Create a lab whose machines run on the hosts ``placement`` names (machines powered
    off); a lab placed on the first host only is the backend's ordinary lab.

    Checked before anything is made: the first of ``hosts`` is this machine's libvirt at the
    backend's URI, every machine is placed on one of ``hosts``, the spans can be planned on
    the hosts used (each reachable, with an IPv4 underlay). Whatever was made is removed again
    on failure; a host that cannot be reached then is named in the error's notes."""
    first = hosts[0]
    _check(backend, resources, hosts, placement)
    used = [h for h in hosts if h is first or h.name in placement.values()]
    if len(used) == 1:
        return backend.create_lab(resources)
    bridges = [bridge_name(resources.lab_id, i) for i in range(len(resources.networks))]
    spans = plan_spans(resources.lab_id, bridges, [h.span_host() for h in used])
    lab_dir = backend.lab_dir(resources.lab_id)
    if (lab_dir / SPAN_LEDGER).exists() or backend.ledger_path(resources.lab_id).exists():
        raise BackendError(
            f"lab id {resources.lab_id} already exists (its ledger in {lab_dir}); destroy it "
            "first or pick another id"
        )
    for path in (lab_dir, lab_dir / "hosts"):  # libvirt's QEMU user reaches the parts' sockets
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    ledger = SpanLedger(
        path=lab_dir / SPAN_LEDGER,
        owner=Owner(resources.lab_name, resources.lab_id, state_dir=str(backend.config.state_dir)),
        resources=resources,
        hosts=[h.to_json() for h in used],
        placement=dict(placement),
        spans=[s.to_json() for s in spans],
    )
    ledger.save()
    logger.info(
        "creating lab %s (id %s) over hosts %s",
        resources.lab_name,
        resources.lab_id,
        ", ".join(f"{h.name} ({', '.join(m for m, on in placement.items() if on == h.name)})"
                  for h in used),
    )  # fmt: skip
    lab = SpanningLab(backend, ledger)
    try:
        lab.build()
    except BaseException as exc:
        logger.info("creating lab %s failed; removing what was created", resources.lab_id)
        try:
            destroy_lab(backend, resources.lab_id)
        except LeakError as leak:
            exc.add_note(str(leak))
        raise
    return lab


def _check(
    backend: LibvirtBackend,
    resources: LabResources,
    hosts: Sequence[LabHost],
    placement: dict[str, str],
) -> None:
    first = hosts[0]
    problems = []
    if not LibvirtConfig(uri=first.uri).is_local:
        problems.append(
            f"the first host, {first.name}, is at {first.uri}: it runs the lab's gateways "
            "(SSH access, a NAT network's way out), which are made on its bridges from this "
            "machine, so it must be this machine's libvirt (e.g. qemu:///system)"
        )
    elif first.uri != backend.config.uri:
        problems.append(
            f"the first host, {first.name}, is at {first.uri}, but the lab's libvirt backend is "
            f"at {backend.config.uri} (--stx-libvirt-uri, stx-lab --uri); make them the same"
        )
    names = [h.name for h in hosts]
    for machine in resources.machines:
        if placement.get(machine.name) not in names:
            problems.append(
                f"machine {machine.name} is placed on {placement.get(machine.name)!r}, not one "
                f"of the lab's hosts ({', '.join(names)})"
            )
    if problems:
        raise BackendError(f"lab {resources.lab_id} over hosts: " + "; ".join(problems))


# --------------------------------------------------------------------------- the lab


class SpanningLab(LabHandleBase):
    """Power, consoles and snapshots of a lab over several hosts (implements
    ``base.LabHandle``): each machine's operation goes to the part on its host."""

    backend: LibvirtBackend
    ledger: SpanLedger

    def __init__(self, backend: LibvirtBackend, ledger: SpanLedger) -> None:
        super().__init__(backend, ledger)
        self.hosts = ledger.lab_hosts()
        self.spans = ledger.network_spans()
        self._parts: dict[str, LibvirtLab] = {}
        self._parts_lock = threading.Lock()  # parts are opened by one thread at a time
        self._spans_lock = threading.Lock()  # so are spans (two machines started at once)

    def host(self, machine: str) -> LabHost:
        """The host ``machine`` runs on."""
        self.resources.machine(machine)
        name = self.ledger.placement[machine]
        return next(h for h in self.hosts if h.name == name)

    def part_resources(self, host: LabHost) -> LabResources:
        """What the part on ``host`` is made of: the machines placed there and every network;
        on any host but the first, NAT networks isolated (their gateway is the first host's)."""
        res = self.resources
        machines = tuple(m for m in res.machines if self.ledger.placement[m.name] == host.name)
        networks = res.networks
        if host is not self.hosts[0]:
            networks = tuple(NetworkSpec(n.name) for n in networks)
        return LabResources(res.lab_name, res.lab_id, networks, machines)

    def _backend(self, host: LabHost) -> HostBackend:
        return host_backend(self.backend, self.lab_id, host, host is self.hosts[0])

    def _part(self, host: LabHost) -> LibvirtLab:
        """The part on ``host``, opened on first use."""
        with self._parts_lock:
            if host.name not in self._parts:
                backend = self._backend(host)
                with _on(host):
                    self._parts[host.name] = backend.open_lab(self.lab_id)
            return self._parts[host.name]

    def _on_part(self, machine: str, action: Callable[[LibvirtLab], T]) -> T:
        """``action`` on the part of ``machine``'s host; its errors name the host."""
        host = self.host(machine)
        part = self._part(host)
        with _on(host):
            return action(part)

    def open_spans(self, host: LabHost | None = None) -> None:
        """Make or mend every span, on ``host`` only or on all hosts (idempotent)."""
        with self._spans_lock:
            for span in self.spans:
                open_span(span, None if host is None else [host.name])

    # ---------------------------------------------------------------- creation

    def build(self) -> None:
        """Create the part on every host, then open the spans (called by :func:`create_lab`)."""
        for host in self.hosts:
            backend = self._backend(host)
            with _on(host):
                part = backend.create_lab(self.part_resources(host))
            with self._parts_lock:
                self._parts[host.name] = part
        self.open_spans()

    # ---------------------------------------------------------------- machines

    def state(self, machine: str) -> PowerState:
        """The machine's power state."""
        return self._on_part(machine, lambda p: p.state(machine))

    def power_off(self, machine: str) -> None:
        """Pull the plug; nothing to do when the machine is off."""
        self._on_part(machine, lambda p: p.power_off(machine))

    def reset(self, machine: str) -> None:
        """Hard reset; the console stays connected."""
        self._on_part(machine, lambda p: p.reset(machine))

    def console(self, machine: str) -> Transport:
        """An unconnected transport to the machine's serial console, on its host."""
        return self._on_part(machine, lambda p: p.console(machine))

    def console_log(self, machine: str) -> bytes:
        """Everything the machine's serial port printed."""
        return self._on_part(machine, lambda p: p.console_log(machine))

    def set_boot_order(self, machine: str, order: Sequence[BootDevice]) -> None:
        """Boot order from the next power-on."""
        self._on_part(machine, lambda p: p.set_boot_order(machine, order))

    def set_oem_strings(self, machine: str, strings: Sequence[str]) -> None:
        """SMBIOS OEM strings from the next power-on."""
        self._on_part(machine, lambda p: p.set_oem_strings(machine, strings))

    def mac_addresses(self, machine: str) -> tuple[str, ...]:
        """MAC of each NIC in spec order."""
        return self._on_part(machine, lambda p: p.mac_addresses(machine))

    def _start_paused(self, machine: str) -> None:
        """Start the machine paused (its networks started on its host), then mend the spans
        there: a network started anew has a new bridge, without its VXLAN device."""
        self._on_part(machine, lambda p: p._start_paused(machine))
        self.open_spans(self.host(machine))

    def _pause(self, machine: str, what: str) -> None:
        self._on_part(machine, lambda p: p._pause(machine, what))

    def _resume(self, machine: str, what: str) -> None:
        self._on_part(machine, lambda p: p._resume(machine, what))

    # ---------------------------------------------------------------- gateways

    def open_gateway(
        self, network: str, address: str, targets: Sequence[tuple[str, int]]
    ) -> Gateway:
        """A gateway on ``network``, on the first host (see ``LibvirtLab.open_gateway``); the
        span carries its traffic to and from the other hosts."""
        first = self.hosts[0]
        with _on(first):
            return self._part(first).open_gateway(network, address, targets)

    def close_gateway(self, network: str) -> None:
        """Remove the gateway of ``network``, if there is one."""
        first = self.hosts[0]
        with _on(first):
            self._part(first).close_gateway(network)

    # ---------------------------------------------------------------- snapshots

    def _take_snapshot(self, machine: str, name: str, state: PowerState, created: str) -> None:
        self._on_part(machine, lambda p: p._take_snapshot(machine, name, state, created))

    def _snapshots_of(self, machine: str) -> list[SnapshotInfo]:
        return self._on_part(machine, lambda p: p._snapshots_of(machine))

    def _snapshot_was_running(self, machine: str, name: str) -> bool:
        return self._on_part(machine, lambda p: p._snapshot_was_running(machine, name))

    def _restore(self, machine: str, name: str, running: bool) -> None:
        """Revert on the machine's host; restored running (paused), the spans there mended."""
        self._on_part(machine, lambda p: p._restore(machine, name, running))
        if running:
            self.open_spans(self.host(machine))

    def _resume_reverted(self, machine: str, name: str, before_resume: BeforeResume | None) -> None:
        self._on_part(machine, lambda p: p._resume_reverted(machine, name, before_resume))

    def _delete_snapshot(self, machine: str, name: str) -> None:
        self._on_part(machine, lambda p: p._delete_snapshot(machine, name))


def open_lab(backend: LibvirtBackend, lab_id: str) -> SpanningLab:
    """A handle on a spanning lab created earlier, from its ledger; a host is reached when
    one of its machines is first used."""
    return SpanningLab(backend, SpanLedger.load(backend.lab_dir(lab_id) / SPAN_LEDGER))


# --------------------------------------------------------------------------- teardown


def destroy_lab(backend: LibvirtBackend, lab_id: str) -> None:
    """Remove a spanning lab: its part on every host (the first host's last), then its spans;
    goes on past a host it cannot reach. ``LeakError`` names each host where something may
    remain and keeps the ledger for the next teardown or gc; else the ledger and the other
    hosts' state directories go too (the lab directory, once empty)."""
    path = backend.lab_dir(lab_id) / SPAN_LEDGER
    ledger = SpanLedger.load(path)
    hosts = ledger.lab_hosts()
    remaining: list[str] = []
    for host in [*hosts[1:], hosts[0]]:
        try:
            host_backend(backend, lab_id, host, host is hosts[0]).destroy_lab(lab_id)
        except (BackendError, LeakError) as exc:
            shown = str(exc)
            if not shown.startswith(f"host {host.name}"):
                shown = f"host {host.name} ({host.uri}): {shown}"
            logger.warning("teardown of lab %s: %s", lab_id, shown)
            remaining.append(shown)
    for span in ledger.network_spans():
        remaining += remove_span(span)
    _close_host_backends(backend, lab_id, hosts)
    if remaining:
        unreached = [
            h.name for h in hosts if any(r.startswith(f"host {h.name}") for r in remaining)
        ]
        raise LeakError(
            f"lab {lab_id} over hosts {', '.join(h.name for h in hosts)}: could not remove "
            f"everything on {', '.join(unreached) or 'its hosts'}; kept its ledger {path} for "
            "the next teardown or gc:\n  " + "\n  ".join(remaining)
        )
    path.unlink(missing_ok=True)
    shutil.rmtree(backend.lab_dir(lab_id) / "hosts", ignore_errors=True)
    with contextlib.suppress(OSError):
        backend.lab_dir(lab_id).rmdir()  # only if nothing else lives there
    logger.info("destroyed lab %s on hosts %s", lab_id, ", ".join(h.name for h in hosts))


def _close_host_backends(backend: LibvirtBackend, lab_id: str, hosts: Sequence[LabHost]) -> None:
    """Close the connections of the lab's parts on hosts other than the first (the first
    host's backend serves every lab of the lab backend)."""
    state_dirs = {backend.lab_dir(lab_id) / "hosts" / h.name for h in hosts}
    with _PARTS:
        for key in [k for k in backend.host_backends if k[1] in state_dirs]:
            backend.host_backends.pop(key).close()
