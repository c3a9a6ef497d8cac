"""A resolved lab described for people: the ``stx-lab show`` text."""

from __future__ import annotations

from pytest_starlingx.model import RELEASES, LabSpec, Uplink
from pytest_starlingx.text_table import render_table

UPLINK_SHOWN = {
    Uplink.NAT: "nat (the OAM gateway address and masquerading in the lab's gateway namespace; "
    "a way out for the bootstrap's image pulls)",
    Uplink.ISOLATED: "isolated (the lab reaches nothing outside it)",
}


def describe_lab(lab: LabSpec) -> str:
    """The lab's settings, then one row per node with its size, disks and NICs."""
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
                kind,
                node.memory_mib,
                node.vcpus,
                " + ".join(f"{d}G" for d in node.disks_gib),
                "ISO" if node.installs_from_iso else "network",
                nics,
            ]
        )
    headers = ["node", "personality", "memory MiB", "vCPUs", "disks", "installs from", "NICs"]
    return "\n".join(head) + "\n" + render_table(headers, rows)
