"""Shared fixtures of the project's own tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def fake_iso(tmp_path):
    """A file that carries the ISO 9660 signature, standing in for a StarlingX ISO."""
    iso = tmp_path / "starlingx.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 2042)
    return iso
