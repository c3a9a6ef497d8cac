"""Standard and dedicated-storage labs from blank VMs to every host available (slow)."""

from __future__ import annotations

import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.lab import lab_session
from pytest_starlingx.labfile import lab_from_mapping

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("topology", "personalities"),
    [
        ("standard", {"controller": 2, "worker": 2}),
        ("storage", {"controller": 2, "storage": 2, "worker": 2}),
    ],
)
def test_every_host_becomes_available(topology, personalities, lab_name, tmp_path):
    spec = lab_from_mapping({"name": lab_name, "topology": topology})
    backend = make_backend("libvirt")
    try:
        with lab_session(spec, backend, tmp_path) as lab:
            hosts = lab.host_list()
            counts: dict[str, int] = {}
            for host in hosts:
                counts[host.personality] = counts.get(host.personality, 0) + 1
            assert counts == personalities
            assert {h.hostname for h in hosts} == {n.name for n in spec.nodes}
            assert all(
                (h.administrative, h.operational, h.availability)
                == ("unlocked", "enabled", "available")
                for h in hosts
            )
            assert lab.node("worker-1").run("hostname", check=True).output == "worker-1"
    finally:
        backend.close()
