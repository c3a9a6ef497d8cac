"""What a bring-up is doing, shown live: a line per event, and on a terminal a status line.

The stage recorder (:mod:`pytest_starlingx.timings`) publishes every event of a bring-up, a
:class:`Progress`, as a record of the logger :data:`EVENTS` (its ``stx_progress`` attribute).
That logger keeps its records to itself: only the handlers attached to it see them.
:class:`ProgressLines` (such a handler) writes each event as a line::

    stx simplex: bring-up started
    stx simplex: controller-0 install started at 0:00
    stx simplex: controller-0 install done in 1:02 (at 1:02)

and, given a :class:`StatusLine`, keeps one line in place below them that says what every node
is doing now, for how long, and how long its current phase may still take::

    stx duplex 4:31 | controller-0 unlock 1:10 (unlock: 28:50 left) | controller-1 node_install 0:12

The pytest plugin and ``stx-lab up`` both use them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

#: The logger bring-up events go to; they do not reach the root logger's handlers.
EVENTS = logging.getLogger("pytest_starlingx.progress")
EVENTS.propagate = False
EVENTS.setLevel(logging.INFO)


@dataclass(frozen=True)
class Progress:
    """One event of a bring-up: a stage (``stage`` set) or the whole bring-up started or ended,
    or a stage's new phase.

    ``event`` is ``started``, ``done``, ``failed``, ``skipped`` or ``phase``; ``at`` the seconds
    since the bring-up's start, ``took`` the seconds the stage or bring-up lasted (when it
    ended). A ``phase`` event names what the stage waits for now (``phase``: ``install``,
    ``unlock``, ...) and the seconds it may take (``timeout``).
    """

    lab: str
    event: str
    at: float
    node: str = ""
    stage: str = ""
    took: float | None = None
    phase: str = ""
    timeout: float | None = None


def publish(event: Progress) -> None:
    """Hand ``event`` to whoever shows bring-ups live (the handlers of :data:`EVENTS`)."""
    EVENTS.info("%s", progress_line(event), extra={"stx_progress": event})


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(event: Progress) -> str:
    """One event as a line of text."""
    head = f"stx {event.lab}:"
    if not event.stage:
        took = f" in {clock(event.took)}" if event.took is not None else ""
        return f"{head} bring-up {event.event}{took}"
    what = f"{head} {event.node} {event.stage} {event.event}"
    if event.event == "started" or event.took is None:
        return f"{what} at {clock(event.at)}"
    return f"{what} in {clock(event.took)} (at {clock(event.at)})"


@dataclass
class _Running:
    """A stage running now: since when, and its current phase's name and end."""

    stage: str
    since: float
    phase: str = ""
    phase_ends: float | None = None


@dataclass
class _Building:
    """A lab being built: since when, and its running stages by node."""

    since: float
    stages: dict[str, _Running] = field(default_factory=dict)


class StatusBoard:
    """What every lab being built does now, from its :class:`Progress` events."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._labs: dict[str, _Building] = {}

    @property
    def active(self) -> bool:
        """True while a bring-up runs."""
        return bool(self._labs)

    def update(self, event: Progress) -> None:
        """Take one event into account."""
        now = self._now()
        if not event.stage:
            if event.event == "started":
                self._labs[event.lab] = _Building(now - event.at)
            else:
                self._labs.pop(event.lab, None)
            return
        lab = self._labs.setdefault(event.lab, _Building(now - event.at))
        running = lab.stages.get(event.node)
        if event.event == "started":
            lab.stages[event.node] = _Running(event.stage, now)
        elif running is not None and running.stage == event.stage:
            if event.event == "phase":
                running.phase = event.phase
                running.phase_ends = None if event.timeout is None else now + event.timeout
            else:
                del lab.stages[event.node]

    def line(self) -> str:
        """One line: each lab's elapsed time, then each running stage's node, name, elapsed
        time and what is left of its phase's timeout; empty when nothing runs."""
        now = self._now()
        parts = []
        for name, lab in self._labs.items():
            parts.append(f"stx {name} {clock(now - lab.since)}")
            for node, running in sorted(lab.stages.items()):
                text = f"{node} {running.stage} {clock(now - running.since)}"
                if running.phase_ends is not None:
                    left = clock(math.ceil(max(0.0, running.phase_ends - now)))
                    text += f" ({running.phase}: {left} left)"
                parts.append(text)
        return " | ".join(parts)


class StatusLine:
    """A status line kept in place on a terminal while bring-ups run, redrawn every ``every``
    seconds by a thread of its own.

    ``show(text)`` replaces the terminal's current line with ``text`` (``""`` clears it and
    leaves the cursor at the line's start); ``width()`` is the terminal's width. Whatever else
    goes to that terminal meanwhile goes through :meth:`above`.
    """

    def __init__(
        self,
        show: Callable[[str], None],
        width: Callable[[], int],
        every: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board = StatusBoard(now)
        self._show = show
        self._width = width
        self._every = every
        self._lock = threading.RLock()
        self._shown = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def update(self, event: Progress, write: Callable[[], object] | None = None) -> None:
        """Take an event into account and redraw, after calling ``write`` (as :meth:`above`)."""
        with self._lock:
            self.board.update(event)
            if self.board.active and self._ticker is None and not self._stop.is_set():
                self._ticker = threading.Thread(target=self._tick, name="stx-status", daemon=True)
                self._ticker.start()
            if write is None:
                self._draw()
            else:
                self.above(write)

    def above(self, write: Callable[[], object]) -> None:
        """Call ``write`` (which writes whole lines) with the status line out of its way."""
        with self._lock:
            self._clear()
            write()
            self._draw()

    def close(self) -> None:
        """Stop redrawing and clear the line."""
        self._stop.set()
        ticker = self._ticker
        if ticker is not None:
            ticker.join()
        with self._lock:
            self._clear()

    def _tick(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                if not self.board.active:
                    self._ticker = None
                    self._clear()
                    return
                self._draw()

    def _draw(self) -> None:
        text = self.board.line()[: max(0, self._width() - 1)]
        if text:
            self._show(text)
            self._shown = True
        else:
            self._clear()

    def _clear(self) -> None:
        if self._shown:
            self._show("")
            self._shown = False


class AboveStatus:
    """A text stream whose writes go above ``status``: for a logging handler sharing the
    terminal with a status line (each write a whole line)."""

    def __init__(self, stream: TextIO, status: StatusLine) -> None:
        self.stream = stream
        self.status = status

    def write(self, text: str) -> int:
        self.status.above(lambda: self.stream.write(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class ProgressLines(logging.Handler):
    """Writes each bring-up event it is handed as one line (``quiet``: only a bring-up's start
    and end), and keeps ``status`` up to date when given one."""

    def __init__(
        self, write: Callable[[str], None], quiet: bool = False, status: StatusLine | None = None
    ) -> None:
        super().__init__(logging.INFO)
        self.write = write
        self.quiet = quiet
        self.status = status
        self._lock_writes = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "stx_progress", None)
        if not isinstance(event, Progress):
            return
        line = progress_line(event)
        shown = event.event != "phase" and not (self.quiet and event.stage)
        with self._lock_writes:
            if self.status is not None:
                self.status.update(event, (lambda: self.write(line)) if shown else None)
            elif shown:
                self.write(line)

    def close(self) -> None:
        if self.status is not None:
            self.status.close()
        super().close()
