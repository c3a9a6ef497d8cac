"""Fixtures for backend tests on the real libvirt daemon (QEMU software emulation)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_helpers import GRUB_CFG, INIT, TEST_ROOT, everything, ours

from pytest_starlingx.backends.base import (
    LabResources,
)
from pytest_starlingx.backends.libvirt import (
    DomainType,
    LibvirtBackend,
    LibvirtConfig,
    LibvirtLab,
)
from pytest_starlingx.errors import BackendError


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    """A state directory for this session, removed at the end."""
    path = TEST_ROOT / f"state-{os.getpid()}"
    path.mkdir(parents=True)
    TEST_ROOT.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def used_lab_ids() -> set[str]:
    """Lab ids created by this session (other sessions may run labs on the same host)."""
    return set()


@pytest.fixture(scope="session")
def backend(state_dir: Path, used_lab_ids: set[str]) -> Iterator[LibvirtBackend]:
    """A backend on the local system libvirt, software emulation (no KVM probe).

    At the end, checks that no object of any lab this session created is left.
    """
    try:
        be = LibvirtBackend(LibvirtConfig(state_dir=state_dir, domain_type=DomainType.QEMU))
    except BackendError as exc:
        pytest.skip(f"no usable libvirt: {exc}")
    yield be
    leaked = {o for lab_id in used_lab_ids for o in ours(everything(be.conn), lab_id)}
    for lab_id in used_lab_ids:
        be.destroy_lab(lab_id)
    be.close()
    assert not leaked, f"objects left behind: {sorted(leaked)}"


@pytest.fixture(scope="session")
def remote_backend(
    backend: LibvirtBackend, state_dir: Path, used_lab_ids: set[str]
) -> Iterator[LibvirtBackend]:
    """A backend in remote-files mode on the local system libvirt (console streams, pools and
    an image cache of its own under ``TEST_ROOT``), sharing ``backend``'s state dir.

    At the end, destroys this session's labs and removes the image cache and its directory.
    """
    remote_dir = TEST_ROOT / f"remote-{os.getpid()}"
    config = LibvirtConfig(
        state_dir=state_dir,
        domain_type=DomainType.QEMU,
        remote_files=True,
        remote_pool_dir=str(remote_dir),
        image_cache=f"stx-image-cache-test-{os.getpid()}",
    )
    be = LibvirtBackend(config)
    yield be
    for lab_id in used_lab_ids:
        be.destroy_lab(lab_id)
    be.clear_image_cache()
    be.close()
    shutil.rmtree(remote_dir, ignore_errors=True)


def _factory(backend: LibvirtBackend, used_lab_ids: set[str]) -> Iterator:
    created = []

    def make(resources: LabResources) -> LibvirtLab:
        used_lab_ids.add(resources.lab_id)
        created.append(resources.lab_id)
        return backend.create_lab(resources)

    yield make
    for lab_id in created:
        backend.destroy_lab(lab_id)


@pytest.fixture
def lab_factory(backend: LibvirtBackend, used_lab_ids: set[str]) -> Iterator:
    """Create labs; every lab created is destroyed at the end of the test."""
    yield from _factory(backend, used_lab_ids)


@pytest.fixture
def remote_lab_factory(remote_backend: LibvirtBackend, used_lab_ids: set[str]) -> Iterator:
    """Create labs in remote-files mode; each is destroyed at the end of the test."""
    yield from _factory(remote_backend, used_lab_ids)


@pytest.fixture(scope="session")
def tiny_iso() -> Path:
    """A BIOS-bootable ISO: GRUB on the serial port, Debian's kernel, a busybox initramfs."""
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
