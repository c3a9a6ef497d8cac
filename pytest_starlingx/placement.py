"""Which libvirt host each node of a lab runs on: pins first, then by free memory.

The rule: every node pinned in the lab file (``nodes.<name>.host``) goes to its host; then
the others, controller-0 first and then in the lab's node order, each to the host with the
most memory left once the nodes placed before it are counted; among hosts with as much
memory left, the one with the fewest vCPUs per CPU (running domains and placed nodes), then
the one listed first. So equal hosts get the nodes in turn, and a host with room takes the
next node before a fuller one.

Memory is never overcommitted, as on one host (``plugin.factory.memory_shortfall``): a node
needs its memory plus :data:`~pytest_starlingx.host.capacity.GUEST_OVERHEAD_MIB` for QEMU,
from what the host has free. CPUs are shared, as on one host (``host.capacity``: two busy
nodes per core): they only break ties. controller-0 and controller-1 are not kept apart: a
lab is for tests, not for surviving the loss of a hypervisor, and equal hosts part them
anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_starlingx.errors import HostError
from pytest_starlingx.host.capacity import GUEST_OVERHEAD_MIB, HostFree
from pytest_starlingx.model import ACTIVE_CONTROLLER, NodeSpec


class PlacementError(HostError):
    """A node fits on none of the lab's hosts (or not on the host it is pinned to)."""


@dataclass(frozen=True)
class Placement:
    """Node name to host name, for every node of a lab, in the lab's node order."""

    hosts: Mapping[str, str]

    def host_of(self, node: str) -> str:
        """The host ``node`` runs on."""
        return self.hosts[node]

    def nodes_on(self, host: str) -> list[str]:
        """The nodes that run on ``host``, in the lab's order."""
        return [node for node, on in self.hosts.items() if on == host]


def memory_needed(node: NodeSpec) -> int:
    """MiB a node takes from its host: its memory and QEMU's own."""
    return node.memory_mib + GUEST_OVERHEAD_MIB


def place(nodes: Sequence[NodeSpec], free: Sequence[HostFree]) -> Placement:
    """Where each of ``nodes`` runs, given what each host has ``free`` (in the lab's host
    order); see the module's rule. Raises :class:`PlacementError` for the first node that
    fits nowhere, naming its needs and what every host has left."""
    left = {h.name: h.memory_mib for h in free}
    vcpus = {h.name: h.vcpus_running for h in free}
    cpus = {h.name: max(h.cpus, 1) for h in free}
    placed: dict[str, str] = {}

    def put(node: NodeSpec, host: str) -> None:
        placed[node.name] = host
        left[host] -= memory_needed(node)
        vcpus[host] += node.vcpus

    for node in nodes:
        if node.host is None:
            continue
        if node.host not in left:
            raise PlacementError(
                f"{node.name} is pinned to host {node.host!r}, which the lab does not list "
                f"(its hosts: {', '.join(left)})"
            )
        if memory_needed(node) > left[node.host]:
            raise PlacementError(
                f"{node.name} is pinned to {node.host} (nodes.{node.name}.host) but does not "
                f"fit there: it needs {_needs(node)}; {_left(free, left, vcpus, placed)}. "
                f"Pin it elsewhere, unpin it, or make it smaller (nodes.{node.name}.memory_mib)"
            )
        put(node, node.host)
    unpinned = sorted(
        (n for n in nodes if n.host is None), key=lambda n: n.name != ACTIVE_CONTROLLER
    )
    for node in unpinned:
        fits = [h.name for h in free if memory_needed(node) <= left[h.name]]
        if not fits:
            raise PlacementError(
                f"{node.name} fits on no host of the lab: it needs {_needs(node)}; "
                f"{_left(free, left, vcpus, placed)}. Free memory on a host, add a host, or "
                f"make the node smaller (nodes.{node.name}.memory_mib)"
            )
        put(node, min(fits, key=lambda h: (-left[h], vcpus[h] / cpus[h])))
    return Placement({n.name: placed[n.name] for n in nodes})


def _needs(node: NodeSpec) -> str:
    return (
        f"{memory_needed(node)} MiB ({node.memory_mib} MiB and {GUEST_OVERHEAD_MIB} MiB for "
        f"QEMU) and {node.vcpus} vCPU{'s' if node.vcpus > 1 else ''}"
    )


def _left(
    free: Sequence[HostFree],
    left: Mapping[str, int],
    vcpus: Mapping[str, int],
    placed: Mapping[str, str],
) -> str:
    """What each host has left and what took the rest: ``hv1 has 300 of 2000 MiB free left
    after controller-0, 4 CPUs for 1 vCPUs``."""
    parts = []
    for host in free:
        nodes = [n for n, on in placed.items() if on == host.name]
        taken = f" after {', '.join(nodes)}" if nodes else ""
        parts.append(
            f"{host.name} has {left[host.name]} of {host.memory_mib} MiB free left{taken}, "
            f"{host.cpus} CPUs for {vcpus[host.name]} vCPUs"
        )
    return "; ".join(parts)
