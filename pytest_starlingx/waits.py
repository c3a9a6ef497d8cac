"""Deadlines and named timeouts: every wait in the plugin is bounded by a :class:`Deadline`.

A stage builds one deadline per phase from the lab's timeouts (``model.LabSpec.timeout``) and
passes it to every console wait and poll it makes, so several waits share one budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

log = logging.getLogger("pytest_starlingx.waits")

T = TypeVar("T")

#: How often long waits say what they are waiting for.
PROGRESS_EVERY = 30.0


class Deadline:
    """A point in time shared by several waits: ``remaining``, ``elapsed``, ``expired``."""

    def __init__(
        self, seconds: float, what: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        if seconds < 0:
            raise ValueError(f"a deadline needs a non-negative timeout, not {seconds}")
        self.timeout = float(seconds)
        self.what = what
        self._clock = clock
        self._start = clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the deadline was created."""
        return self._clock() - self._start

    @property
    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.timeout - self.elapsed)

    @property
    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining <= 0.0

    def within(self, seconds: float, what: str = "") -> Deadline:
        """A shorter deadline for one step: ``seconds`` from now, capped by this one."""
        return Deadline(min(seconds, self.remaining), what or self.what, self._clock)

    def __repr__(self) -> str:
        label = f" {self.what!r}" if self.what else ""
        return f"<Deadline{label} {self.elapsed:.1f}s of {self.timeout:.0f}s>"


class Progress:
    """Logs at INFO every ``every`` seconds what a long wait is waiting for."""

    def __init__(
        self,
        what: str,
        deadline: Deadline,
        logger: logging.Logger = log,
        every: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self.what = what
        self.deadline = deadline
        self.every = every or PROGRESS_EVERY
        self._logger = logger
        self._extra = dict(extra or {})
        self._next = self.every

    def tick(self) -> None:
        """Log if another ``every`` seconds have passed since the last line."""
        elapsed = self.deadline.elapsed
        if elapsed >= self._next:
            self._logger.info(
                "still waiting for %s: %.0fs of %.0fs",
                self.what,
                elapsed,
                self.deadline.timeout,
                extra=self._extra,
            )
            self._next = (elapsed // self.every + 1) * self.every


class WaitTimeout(TimeoutError):
    """:func:`poll` ran out of time; callers turn it into a StageError naming node and stage."""


def poll(
    check: Callable[[], T | None],
    deadline: Deadline,
    what: str,
    poll_every: float = 10.0,
    logger: logging.Logger = log,
) -> T:
    """Call ``check`` until it returns something truthy; return that.

    Between calls it waits ``poll_every`` seconds (never past the deadline) and logs progress every
    30 s. Raises :class:`WaitTimeout` naming ``what`` once the deadline has expired.
    """
    progress = Progress(what, deadline, logger)
    pause = threading.Event()
    while True:
        result = check()
        if result:
            return result
        if deadline.expired:
            raise WaitTimeout(f"waited {deadline.elapsed:.0f}s for {what}")
        progress.tick()
        pause.wait(min(poll_every, deadline.remaining))
