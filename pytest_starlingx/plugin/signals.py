"""SIGINT and SIGTERM while labs exist: an orderly teardown, and a way out of it.

The first signal (Ctrl-C, or SIGTERM from a CI runner) becomes a ``KeyboardInterrupt``, so
pytest ends the session the usual way: session fixtures are torn down and every lab that was
not kept is destroyed, also in the middle of a bring-up. A second signal interrupts that
teardown and says how to clean up later (``stx-lab gc``); a ``kill -9`` leaves the labs to
the next session's collection or to ``stx-lab gc``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import pytest

SIGNALS = (signal.SIGINT, signal.SIGTERM)
FIRST = (
    "\npytest-starlingx: %s: tearing the StarlingX labs down; press Ctrl-C again to skip "
    "the teardown\n"
)
SECOND = (
    "\npytest-starlingx: %s again: teardown skipped; the labs left behind are removed by "
    "`stx-lab gc` (or by the next pytest session on this host)\n"
)


class InterruptHandlers:
    """Installed while a session holds labs; restores the previous handlers afterwards."""

    def __init__(self) -> None:
        #: Shows a message to the person at the terminal (see :func:`terminal_announcer`).
        self.announce: Callable[[str], None] = _to_stderr
        self._previous: dict[int, object] = {}
        self.interrupted = False
        self.tearing_down = False

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only; elsewhere nothing changes)."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Give the signals back to whoever had them."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @contextmanager
    def teardown(self) -> Iterator[None]:
        """A teardown runs: a first signal only announces, a second one stops it."""
        self.tearing_down = True
        try:
            yield
        finally:
            self.tearing_down = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.interrupted:
            self.announce(SECOND % name)
            raise KeyboardInterrupt(f"{name} during teardown")
        self.interrupted = True
        self.announce(FIRST % name)
        if not self.tearing_down:
            raise KeyboardInterrupt(name)


def _to_stderr(text: str) -> None:
    os.write(2, text.encode())


def terminal_announcer(config: pytest.Config) -> Callable[[str], None]:
    """Write to the real terminal even while pytest captures output."""
    capman = config.pluginmanager.getplugin("capturemanager")

    def announce(text: str) -> None:
        if capman is None:
            _to_stderr(text)
            return
        with capman.global_and_fixture_disabled():
            sys.stderr.write(text)
            sys.stderr.flush()

    return announce
