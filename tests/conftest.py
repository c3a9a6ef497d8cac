"""Shared fixtures of the project's own tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_starlingx.labstate import DEFAULT_STATE_DIR

pytest_plugins = ["pytester"]

# Not under /tmp/pytest-of-<user> (mode 0700): libvirt's QEMU user must reach sockets and disks.
STATE_ROOT = Path("/var/tmp/pytest-starlingx-reliability")


@pytest.fixture
def fake_iso(tmp_path):
    """A file that carries the ISO 9660 signature, standing in for a StarlingX ISO."""
    iso = tmp_path / "starlingx.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 2042)
    return iso


@pytest.fixture(scope="session")
def new_state_dir() -> Callable[[], Path]:
    """Makes a new state dir (for ``$STX_STATE_DIR``) that QEMU can traverse: its lab states,
    leases and golden labs are its own. Any gc on this host still removes a lab of it whose
    owner is gone (``on_host`` in the reliability tests keeps such labs to the test's own gc)."""

    def make() -> Path:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        STATE_ROOT.chmod(0o755)
        path = STATE_ROOT / f"state-{os.getpid()}-{os.urandom(3).hex()}"
        path.mkdir(mode=0o755)
        probe = DEFAULT_STATE_DIR / "kvm-probe.json"  # spare the session a KVM probe
        if probe.exists():
            shutil.copy(probe, path / probe.name)
        return path

    return make


#: The test files that bring labs up, by their wall time in a full run here (2026-12-02),
#: heaviest first. `./run tests` runs `-n 3 --dist loadfile --no-loadscope-reorder`: xdist then
#: hands out files in collection order, so the longest start first instead of last (xdist's
#: default order, by number of tests, put them at the end and a 7-minute file ran alone).
HEAVIEST_FIRST = (
    "tests/e2e/test_storage.py",
    "tests/e2e/test_standard.py",
    "tests/golden/test_golden_e2e.py",
    "tests/e2e/test_example_duplex.py",
    "tests/reliability/test_two_sessions.py",
    "tests/backends/test_virtualbox_e2e_duplex.py",
    "tests/e2e/test_fault_unlock.py",
    "tests/reliability/test_xdist_secrets.py",
    "tests/reliability/test_keep_reuse.py",
    "tests/e2e/test_fault_bootstrap.py",
    "tests/backends/test_virtualbox_e2e.py",
    "tests/e2e/test_example_simplex.py",
    "tests/e2e/test_fault_reboot.py",
    "tests/sim/test_boot.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest test files first (HEAVIEST_FIRST); every other file after, in its own order."""
    root = Path(__file__).parent.parent
    rank = {path: i for i, path in enumerate(HEAVIEST_FIRST)}

    def heaviness(item: pytest.Item) -> int:
        if not item.path.is_relative_to(root):
            return len(rank)
        return rank.get(item.path.relative_to(root).as_posix(), len(rank))

    items.sort(key=heaviness)
