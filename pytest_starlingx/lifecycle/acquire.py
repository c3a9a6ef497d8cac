"""Acquiring a lab, one way for every user: the pytest plugin, ``stx-lab up`` and bench.

A :class:`Policy` says how: reuse a kept lab of the same description, restore (or make) a
golden one, snapshot after each stage, keep the lab afterwards, leave a failed bring-up for
inspection. A :class:`Lifecycle` brings labs up under its policy, holds each with a lease in
its holder's name (so gc never takes it), remembers failed bring-ups (a later request for the
same lab fails at once with the first error, instead of failing slowly again), and hands each
lab back as the policy says: removed, kept, or (golden) powered off with its snapshot intact.

::

    lifecycle = Lifecycle(Policy(keep=True))
    with lifecycle.acquire(spec, backend, artifacts) as lab:
        lab.system("host-list")
    lifecycle.close()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from filelock import FileLock

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import StxError
from pytest_starlingx.lab import Lab, attach_lab, build_lab, destroy_lab, image_path
from pytest_starlingx.lifecycle.checkpoints import enable_checkpoints, open_lab_at
from pytest_starlingx.lifecycle.golden import obtain, release
from pytest_starlingx.lifecycle.leases import LeaseKeeper, live_leases
from pytest_starlingx.lifecycle.state import LabState, LabStatus, all_states, lab_dir, state_dir
from pytest_starlingx.model import LabSpec, lab_key
from pytest_starlingx.ownership import Holder

log = logging.getLogger("pytest_starlingx.lifecycle.acquire")


@dataclass(frozen=True)
class Policy:
    """How labs are acquired and what becomes of them afterwards."""

    keep: bool = False  # the lab stays after use (and after a failed bring-up)
    reuse: bool = False  # take a kept, ready lab of the same description that nobody holds
    golden: bool = False  # restore the lab's golden snapshot, or build the lab and make it one
    stage_snapshots: bool = False  # a snapshot after each stage; a resume starts from the last
    leave_failed: bool = False  # a failed bring-up stays, for inspection and --resume
    purpose: str = "pytest session"  # what the leases say
    durable: bool = False  # leases hold the lab after this process ends (stx-lab up --golden)


class How(StrEnum):
    """How an acquired lab came about."""

    BUILT = "built"
    REUSED = "reused"
    RESUMED = "resumed"
    RESTORED = "restored"  # a golden lab, reverted to its snapshot
    MADE_GOLDEN = "made golden"  # built, then snapshotted as the golden lab


@dataclass
class Acquired:
    """A lab handed out, how it came about and how long that took."""

    lab: Lab
    how: How
    seconds: float
    golden_key: str | None = None


class LabBroken(StxError):
    """The lab's bring-up failed earlier under this lifecycle; it is not tried again."""


@dataclass(frozen=True)
class Failure:
    """A failed bring-up, remembered."""

    name: str
    topology: str
    error: str
    lab_id: str | None  # the lab that failed, when one was made (gone unless kept or left)
    timings: str  # its stage table


class Lifecycle:
    """Acquires labs under one policy for one holder; see the module docstring."""

    def __init__(self, policy: Policy, holder: Holder | None = None) -> None:
        self.policy = policy
        self.leases = LeaseKeeper(holder)
        #: failed bring-ups, by lab key
        self.broken: dict[str, Failure] = {}
        self._made: Lab | None = None  # the lab being brought up

    def bring_up(
        self,
        spec: LabSpec,
        backend: Backend,
        artifacts: Path,
        *,
        resume: LabState | None = None,
        knobs: Mapping[str, Mapping[str, object]] | None = None,
        golden: bool = True,
    ) -> Acquired:
        """A provisioned lab, held by this lifecycle's lease; it stays up until
        :meth:`release`. ``resume`` goes on with a lab created earlier (from its last good
        stage snapshot, if it has any); ``golden=False`` builds a plain lab whatever the
        policy (a lab that others remove when they are done must not be the golden one)."""
        key = lab_key(spec)
        if key in self.broken:
            earlier = self.broken[key].error
            raise LabBroken(f"lab bring-up failed earlier in this session: {earlier}")
        self._made = None
        try:
            return self._bring_up(spec, backend, artifacts, resume, knobs, golden)
        except StxError as exc:
            lab = self._made
            self.broken[key] = Failure(
                spec.name, spec.topology.value, str(exc), lab and lab.lab_id,
                lab.timings() if lab else "",
            )  # fmt: skip
            raise

    def release(self, got: Acquired, backend: Backend) -> None:
        """Hand a lab back as the policy says: golden ones powered off, reused and kept ones
        left up, the others removed; the lease goes."""
        lab = got.lab
        if got.how in (How.RESTORED, How.MADE_GOLDEN):
            release(lab, self.leases)
            return
        lab.close()
        if got.how is not How.REUSED:
            lab.state.kept = self.policy.keep or lab.state.kept
            lab.state.save()
            if lab.state.kept:
                log.warning("lab %r kept (id %s): remove it with `stx-lab down %s`", lab.name,
                            lab.lab_id, lab.lab_id)  # fmt: skip
            else:
                destroy_lab(backend, lab.lab_id)
        self.leases.release(lab_dir(lab.lab_id))

    @contextmanager
    def acquire(
        self,
        spec: LabSpec,
        backend: Backend,
        artifacts: Path,
        *,
        knobs: Mapping[str, Mapping[str, object]] | None = None,
    ) -> Iterator[Lab]:
        """:meth:`bring_up`, then :meth:`release` when the block ends."""
        got = self.bring_up(spec, backend, artifacts, knobs=knobs)
        try:
            yield got.lab
        finally:
            self.release(got, backend)

    def close(self) -> None:
        """Stop the leases' heartbeat (the lifecycle's user is done)."""
        self.leases.stop()

    # ------------------------------------------------------------------ the ways to a lab

    def _bring_up(
        self,
        spec: LabSpec,
        backend: Backend,
        artifacts: Path,
        resume: LabState | None,
        knobs: Mapping[str, Mapping[str, object]] | None,
        golden: bool,
    ) -> Acquired:
        started = time.monotonic()
        policy = self.policy
        if resume is not None:
            lab = open_lab_at(spec, backend, resume, artifacts)
            self._made = lab
            self._hold(lab)
            if policy.stage_snapshots:
                enable_checkpoints(lab)
            try:
                lab.provision()
            except BaseException:
                lab.close()
                self.leases.release(lab_dir(lab.lab_id))  # left as it is, for another resume
                raise
            return Acquired(lab, How.RESUMED, time.monotonic() - started)
        if policy.reuse and (reused := self._reuse(spec, backend, artifacts)) is not None:
            return Acquired(reused, How.REUSED, time.monotonic() - started)
        if policy.golden and golden:
            got = obtain(
                spec, backend, artifacts, self.leases, purpose=policy.purpose,
                durable=policy.durable, stage_snapshots=policy.stage_snapshots,
            )  # fmt: skip
            if got is not None:
                how = How.RESTORED if got.how == "restored" else How.MADE_GOLDEN
                return Acquired(got.lab, how, got.seconds, got.record.key)
            log.warning("%s: building a fresh lab instead of the busy golden one", spec.name)
        made: list[str] = []

        def prepare(lab: Lab) -> None:
            log.info("%s: lab id %s, artifacts in %s", spec.name, lab.lab_id, lab.artifacts)
            self._made = lab
            made.append(lab.lab_id)
            self._hold(lab)
            lab.state.kept = policy.keep or policy.leave_failed  # gc leaves it, even half built
            lab.state.save()
            if policy.stage_snapshots:
                enable_checkpoints(lab)

        try:
            lab = build_lab(spec, backend, artifacts, knobs=knobs, prepare=prepare,
                            keep_failed=policy.keep or policy.leave_failed)  # fmt: skip
        except BaseException:
            for lab_id in made:  # removed, or left for inspection: nobody holds it now
                self.leases.release(lab_dir(lab_id))
            raise
        return Acquired(lab, How.BUILT, time.monotonic() - started)

    def _hold(self, lab: Lab) -> None:
        self.leases.take(lab_dir(lab.lab_id), self.policy.purpose, durable=self.policy.durable)

    def _reuse(self, spec: LabSpec, backend: Backend, artifacts: Path) -> Lab | None:
        """A kept lab of the same description and backend, up, ready and held by nobody."""
        key = lab_key(spec, str(image_path(spec)))
        with FileLock(state_dir() / "reuse.lock"):
            for state in all_states():
                if not (state.kept and state.status == LabStatus.READY and state.key == key
                        and state.backend == spec.backend.value
                        and not live_leases(lab_dir(state.lab_id))):  # fmt: skip
                    continue
                lab = attach_lab(spec, backend, state, artifacts)
                if not all(m.is_running() for m in lab.machines.values()):
                    lab.close()
                    continue
                self._hold(lab)
                log.warning("reusing kept lab %r (id %s)", state.name, state.lab_id)
                return lab
        log.info("no kept lab matches %r; building one", spec.name)
        return None
