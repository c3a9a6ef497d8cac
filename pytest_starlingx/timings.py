"""Stage timing: one INFO line when a stage starts and ends, and a table at the end.

Each start and end, and each new phase a stage enters (:meth:`StepRecorder.phase`), is also
published as a :class:`~pytest_starlingx.progress.Progress` for whoever shows a bring-up live
(:mod:`pytest_starlingx.progress`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pytest_starlingx.progress import Progress, publish
from pytest_starlingx.text_table import render_table

log = logging.getLogger("pytest_starlingx.stages")


@dataclass
class StepRecord:
    """One stage run on one node: when it started, how long it took, how it ended."""

    stage: str
    node: str
    started: float  # seconds since the recorder was created
    duration: float | None = None
    outcome: str = "running"  # running | done | failed | skipped
    after: tuple[str, ...] = ()  # keys (node:stage) of the stages it waited for

    @property
    def key(self) -> str:
        """``node:stage``, as in the stage runner."""
        return f"{self.node}:{self.stage}"

    @property
    def ended(self) -> float:
        """Seconds since the recorder's origin when the stage ended (or now, if running)."""
        return self.started + (self.duration or 0.0)


class StepRecorder:
    """Collects :class:`StepRecord` s of a bring-up; thread-safe."""

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.records: list[StepRecord] = []
        self._origin = time.monotonic()
        self.origin_wall = time.time()  # the origin as a wall-clock time, for transcripts
        self._lock = threading.Lock()
        self._current = threading.local()  # the step each stage thread is in

    @contextmanager
    def step(self, stage: str, node: str, after: tuple[str, ...] = ()) -> Iterator[StepRecord]:
        """Time ``stage`` on ``node`` (which waited for ``after``); logs start and end."""
        record = StepRecord(stage, node, time.monotonic() - self._origin, after=after)
        with self._lock:
            self.records.append(record)
        self._current.record = record
        started = Progress(self.lab, "started", record.started, node, stage)
        log.info("%s: %s: stage %s started", self.lab, node, stage, extra={"node": node})
        publish(started)
        try:
            yield record
        except BaseException:
            record.outcome = "failed"
            raise
        finally:
            self._current.record = None
            record.duration = time.monotonic() - self._origin - record.started
            if record.outcome == "running":
                record.outcome = "done"
            ended = Progress(self.lab, record.outcome, record.ended, node, stage, record.duration)
            log.info("%s: %s: stage %s %s after %.1fs", self.lab, node, stage, record.outcome,
                     record.duration, extra={"node": node})  # fmt: skip
            publish(ended)

    def phase(self, phase: str, timeout: float) -> None:
        """The stage this thread runs now waits for ``phase``, which may take ``timeout``
        seconds (for the live status line; nothing outside a stage)."""
        record = getattr(self._current, "record", None)
        if record is None:
            return
        at = time.monotonic() - self._origin
        publish(Progress(self.lab, "phase", at, record.node, record.stage, phase=phase,
                         timeout=timeout))  # fmt: skip

    def skipped(self, stage: str, node: str) -> None:
        """Record a stage that a resumed run found already done."""
        at = time.monotonic() - self._origin
        with self._lock:
            self.records.append(StepRecord(stage, node, at, 0.0, "skipped"))
        skipped = Progress(self.lab, "skipped", at, node, stage)
        log.info("%s: %s: stage %s already done, skipped", self.lab, node, stage)
        publish(skipped)

    @contextmanager
    def bring_up(self) -> Iterator[None]:
        """Log the start and the end of a whole bring-up (its stages inside)."""
        start = time.monotonic() - self._origin
        log.info("%s: bring-up started", self.lab)
        publish(Progress(self.lab, "started", start))
        outcome = "failed"
        try:
            yield
            outcome = "done"
        finally:
            end = time.monotonic() - self._origin
            ended = Progress(self.lab, outcome, end, took=end - start)
            log.info("%s: bring-up %s after %.1fs", self.lab, outcome, end - start)
            publish(ended)

    @property
    def wall_time(self) -> float:
        """Seconds from the first stage's start to the last one's end."""
        ends = [r.started + (r.duration or 0.0) for r in self.records]
        return max(ends, default=0.0) - min((r.started for r in self.records), default=0.0)

    def critical_path(self) -> list[StepRecord]:
        """The chain of stages that set the wall time, first to last.

        From the stage that ended last, walk back to the prerequisite that ended last (the one
        it was waiting for), and so on. Skipped stages end the chain.
        """
        with self._lock:
            ran = [r for r in self.records if r.outcome != "skipped"]
        by_key = {r.key: r for r in ran}
        chain: list[StepRecord] = []
        current = max(ran, key=lambda r: r.ended, default=None)
        while current is not None:
            chain.append(current)
            before = [by_key[k] for k in current.after if k in by_key]
            current = max(before, key=lambda r: r.ended, default=None)
        return chain[::-1]

    def table(self) -> str:
        """Stage timings per node, in start order, critical path marked ``*``, wall time."""
        critical = {id(r) for r in self.critical_path()}
        rows = [
            [r.node, r.stage, f"{r.started:7.1f}",
             "-" if r.duration is None else f"{r.duration:7.1f}", r.outcome,
             "*" if id(r) in critical else ""]
            for r in self.records
        ]  # fmt: skip
        headers = ["node", "stage", "start s", "took s", "outcome", "critical"]
        body = render_table(headers, rows)
        return f"{body}\nwall time {self.wall_time:.1f}s (critical path: stages marked *)"
