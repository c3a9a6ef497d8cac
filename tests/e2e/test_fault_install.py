"""Faults during the ISO install: a hung install, and a VM destroyed from outside."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest
from e2e_helpers import SLACK, failed_bring_up, spec

from pytest_starlingx.lab import create_lab, destroy_lab

pytestmark = pytest.mark.usefixtures("lab_name")


def test_install_hang_times_out_at_the_install_stage(backend, lab_name, tmp_path):
    lab = create_lab(spec(lab_name, install=60), backend, tmp_path,
                     knobs={"controller-0": {"hang_install": 3}})  # fmt: skip
    try:
        message, elapsed = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'install' failed")
        assert "the login prompt after the install" in message
        assert "waited 60s" in message
        # the console's tail as it was when the stage gave up: how far the install got
        # depends on the host's load, so the tail is checked against the console itself
        tail = [line[6:] for line in message.splitlines() if line.startswith("    | ")]
        assert tail, message
        console = lab.bringup.consoles["controller-0"].tail(500)
        assert any(console[i : i + len(tail)] == tail for i in range(len(console))), message
        assert elapsed < 60 + 60 + SLACK  # menu and boot, then the install timeout
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
