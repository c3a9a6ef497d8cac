"""A standard (controller storage) lab from blank VMs to every host available (slow)."""

import pytest
from e2e_helpers import bring_up_and_check_every_host

pytestmark = pytest.mark.slow


def test_every_host_becomes_available(lab_name, tmp_path):
    """With controller-0's platform filesystem coming up 20 s into its unlock boot: openrc
    refuses to load the credentials until then, and the bring-up waits it out; and with
    worker-1 failing its first enable, which maintenance recovers."""
    knobs = {"controller-0": {"platform_fs": 20}, "worker-1": {"enable_fail": 1}}
    bring_up_and_check_every_host(
        "standard", {"controller": 2, "worker": 2}, lab_name, tmp_path, knobs=knobs
    )
    transcript = next(tmp_path.rglob("controller-0.console.log")).read_text()
    assert "Openstack Admin credentials can only be loaded from the active controller." in (
        transcript
    )
