"""How a pytest session gets its labs, reliably.

Before the first lab: SIGINT/SIGTERM handlers (see :mod:`.signals`) and a collection of the
orphans of dead sessions on this host (``stx-lab gc``), so a ``kill -9`` earlier costs nothing
but that collection. Then per lab request:

* under pytest-xdist, the run's shared lab (:mod:`.xdist`), held by the run's lease;
* with ``--stx-reuse``, a kept lab of the same description (same ``model.lab_key``) that is up and
  provisioned and that nobody holds; it is held by a lease and stays when the session ends;
* otherwise a new lab, held by this session's lease and removed at the end unless
  ``--stx-keep``.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.lab import Lab, attach_lab, destroy_lab
from pytest_starlingx.lifecycle.acquire import Lifecycle, Policy
from pytest_starlingx.lifecycle.gc import gc
from pytest_starlingx.lifecycle.golden import release_abandoned
from pytest_starlingx.lifecycle.leases import LeaseKeeper
from pytest_starlingx.lifecycle.state import LabState, lab_dir, state_dir
from pytest_starlingx.model import LabSpec
from pytest_starlingx.ownership import Holder
from pytest_starlingx.plugin.options import Settings
from pytest_starlingx.plugin.signals import InterruptHandlers
from pytest_starlingx.plugin.xdist import SharedLabs

log = logging.getLogger("pytest_starlingx.plugin")


class SessionLabs:
    """Gets labs for one session (or one xdist worker); see the module docstring."""

    def __init__(
        self, settings: Settings, worker: str | None = None, shared_root: Path | None = None
    ) -> None:
        self.settings = settings
        self.lifecycle = Lifecycle(Policy(
            keep=settings.keep, reuse=settings.reuse, golden=settings.golden,
            stage_snapshots=settings.stage_snapshots,
            purpose="pytest-xdist run" if worker else "pytest session",
        ), run_holder(worker))  # fmt: skip
        self.signals = InterruptHandlers()
        self.shared = SharedLabs(shared_root, worker) if worker and shared_root else None
        self.collected: list[str] = []  # what the start-up collection did
        self._started = False

    def start(self) -> None:
        """Before the first lab: take the signals, collect the orphans of dead sessions."""
        if self._started:
            return
        self._started = True
        self.signals.install()
        result = gc(self.settings.libvirt_uri)
        self.collected = result.lines(kept=False)
        released, not_released = release_abandoned(self.settings.libvirt_uri)
        self.collected += released + not_released
        for line in self.collected:
            log.warning("before creating labs: %s", line)

    def artifacts_suffix(self, private: bool) -> str:
        """``-gwN`` for a lab shared by xdist workers: each worker writes its own transcripts."""
        return f"-{self.shared.worker}" if self.shared is not None and not private else ""

    def get(
        self, spec: LabSpec, backend: Backend, artifacts: Path, stack: ExitStack, private: bool
    ) -> Lab:
        """A provisioned lab for ``spec``; ``stack`` releases (and maybe removes) it."""
        self.start()
        if self.shared is not None and not private:
            return self._shared(spec, backend, artifacts, stack)
        return stack.enter_context(self.lifecycle.acquire(spec, backend, artifacts))

    def close(self) -> None:
        """The session is over: stop the heartbeat, give the signals back."""
        self.lifecycle.close()
        self.signals.restore()

    def _shared(self, spec: LabSpec, backend: Backend, artifacts: Path, stack: ExitStack) -> Lab:
        """The run's lab, built by the first worker that needs it (see :mod:`.xdist`)."""
        assert self.shared is not None
        leases = self.lifecycle.leases

        def build(shared_backend: Backend) -> Lab:
            return self.lifecycle.bring_up(spec, shared_backend, artifacts, golden=False).lab

        def attach(shared_backend: Backend, lab_id: str) -> Lab:
            lab = attach_lab(spec, shared_backend, LabState.load(lab_id), artifacts)
            leases.take(lab_dir(lab_id), self.lifecycle.policy.purpose)
            return lab

        lab = self.shared.get(spec, backend, build, attach, stack)
        # Other workers may still use the lab: stop beating, leave the run's lease in place.
        stack.callback(leases.forget, lab_dir(lab.lab_id))
        return lab


def run_holder(worker: str | None) -> Holder:
    """Who holds the session's labs: the test *run*, i.e. the xdist controller for a worker
    (a lab outlives a worker that finishes early, and is freed once the whole run is gone),
    else the session's own process. Told by the worker's config, not by the environment, which
    a pytest started from inside a worker inherits."""
    return Holder.of(os.getppid()) if worker else Holder.me()


def remove_run_labs(entries: list[dict[str, object]], settings: Settings) -> None:
    """The last xdist worker removes the run's labs (kept ones only lose the run's lease)."""
    from pytest_starlingx.backends import make_backend

    for entry in entries:
        lab_id = str(entry["lab_id"])
        if entry.get("kept"):
            LeaseKeeper(run_holder(worker="last")).release(state_dir() / "labs" / lab_id)
            log.warning("lab %r (id %s) kept: remove it with `stx-lab down %s`", entry["name"],
                        lab_id, lab_id)  # fmt: skip
            continue
        backend = make_backend(str(entry.get("backend", "libvirt")), settings.libvirt_uri)
        destroy_lab(backend, lab_id)
        log.info("lab %r (id %s) removed by the last xdist worker", entry["name"], lab_id)


def remove_labs_left_by_workers(held: list[Path], settings: Settings) -> list[str]:
    """In the xdist controller, once its workers are gone: remove the labs the run still holds
    (``held``: the lab directories with the controller's lease).

    The last worker to finish removes the run's labs, but a worker stopped mid-teardown does
    not: on a Ctrl-C the controller stops its workers, and execnet interrupts a worker that is
    still busy 5 s later and ends it 10 s after that. The run's leases are in the controller's
    name (:func:`run_holder`); released here, the labs go as ``stx-lab gc`` removes them (kept
    labs stay). Returns gc's lines.
    """
    keeper = LeaseKeeper(Holder.me())
    for path in held:
        keeper.release(path)
    return gc(settings.libvirt_uri).lines(kept=False)
