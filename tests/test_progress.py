"""The live view of a bring-up: the status line's content, and how it shares a terminal."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from pytest_starlingx.progress import (
    EVENTS,
    AboveStatus,
    Progress,
    ProgressLines,
    StatusBoard,
    StatusLine,
)
from pytest_starlingx.timings import StepRecorder

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def test_the_status_names_each_node_its_stage_and_what_is_left_of_its_phase(clock):
    board = StatusBoard(clock)
    board.update(Progress("duplex", "started", 0.0))
    board.update(Progress("duplex", "started", 0.0, "controller-0", "install"))
    clock.now += 65
    board.update(Progress("duplex", "phase", 65.0, "controller-0", "install", phase="install",
                          timeout=3600))  # fmt: skip
    board.update(Progress("duplex", "started", 65.0, "controller-1", "node_install"))
    clock.now += 10
    assert board.line() == (
        "stx duplex 1:15 | controller-0 install 1:15 (install: 59:50 left)"
        " | controller-1 node_install 0:10"
    )


def test_a_finished_stage_leaves_the_status_and_a_finished_bring_up_ends_it(clock):
    board = StatusBoard(clock)
    board.update(Progress("simplex", "started", 0.0))
    board.update(Progress("simplex", "started", 0.0, "controller-0", "install"))
    board.update(Progress("simplex", "done", 5.0, "controller-0", "install", took=5.0))
    assert board.line() == "stx simplex 0:00"
    board.update(Progress("simplex", "failed", 9.0, took=9.0))
    assert not board.active and board.line() == ""


def test_a_phase_past_its_timeout_shows_nothing_left(clock):
    board = StatusBoard(clock)
    board.update(Progress("s", "started", 0.0, "controller-0", "unlock"))
    board.update(Progress("s", "phase", 0.0, "controller-0", "unlock", phase="unlock", timeout=5))
    clock.now += 8
    assert board.line().endswith("controller-0 unlock 0:08 (unlock: 0:00 left)")


class Terminal:
    """A terminal of 40 columns: what is on screen, line by line, with one current line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current = ""
        self.lock = threading.Lock()

    def show(self, text: str) -> None:
        with self.lock:
            self.current = text

    def write_line(self, line: str) -> None:
        with self.lock:
            assert self.current == "", "a line was written over the status line"
            self.lines.append(line)


def test_lines_go_above_the_status_line_which_goes_away_with_the_bring_up():
    terminal = Terminal()
    status = StatusLine(terminal.show, lambda: 40, every=3600)
    handler = ProgressLines(terminal.write_line, status=status)
    EVENTS.addHandler(handler)
    try:
        recorder = StepRecorder("simplex")
        with recorder.bring_up(), recorder.step("install", "controller-0"):
            recorder.phase("install", 3600)
            assert terminal.current == "stx simplex 0:00 | controller-0 install"
    finally:
        EVENTS.removeHandler(handler)
        handler.close()
    assert terminal.current == ""
    assert terminal.lines == [
        "stx simplex: bring-up started",
        "stx simplex: controller-0 install started at 0:00",
        "stx simplex: controller-0 install done in 0:00 (at 0:00)",
        "stx simplex: bring-up done in 0:00",
    ]


def test_the_status_line_is_redrawn_while_nothing_else_happens(clock):
    drawn = []
    redrawn = threading.Event()

    def show(text: str) -> None:
        drawn.append(text)
        if len(drawn) >= 2:
            redrawn.set()

    status = StatusLine(show, lambda: 80, every=0.01, now=clock)
    status.update(Progress("simplex", "started", 0.0))
    clock.now += 42
    assert redrawn.wait(10), "the status line was not redrawn"
    status.close()
    assert "stx simplex 0:42" in drawn and drawn[-1] == ""


def test_log_lines_through_the_status_stream_go_above_it():
    terminal = Terminal()
    status = StatusLine(terminal.show, lambda: 80, every=3600)
    status.update(Progress("simplex", "started", 0.0))
    stream = AboveStatus(io.StringIO(), status)
    handler = logging.StreamHandler(stream)
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "a log line", None, None))
    status.close()
    assert stream.stream.getvalue() == "a log line\n"
    assert terminal.current == ""


def test_no_status_events_outside_a_stage():
    seen = []
    handler = ProgressLines(seen.append)
    EVENTS.addHandler(handler)
    try:
        StepRecorder("simplex").phase("install", 60)  # no stage runs in this thread
    finally:
        EVENTS.removeHandler(handler)
    assert seen == []
