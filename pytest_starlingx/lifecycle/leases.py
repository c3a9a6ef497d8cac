"""Leases: who is using a lab right now, so that gc never takes a lab from a live holder.

A lease is a file ``<state dir>/labs/<id>/leases/<holder>.json`` naming the holding process
(host, pid and the process's start time, which tells a reused pid apart). A background thread
touches the file every :data:`HEARTBEAT` seconds. A lease is live when:

* its holder runs on this host: the process with that pid and start time still exists (a live
  holder never loses its lab, however loaded the host; a dead one frees it at once);
* its holder runs on another host (a shared state dir): its heartbeat is younger than its ttl;
* it is durable (``stx-lab up --golden``: a person holds the lab until ``stx-lab down``).

The holder is the test *run*: a plain pytest session holds its labs itself; under pytest-xdist
the workers hold them in the name of the controlling process, so a lab outlives a worker that
finishes early and is freed when the whole run is gone (``kill -9`` included).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.ownership import Holder

log = logging.getLogger("pytest_starlingx.lifecycle.leases")

HEARTBEAT = 5.0  # seconds between touches of a lease file
TTL = 60.0  # seconds a lease of a holder on another host lives without a heartbeat


@dataclass(frozen=True)
class Lease:
    """One lease file, as read."""

    path: Path
    holder: Holder
    purpose: str
    ttl: float
    heartbeat: float  # the file's mtime (epoch seconds)
    durable: bool = False  # held until released, whether its holder lives or not

    def live(self, now: float | None = None) -> bool:
        """See the module docstring."""
        if self.durable:
            return True
        alive = self.holder.alive()
        if alive is not None:
            return alive
        return (now or time.time()) - self.heartbeat < self.ttl

    def describe(self, now: float | None = None) -> str:
        """``pid 123 (pytest, 4s ago)``, ``... expired`` or ``... until released``."""
        if self.durable:
            return f"{self.holder} ({self.purpose}, until released)"
        age = (now or time.time()) - self.heartbeat
        state = "" if self.live(now) else ", expired"
        return f"{self.holder} ({self.purpose}, beat {age:.0f}s ago{state})"


def leases_dir(lab_dir: Path) -> Path:
    """Where a lab's leases live."""
    return lab_dir / "leases"


def read_leases(lab_dir: Path) -> list[Lease]:
    """Every lease of the lab in ``lab_dir``; unreadable files are skipped."""
    found = []
    for path in sorted(leases_dir(lab_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            holder = Holder(data["host"], int(data["pid"]), data.get("start"))
            found.append(
                Lease(path, holder, data.get("purpose", ""), float(data.get("ttl", TTL)),
                      path.stat().st_mtime, bool(data.get("durable", False)))
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("skipping unreadable lease %s: %s", path, exc)
    return found


def live_leases(lab_dir: Path) -> list[Lease]:
    """The leases of the lab that still hold it."""
    now = time.time()
    return [lease for lease in read_leases(lab_dir) if lease.live(now)]


def held_by(holder: Holder, labs: Path) -> list[Path]:
    """The lab directories under ``labs`` in which ``holder`` has a lease."""
    return sorted(path.parent.parent for path in labs.glob(f"*/leases/{holder.key}.json"))


class LeaseKeeper:
    """The leases of this process: taken, kept fresh by one heartbeat thread, released."""

    def __init__(self, holder: Holder | None = None, interval: float = HEARTBEAT) -> None:
        self.holder = holder or Holder.me()
        self.interval = interval
        self._paths: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, lab_dir: Path, purpose: str, durable: bool = False) -> Path:
        """Hold the lab in ``lab_dir`` (idempotent); returns the lease file. A ``durable``
        lease holds the lab after this process ends, until it is released."""
        path = leases_dir(lab_dir) / f"{self.holder.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self.holder), "purpose": purpose, "ttl": TTL, "durable": durable}
        write_json_atomic(path, data, indent=None)
        with self._lock:
            self._paths.add(path)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, name="stx-lease-heartbeat", daemon=True
                )
                self._thread.start()
        log.debug("lease taken: %s", path)
        return path

    def release(self, lab_dir: Path) -> None:
        """Give the lab in ``lab_dir`` up (the lease file goes away)."""
        path = leases_dir(lab_dir) / f"{self.holder.key}.json"
        self.forget(lab_dir)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        log.debug("lease released: %s", path)

    def forget(self, lab_dir: Path) -> None:
        """Stop the heartbeat for the lab but leave the lease file (another worker goes on)."""
        with self._lock:
            self._paths.discard(leases_dir(lab_dir) / f"{self.holder.key}.json")

    def stop(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                paths = list(self._paths)
            for path in paths:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    log.warning("lease %s vanished; the lab is no longer held", path)
                    with self._lock:
                        self._paths.discard(path)
