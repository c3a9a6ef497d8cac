"""Placing a lab's nodes on its hosts: pins, then the most free memory, controller-0 first."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_starlingx.host.capacity import HostFree, libvirt_free
from pytest_starlingx.model import resolve_lab
from pytest_starlingx.placement import PlacementError, place

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

STANDARD = resolve_lab("standard")  # controller-0/1, worker-0/1: 512 MiB and 1 vCPU each
NEED = 512 + 64  # a simulator node and QEMU's overhead


def pinned(spec, **pins):
    return replace(spec, nodes=tuple(replace(n, host=pins.get(n.name.replace("-", "_")))
                                     for n in spec.nodes))  # fmt: skip


def test_equal_hosts_take_the_nodes_in_turn_controller_0_first():
    free = [HostFree("hv1", 4000, 4), HostFree("hv2", 4000, 4)]
    placement = place(STANDARD.nodes, free)
    assert dict(placement.hosts) == {
        "controller-0": "hv1", "controller-1": "hv2", "worker-0": "hv1", "worker-1": "hv2",
    }  # fmt: skip
    assert placement.nodes_on("hv2") == ["controller-1", "worker-1"]
    assert placement.host_of("worker-0") == "hv1"


def test_the_host_with_most_memory_left_takes_the_next_node():
    free = [HostFree("small", 2 * NEED, 8), HostFree("big", 10 * NEED, 8)]
    assert set(place(STANDARD.nodes, free).nodes_on("big")) == {
        "controller-0", "controller-1", "worker-0", "worker-1",
    }  # fmt: skip


def test_controller_0_is_placed_first_wherever_it_is_listed():
    spec = replace(STANDARD, nodes=(*STANDARD.nodes[1:], STANDARD.nodes[0]))
    free = [HostFree("hv1", 4000, 4), HostFree("hv2", 4000, 4)]
    placement = place(spec.nodes, free)
    assert placement.host_of("controller-0") == "hv1"
    assert list(placement.hosts) == [n.name for n in spec.nodes]  # the lab's order


def test_on_equal_memory_the_host_with_fewer_vcpus_per_cpu_wins():
    free = [HostFree("busy", 4000, 2, vcpus_running=4), HostFree("idle", 4000, 2)]
    assert place(STANDARD.nodes[:1], free).host_of("controller-0") == "idle"


def test_pins_are_honoured_and_counted_before_the_others_are_placed():
    spec = pinned(STANDARD, worker_0="hv2", worker_1="hv2")
    free = [HostFree("hv1", 4000, 4), HostFree("hv2", 4000, 4)]
    placement = place(spec.nodes, free)
    assert placement.nodes_on("hv1") == ["controller-0", "controller-1"]
    assert placement.nodes_on("hv2") == ["worker-0", "worker-1"]


def test_a_node_that_fits_nowhere_is_one_error_naming_it_its_needs_and_every_host():
    free = [HostFree("hv1", NEED + 100, 4), HostFree("hv2", 2 * NEED, 2, vcpus_running=1)]
    with pytest.raises(PlacementError) as info:
        place(STANDARD.nodes, free)
    assert str(info.value) == (
        "worker-1 fits on no host of the lab: it needs 576 MiB (512 MiB and 64 MiB for QEMU) "
        "and 1 vCPU; hv1 has 100 of 676 MiB free left after controller-1, 4 CPUs for 1 vCPUs; "
        "hv2 has 0 of 1152 MiB free left after controller-0, worker-0, 2 CPUs for 3 vCPUs. "
        "Free memory on a host, add a host, or make the node smaller "
        "(nodes.worker-1.memory_mib)"
    )


def test_a_pinned_node_that_does_not_fit_its_host_says_so():
    spec = pinned(STANDARD, worker_0="hv2")
    free = [HostFree("hv1", 4000, 4), HostFree("hv2", 100, 4)]
    with pytest.raises(PlacementError) as info:
        place(spec.nodes, free)
    assert str(info.value).startswith(
        "worker-0 is pinned to hv2 (nodes.worker-0.host) but does not fit there: it needs 576 "
        "MiB (512 MiB and 64 MiB for QEMU) and 1 vCPU; hv1 has 4000 of 4000 MiB free left, 4 "
        "CPUs for 0 vCPUs; hv2 has 100 of 100 MiB free left, 4 CPUs for 0 vCPUs. Pin it"
    )


def test_memory_is_not_overcommitted_but_cpus_are():
    free = [HostFree("hv1", 4 * NEED, 1)]  # four 1-vCPU nodes on one CPU: fine
    assert place(STANDARD.nodes, free).nodes_on("hv1") == [n.name for n in STANDARD.nodes]
    with pytest.raises(PlacementError, match="worker-1 fits on no host"):
        place(STANDARD.nodes, [HostFree("hv1", 4 * NEED - 1, 64)])


class FakeConn:
    """The few virConnect calls libvirt_free makes, with what a 2-CPU host answers."""

    class Domain:
        def info(self):
            return [1, 524288, 524288, 2, 0]  # state, max KiB, KiB, vCPUs, CPU time

    def getMemoryStats(self, cell, flags):
        return {
            "total": 24683568,
            "free": 2048 * 1024,
            "buffers": 1024 * 1024,
            "cached": 1024 * 1024,
        }

    def getInfo(self):
        return ["x86_64", 17113, 2, 2596, 1, 1, 2, 1]

    def listAllDomains(self, flags):
        return [self.Domain(), self.Domain()]


def test_free_resources_are_read_as_libvirt_reports_them():
    assert libvirt_free(FakeConn(), "hv1") == HostFree("hv1", 4096, 2, vcpus_running=4)
