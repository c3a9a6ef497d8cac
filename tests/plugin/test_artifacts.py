"""Artifact directories: every lab of every session writes its transcripts to a new one."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pytest_starlingx.plugin.factory import claim_dir

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def _claim(parent: Path) -> Path:
    return claim_dir(parent, "simplex", "-gw0", start=1)


def test_sessions_sharing_an_artifacts_dir_get_directories_of_their_own(tmp_path):
    with ProcessPoolExecutor(max_workers=6) as pool:
        claimed = list(pool.map(_claim, [tmp_path] * 12))
    assert sorted(p.name for p in claimed) == sorted(f"simplex-{n}-gw0" for n in range(1, 13))
    assert all(p.is_dir() and not any(p.iterdir()) for p in claimed)


def test_the_first_free_number_from_the_session_count(tmp_path):
    (tmp_path / "duplex-2").mkdir()
    assert claim_dir(tmp_path, "duplex", "", start=2) == tmp_path / "duplex-3"
    assert claim_dir(tmp_path / "new", "duplex", "", start=1) == tmp_path / "new" / "duplex-1"
