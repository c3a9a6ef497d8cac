"""What the libvirt and VirtualBox backends do alike, written once.

:class:`LedgerBase` is a lab's ledger (``labs/<id>/owner.json``): owner, resources and the
backend's own lists of objects that carry no owner record. :class:`LabBackendBase` holds the
flow of creating a lab (refuse what exists, write the ledger, build, remove it all again on
failure), of destroying one (only objects whose owner record or ledger names the lab id, then
only our files) and of listing labs. :class:`LabHandleBase` holds a lab's run directory, the
power-on and snapshot bookkeeping over its machines and the console socket. A backend fills in
the hypervisor's steps: the abstract methods, each one hypervisor action.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from pytest_starlingx.backends.base import (
    BeforeResume,
    BootDevice,
    LabResources,
    Owner,
    PowerState,
    SnapshotInfo,
    name_prefix,
)
from pytest_starlingx.errors import BackendError, LeakError
from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.transport import Transport, UnixSocketTransport

logger = logging.getLogger("pytest_starlingx.backend")

_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_COMMON_FIELDS = ("path", "owner", "resources")


@dataclass
class LedgerBase:
    """A lab's ledger; a backend's ledger adds its own fields, all written beside these."""

    path: Path
    owner: Owner
    resources: LabResources

    @classmethod
    def own_fields(cls) -> list[str]:
        """The backend's fields, in the order they are written."""
        return [f.name for f in fields(cls) if f.name not in _COMMON_FIELDS]

    @classmethod
    def required_fields(cls) -> list[str]:
        """The backend's fields without a default: every ledger it wrote has them (a field
        added later has a default, so that older ledgers still load)."""
        return [
            f.name
            for f in fields(cls)
            if f.name not in _COMMON_FIELDS
            and f.default is MISSING
            and f.default_factory is MISSING
        ]

    def save(self) -> None:
        """Write atomically."""
        data = {"owner": self.owner.as_attributes(), "resources": self.resources.to_json()}
        data |= {name: getattr(self, name) for name in self.own_fields()}
        write_json_atomic(self.path, data)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a ledger; ``BackendError`` when it is missing, unreadable or lacks a field."""
        try:
            data = json.loads(path.read_text())
            owner = Owner.from_attributes(data["owner"])
            resources = LabResources.from_json(data["resources"])
            missing = [name for name in cls.required_fields() if name not in data]
            if missing:
                raise KeyError(", ".join(missing))
            own = {name: data[name] for name in cls.own_fields() if name in data}
            return cls(path, owner, resources, **own)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"lab ledger {path} is missing or unreadable: {exc}") from exc

    @classmethod
    def is_ours(cls, path: Path) -> bool:
        """Whether the ledger at ``path`` was written by this backend (it has our fields)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and all(name in data for name in cls.required_fields())


class StateConfig(Protocol):
    """What the shared code needs of a backend's configuration."""

    @property
    def state_dir(self) -> Path:
        """Where labs keep their ledgers, sockets and logs."""


LedgerT = TypeVar("LedgerT", bound=LedgerBase)
LabT = TypeVar("LabT", bound="LabHandleBase")


class LabBackendBase(ABC, Generic[LedgerT, LabT]):
    """Creating, listing and destroying labs; implements ``base.Backend`` with its subclasses."""

    config: StateConfig
    ledger_type: type[LedgerT]
    hypervisor_error: ClassVar[type[Exception]]  # what a failed hypervisor call raises
    state_dir_hint: ClassVar[str]  # how to shorten a console socket path that is too long

    # ---------------------------------------------------------------- the hypervisor's part

    @abstractmethod
    def owned_objects(self) -> list[tuple[str, str, Owner]]:
        """(kind, name, owner) of every object carrying our owner record."""

    @abstractmethod
    def software_emulated(self) -> bool:
        """True when machines would run under software emulation; see ``base.Backend``."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the hypervisor connection."""

    @abstractmethod
    def _clashes(self, res: LabResources) -> list[str]:
        """Objects not of ours that have the names or resources the lab would take."""

    @abstractmethod
    def _new_ledger(self, res: LabResources) -> LedgerT:
        """The lab's directories made and its ledger, not yet written."""

    @abstractmethod
    def _handle(self, ledger: LedgerT) -> LabT:
        """A handle on the lab of ``ledger``."""

    @abstractmethod
    def _remove_objects(
        self,
        lab_id: str,
        owned: list[tuple[str, str]],
        ledger: LedgerT | None,
        remaining: list[str],
    ) -> None:
        """Remove the lab's ``owned`` (kind, name) objects and what ``ledger`` lists, each
        through :meth:`_remove`."""

    @abstractmethod
    def _remove_own_files(self, lab_dir: Path, ledger: LedgerT | None) -> None:
        """Remove the backend's files in the lab's directory besides the run dir and ledger."""

    @abstractmethod
    def _teardown_problem(self, exc: Exception) -> str | None:
        """What went wrong in a teardown step; None when its object was gone already."""

    def _check_host(self, res: LabResources) -> None:
        """Refuse a lab the host cannot run; every host can, unless a backend says otherwise."""

    # ---------------------------------------------------------------- shared

    def lab_dir(self, lab_id: str) -> Path:
        """The lab's directory in the state directory."""
        return self.config.state_dir / "labs" / lab_id

    def ledger_path(self, lab_id: str) -> Path:
        """The lab's ledger."""
        return self.lab_dir(lab_id) / "owner.json"

    def create_lab(self, resources: LabResources) -> LabT:
        """Create the lab's objects (machines powered off); see ``base.Backend``."""
        self._check_new(resources)
        ledger = self._new_ledger(resources)
        ledger.save()
        started = time.monotonic()
        try:
            lab = self._handle(ledger)
            lab.build()
        except BaseException as exc:
            logger.info("creating lab %s failed; removing what was created", resources.lab_id)
            try:
                self.destroy_lab(resources.lab_id)
            except LeakError as leak:
                exc.add_note(str(leak))
            raise
        logger.info("created lab %s in %.1fs", resources.lab_id, time.monotonic() - started)
        return lab

    def _check_new(self, res: LabResources) -> None:
        """Refuse a lab id in use, names taken by anything else, or sockets too long."""
        ours = [
            f"{kind} {name}"
            for kind, name, owner in self.owned_objects()
            if owner.lab_id == res.lab_id
        ]
        if ours or self.ledger_path(res.lab_id).exists():
            raise BackendError(
                f"lab id {res.lab_id} already exists ({', '.join(ours) or 'ledger'}); "
                "destroy it first or pick another id"
            )
        clashes = self._clashes(res)
        if clashes:
            raise BackendError(
                f"cannot create lab {res.lab_name} (id {res.lab_id}): these exist and are not "
                f"ours, so they are left alone: {', '.join(clashes)}"
            )
        self._check_host(res)
        sockets = [str(self.lab_dir(res.lab_id) / "run" / f"{m.name}.sock") for m in res.machines]
        too_long = [path for path in sockets if len(path) > _UNIX_PATH_MAX]
        if too_long:
            raise BackendError(
                f"console socket paths too long for a unix socket: {too_long[0]}; "
                f"{self.state_dir_hint}"
            )

    def open_lab(self, lab_id: str) -> LabT:
        """A handle on a lab created earlier, from its ledger."""
        return self._handle(self.ledger_type.load(self.ledger_path(lab_id)))

    def lab_ids(self) -> list[str]:
        """Ids of our labs that still have objects or a ledger of this backend here."""
        ids = {owner.lab_id for _, _, owner in self.owned_objects()}
        labs = self.config.state_dir / "labs"
        if labs.is_dir():
            ledgers = labs.glob("*/owner.json")
            ids.update(p.parent.name for p in ledgers if self.ledger_type.is_ours(p))
        return sorted(ids)

    def destroy_lab(self, lab_id: str) -> None:
        """Remove every object of ours for ``lab_id``; ``LeakError`` lists what remains."""
        started = time.monotonic()
        remaining: list[str] = []
        ledger_path = self.ledger_path(lab_id)
        ledger = None
        if ledger_path.exists():
            try:
                ledger = self.ledger_type.load(ledger_path)
            except BackendError as exc:
                logger.warning("teardown of lab %s goes on without its ledger: %s", lab_id, exc)
        owned = [(k, name) for k, name, owner in self.owned_objects() if owner.lab_id == lab_id]
        self._remove_objects(lab_id, owned, ledger, remaining)
        if remaining:
            raise LeakError(
                f"lab {lab_id}: could not remove {len(remaining)} object(s), kept the ledger "
                f"{ledger_path}; run the teardown again or remove them by hand:\n  "
                + "\n  ".join(remaining)
            )
        lab_dir = self.lab_dir(lab_id)
        shutil.rmtree(lab_dir / "run", ignore_errors=True)
        self._remove_own_files(lab_dir, ledger)
        ledger_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            lab_dir.rmdir()  # only if nothing else lives there
        logger.info("destroyed lab %s in %.1fs", lab_id, time.monotonic() - started)

    def _remove(self, remaining: list[str], what: str, action: Callable[[], object]) -> None:
        """One teardown action; an object already gone is fine, other failures are listed."""
        try:
            action()
        except self.hypervisor_error as exc:
            problem = self._teardown_problem(exc)
            if problem is None:
                logger.debug("%s: already gone", what)
                return
            logger.warning("teardown: %s: %s", what, problem)
            remaining.append(f"{what}: {problem}")
        else:
            logger.debug("removed %s", what)


class LabHandleBase(ABC):
    """One lab: its run directory (console sockets and logs), power-on and snapshots over its
    machines; implements ``base.LabHandle`` with its subclasses. Machine arguments are spec
    names; the hypervisor object of machine ``m`` is called ``prefix + m``."""

    def __init__(self, backend: LabBackendBase[Any, Any], ledger: LedgerBase) -> None:
        self.backend = backend
        self.ledger = ledger
        self.prefix = name_prefix(ledger.resources.lab_name, ledger.resources.lab_id)
        self.run_dir = backend.lab_dir(ledger.resources.lab_id) / "run"

    @property
    def resources(self) -> LabResources:
        """What the lab was created from."""
        return self.ledger.resources

    @property
    def lab_id(self) -> str:
        """The lab's id."""
        return self.ledger.resources.lab_id

    def socket_path(self, machine: str) -> Path:
        """Path of the machine's console socket."""
        return self.run_dir / f"{machine}.sock"

    def log_path(self, machine: str) -> Path:
        """Path of the machine's console log."""
        return self.run_dir / f"{machine}.serial.log"

    def destroy(self) -> None:
        """Remove the whole lab (see ``destroy_lab`` of the backend)."""
        self.backend.destroy_lab(self.lab_id)

    # ---------------------------------------------------------------- the hypervisor's part

    @abstractmethod
    def build(self) -> None:
        """Create the lab's objects (called by ``create_lab``)."""

    @abstractmethod
    def state(self, machine: str) -> PowerState:
        """The machine's power state."""

    @abstractmethod
    def power_off(self, machine: str) -> None:
        """Pull the plug; nothing to do when the machine is off."""

    @abstractmethod
    def reset(self, machine: str) -> None:
        """Hard reset; the console stays connected."""

    @abstractmethod
    def console(self, machine: str) -> Transport:
        """A new, unconnected byte channel to the machine's first serial port."""

    @abstractmethod
    def console_log(self, machine: str) -> bytes:
        """Everything the machine's serial port printed since the lab was created."""

    @abstractmethod
    def set_boot_order(self, machine: str, order: Sequence[BootDevice]) -> None:
        """Boot order used from the next power-on."""

    @abstractmethod
    def set_oem_strings(self, machine: str, strings: Sequence[str]) -> None:
        """SMBIOS OEM strings seen by the guest from the next power-on."""

    @abstractmethod
    def mac_addresses(self, machine: str) -> tuple[str, ...]:
        """MAC address of each NIC, in the order of the machine's ``nics``."""

    @abstractmethod
    def _start_paused(self, machine: str) -> None:
        """Start the machine (off) so that it is paused before its first instruction."""

    @abstractmethod
    def _pause(self, machine: str, what: str) -> None:
        """Pause the running machine; ``what`` says why, for an error."""

    @abstractmethod
    def _resume(self, machine: str, what: str) -> None:
        """Let the paused machine run; ``what`` says why, for an error."""

    @abstractmethod
    def _take_snapshot(self, machine: str, name: str, state: PowerState, created: str) -> None:
        """Snapshot ``name`` of the machine, which is in ``state`` (paused if it was running);
        ``created`` is the lab snapshot's time (ISO 8601)."""

    @abstractmethod
    def _snapshots_of(self, machine: str) -> list[SnapshotInfo]:
        """The machine's snapshots."""

    @abstractmethod
    def _snapshot_was_running(self, machine: str, name: str) -> bool:
        """Whether snapshot ``name`` of the machine was taken running; ``BackendError`` when
        there is no such snapshot."""

    @abstractmethod
    def _restore(self, machine: str, name: str, running: bool) -> None:
        """Bring the machine back to snapshot ``name``, paused or off when ``running``."""

    @abstractmethod
    def _resume_reverted(self, machine: str, name: str, before_resume: BeforeResume | None) -> None:
        """Let a machine restored to a running snapshot run, ``before_resume`` first."""

    @abstractmethod
    def _delete_snapshot(self, machine: str, name: str) -> None:
        """Delete the machine's snapshot ``name`` if it has one."""

    # ---------------------------------------------------------------- shared

    def _targets(self, machines: Sequence[str] | None) -> list[str]:
        """The named machines (default: all), each checked to be one of the lab's."""
        names = [m.name for m in self.resources.machines] if machines is None else list(machines)
        for name in names:
            self.resources.machine(name)
        return names

    def _alive(self, machine: str) -> bool:
        """Whether the machine runs or is paused (its console may come back)."""
        try:
            return self.state(machine) in (PowerState.RUNNING, PowerState.PAUSED)
        except BackendError:
            return False

    def _socket_transport(self, machine: str) -> UnixSocketTransport:
        """An unconnected transport to the machine's console socket, alive while it runs."""
        self.resources.machine(machine)
        return UnixSocketTransport(
            self.socket_path(machine), name=machine, alive=lambda: self._alive(machine)
        )

    def power_on(self, machine: str, before_resume: BeforeResume | None = None) -> None:
        """Start paused, call ``before_resume(machine)``, resume; a running machine is left
        alone, a paused one resumed.

        If ``before_resume`` raises, the machine stays paused and the error propagates.
        """
        state = self.state(machine)
        if state is PowerState.RUNNING:
            logger.info("%s: already running", machine)
            return
        if state is not PowerState.PAUSED:
            self._start_paused(machine)
        if before_resume is not None:
            before_resume(machine)
        self._resume(machine, f"resuming {machine}")
        logger.info("%s: powered on", machine)

    def snapshot(self, name: str, machines: Sequence[str] | None = None) -> None:
        """Snapshots of the machines at one instant (running ones paused, then resumed).

        On failure the parts already taken are deleted again, as far as they can be.
        """
        targets = self._targets(machines)
        started = time.monotonic()
        states = {m: self.state(m) for m in targets}
        paused: list[str] = []
        made: list[str] = []
        try:
            for machine in targets:
                if states[machine] is PowerState.RUNNING:
                    self._pause(machine, f"pausing {machine} for snapshot {name}")
                    paused.append(machine)
            created = datetime.now(UTC).isoformat(timespec="seconds")
            for machine in targets:
                self._take_snapshot(machine, name, states[machine], created)
                made.append(machine)
        except BaseException:
            for machine in made:  # keep going: remove every part that can be removed
                try:
                    self._delete_snapshot(machine, name)
                except BackendError as exc:
                    logger.warning(
                        "snapshot %s failed; removing its parts failed too: %s", name, exc
                    )
            raise
        finally:
            for machine in paused:
                self._resume(machine, f"resuming {machine} after snapshot {name}")
        logger.info(
            "snapshot %s of %s taken in %.1fs", name, ", ".join(targets), time.monotonic() - started
        )

    def snapshots(self, machine: str | None = None) -> list[SnapshotInfo]:
        """Snapshots of one machine or all machines, oldest first."""
        targets = self._targets(None if machine is None else [machine])
        infos = [info for m in targets for info in self._snapshots_of(m)]
        return sorted(infos, key=lambda i: (i.created, i.machine))

    def revert(
        self,
        name: str,
        machines: Sequence[str] | None = None,
        before_resume: BeforeResume | None = None,
    ) -> None:
        """Bring the machines back to snapshot ``name``.

        Machines snapshotted while running come back running, through ``before_resume`` as in
        :meth:`power_on`; those snapshotted while off stay off.
        """
        targets = self._targets(machines)
        started = time.monotonic()
        running = {machine: self._snapshot_was_running(machine, name) for machine in targets}
        for machine in targets:
            self._restore(machine, name, running[machine])
        for machine in targets:
            if running[machine]:
                self._resume_reverted(machine, name, before_resume)
        logger.info(
            "reverted %s to snapshot %s in %.1fs",
            ", ".join(targets),
            name,
            time.monotonic() - started,
        )

    def delete_snapshot(self, name: str, machines: Sequence[str] | None = None) -> None:
        """Delete snapshot ``name``; machines without it are skipped."""
        for machine in self._targets(machines):
            self._delete_snapshot(machine, name)
