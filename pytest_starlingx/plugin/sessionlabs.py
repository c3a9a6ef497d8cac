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
from contextlib import ExitStack
from pathlib import Path

from filelock import FileLock

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.checkpoints import enable_checkpoints
from pytest_starlingx.golden import golden_session, release_abandoned
from pytest_starlingx.lab import (
    Lab,
    attach_lab,
    create_lab,
    destroy_lab,
    image_path,
    lab_session,
)
from pytest_starlingx.labstate import LabState, LabStatus, all_states, state_dir
from pytest_starlingx.leases import Holder, LeaseKeeper, live_leases
from pytest_starlingx.model import LabSpec, lab_key
from pytest_starlingx.plugin.options import Settings
from pytest_starlingx.plugin.signals import InterruptHandlers
from pytest_starlingx.plugin.xdist import SharedLabs
from pytest_starlingx.reaper import gc

log = logging.getLogger("pytest_starlingx.plugin")


def lab_dir(lab: Lab) -> Path:
    """The lab's directory in the state dir (its leases live there)."""
    return lab.state.path.parent


class SessionLabs:
    """Gets labs for one session (or one xdist worker); see the module docstring."""

    def __init__(
        self, settings: Settings, worker: str | None = None, shared_root: Path | None = None
    ) -> None:
        self.settings = settings
        self.leases = LeaseKeeper()
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
        self.collected = [line for line in result.lines() if not line.startswith("kept")]
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
        if self.settings.reuse:
            lab = self._reuse(spec, backend, artifacts)
            if lab is not None:
                stack.callback(self._give_back, lab)
                return lab
        if self.settings.golden:
            lab = stack.enter_context(golden_session(
                spec, backend, artifacts, stage_snapshots=self.settings.stage_snapshots,
                keep=self.settings.keep,
            ))  # fmt: skip
        else:
            prepare = enable_checkpoints if self.settings.stage_snapshots else None
            lab = stack.enter_context(
                lab_session(spec, backend, artifacts, keep=self.settings.keep, prepare=prepare)
            )
        self.leases.take(lab_dir(lab), "pytest session")
        stack.callback(self.leases.release, lab_dir(lab))
        return lab

    def close(self) -> None:
        """The session is over: stop the heartbeat, give the signals back."""
        self.leases.stop()
        self.signals.restore()

    # ---------------------------------------------------------------- reuse

    def _reuse(self, spec: LabSpec, backend: Backend, artifacts: Path) -> Lab | None:
        key = lab_key(spec, str(image_path(spec)))
        with FileLock(state_dir() / "reuse.lock"):
            for state in all_states():
                if not self._reusable(state, key):
                    continue
                lab = attach_lab(spec, backend, state, artifacts)
                if not all(m.is_running() for m in lab.machines.values()):
                    lab.close()
                    continue
                self.leases.take(lab_dir(lab), "pytest --stx-reuse")
                log.warning("reusing kept lab %r (id %s)", state.name, state.lab_id)
                return lab
        log.info("no kept lab matches %r; building one", spec.name)
        return None

    def _reusable(self, state: LabState, key: str) -> bool:
        return (
            state.kept
            and state.status == LabStatus.READY
            and state.key == key
            and state.backend == self.settings.backend.value
            and not live_leases(state.path.parent)
        )

    def _give_back(self, lab: Lab) -> None:
        """A reused lab was kept by someone: it stays, only our lease goes."""
        lab.close()
        self.leases.release(lab_dir(lab))

    # ---------------------------------------------------------------- xdist

    def _shared(self, spec: LabSpec, backend: Backend, artifacts: Path, stack: ExitStack) -> Lab:
        assert self.shared is not None

        def build(shared_backend: Backend) -> Lab:
            if self.settings.reuse:
                reused = self._reuse(spec, shared_backend, artifacts)
                if reused is not None:
                    return reused
            lab = create_lab(spec, shared_backend, artifacts)
            try:
                lab.provision()
            except BaseException:
                lab.close()
                if not self.settings.keep:
                    destroy_lab(shared_backend, lab.lab_id)
                raise
            lab.state.kept = self.settings.keep or lab.state.kept
            lab.state.save()
            return lab

        def attach(shared_backend: Backend, lab_id: str) -> Lab:
            return attach_lab(spec, shared_backend, LabState.load(lab_id), artifacts)

        lab = self.shared.get(spec, backend, build, attach, stack)
        self.leases.take(lab_dir(lab), "pytest-xdist run")
        # Other workers may still use the lab: stop beating, leave the run's lease in place.
        stack.callback(self.leases.forget, lab_dir(lab))
        return lab


def remove_run_labs(entries: list[dict[str, object]], settings: Settings) -> None:
    """The last xdist worker removes the run's labs (kept ones only lose the run's lease)."""
    from pytest_starlingx.backends import make_backend

    for entry in entries:
        lab_id = str(entry["lab_id"])
        if entry.get("kept"):
            LeaseKeeper(Holder.run()).release(state_dir() / "labs" / lab_id)
            log.warning("lab %r (id %s) kept: remove it with `stx-lab down %s`", entry["name"],
                        lab_id, lab_id)  # fmt: skip
            continue
        backend = make_backend(str(entry.get("backend", "libvirt")), settings.libvirt_uri)
        destroy_lab(backend, lab_id)
        log.info("lab %r (id %s) removed by the last xdist worker", entry["name"], lab_id)
