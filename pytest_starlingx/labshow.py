"""A resolved lab described for people: the ``stx-lab show`` text."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_starlingx.host.capacity import HostFree
from pytest_starlingx.model import RELEASES, LabSpec, NodeSpec, Uplink
from pytest_starlingx.placement import Placement, memory_needed
from pytest_starlingx.text_table import render_table

UPLINK_SHOWN = {
    Uplink.NAT: "nat (the OAM gateway address and masquerading in the lab's gateway namespace; "
    "a way out for the bootstrap's image pulls)",
    Uplink.ISOLATED: "isolated (the lab reaches nothing outside it)",
}


def describe_lab(
    lab: LabSpec, placement: Placement | None = None, free: Sequence[HostFree] = ()
) -> str:
    """The lab's settings, then one row per node with its size, disks and NICs.

    A lab with hosts also gets its hosts (with what each has ``free`` and what the
    ``placement`` puts there, when known) and a host column: the placement's host, else the
    pin, else ``?``; a lab on one host needs no placement.
    """
    image = (
        f"simulator (built with `stx-lab sim build --release {lab.release}`)"
        if lab.uses_simulator
        else lab.image
    )
    head = [
        f"lab       {lab.name}",
        f"topology  {lab.topology.value} (system_mode {lab.topology.system_mode})",
        f"backend   {lab.backend.value}",
        f"image     {image}",
        f"release   StarlingX {lab.release} ({RELEASES[lab.release]})",
        f"profile   {lab.profile.value}",
        f"firmware  {lab.firmware.value}",
        f"oam       {lab.oam.subnet} gateway {lab.oam.gateway} floating {lab.oam.floating}",
        f"uplink    {'unset' if lab.oam.uplink is None else UPLINK_SHOWN[lab.oam.uplink]}",
        f"mgmt      {lab.mgmt.subnet}",
        f"memory    {lab.memory_mib} MiB in all",
        *_hosts(lab, placement, free),
        "",
    ]
    rows = []
    for node in lab.nodes:
        kind = f"{node.personality.value}{'+worker' if node.all_in_one else ''}"
        nics = ", ".join(
            f"{nic.network}:{nic.model}{' (boot)' if i == node.boot_nic_index else ''}"
            for i, nic in enumerate(node.nics)
        )
        rows.append(
            [
                node.name,
                *([_host_of(lab, node, placement)] if lab.hosts else []),
                kind,
                node.memory_mib,
                node.vcpus,
                " + ".join(f"{d}G" for d in node.disks_gib),
                "ISO" if node.installs_from_iso else "network",
                nics,
            ]
        )
    headers = ["node", *(["host"] if lab.hosts else []), "personality", "memory MiB", "vCPUs",
               "disks", "installs from", "NICs"]  # fmt: skip
    return "\n".join(head) + "\n" + render_table(headers, rows)


def _hosts(lab: LabSpec, placement: Placement | None, free: Sequence[HostFree]) -> list[str]:
    """One line per host: ``hosts     hv2 qemu+ssh://hv2/system underlay 192.0.2.12: 2 nodes,
    1152 MiB of 30000 MiB free, 8 CPUs (0 vCPUs running)`` (what is known of it)."""
    known = {h.name: h for h in free}
    lines = []
    for index, host in enumerate(lab.hosts):
        line = f"{'hosts' if index == 0 else '':10}{host.name} {host.uri}"
        if host.underlay is not None:
            line += f" underlay {host.underlay}"
        said = []
        if placement is not None:
            nodes = [lab.node(n) for n in placement.nodes_on(host.name)]
            said.append(f"{len(nodes)} node{'' if len(nodes) == 1 else 's'}")
        if host.name in known:
            had = known[host.name]
            taken = "" if placement is None else f"{sum(memory_needed(n) for n in nodes)} MiB of "
            said.append(
                f"{taken}{had.memory_mib} MiB free, {had.cpus} CPUs "
                f"({had.vcpus_running} vCPUs running)"
            )
        lines.append(line + (f": {', '.join(said)}" if said else ""))
    if placement is not None:
        lines.append(
            "placement pins, then controller-0 first, each node on the host with the most "
            "free memory left (libvirt's figures, just read)"
        )
    return lines


def _host_of(lab: LabSpec, node: NodeSpec, placement: Placement | None) -> str:
    if placement is not None:
        host = placement.host_of(node.name)
    elif len(lab.hosts) == 1:
        host = lab.hosts[0].name
    else:
        host = node.host or "?"
    return f"{host} (pinned)" if node.host else host
