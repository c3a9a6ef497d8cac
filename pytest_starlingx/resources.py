"""From a StarlingX lab description to hypervisor-neutral resources for a backend.

This is the one place where StarlingX words (controller-0, the mgmt network) become machine
words (a NIC marked as the boot NIC, a CD-ROM, a boot order).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pytest_starlingx.backends.base import (
    BootDevice,
    DiskSpec,
    LabResources,
    MachineSpec,
    NetworkSpec,
    NicSpec,
)
from pytest_starlingx.model import NETWORKS, OAM_NETWORK, Firmware, LabSpec, NodeSpec, Uplink

SIM_KNOB_PREFIX = "stx-sim:"
SIM_KNOBS = ("slow", "hang_install", "bootstrap_fail", "no_netboot", "enable_fail",
             "reboot_after", "app_apply", "platform_fs", "images_fail")  # fmt: skip


def knob_string(knobs: Mapping[str, object]) -> str:
    """The simulator's SMBIOS OEM string for fault knobs: ``stx-sim:k=v,k=v``."""
    unknown = sorted(set(knobs) - set(SIM_KNOBS))
    if unknown:
        raise ValueError(f"unknown simulator knobs {unknown}; known: {', '.join(SIM_KNOBS)}")
    return SIM_KNOB_PREFIX + ",".join(f"{k}={knobs[k]}" for k in sorted(knobs))


#: controller-0's share of a busy host's CPUs against another node's. Every other node boots
#: from it (DHCP, TFTP, the install feed) and the stages drive the lab through it (the
#: ``system`` CLI, the platform's API), while a node loading its kernel over TFTP busy-polls
#: its NIC (pxelinux through the firmware's PXE API) and would otherwise take the CPU that
#: controller-0 needs to answer it: on a host with fewer cores than nodes, the network boots
#: of a standard lab's three other nodes took twice as long without it.
SERVER_CPU_WEIGHT = 8


def machine_spec(
    node: NodeSpec, iso: Path | None, knobs: Mapping[str, object], firmware: Firmware
) -> MachineSpec:
    """One node as a machine: disks, NICs in StarlingX order (mgmt boots), ISO on controller-0,
    which serves the others and so weighs more on a busy host's CPUs."""
    cdrom = iso if node.installs_from_iso else None
    order = (BootDevice.DISK, BootDevice.CDROM, BootDevice.NETWORK)
    return MachineSpec(
        name=node.name,
        memory_mib=node.memory_mib,
        vcpus=node.vcpus,
        disks=tuple(DiskSpec(size) for size in node.disks_gib),
        cdrom=cdrom,
        nics=tuple(
            NicSpec(nic.network, nic.model, boot=i == node.boot_nic_index)
            for i, nic in enumerate(node.nics)
        ),
        boot_order=order if cdrom else tuple(d for d in order if d is not BootDevice.CDROM),
        oem_strings=(knob_string(knobs),) if knobs else (),
        cpu_weight=SERVER_CPU_WEIGHT if node.installs_from_iso else 1,
        uefi=firmware is Firmware.UEFI,
    )


def network_spec(spec: LabSpec, name: str) -> NetworkSpec:
    """Lab network ``name``: the OAM network is the one that may have a way out."""
    if name == OAM_NETWORK and spec.oam.uplink is Uplink.NAT:
        return NetworkSpec(name, nat=True, gateway=spec.oam.gateway_interface)
    return NetworkSpec(name)


def lab_resources(
    spec: LabSpec,
    lab_id: str,
    iso: Path | None,
    knobs: Mapping[str, Mapping[str, object]] | None = None,
) -> LabResources:
    """The networks (oam, mgmt, data0, data1) and one machine per node. All are isolated
    but the OAM network with ``oam.uplink: nat``: a NAT network with its gateway at the OAM
    gateway address."""
    knobs = knobs or {}
    return LabResources(
        lab_name=spec.name,
        lab_id=lab_id,
        networks=tuple(network_spec(spec, name) for name in NETWORKS),
        machines=tuple(
            machine_spec(n, iso, knobs.get(n.name, {}), spec.firmware) for n in spec.nodes
        ),
    )
