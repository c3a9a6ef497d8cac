"""Golden labs: provision a lab once, keep it as a snapshot, restore it in seconds.

Design (chosen over cloning disks into a new lab): the golden lab's machines, networks and
disks stay defined, as a lab of their own in the state directory (``stx-lab list`` shows it as
kept), and hold one internal snapshot, :data:`GOLDEN_SNAPSHOT`, of every node taken at one
instant (all paused, disk and memory). A session whose lab has the same :func:`golden_key`
reverts that snapshot (all nodes restored paused, then resumed together) and gets the golden lab
itself; when it is done the machines are powered off and the snapshot is intact for the next
one. Reverting is a few seconds, where cloning qcow2 disks over backing files would need the
memory image carried across separately (and a boot otherwise). The price is one user at a time
per golden lab: a session that finds it in use builds a fresh lab instead. A golden lab in use
is held by its user's lease (:mod:`pytest_starlingx.lifecycle.leases`), like any lab; ``stx-lab up
--golden`` holds it with a durable lease until ``stx-lab down``.

After a revert the guests are repaired and checked: the clock is set from the host's (a revert
puts a guest back to the time of the snapshot), every console logs in again (the serial login of
the snapshot is stale: new console connection, idle timeout), and every host must be
``unlocked | enabled | available``. A golden lab that is incomplete (the snapshot did not finish on
every node), whose machines or snapshots are missing, that fails to revert, or that fails the
check is removed and built again: it is never handed out.

The key covers the lab description (without timeouts, which change nothing in the lab), the
passwords it uses (hashed), the content hash of the image and :data:`PIPELINE_VERSION`. Custom
stages from the lab file are part of the description, so of the key; stages registered from a
conftest (``stx_stage``) are not: the golden snapshot is taken before them, and they run after
every build and every restore (after the whole pipeline, even those declared ``before`` a point).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from pytest_starlingx.backends.base import Backend, LabHandle, PowerState
from pytest_starlingx.errors import StxError
from pytest_starlingx.files import write_atomic, write_json_atomic
from pytest_starlingx.lab import Lab, build_lab, destroy_lab, image_path, open_lab, plan_stages
from pytest_starlingx.lifecycle.checkpoints import enable_checkpoints, revert_lab, set_clock
from pytest_starlingx.lifecycle.leases import LeaseKeeper, live_leases, read_leases
from pytest_starlingx.lifecycle.state import LabState, LabStatus, lab_dir, state_dir
from pytest_starlingx.model import LabSpec, lab_key
from pytest_starlingx.stages.base import AVAILABLE, AVAILABLE_TEXT
from pytest_starlingx.stages.pipelines import PIPELINE_VERSION

log = logging.getLogger("pytest_starlingx.lifecycle.golden")

GOLDEN_SNAPSHOT = "stx-golden"
HEALTH_TIMEOUT = 120.0  # seconds for the checks after a restore


class GoldenBroken(StxError):
    """A golden lab cannot be used (incomplete, missing parts, failed check); it is rebuilt."""


def golden_dir() -> Path:
    """Where golden records live: ``<state dir>/golden/<key>/golden.json``."""
    return state_dir() / "golden"


def image_digest(iso: Path) -> str:
    """SHA-256 of the image's content, cached beside it (the placed ISO never changes)."""
    cache = iso.parent / f"{iso.name}.sha256"
    if cache.exists() and cache.stat().st_mtime >= iso.stat().st_mtime:
        return cache.read_text().strip()
    digest = hashlib.sha256()
    with iso.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    write_atomic(cache, digest.hexdigest())
    return digest.hexdigest()


def golden_key(spec: LabSpec, image_sha256: str, version: int = PIPELINE_VERSION) -> str:
    """What makes two bring-ups end in the same lab: the lab key of description and passwords,
    the image's content and the pipeline version."""
    return lab_key(spec, image_sha256, version)


@dataclass
class GoldenRecord:
    """One golden lab: which lab holds it, what it was built from, whether it is whole."""

    key: str
    lab_id: str
    name: str
    topology: str
    backend: str
    image_sha256: str
    pipeline_version: int
    machines: list[str]
    done: list[str]  # the stages in the snapshot
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    complete: bool = False  # set once every node's snapshot is taken
    build_seconds: float = 0.0

    @property
    def path(self) -> Path:
        """The record's file."""
        return golden_dir() / self.key / "golden.json"

    def save(self) -> None:
        """Write atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, asdict(self))

    @classmethod
    def load(cls, key: str) -> GoldenRecord | None:
        """The record of ``key``; None when there is none or it is unreadable."""
        try:
            data = json.loads((golden_dir() / key / "golden.json").read_text())
            data.pop("user", None)  # before leases, a record named its user
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def users(self, leases: LeaseKeeper | None = None) -> list[str]:
        """Who holds the golden lab now (live leases), other than ``leases``' own holder."""
        return [lease.describe() for lease in live_leases(lab_dir(self.lab_id))
                if leases is None or lease.holder != leases.holder]  # fmt: skip


def _lock() -> FileLock:
    golden_dir().mkdir(parents=True, exist_ok=True)
    return FileLock(str(golden_dir() / "golden.lock"))


def list_golden() -> list[GoldenRecord]:
    """Every golden record on this host, oldest first (unreadable ones are left out)."""
    records = [GoldenRecord.load(p.parent.name) for p in golden_dir().glob("*/golden.json")]
    return sorted((r for r in records if r is not None), key=lambda r: r.created)


def remove_golden(record: GoldenRecord, backend: Backend) -> None:
    """Remove the golden lab's hypervisor objects, its state and its record."""
    destroy_lab(backend, record.lab_id)
    shutil.rmtree(record.path.parent, ignore_errors=True)
    log.info("golden lab %s (lab id %s) removed", record.key, record.lab_id)


def check_golden(record: GoldenRecord, spec: LabSpec, backend: Backend) -> None:
    """Raise :class:`GoldenBroken` unless the record is whole and every node has the snapshot."""
    if not record.complete:
        raise GoldenBroken(f"golden lab {record.key} is partial: its snapshot never completed")
    machines = sorted(n.name for n in spec.nodes)
    if sorted(record.machines) != machines:
        raise GoldenBroken(f"golden lab {record.key} has machines {record.machines}")
    try:
        LabState.load(record.lab_id)
        handle = backend.open_lab(record.lab_id)
        snaps = {s.machine for s in handle.snapshots() if s.name == GOLDEN_SNAPSHOT and s.running}
    except (StxError, OSError, ValueError, TypeError) as exc:
        raise GoldenBroken(f"golden lab {record.key}: {exc}") from exc
    missing = sorted(set(machines) - snaps)
    if missing:
        raise GoldenBroken(
            f"golden lab {record.key}: no snapshot {GOLDEN_SNAPSHOT} on {', '.join(missing)}"
        )


def repair_after_revert(lab: Lab, timeout: float = HEALTH_TIMEOUT) -> None:
    """Set each running node's clock from the host's, log in again, wait for ``available``."""
    set_clock(lab, [n for n, m in lab.machines.items() if m.is_running()])
    lab.bringup.wait_hosts(
        [n.name for n in lab.spec.nodes], "command", f"all hosts {AVAILABLE_TEXT} after restore",
        timeout=timeout, **AVAILABLE,
    )  # fmt: skip


def restore_golden(record: GoldenRecord, spec: LabSpec, backend: Backend, artifacts: Path) -> Lab:
    """The golden lab reverted, repaired and checked; :class:`GoldenBroken` when it is not."""
    started = time.monotonic()
    check_golden(record, spec, backend)
    checked = time.monotonic()
    state = LabState.load(record.lab_id)
    state.done = list(record.done)
    state.status = LabStatus.RESTORING
    state.save()
    lab = open_lab(spec, backend, state, artifacts, consoles=False)
    try:
        revert_lab(lab, GOLDEN_SNAPSHOT)
        reverted = time.monotonic()
        repair_after_revert(lab)
    except StxError as exc:
        lab.close()
        raise GoldenBroken(
            f"golden lab {record.key} failed its check after restore: {exc}"
        ) from exc
    state.status = LabStatus.READY
    state.save()
    end = time.monotonic()
    log.info("%s: restored golden lab %s in %.1fs (check %.1fs, revert %.1fs, repair %.1fs)",
             spec.name, record.key, end - started, checked - started, reverted - checked,
             end - reverted)  # fmt: skip
    return lab


def build_golden(
    spec: LabSpec, backend: Backend, artifacts: Path, key: str, image_sha256: str,
    hold: Callable[[Lab], None], stage_snapshots: bool = False,
) -> tuple[Lab, GoldenRecord]:  # fmt: skip
    """A fresh lab, provisioned (without registered stages) and snapshotted as golden ``key``.

    ``hold`` is called with the created lab before it is provisioned (its user's lease).
    """
    started = time.monotonic()
    records: list[GoldenRecord] = []

    def prepare(lab: Lab) -> None:
        hold(lab)
        record = GoldenRecord(
            key, lab.lab_id, spec.name, spec.topology.value, spec.backend.value, image_sha256,
            PIPELINE_VERSION, sorted(lab.nodes), [],
        )  # fmt: skip
        record.save()  # incomplete until the snapshot is whole; claims the key meanwhile
        records.append(record)
        if stage_snapshots:
            enable_checkpoints(lab)

    try:
        lab = build_lab(spec, backend, artifacts, prepare=prepare, registered_stages=False)
        record = records[0]
        record.done = list(lab.state.done)
        record.save()
        lab.snapshot(GOLDEN_SNAPSHOT)
    except BaseException:
        for record in records:
            remove_golden(record, backend)
        raise
    lab.state.kept = True  # outlives the session; until now, gc's if its builder dies
    lab.state.save()
    record.complete = True
    record.build_seconds = round(time.monotonic() - started, 1)
    record.save()
    log.info("%s: golden lab %s built and snapshotted (lab id %s)", spec.name, key, lab.lab_id)
    return lab, record


@dataclass
class Obtained:
    """A golden lab handed out for use, and how it came about."""

    lab: Lab
    how: str  # restored | built
    record: GoldenRecord
    seconds: float


def obtain(
    spec: LabSpec, backend: Backend, artifacts: Path, leases: LeaseKeeper, *,
    purpose: str = "golden lab", durable: bool = False, stage_snapshots: bool = False,
) -> Obtained | None:  # fmt: skip
    """The golden lab of ``spec``: restored, else built (and made golden); registered stages run.

    The lab is held by a lease of ``leases`` (``durable``: until released, whoever is alive).
    None when the golden lab is in use elsewhere (the caller builds a plain lab instead).
    """
    plan_stages(spec)  # custom stages at points the lab lacks fail before anything is made
    started = time.monotonic()
    iso = image_path(spec)
    digest = image_digest(iso)
    key = golden_key(spec, digest)

    def hold(lab_id: str) -> None:
        leases.take(lab_dir(lab_id), purpose, durable=durable)

    with _lock():
        record = GoldenRecord.load(key)
        if record is not None and (users := record.users(leases)):
            log.warning("%s: golden lab %s is in use (%s)", spec.name, key, ", ".join(users))
            return None
        if record is not None:
            hold(record.lab_id)
    if record is not None:
        try:
            lab = restore_golden(record, spec, backend, artifacts)
        except GoldenBroken as exc:
            log.warning("%s: %s; removing it and building the lab again", spec.name, exc)
            leases.release(lab_dir(record.lab_id))
            remove_golden(record, backend)
        else:
            if _registered_pending(lab):
                lab.provision()
            return Obtained(lab, "restored", record, time.monotonic() - started)
    built: list[str] = []

    def hold_new(lab: Lab) -> None:
        built.append(lab.lab_id)
        hold(lab.lab_id)

    try:
        lab, record = build_golden(spec, backend, artifacts, key, digest, hold_new,
                                   stage_snapshots)  # fmt: skip
    except BaseException:
        for lab_id in built:  # the lab went with its lease
            leases.release(lab_dir(lab_id))
        raise
    if _registered_pending(lab):
        lab.provision()
    return Obtained(lab, "built", record, time.monotonic() - started)


def _registered_pending(lab: Lab) -> bool:
    from pytest_starlingx.stages.custom import registered

    return any(f"{c.node}:{c.name}" not in lab.state.done for c in registered())


def release(lab: Lab, leases: LeaseKeeper) -> None:
    """Hand a golden lab back: consoles closed, machines powered off, the lease given up."""
    lab.close()
    release_id(lab.handle, lab.lab_id)
    leases.release(lab_dir(lab.lab_id))


def release_id(handle: LabHandle, lab_id: str) -> None:
    """Power the golden lab ``lab_id`` off and mark it free; its durable leases (``stx-lab up
    --golden``) go (``stx-lab down`` of a golden lab)."""
    for machine in (m.name for m in handle.resources.machines):
        if handle.state(machine) is not PowerState.OFF:
            handle.power_off(machine)
    state = LabState.load(lab_id)
    state.status = LabStatus.GOLDEN
    state.save()
    for lease in read_leases(lab_dir(lab_id)):
        if lease.durable:
            lease.path.unlink(missing_ok=True)
    log.info("golden lab %s released (powered off)", lab_id)


def release_abandoned(libvirt_uri: str | None = None) -> tuple[list[str], list[str]]:
    """Power off and free the golden labs whose user died without releasing them.

    A session killed with SIGKILL leaves its restored golden lab running and its lease behind;
    such a lab is kept on purpose, so gc does not remove it, but it must not run on for nobody.
    Returns one line per golden lab released, and one per golden lab that failed to be.
    """
    from pytest_starlingx.backends import make_backend

    released: list[str] = []
    failed: list[str] = []
    claim = LeaseKeeper()
    try:
        for found in list_golden():
            where = f"golden lab {found.key} (lab id {found.lab_id})"
            directory = lab_dir(found.lab_id)
            with _lock():  # claimed for this process, so no session takes it meanwhile
                record = GoldenRecord.load(found.key)
                if record is None or not record.complete or live_leases(directory):
                    continue
                try:
                    if LabState.load(record.lab_id).status == LabStatus.GOLDEN:
                        continue  # released properly
                except (OSError, ValueError, TypeError):
                    continue
                gone = [lease for lease in read_leases(directory)]
                claim.take(directory, "stx-lab gc: releasing an abandoned golden lab")
            try:
                backend = make_backend(record.backend, libvirt_uri)
                try:
                    release_id(backend.open_lab(record.lab_id), record.lab_id)
                finally:
                    backend.close()
            except StxError as exc:
                failed.append(f"FAILED to power off {where}: {exc}")
                continue
            finally:
                claim.release(directory)
            for lease in gone:
                lease.path.unlink(missing_ok=True)
            users = ", ".join(str(lease.holder) for lease in gone) or "unknown"
            released.append(f"released {where}: its user ({users}) is gone; powered off")
    finally:
        claim.stop()
    return released, failed


def golden_of(lab_id: str) -> GoldenRecord | None:
    """The golden record held by lab ``lab_id``, if it is a golden lab."""
    return next((r for r in list_golden() if r.lab_id == lab_id), None)
