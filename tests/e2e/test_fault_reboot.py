"""A node that reboots on its own in the middle of a bring-up is named with its stage at once."""

from __future__ import annotations

import pytest
from e2e_helpers import failed_bring_up, spec

from pytest_starlingx.lab import create_lab, destroy_lab

pytestmark = pytest.mark.usefixtures("lab_name")


def test_spontaneous_reboot_during_bootstrap_is_reported_at_once(backend, lab_name, tmp_path):
    # slow=3 stretches the bootstrap playbook to ~30 s; the reboot comes 12 s after the login
    # prompt (about 10 s into the bootstrap).
    knobs = {"controller-0": {"reboot_after": 12, "slow": 3}}
    lab = create_lab(spec(lab_name), backend, tmp_path, knobs=knobs)
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'bootstrap' failed")
        assert "the node rebooted while running 'ansible-playbook " in message
        assert "| controller-0 login:" in message or "| localhost login:" in message
        bootstrap = next(r for r in lab.bringup.recorder.records if r.stage == "bootstrap")
        assert bootstrap.outcome == "failed"
        assert bootstrap.duration is not None
        assert bootstrap.duration < lab.spec.timeout("boot")  # not a timeout: seen at once
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)
