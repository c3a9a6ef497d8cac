"""A failing bootstrap names its stage; the lab then resumes without repeating stages.

The lab is StarlingX 11.0's, whose TMOUT is readonly (the other simulated labs are 10.0's)."""

from __future__ import annotations

import pytest
from e2e_helpers import failed_bring_up, spec

from pytest_starlingx.lab import attach_lab, create_lab, destroy_lab
from pytest_starlingx.lifecycle.state import LabState
from pytest_starlingx.resources import knob_string

pytestmark = pytest.mark.usefixtures("lab_name")


def test_bootstrap_failure_then_resume_completes_without_repeating(backend, lab_name, tmp_path):
    lab = create_lab(spec(lab_name, release="11.0"), backend, tmp_path,
                     knobs={"controller-0": {"bootstrap_fail": 1}})  # fmt: skip
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'bootstrap' failed")
        assert "failed=1" in message
        assert LabState.load(lab.lab_id).done == [
            "controller-0:install",
            "controller-0:first-login",
        ]
        # The fault is gone after a power cycle without it; the re-run picks up at bootstrap.
        # The disks run with cache=unsafe, so the guest's writes are flushed before the cut.
        lab.node("controller-0").run("sync", check=True)
        lab.close()
        lab.handle.set_oem_strings("controller-0", [knob_string({"slow": 1})])
        lab.handle.power_off("controller-0")
        resumed = attach_lab(lab.spec, backend, LabState.load(lab.lab_id), tmp_path / "resumed")
        resumed.machines["controller-0"].power_on()
        resumed.provision()
        outcomes = {r.stage: r.outcome for r in resumed.bringup.recorder.records}
        assert outcomes == {"install": "skipped", "first-login": "skipped", "bootstrap": "done",
                            "configure": "done", "unlock": "done"}  # fmt: skip
        assert resumed.host_list()[0].availability == "available"
        # the console's shell: TMOUT is readonly, the login's `export TMOUT=0` fails
        assert resumed.node("controller-0").run("echo $TMOUT", via="console").stdout == "900"
        resumed.close()
        console = (tmp_path / "resumed" / "controller-0.console.log").read_text()
        assert "Release 25.09 controller-0 ttyS0" in console  # 11.0's /etc/issue
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)
