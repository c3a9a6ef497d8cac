"""Simulator fault knobs: each failure names lab, node and stage, in time, with the console tail.

Each test brings a small lab up on the simulator with one knob set and short timeouts, and checks
the error a user would read. One of them then resumes the failed lab to the end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import libvirt
import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.errors import StageError
from pytest_starlingx.lab import attach_lab, create_lab, destroy_lab
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.labmap import knob_string
from pytest_starlingx.labstate import LabState

pytestmark = pytest.mark.usefixtures("lab_name")
SLACK = 15.0  # seconds past a stage's timeout within which its error must come


def spec(name: str, topology: str = "simplex", **timeouts: float):
    return lab_from_mapping({"name": name, "topology": topology, "timeouts": timeouts})


@pytest.fixture
def backend():
    backend = make_backend("libvirt")
    yield backend
    backend.close()


def failed_bring_up(lab) -> tuple[str, float]:
    """The error message of a bring-up that must fail, and how long it took."""
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        lab.provision()
    return str(info.value), time.monotonic() - started


def test_install_hang_times_out_at_the_install_stage(backend, lab_name, tmp_path):
    lab = create_lab(spec(lab_name, install=60), backend, tmp_path,
                     knobs={"controller-0": {"hang_install": 3}})  # fmt: skip
    try:
        message, elapsed = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'install' failed")
        assert "the login prompt after the install" in message
        assert "waited 60s" in message
        assert "Installing StarlingX" in message  # the console tail
        assert elapsed < 60 + 60 + SLACK  # menu and boot, then the install timeout
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)


def test_bootstrap_failure_then_resume_completes_without_repeating(backend, lab_name, tmp_path):
    lab = create_lab(spec(lab_name), backend, tmp_path,
                     knobs={"controller-0": {"bootstrap_fail": 1}})  # fmt: skip
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'bootstrap' failed")
        assert "failed=1" in message
        assert LabState.load(lab.lab_id).done == [
            "controller-0:install",
            "controller-0:first-login",
        ]
        lab.close()
        # The fault is gone after a power cycle without it; the re-run picks up at bootstrap.
        lab.handle.set_oem_strings("controller-0", [knob_string({"slow": 1})])
        lab.handle.power_off("controller-0")
        resumed = attach_lab(lab.spec, backend, LabState.load(lab.lab_id), tmp_path / "resumed")
        resumed.machines["controller-0"].power_on()
        resumed.provision()
        outcomes = {r.stage: r.outcome for r in resumed.bringup.recorder.records}
        assert outcomes == {"install": "skipped", "first-login": "skipped", "bootstrap": "done",
                            "configure": "done", "unlock": "done"}  # fmt: skip
        assert resumed.host_list()[0].availability == "available"
        resumed.close()
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)


def test_unlock_failure_is_reported_at_the_unlock_stage(backend, lab_name, tmp_path):
    lab = create_lab(spec(lab_name), backend, tmp_path, knobs={"controller-0": {"unlock_fail": 1}})
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'unlock' failed")
        assert "controller-0 became unlocked | disabled | failed" in message
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)


def test_a_node_that_never_network_boots_is_named(backend, lab_name, tmp_path: Path):
    lab = create_lab(spec(lab_name, "duplex", node_install=40), backend, tmp_path,
                     knobs={"controller-1": {"no_netboot": 1}})  # fmt: skip
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'add-hosts' failed")
        assert "controller-1 never appeared in host-list" in message
        assert "waited 4" in message  # the 40 s node_install timeout, give or take a poll
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)


def test_a_vm_killed_from_outside_fails_its_stage_at_once(backend, lab_name, tmp_path):
    lab = create_lab(spec(lab_name), backend, tmp_path)
    outcome: list[tuple[str, float]] = []
    runner = threading.Thread(target=lambda: outcome.append(failed_bring_up(lab)), daemon=True)
    try:
        runner.start()
        console = lab.bringup.consoles["controller-0"]
        started = time.monotonic()
        while "Installing StarlingX" not in "\n".join(console.tail()):
            assert time.monotonic() - started < 300, "the install never started"
            threading.Event().wait(1)
        killed = time.monotonic()
        conn = libvirt.open("qemu:///system")
        try:
            conn.lookupByName(f"stx-{lab_name}-{lab.lab_id}-controller-0").destroy()
        finally:
            conn.close()
        runner.join(timeout=60)
        assert outcome, "the bring-up did not end after its VM was killed"
        message, _ = outcome[0]
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'install' failed")
        assert "not running any more" in message or "console closed" in message
        assert time.monotonic() - killed < 30
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)
