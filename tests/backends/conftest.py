"""Fixtures for backend tests on the real libvirt daemon (QEMU software emulation)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_helpers import TEST_ROOT, everything, make_tiny_iso, ours

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


@pytest.fixture
def lab_factory(backend: LibvirtBackend, used_lab_ids: set[str]) -> Iterator:
    """Create labs; every lab created is destroyed at the end of the test."""
    created = []

    def make(resources: LabResources) -> LibvirtLab:
        used_lab_ids.add(resources.lab_id)
        created.append(resources.lab_id)
        return backend.create_lab(resources)

    yield make
    for lab_id in created:
        backend.destroy_lab(lab_id)


@pytest.fixture(scope="session")
def tiny_iso() -> Path:
    """A BIOS-bootable ISO: GRUB on the serial port, Debian's kernel, a busybox initramfs."""
    return make_tiny_iso()
