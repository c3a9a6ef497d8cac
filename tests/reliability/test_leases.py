"""Leases: a live holder keeps its lab, a dead or silent one frees it."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from pytest_starlingx.lifecycle.leases import LeaseKeeper, live_leases, read_leases
from pytest_starlingx.ownership import Holder

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_holder_keeps_its_lease_and_the_heartbeat_beats(tmp_path):
    keeper = LeaseKeeper(Holder.of(os.getpid()), interval=0.05)
    path = keeper.take(tmp_path, "test")
    os.utime(path, (0, 0))  # as if the heartbeat had stopped long ago
    deadline = time.monotonic() + 5
    while path.stat().st_mtime == 0 and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    keeper.stop()
    assert path.stat().st_mtime > 0, "the heartbeat never touched the lease"
    assert [lease.holder.pid for lease in live_leases(tmp_path)] == [os.getpid()]
    keeper.release(tmp_path)
    assert read_leases(tmp_path) == []


def test_a_dead_local_holder_frees_the_lab_at_once(tmp_path):
    keeper = LeaseKeeper(Holder.of(os.getpid()))
    path = keeper.take(tmp_path, "test")
    data = json.loads(path.read_text())
    data.update(pid=_dead_pid(), start=None)
    path.write_text(json.dumps(data))
    keeper.stop()
    assert read_leases(tmp_path) and live_leases(tmp_path) == []


def test_a_reused_pid_does_not_hold_the_lab(tmp_path):
    keeper = LeaseKeeper(Holder(Holder.of(os.getpid()).host, os.getpid(), 1))  # wrong start
    keeper.take(tmp_path, "test")
    keeper.stop()
    assert live_leases(tmp_path) == []


def test_a_remote_holder_lives_as_long_as_its_heartbeat(tmp_path):
    keeper = LeaseKeeper(Holder("another-host", 4242, 7))
    path = keeper.take(tmp_path, "test")
    keeper.stop()
    assert len(live_leases(tmp_path)) == 1
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert live_leases(tmp_path) == []
