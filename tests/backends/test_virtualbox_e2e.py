"""End to end on the VirtualBox backend: the simulator's labs brought up through the emulator."""

from __future__ import annotations

import os
import time

import pytest
from vbox_helpers import EMULATOR_DIR, emulator  # noqa: F401

from pytest_starlingx.backends import make_backend
from pytest_starlingx.lab import lab_session
from pytest_starlingx.model import resolve_lab


@pytest.fixture
def vbox_env(emulator, monkeypatch):  # noqa: F811
    """The emulator first on PATH as ``VBoxManage``, state in the emulator's directories."""
    monkeypatch.setenv("PATH", f"{EMULATOR_DIR}:{os.environ['PATH']}")
    monkeypatch.setenv("VBOX_EMULATOR_HOME", str(emulator.home))
    monkeypatch.setenv("STX_STATE_DIR", str(emulator.state_dir))
    return emulator


def bring_up(vbox_env, tmp_path, topology: str) -> float:
    """Bring a lab up with lab_session, check every host is available; seconds taken."""
    backend = make_backend("virtualbox")
    spec = resolve_lab(topology, backend="virtualbox")
    started = time.monotonic()
    with lab_session(spec, backend, tmp_path / "artifacts") as lab:
        seconds = time.monotonic() - started
        hosts = lab.host_list()
        assert {h.hostname for h in hosts} == {n.name for n in spec.nodes}
        assert all(h.availability == "available" for h in hosts), hosts
        lab_id = lab.lab_id
    assert vbox_env.leftovers(lab_id) == []
    assert backend.lab_ids() == []
    print(f"\n{topology} on the VirtualBox emulator: up in {seconds:.0f}s")
    return seconds


def test_simplex_through_the_emulator(vbox_env, tmp_path):
    bring_up(vbox_env, tmp_path, "simplex")


@pytest.mark.slow
def test_duplex_through_the_emulator(vbox_env, tmp_path):
    bring_up(vbox_env, tmp_path, "duplex")
