"""End-to-end runs: real labs on the simulator under libvirt (minutes each)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest


def libvirt_objects(prefix: str) -> set[str]:
    """Every libvirt domain, network and storage pool whose name starts with ``prefix``."""
    conn = libvirt.open("qemu:///system")
    try:
        found = (
            {f"domain {d.name()}" for d in conn.listAllDomains()}
            | {f"network {n.name()}" for n in conn.listAllNetworks()}
            | {f"pool {p.name()}" for p in conn.listAllStoragePools()}
        )
    finally:
        conn.close()
    return {name for name in found if name.split(" ", 1)[1].startswith(prefix)}


@pytest.fixture
def lab_name() -> Iterator[str]:
    """A lab name of this test's own; fails the test when objects of that lab are left over."""
    name = f"e2e{secrets.token_hex(3)}"
    yield name
    left = libvirt_objects(f"stx-{name}-")
    assert not left, f"left behind: {sorted(left)}"


@pytest.fixture
def lab_file(tmp_path: Path, lab_name: str) -> Path:
    """A base lab description (--stx-config) giving the labs of a run that name."""
    path = tmp_path / "lab.yaml"
    path.write_text(f"name: {lab_name}\ntopology: simplex\n")
    return path


@pytest.fixture
def backend():
    """A libvirt backend, closed after the test."""
    from pytest_starlingx.backends import make_backend

    backend = make_backend("libvirt")
    yield backend
    backend.close()
