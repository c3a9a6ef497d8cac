"""What hardware this node has, read from sysfs as a host agent (sysinv-agent) would."""

from __future__ import annotations

import os
import re

from stxsim import env

# Device types as `lspci` names them for the NICs QEMU offers (shown by host-port-list).
_NIC_DEVICE = {
    "e1000": "82540EM Gigabit Ethernet Controller",
    "e1000e": "82574L Gigabit Network Connection",
    "virtio_net": "Virtio network device",
}


def _read(p: str) -> str:
    try:
        with open(p, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _link_base(p: str) -> str:
    try:
        return os.path.basename(os.readlink(p))
    except OSError:
        return ""


def _pci_address(device: str) -> str:
    """The PCI address of a NIC; a virtio NIC's `device` is a virtioN child of it."""
    real = os.path.realpath(device)
    if os.path.basename(real).startswith("virtio"):
        real = os.path.dirname(real)
    return os.path.basename(real) if os.path.exists(device) else ""


def nics() -> list[dict[str, str]]:
    """Physical NICs (`/sys/class/net`, loopback and virtual devices skipped), by name."""
    base = env.path("/sys/class/net")
    out = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        mac = _read(os.path.join(base, name, "address"))
        if name == "lo" or not mac or mac == "00:00:00:00:00:00":
            continue
        dev = os.path.join(base, name, "device")
        driver = _link_base(os.path.join(dev, "driver"))
        out.append(
            {
                "name": name,
                "mac": mac,
                "pciaddr": _pci_address(dev),
                "driver": driver,
                "pdevice": _NIC_DEVICE.get(driver, "Ethernet controller"),
            }
        )
    return out


def disks() -> list[dict[str, object]]:
    """SATA/SCSI disks (`/sys/block/sd*`) with their size in MiB, in SATA port order.

    The kernel probes SATA ports in parallel, so `sda` need not be on the first port; the
    by-path name (port) is what stays put, as udev's /dev/disk/by-path does on a real host.
    """
    base = env.path("/sys/block")
    names = [n for n in os.listdir(base) if n.startswith("sd")] if os.path.isdir(base) else []
    out: list[dict[str, object]] = []
    ports = {name: _ata_port(os.path.join(base, name)) for name in names}
    for index, name in enumerate(sorted(names, key=lambda n: (ports[n] or 99, n))):
        sectors = int(_read(os.path.join(base, name, "size")) or 0)
        rotational = _read(os.path.join(base, name, "queue", "rotational")) != "0"
        port = ports[name] or index + 1
        out.append(
            {
                "device_node": f"/dev/{name}",
                # major 8 (sd), minor 16 per disk: sda 2048, sdb 2064, as sysinv reports them.
                "device_num": 8 * 256 + 16 * (ord(name[2]) - ord("a")),
                "device_type": "HDD" if rotational else "SSD",
                "size_mib": sectors * 512 // (1024 * 1024),
                # QEMU's q35 AHCI controller, one port per disk, as udev names it.
                "device_path": f"/dev/disk/by-path/pci-0000:00:1f.2-ata-{port}.0",
                "serial_id": f"QM{port:05d}",
            }
        )
    return out


def _ata_port(block: str) -> int | None:
    """The SATA port number (1, 2, ...) in a block device's sysfs path, if it has one."""
    match = re.search(r"/ata(\d+)/", os.path.realpath(block))
    return int(match.group(1)) if match else None


def collect() -> dict[str, list]:
    """The inventory an agent reports: NICs and disks."""
    return {"nics": nics(), "disks": disks()}
