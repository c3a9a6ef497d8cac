"""End-to-end runs: real labs on the simulator under libvirt (several minutes each)."""

from __future__ import annotations

import libvirt
import pytest


def libvirt_objects() -> set[str]:
    """Every domain, network and storage pool libvirt knows, by kind and name."""
    conn = libvirt.open("qemu:///system")
    try:
        return (
            {f"domain {d.name()}" for d in conn.listAllDomains()}
            | {f"network {n.name()}" for n in conn.listAllNetworks()}
            | {f"pool {p.name()}" for p in conn.listAllStoragePools()}
        )
    finally:
        conn.close()


@pytest.fixture
def no_leaks():
    """Fails the test when it leaves any libvirt object behind."""
    before = libvirt_objects()
    yield
    left = libvirt_objects() - before
    assert not left, f"left behind: {sorted(left)}"
