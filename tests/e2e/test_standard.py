"""A standard (controller storage) lab from blank VMs to every host available, under UEFI
(slow)."""

import pytest
from e2e_helpers import bring_up_and_check_every_host

pytestmark = pytest.mark.slow


def test_every_host_becomes_available(lab_name, tmp_path):
    """Under UEFI firmware: controller-0 from the ISO's GRUB menu, the others by GRUB's network
    boot. With controller-0's platform filesystem coming up 20 s into its unlock boot: openrc
    refuses to load the credentials until then, and the bring-up waits it out; and with the
    worker failing its first enable, which maintenance recovers."""
    knobs = {"controller-0": {"platform_fs": 20}, "worker-0": {"enable_fail": 1}}
    bring_up_and_check_every_host(
        "standard", {"controller": 2, "worker": 1}, lab_name, tmp_path, knobs=knobs,
        settings={"workers": 1, "firmware": "uefi"},
    )  # fmt: skip
    logs = {p.name.split(".")[0]: p.read_text() for p in tmp_path.rglob("*.console.log")}
    assert (
        "Openstack Admin credentials can only be loaded from the active controller."
        in (logs["controller-0"])
    )
    assert "UEFI Debian Controller Install" in logs["controller-0"]  # GRUB's menu, not ISOLINUX's
    for node in ("controller-1", "worker-0"):  # metal's UEFI menus, then the node's own
        assert "Waiting for this node to be configured." in logs[node]
        assert "PXELINUX" not in logs[node]
