"""Live progress while labs build, written to the terminal whether output is captured or not.

A line per stage as it starts and ends (:class:`~pytest_starlingx.progress.ProgressLines`), and
on a terminal a status line kept in place below them that says what each node is doing
(:class:`~pytest_starlingx.progress.StatusLine`)::

    stx simplex: bring-up started
    stx simplex: controller-0 install started at 0:00
    stx simplex 0:41 | controller-0 install 0:41 (install: 59:19 left)

In a plain session they go through pytest's terminal reporter; in an xdist worker (whose
terminal reporter nobody sees) the lines go to the worker's stderr, which is the run's, prefixed
with the worker's id, and there is no status line. ``-q`` keeps only the start and the end of
each bring-up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext

import pytest

from pytest_starlingx.progress import EVENTS, ProgressLines, StatusLine


def terminal_writer(config: pytest.Config, worker: str | None) -> Callable[[str], None]:
    """Where progress lines go: the terminal reporter, or an xdist worker's stderr."""
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def write(line: str) -> None:
        with capman.global_and_fixture_disabled() if capman else nullcontext():
            if worker is None and reporter is not None:
                reporter.write_line(line)
            else:
                sys.stderr.write(f"[{worker}] {line}\n" if worker else f"{line}\n")
                sys.stderr.flush()

    return write


def status_line(config: pytest.Config, worker: str | None) -> StatusLine | None:
    """The in-place status line, when the session writes to a terminal itself."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if worker is not None or reporter is None or not reporter.isatty:
        return None
    capman = config.pluginmanager.getplugin("capturemanager")
    terminal = config.get_terminal_writer()

    def show(text: str) -> None:
        with capman.global_and_fixture_disabled() if capman else nullcontext():
            if text:
                reporter.ensure_newline()
                reporter.rewrite(text, erase=True)
                reporter.flush()
            else:
                reporter.rewrite("", erase=True)
                reporter.write("\r", flush=True)

    return StatusLine(show, lambda: terminal.fullwidth)


def show_progress(config: pytest.Config, worker: str | None) -> Callable[[], None]:
    """Start showing bring-ups live; returns what stops it."""
    handler = ProgressLines(
        terminal_writer(config, worker),
        quiet=config.get_verbosity() < 0,
        status=status_line(config, worker),
    )
    EVENTS.addHandler(handler)

    def stop() -> None:
        EVENTS.removeHandler(handler)
        handler.close()

    return stop
