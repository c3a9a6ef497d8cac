"""Garbage collection of labs whose owners are gone: ``stx-lab gc`` and the start of a session.

What may exist on the host is known before it is created: the lab state
(``<state dir>/labs/<id>/lab.json``) is written before the backend is asked for anything, and
the backend writes its ledger (``owner.json``) before its first object, so a crash at any point
leaves a complete list. Besides that list, every object a backend can label carries an owner
record (libvirt domains and networks: ``<stx:owner lab-id= pid= host= state-dir=>`` naming the
state dir of its lab; VirtualBox VMs: extradata ``pytest-starlingx/owner``). Every backend kind
this host can run is surveyed, only through ``base.Backend`` (``owned_objects``, ``lab_ids``,
``destroy_lab``, ``close``); a kind the host cannot run is never opened.

A lab is removed when all of these hold:

* it was not kept on purpose (``--stx-keep``, ``stx-lab up``);
* no live lease holds it (see :mod:`pytest_starlingx.lifecycle.leases`);
* its owner ran on this host and is gone (the pid in its state; without a state, the pid in
  every owner record of its objects and ledger).

Anything owned by another host is left alone, and an object without our owner record is never
seen, let alone touched. Removal is the backend's idempotent ``destroy_lab`` followed by the
lab's state files. A lab spanning several libvirt hosts is found on its first host (this one)
and removed on every host its ledger names (``backends/multihost.py``); a host that cannot be
reached fails the removal, naming it, and the lab stays for the next collection.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from pytest_starlingx.backends import make_backend, usable_kinds
from pytest_starlingx.backends.base import Backend, Owner
from pytest_starlingx.errors import StxError
from pytest_starlingx.lifecycle.leases import Lease, read_leases
from pytest_starlingx.lifecycle.state import LabState, forget_lab, state_dir
from pytest_starlingx.ownership import Holder

log = logging.getLogger("pytest_starlingx.lifecycle.gc")

EMPTY_DIR_GRACE = 60.0  # seconds an empty lab directory may be a state file about to appear
#: A lab's ledgers: its backend's, and that of a lab spanning hosts (``backends/multihost.py``,
#: written before anything is made on any host).
LEDGERS = ("owner.json", "hosts.json")

BackendOpener = Callable[[str, Path], Backend]
"""Opens a backend by kind (libvirt, virtualbox) for labs of a given state dir."""


@dataclass
class LabRecord:
    """Everything the host knows about one lab id."""

    lab_id: str
    root: Path  # the state dir of the lab
    state: LabState | None = None
    owners: list[Owner] = field(default_factory=list)  # from objects and the ledger
    objects: list[str] = field(default_factory=list)  # "domain stx-..." etc.
    leases: list[Lease] = field(default_factory=list)
    empty_dir: bool = False  # only an empty directory is left
    kinds: set[str] = field(default_factory=set)  # backends holding its objects or ledger

    @property
    def lab_dir(self) -> Path:
        """The lab's directory."""
        return self.root / "labs" / self.lab_id

    @property
    def name(self) -> str:
        """The lab's name, as far as known."""
        if self.state is not None:
            return self.state.name
        return self.owners[0].lab_name if self.owners else "?"

    @property
    def backends(self) -> list[str]:
        """The backend kinds that may hold the lab's objects: its state's, else those that
        reported objects or a ledger of it."""
        return [self.state.backend] if self.state is not None else sorted(self.kinds)

    @property
    def backend(self) -> str:
        """The backend kinds holding the lab, for people."""
        return ", ".join(self.backends) or "-"

    @property
    def created(self) -> str:
        """Creation time (ISO 8601), as far as known."""
        if self.state is not None:
            return self.state.created
        return min((o.created for o in self.owners), default="")

    @property
    def owner(self) -> Holder | None:
        """The process that created the lab."""
        if self.state is not None:
            return self.state.owner
        if self.owners:
            return self.owners[0].holder
        return None

    def verdict(self) -> tuple[bool, str]:
        """(remove?, why)."""
        if self.empty_dir:
            return True, "empty lab directory"
        if self.state is not None and self.state.kept:
            return False, f"kept on purpose (remove with `stx-lab down {self.lab_id}`)"
        live = [lease for lease in self.leases if lease.live()]
        if live:
            return False, "held by " + ", ".join(lease.describe() for lease in live)
        expired = " and its leases expired" if self.leases else ""
        if self.state is not None:
            holder = self.owner
            assert holder is not None
            if holder.host != socket.gethostname():
                return False, f"owned by a process on host {holder.host}"
            if holder.alive():
                return False, f"owner pid {holder.pid} is running"
            return True, f"owner pid {holder.pid} is gone{expired}"
        if not self.owners:
            return True, "leftover files only (no lab state, no objects, no ledger)"
        hosts = {o.host for o in self.owners}
        if hosts - {socket.gethostname()}:
            return False, f"owned by a process on host {', '.join(sorted(hosts))}"
        running = sorted({o.pid for o in self.owners if o.holder.alive()})
        if running:
            return False, f"owner pid {', '.join(map(str, running))} is running"
        pids = ", ".join(str(p) for p in sorted({o.pid for o in self.owners}))
        return True, f"no lab state; owner pid {pids} is gone{expired}"


def survey(backends: Mapping[str, Backend], root: Path | None = None) -> list[LabRecord]:
    """Every lab of ours on this host: from state files, and from the owner records and
    ledgers that ``backends`` (by kind, opened for ``root``) report.

    A lab without state that no backend claims (files only) may have left anything in any of
    them: each is asked to destroy it.
    """
    root = root or state_dir()
    records: dict[tuple[Path, str], LabRecord] = {}

    def record(where: Path, lab_id: str) -> LabRecord:
        return records.setdefault((where, lab_id), LabRecord(lab_id, where))

    labs = root / "labs"
    if labs.is_dir():
        now = time.time()
        for lab_dir in sorted(p for p in labs.iterdir() if p.is_dir()):
            if not any(lab_dir.iterdir()):
                if now - lab_dir.stat().st_mtime > EMPTY_DIR_GRACE:
                    record(root, lab_dir.name).empty_dir = True
                continue
            record(root, lab_dir.name)
    for kind, backend in backends.items():
        for what, name, owner in backend.owned_objects():
            where = Path(owner.state_dir) if owner.state_dir else root
            rec = record(where, owner.lab_id)
            rec.owners.append(owner)
            rec.objects.append(f"{what} {name}")
            rec.kinds.add(kind)
        for lab_id in backend.lab_ids():  # those with a ledger of this backend in root
            if (root, lab_id) in records:
                records[root, lab_id].kinds.add(kind)
    for rec in records.values():
        if rec.empty_dir:
            continue
        rec.state = _load_state(rec.lab_dir / "lab.json")
        if rec.state is None and not rec.kinds:
            rec.kinds = set(backends)
        for ledger in LEDGERS:
            ledger_owner = _ledger_owner(rec.lab_dir / ledger)
            if ledger_owner is not None:
                rec.owners.append(ledger_owner)
        rec.leases = read_leases(rec.lab_dir)
    return sorted(records.values(), key=lambda r: (r.created, r.lab_id))


def _load_state(path: Path) -> LabState | None:
    try:
        return LabState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("unreadable lab state %s: %s", path, exc)
        return None


def _ledger_owner(path: Path) -> Owner | None:
    try:
        return Owner.from_attributes(json.loads(path.read_text())["owner"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable ledger %s: %s", path, exc)
        return None


@dataclass
class GcResult:
    """What a collection did."""

    removed: list[tuple[LabRecord, str]] = field(default_factory=list)
    kept: list[tuple[LabRecord, str]] = field(default_factory=list)
    failed: list[tuple[LabRecord, str]] = field(default_factory=list)

    def lines(self, kept: bool = True) -> list[str]:
        """One line per lab, for people (``kept=False``: only the labs removed or not removable)."""
        out = [f"removed lab {r.name!r} (id {r.lab_id}): {why}" for r, why in self.removed]
        if kept:
            out += [f"kept lab {r.name!r} (id {r.lab_id}): {why}" for r, why in self.kept]
        out += [f"FAILED to remove lab {r.name!r} (id {r.lab_id}): {why}" for r, why in self.failed]
        return out


def collect(
    records: list[LabRecord], open_backend: BackendOpener, *, dry_run: bool = False
) -> GcResult:
    """Remove the labs whose verdict says so; report every lab."""
    result = GcResult()
    for rec in records:
        remove, why = rec.verdict()
        if not remove:
            result.kept.append((rec, why))
            continue
        if dry_run:
            result.removed.append((rec, f"{why} (dry run: nothing removed)"))
            continue
        try:
            for kind in [] if rec.empty_dir else rec.backends:
                open_backend(kind, rec.root).destroy_lab(rec.lab_id)
            forget_lab(rec.lab_id, rec.root)
        except StxError as exc:
            log.warning("gc: lab %s: %s", rec.lab_id, exc)
            result.failed.append((rec, str(exc)))
            continue
        log.info("gc: removed lab %s (id %s): %s", rec.name, rec.lab_id, why)
        result.removed.append((rec, why))
    return result


class Backends:
    """Backends opened on demand, one per (kind, state dir); closed together."""

    def __init__(self, libvirt_uri: str | None = None) -> None:
        self.uri = libvirt_uri
        self._open: dict[tuple[str, Path], Backend] = {}

    def __call__(self, kind: str, root: Path) -> Backend:
        key = (kind, root)
        if key not in self._open:
            self._open[key] = make_backend(kind, self.uri, root)
        return self._open[key]

    def usable(self, root: Path) -> dict[str, Backend]:
        """Every backend kind this host can run, opened for the labs of ``root``."""
        return {kind: self(kind, root) for kind in usable_kinds(self.uri)}

    def close(self) -> None:
        """Close every backend opened."""
        for backend in self._open.values():
            backend.close()
        self._open.clear()


def gc(libvirt_uri: str | None = None, *, dry_run: bool = False) -> GcResult:
    """Collect the labs of dead owners on this host, in every backend it can run.

    One collection at a time per state dir (several xdist workers may start one at once).
    """
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    backends = Backends(libvirt_uri)
    try:
        with FileLock(root / "gc.lock"):
            return collect(survey(backends.usable(root), root), backends, dry_run=dry_run)
    finally:
        backends.close()


def age(created: str) -> str:
    """``3m``/``2h``/``4d`` since an ISO 8601 time."""
    try:
        seconds = (datetime.now(UTC) - datetime.fromisoformat(created)).total_seconds()
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"
