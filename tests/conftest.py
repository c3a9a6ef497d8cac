"""Shared fixtures of the project's own tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_starlingx.settings import DEFAULT_STATE_DIR

pytest_plugins = ["pytester"]

# Not under /tmp/pytest-of-<user> (mode 0700): libvirt's QEMU user must reach sockets and disks.
STATE_ROOT = Path("/var/tmp/pytest-starlingx-reliability")


#: Where the tests that bring labs up live (most of the suite's time).
LAB_TESTS = ("tests/e2e/", "tests/reliability/", "tests/golden/", "_e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The largest labs (``slow``) first, then the other files that bring labs up, then the
    rest: with ``--no-loadscope-reorder`` xdist hands files out in this order, so the longest
    start with the run and the short ones fill the workers around them, instead of two big
    labs running on alone at the end (xdist's own order is by the number of tests in a file)."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            not any(part in item.nodeid for part in LAB_TESTS),
        )
    )


class ManualClock:
    """A monotonic clock the test moves by hand (``clock.now += 45``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand, for code that takes a ``clock`` or ``now`` callable."""
    return ManualClock()


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
