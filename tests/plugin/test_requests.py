"""Lab requests from markers: topology, capabilities, overrides, private labs."""

from __future__ import annotations

import pytest

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.model import Topology
from pytest_starlingx.plugin.requests import request_from_marker, topology_for

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


@pytest.mark.parametrize(
    ("needs", "topology"),
    [
        ([], Topology.SIMPLEX),
        (["standby_controller"], Topology.DUPLEX),
        (["worker_nodes"], Topology.STANDARD),
        (["standby_controller", "storage_nodes"], Topology.STORAGE),
    ],
)
def test_needs_pick_the_smallest_topology(needs, topology):
    assert topology_for(needs) is topology
    assert request_from_marker((), {"needs": needs}, "t", {}).topology is topology


def test_equal_markers_share_a_lab_and_overrides_make_another():
    a = request_from_marker(("standard",), {"workers": 3}, "t::a", {})
    b = request_from_marker((), {"topology": "standard", "workers": 3}, "t::b", {})
    c = request_from_marker(("standard",), {}, "t::c", {})
    assert a == b
    assert len({a, b, c}) == 2
    assert a.spec({}, "x").workers == 3


def test_private_labs_belong_to_their_test():
    a = request_from_marker(("duplex",), {"private": True}, "t::a", {})
    b = request_from_marker(("duplex",), {"private": True}, "t::b", {})
    assert a != b
    assert a.private_to == "t::a"


def test_overrides_apply_on_top_of_the_config_file():
    base = {"topology": "storage", "workers": 4, "nodes": {"storage-1": {"memory_mib": 1024}}}
    spec = request_from_marker(("standard",), {}, "t", base).spec(base, "x")
    assert spec.workers == 4
    assert [n.name for n in spec.nodes][-1] == "worker-3"
    duplex = request_from_marker(("duplex",), {}, "t", base).spec(base, "x")
    assert [n.name for n in duplex.nodes] == ["controller-0", "controller-1"]


def test_two_topologies_is_an_error():
    with pytest.raises(LabConfigError, match="takes one topology"):
        request_from_marker(("simplex", "duplex"), {}, "t", {})
