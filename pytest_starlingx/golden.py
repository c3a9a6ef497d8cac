"""Golden labs: provision a lab once, keep it as a snapshot, restore it in seconds.

Design (chosen over cloning disks into a new lab): the golden lab's machines, networks and
disks stay defined, as a lab of their own in the state directory (``stx-lab list`` shows it as
kept), and hold one internal snapshot, :data:`GOLDEN_SNAPSHOT`, of every node taken at one
instant (all paused, disk and memory). A session whose lab has the same :func:`golden_key`
reverts that snapshot (all nodes restored paused, then resumed together) and gets the golden lab
itself; when it is done the machines are powered off and the snapshot is intact for the next
one. Reverting is a few seconds, where cloning qcow2 disks over backing files would need the
memory image carried across separately (and a boot otherwise). The price is one user at a time
per golden lab: a session that finds it in use builds a fresh lab instead.

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
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from pytest_starlingx.backends.base import Backend, LabHandle, PowerState
from pytest_starlingx.checkpoints import enable_checkpoints, revert_lab, set_clock
from pytest_starlingx.errors import StxError
from pytest_starlingx.files import write_atomic, write_json_atomic
from pytest_starlingx.lab import (
    Lab,
    create_lab,
    destroy_lab,
    image_path,
    lab_passwords,
    lab_session,
    plan_stages,
)
from pytest_starlingx.labstate import LabState, LabStatus, state_dir
from pytest_starlingx.leases import pid_alive
from pytest_starlingx.model import LabSpec, lab_key
from pytest_starlingx.stages.base import AVAILABLE, AVAILABLE_TEXT
from pytest_starlingx.stages.pipelines import PIPELINE_VERSION

log = logging.getLogger("pytest_starlingx.golden")

GOLDEN_SNAPSHOT = "stx-golden"
HEALTH_TIMEOUT = 120.0  # seconds for the checks after a restore
CLI_USER = "cli"  # a golden lab handed out by `stx-lab up --golden`, until `stx-lab down`


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
    user: str | None = None  # "pid:<n>" or "cli" while handed out
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
            return cls(**json.loads((golden_dir() / key / "golden.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def busy(self) -> bool:
        """Handed out to ``stx-lab up`` or to a live process other than this one."""
        if self.user is None:
            return False
        if self.user == CLI_USER:
            return True
        pid = int(self.user.removeprefix("pid:"))
        return pid != os.getpid() and pid_alive(pid)


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
    artifacts.mkdir(parents=True, exist_ok=True)
    lab = Lab(spec, backend.open_lab(record.lab_id), state, lab_passwords(spec, state), artifacts)
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
    spec: LabSpec, backend: Backend, artifacts: Path, key: str, image_sha256: str, user: str,
    stage_snapshots: bool = False,
) -> tuple[Lab, GoldenRecord]:  # fmt: skip
    """A fresh lab, provisioned (without registered stages) and snapshotted as golden ``key``."""
    started = time.monotonic()
    lab = create_lab(spec, backend, artifacts)
    record = GoldenRecord(
        key, lab.lab_id, spec.name, spec.topology.value, spec.backend.value, image_sha256,
        PIPELINE_VERSION, sorted(lab.nodes), [], user=user,
    )  # fmt: skip
    try:
        record.save()  # incomplete until the snapshot is whole; claims the key meanwhile
        if stage_snapshots:
            enable_checkpoints(lab)
        lab.provision(registered_stages=False)
        record.done = list(lab.state.done)
        record.save()
        lab.snapshot(GOLDEN_SNAPSHOT)
        lab.state.kept = True  # outlives the session; until now, gc's if its builder dies
        lab.state.save()
        record.complete = True
        record.build_seconds = round(time.monotonic() - started, 1)
        record.save()
    except BaseException:
        lab.close()
        remove_golden(record, backend)
        raise
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
    spec: LabSpec, backend: Backend, artifacts: Path, *, user: str | None = None,
    stage_snapshots: bool = False,
) -> Obtained | None:  # fmt: skip
    """The golden lab of ``spec``: restored, else built (and made golden); registered stages run.

    None when the golden lab is in use elsewhere (the caller builds a plain lab instead).
    """
    plan_stages(spec)  # custom stages at points the lab lacks fail before anything is made
    started = time.monotonic()
    user = user or f"pid:{os.getpid()}"
    iso = image_path(spec)
    digest = image_digest(iso)
    key = golden_key(spec, digest)
    with _lock():
        record = GoldenRecord.load(key)
        if record is not None and record.busy():
            log.warning("%s: golden lab %s is in use (%s)", spec.name, key, record.user)
            return None
        if record is not None:
            record.user = user
            record.save()
    if record is not None:
        try:
            lab = restore_golden(record, spec, backend, artifacts)
        except GoldenBroken as exc:
            log.warning("%s: %s; removing it and building the lab again", spec.name, exc)
            remove_golden(record, backend)
        else:
            if _registered_pending(lab):
                lab.provision()
            return Obtained(lab, "restored", record, time.monotonic() - started)
    lab, record = build_golden(spec, backend, artifacts, key, digest, user, stage_snapshots)
    if _registered_pending(lab):
        lab.provision()
    return Obtained(lab, "built", record, time.monotonic() - started)


def _registered_pending(lab: Lab) -> bool:
    from pytest_starlingx.stages.custom import registered

    return any(f"{c.node}:{c.name}" not in lab.state.done for c in registered())


def release(lab: Lab) -> None:
    """Hand a golden lab back: consoles closed, machines powered off, record freed."""
    lab.close()
    release_id(lab.handle, lab.lab_id)


def release_id(handle: LabHandle, lab_id: str) -> None:
    """Power the golden lab ``lab_id`` off and mark it free (``stx-lab down`` of a golden lab)."""
    for machine in (m.name for m in handle.resources.machines):
        if handle.state(machine) is not PowerState.OFF:
            handle.power_off(machine)
    state = LabState.load(lab_id)
    state.status = LabStatus.GOLDEN
    state.save()
    with _lock():
        record = golden_of(lab_id)
        if record is not None:
            record.user = None
            record.save()
    log.info("golden lab %s released (powered off)", lab_id)


def release_abandoned(libvirt_uri: str | None = None) -> tuple[list[str], list[str]]:
    """Power off and free the golden labs whose user died without releasing them.

    A session killed with SIGKILL leaves its restored golden lab running and marked as its own;
    such a lab is kept on purpose, so gc does not remove it, but it must not run on for nobody.
    Returns one line per golden lab released, and one per golden lab that failed to be.
    """
    from pytest_starlingx.backends import make_backend

    me = f"pid:{os.getpid()}"
    released: list[str] = []
    failed: list[str] = []
    for found in list_golden():
        with _lock():  # claimed for this process, so no session takes it meanwhile
            record = GoldenRecord.load(found.key)
            if record is None or not record.complete or record.user in (None, CLI_USER, me):
                continue
            if record.busy():
                continue
            gone, record.user = record.user, me
            record.save()
        where = f"golden lab {record.key} (lab id {record.lab_id})"
        try:
            backend = make_backend(record.backend, libvirt_uri)
            try:
                release_id(backend.open_lab(record.lab_id), record.lab_id)
            finally:
                backend.close()
        except StxError as exc:
            failed.append(f"FAILED to power off {where}: {exc}")
            continue
        released.append(f"released {where}: its user ({gone}) is gone; powered off")
    return released, failed


def golden_of(lab_id: str) -> GoldenRecord | None:
    """The golden record held by lab ``lab_id``, if it is a golden lab."""
    return next((r for r in list_golden() if r.lab_id == lab_id), None)


@contextmanager
def golden_session(
    spec: LabSpec, backend: Backend, artifacts: Path, *, stage_snapshots: bool = False,
    keep: bool = False,
) -> Iterator[Lab]:  # fmt: skip
    """Like :func:`~pytest_starlingx.lab.lab_session`, through a golden lab.

    The golden lab is released (powered off, kept) at the end; a fresh lab built because the
    golden one was busy is destroyed unless ``keep``.
    """
    got = obtain(spec, backend, artifacts, stage_snapshots=stage_snapshots)
    if got is None:
        log.warning("%s: building a fresh lab instead of the busy golden one", spec.name)
        with lab_session(spec, backend, artifacts, keep=keep) as lab:
            yield lab
        return
    log.info("%s: golden lab %s %s in %.1fs", spec.name, got.lab.lab_id, got.how, got.seconds)
    try:
        yield got.lab
    finally:
        release(got.lab)
