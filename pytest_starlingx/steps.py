"""Stage timing: one INFO line when a stage starts and ends, and a table at the end."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pytest_starlingx.tables import render_table

log = logging.getLogger("pytest_starlingx.stages")


@dataclass
class StepRecord:
    """One stage run on one node: when it started, how long it took, how it ended."""

    stage: str
    node: str
    started: float  # seconds since the recorder was created
    duration: float | None = None
    outcome: str = "running"  # running | done | failed | skipped


class StepRecorder:
    """Collects :class:`StepRecord` s of a bring-up; thread-safe."""

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.records: list[StepRecord] = []
        self._origin = time.monotonic()
        self._lock = threading.Lock()

    @contextmanager
    def step(self, stage: str, node: str) -> Iterator[StepRecord]:
        """Time ``stage`` on ``node``; logs its start and end, records failures."""
        record = StepRecord(stage, node, time.monotonic() - self._origin)
        with self._lock:
            self.records.append(record)
        log.info("%s: %s: stage %s started", self.lab, node, stage, extra={"node": node})
        try:
            yield record
        except BaseException:
            record.outcome = "failed"
            raise
        finally:
            record.duration = time.monotonic() - self._origin - record.started
            if record.outcome == "running":
                record.outcome = "done"
            log.info("%s: %s: stage %s %s after %.1fs", self.lab, node, stage, record.outcome,
                     record.duration, extra={"node": node})  # fmt: skip

    def skipped(self, stage: str, node: str) -> None:
        """Record a stage that a resumed run found already done."""
        with self._lock:
            self.records.append(StepRecord(stage, node, time.monotonic() - self._origin, 0.0,
                                           "skipped"))  # fmt: skip
        log.info("%s: %s: stage %s already done, skipped", self.lab, node, stage)

    @property
    def wall_time(self) -> float:
        """Seconds from the first stage's start to the last one's end."""
        ends = [r.started + (r.duration or 0.0) for r in self.records]
        return max(ends, default=0.0) - min((r.started for r in self.records), default=0.0)

    def table(self) -> str:
        """Stage timings per node, in start order, with the wall time."""
        rows = [
            [r.node, r.stage, f"{r.started:7.1f}",
             "-" if r.duration is None else f"{r.duration:7.1f}", r.outcome]
            for r in self.records
        ]  # fmt: skip
        body = render_table(["node", "stage", "start s", "took s", "outcome"], rows)
        return f"{body}\nwall time {self.wall_time:.1f}s"
