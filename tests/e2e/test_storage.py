"""A dedicated-storage lab from blank VMs to every host available (slow)."""

import pytest
from e2e_helpers import bring_up_and_check_every_host

pytestmark = pytest.mark.slow


def test_every_host_becomes_available(lab_name, tmp_path):
    """Two storage nodes (the replication the option needs) and one worker."""
    personalities = {"controller": 2, "storage": 2, "worker": 1}
    bring_up_and_check_every_host(
        "storage", personalities, lab_name, tmp_path, settings={"workers": 1}
    )
