"""Live progress while labs build: a line per stage as it starts and ends.

The stage runner logs every event with a :class:`~pytest_starlingx.timings.Progress`;
:class:`~pytest_starlingx.timings.ProgressLines` turns them into lines (``stx-lab up`` shows
the same), written here to the terminal, output capture or not::

    stx simplex: bring-up started
    stx simplex: controller-0 install started at 0:00
    stx simplex: controller-0 install done in 1:02 (at 1:02)

In a plain session they go through pytest's terminal reporter; in an xdist worker (whose
terminal reporter nobody sees) to the worker's stderr, which is the run's, prefixed with the
worker's id. ``-q`` keeps only the start and the end of each bring-up.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import nullcontext

import pytest

from pytest_starlingx.timings import ProgressLines

LOGGER = "pytest_starlingx.stages"


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


def show_progress(config: pytest.Config, worker: str | None) -> Callable[[], None]:
    """Start showing bring-ups live; returns what stops it."""
    handler = ProgressLines(terminal_writer(config, worker), quiet=config.get_verbosity() < 0)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        previous = logger.level
        logger.setLevel(logging.INFO)
    else:
        previous = None

    def stop() -> None:
        logger.removeHandler(handler)
        if previous is not None:
            logger.setLevel(previous)

    return stop
