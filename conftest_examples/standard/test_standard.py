"""A standard (controller storage) suite: workers and labels. Slow: five VMs to install."""

import pytest

pytestmark = pytest.mark.slow


def test_workers_are_available(stx_standard):
    workers = [h for h in stx_standard.host_list() if h.personality == "worker"]
    assert sorted(h.hostname for h in workers) == ["worker-0", "worker-1"]
    assert all(h.availability == "available" for h in workers)


def test_label_a_worker(stx_standard):
    stx_standard.system("host-label-assign worker-0 openstack-compute-node=enabled")
    labels = stx_standard.system("host-label-list worker-0")
    assert "openstack-compute-node" in labels
