"""How many stages of a bring-up may run at once on this host.

Secondary nodes (controller-1, storage, workers) install and unlock concurrently when the host has
the CPU and memory for it. Under software emulation a node that installs or boots keeps one host
core busy, but most of a node's stage is waiting (for its peer, for a poll), so two busy nodes per
core are allowed; memory is what the nodes may still take from ``MemAvailable`` (less a reserve for
the host). The controller-0 stages that drive the secondaries need one more slot.

What a libvirt host has free for a lab's guests (memory, CPUs), read through libvirt so that the
host may be another machine, is here too (:func:`libvirt_free`, :func:`hosts_free`): the
placement of a multi-host lab's nodes (``placement.py``) and ``stx-lab doctor`` use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pytest_starlingx.errors import BackendError, HostError
from pytest_starlingx.model import ACTIVE_CONTROLLER, HostSpec, LabSpec

log = logging.getLogger("pytest_starlingx.host.capacity")

NODES_PER_CORE = 2
HOST_RESERVE_MIB = 1024
GUEST_OVERHEAD_MIB = 64  # what QEMU itself needs beside each guest's memory
MEMINFO = Path("/proc/meminfo")
#: libvirt's VIR_NODE_MEMORY_STATS_ALL_CELLS and VIR_CONNECT_LIST_DOMAINS_ACTIVE
ALL_CELLS = -1
ACTIVE_DOMAINS = 1


@dataclass(frozen=True)
class HostFree:
    """What a libvirt host has for a lab's guests, as its libvirt reports it."""

    name: str
    memory_mib: int  # memory the host can give guests now
    cpus: int  # the host's active CPUs
    vcpus_running: int = 0  # the vCPUs of the domains running there


def libvirt_free(conn: Any, name: str) -> HostFree:
    """What the host of the libvirt connection ``conn`` (a ``virConnect``) has free, as
    ``name``.

    Memory is libvirt's node memory statistics over all cells, free + buffers + cached
    (``virNodeGetMemoryStats``, from /proc/meminfo on Linux): the nearest libvirt says to the
    ``MemAvailable`` a lab on this host is checked against, where ``getFreeMemory()``
    (``MemFree``, per NUMA cell) leaves out the page cache the kernel hands back. CPUs are
    ``getInfo()``'s active CPUs, beside the vCPUs of the domains running there.
    """
    import libvirt

    try:
        stats = conn.getMemoryStats(ALL_CELLS, 0)
        free_kib = stats["free"] + stats.get("buffers", 0) + stats.get("cached", 0)
    except (libvirt.libvirtError, KeyError):
        free_kib = conn.getFreeMemory() // 1024
    running = sum(d.info()[3] for d in conn.listAllDomains(ACTIVE_DOMAINS))
    return HostFree(name, free_kib // 1024, conn.getInfo()[2], running)


def hosts_free(hosts: Sequence[HostSpec]) -> list[HostFree]:
    """What each of a lab's ``hosts`` has free, read now over libvirt; a host that cannot be
    reached or read is a HostError naming it."""
    import libvirt

    from pytest_starlingx.backends.libvirt_conn import Connection, error

    found = []
    for host in hosts:
        try:
            connection = Connection(host.uri, reconnect_timeout=0)
            try:
                found.append(connection.run(partial(libvirt_free, name=host.name)))
            except libvirt.libvirtError as exc:
                raise error(f"reading free memory and CPUs at {host.uri}", exc) from exc
            finally:
                connection.close()
        except BackendError as exc:
            raise HostError(f"host {host.name}: {exc}") from exc
    return found


def mem_available_mib(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` in MiB, or None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def parallel_cap(spec: LabSpec, cpus: int | None = None, mem_available: int | None = None) -> int:
    """``max_parallel`` for :func:`~pytest_starlingx.stages.base.run_stages` on this host.

    One slot for controller-0's stages plus as many secondaries as the CPUs and the free memory
    allow (at least one). ``cpus`` and ``mem_available`` (MiB) default to this host's.
    """
    secondaries = [n for n in spec.nodes if n.name != ACTIVE_CONTROLLER]
    if not secondaries:
        return 1
    cpus = cpus or os.cpu_count() or 1
    mem = mem_available if mem_available is not None else mem_available_mib()
    by_cpu = cpus * NODES_PER_CORE
    largest = max(n.memory_mib for n in secondaries)
    by_mem = len(secondaries) if mem is None else (mem - HOST_RESERVE_MIB) // largest
    nodes = max(1, min(len(secondaries), by_cpu, by_mem))
    log.info(
        "%s: up to %d secondaries at once (%d cpus -> %d, %s MiB available -> %d, %d nodes)",
        spec.name, nodes, cpus, by_cpu, mem, by_mem, len(secondaries),
    )  # fmt: skip
    return 1 + nodes
