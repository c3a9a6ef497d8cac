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
    return make_tiny_iso()
