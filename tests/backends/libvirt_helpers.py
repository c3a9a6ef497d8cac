"""Helpers shared by the backend tests: lab shapes, the guest's console, libvirt listings."""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import libvirt
import pytest

from pytest_starlingx.backends.base import (
    BootDevice,
    DiskSpec,
    LabResources,
    MachineSpec,
    NetworkSpec,
    NicSpec,
)
from pytest_starlingx.transport import Transport

# Not under /tmp/pytest-of-<user> (mode 0700): libvirt's QEMU user must reach these files.
TEST_ROOT = Path("/var/tmp/pytest-starlingx-tests")
NETWORKS = ("oam", "mgmt", "data0", "data1")
READY = "STX-GUEST-READY"
LOADER = "STX-BOOT-LOADER"  # the first thing the guest prints on its serial port
BOOT_TIMEOUT = 120.0  # seconds; TCG on a shared 2-core host

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t
echo {READY}
while true; do setsid cttyhack sh; done
"""
# no_timer_check: what Linux sets itself as a KVM guest; under TCG on a loaded host its IO-APIC
# timer check can fail and panic the kernel (pytest_starlingx/sim/DESIGN.md, "Emulation").
GRUB_CFG = f"""serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry 'tiny' {{
  echo {LOADER}
  linux /boot/vmlinuz console=ttyS0 quiet no_timer_check
  initrd /boot/initrd.gz
}}
"""


def everything(conn: libvirt.virConnect) -> set[str]:
    """Every libvirt object on the host, by kind and name (pool volumes included)."""
    found = {f"domain {d.name()}" for d in conn.listAllDomains()}
    found |= {f"network {n.name()}" for n in conn.listAllNetworks()}
    for pool in conn.listAllStoragePools():
        found.add(f"pool {pool.name()}")
        try:
            if pool.isActive():
                found |= {f"volume {v.path()}" for v in pool.listAllVolumes()}
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise  # only a pool another test removed meanwhile is skipped
    return found


def ours(objects: set[str], lab_id: str) -> set[str]:
    """The objects whose names carry ``lab_id`` (other sessions may create labs meanwhile)."""
    return {o for o in objects if lab_id in o}


def new_lab_id() -> str:
    """A fresh lab id."""
    return secrets.token_hex(4)


def lab_resources(
    machines: int, lab_id: str, *, lab_name: str = "t", cdrom: Path | None = None
) -> LabResources:
    """A lab of ``machines`` small machines shaped like StarlingX nodes (4 NICs, mgmt boots)."""
    nics = tuple(
        NicSpec(net, "e1000" if net in ("oam", "mgmt") else "virtio", boot=net == "mgmt")
        for net in NETWORKS
    )
    specs = tuple(
        MachineSpec(
            name=f"node-{i}",
            memory_mib=256,
            vcpus=1 + i % 2,
            disks=(DiskSpec(600), DiskSpec(200)) if i == 0 else (DiskSpec(200),),
            cdrom=cdrom if i == 0 else None,
            nics=nics,
            boot_order=(BootDevice.DISK, BootDevice.CDROM, BootDevice.NETWORK),
            oem_strings=(f"stx-sim:node={i},fail=none",),
            cpu_weight=8 if i == 0 else 1,  # node-0 serves the others, as controller-0 does
        )
        for i in range(machines)
    )
    return LabResources(lab_name, lab_id, tuple(NetworkSpec(n) for n in NETWORKS), specs)


def read_until(transport: Transport, text: str, timeout: float = BOOT_TIMEOUT) -> bytes:
    """Read the console until ``text`` appears; fail with the tail otherwise."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {text!r} on the console within {timeout}s; tail: {seen[-500:]!r}")
        seen += transport.read(4096, min(remaining, 1.0))
    return seen


def log_holding(read_log: Callable[[], bytes], texts: Sequence[str], timeout: float = 30) -> bytes:
    """The console log once it holds every one of ``texts``: a hypervisor's logger (libvirt's
    virtlogd) writes it apart from the console, a moment after a reader saw the bytes."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_log()
        if all(text.encode() in log for text in texts):
            return log
        if time.monotonic() > deadline:
            pytest.fail(f"the console log lacks one of {texts} after {timeout}s: {log[-300:]!r}")
        time.sleep(0.2)


def shell(transport: Transport, command: str) -> bytes:
    """Run ``command`` in the guest shell; its output (the echoed command line excluded)."""
    transport.write(f"{command}; echo CMD''-END\n".encode())
    return read_until(transport, "CMD-END", timeout=60).split(b"CMD''-END", 1)[-1]


def make_tiny_iso() -> Path:
    """A BIOS-bootable ISO: GRUB on the serial port, Debian's kernel, a busybox initramfs
    (built once per content, kept in TEST_ROOT); skips the test without what it takes."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    busybox = Path("/usr/bin/busybox")
    if not kernels or not busybox.exists() or not shutil.which("grub-mkrescue"):
        pytest.skip("needs /boot/vmlinuz-*, busybox-static and grub-mkrescue (grub-pc-bin)")
    key = hashlib.sha256(
        kernels[-1].read_bytes()[:4096] + busybox.read_bytes() + INIT.encode() + GRUB_CFG.encode()
    ).hexdigest()[:12]
    iso = TEST_ROOT / f"tiny-{key}.iso"
    if iso.exists():
        return iso
    work = TEST_ROOT / f"build-{os.getpid()}"
    root = work / "initramfs"
    for sub in ("bin", "proc", "sys", "dev", "mnt"):
        (root / sub).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input="\n".join([".", *files]).encode(),
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    boot = work / "iso" / "boot"
    (boot / "grub").mkdir(parents=True)
    (boot / "initrd.gz").write_bytes(gzip.compress(cpio, compresslevel=1))
    shutil.copy(kernels[-1], boot / "vmlinuz")
    (boot / "grub" / "grub.cfg").write_text(GRUB_CFG)
    partial = iso.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        ["grub-mkrescue", "-o", str(partial), str(work / "iso")], capture_output=True, check=True
    )
    partial.chmod(0o644)
    partial.replace(iso)
    shutil.rmtree(work)
    return iso
