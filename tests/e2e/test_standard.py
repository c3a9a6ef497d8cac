"""A standard (controller storage) lab from blank VMs to every host available (slow)."""

import pytest
from e2e_helpers import bring_up_and_check_every_host

pytestmark = pytest.mark.slow


def test_every_host_becomes_available(lab_name, tmp_path):
    """With two of StarlingX's transient states long enough that the bring-up meets both:
    controller-0's platform filesystem comes up 30 s into its unlock boot (openrc refuses to
    load the credentials until then), and platform-integ-apps applies for 4 minutes after it
    is available (sysinv refuses controller-1's unlock meanwhile). Both are waited out."""
    knobs = {"controller-0": {"platform_fs": 30, "app_apply": 240}}
    bring_up_and_check_every_host(
        "standard", {"controller": 2, "worker": 2}, lab_name, tmp_path, knobs=knobs
    )
    transcript = next(tmp_path.rglob("controller-0.console.log")).read_text()
    assert "Openstack Admin credentials can only be loaded from the active controller." in (
        transcript
    )
    assert (
        "Rejected: Can not unlock host controller-1 while an application is being applied, "
        "updated or recovered. Please try again later."
    ) in transcript.replace("\n", " ")
