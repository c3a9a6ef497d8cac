"""Deadlines, named timeouts and polling."""

from __future__ import annotations

import itertools

import pytest

from pytest_starlingx.waits import Deadline, WaitTimeout, poll

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def test_deadline_shared_by_several_waits(clock):
    deadline = Deadline(60, "install", clock=clock)
    clock.now += 45
    assert (deadline.elapsed, deadline.remaining, deadline.expired) == (45, 15, False)
    step = deadline.within(30)
    assert step.remaining == 15  # capped by the outer deadline
    clock.now += 20
    assert deadline.remaining == 0 and deadline.expired and step.expired
    assert "install" in repr(deadline)


def test_negative_deadline_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        Deadline(-1)


def test_poll_returns_the_first_truthy_result():
    answers = itertools.chain([None, [], "available"])
    assert poll(lambda: next(answers), Deadline(5), "host available", poll_every=0.01) == (
        "available"
    )


def test_poll_times_out_naming_what_it_waited_for():
    with pytest.raises(WaitTimeout, match="for controller-0 available"):
        poll(lambda: None, Deadline(0.1), "controller-0 available", poll_every=0.02)
