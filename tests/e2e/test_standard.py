"""A standard (controller storage) lab from blank VMs to every host available (slow)."""

import pytest
from e2e_helpers import bring_up_and_check_every_host

pytestmark = pytest.mark.slow


def test_every_host_becomes_available(lab_name, tmp_path):
    bring_up_and_check_every_host("standard", {"controller": 2, "worker": 2}, lab_name, tmp_path)
