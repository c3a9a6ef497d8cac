"""The signal handlers: a first signal starts the teardown, a second one skips it."""

from __future__ import annotations

import os
import signal

import pytest

from pytest_starlingx.plugin.signals import InterruptHandlers

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


@pytest.fixture
def handlers():
    shown: list[str] = []
    h = InterruptHandlers()
    h.announce = shown.append
    h.install()
    yield h, shown
    h.restore()


def test_a_signal_during_tests_interrupts_and_announces_the_teardown(handlers):
    _, shown = handlers
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
    assert "SIGTERM: tearing the StarlingX labs down" in shown[0]


def test_during_teardown_the_first_signal_announces_the_second_skips(handlers):
    h, shown = handlers
    with h.teardown():
        os.kill(os.getpid(), signal.SIGINT)  # goes on tearing down
        assert "press Ctrl-C again" in shown[-1]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert "teardown skipped" in shown[-1] and "stx-lab gc" in shown[-1]


def test_restore_gives_the_signals_back():
    before = signal.getsignal(signal.SIGTERM)
    h = InterruptHandlers()
    h.install()
    assert signal.getsignal(signal.SIGTERM) != before
    h.restore()
    assert signal.getsignal(signal.SIGTERM) == before
