"""The one atomic writer: whole files or none, the mode set before any byte is written."""

from __future__ import annotations

import json
import stat

import pytest

from pytest_starlingx.files import write_atomic, write_json_atomic

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def test_write_json_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "lab.json"
    path.write_text("old")
    write_json_atomic(path, {"status": "ready"}, mode=0o600)
    assert json.loads(path.read_text()) == {"status": "ready"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["lab.json"]


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "digest"
    write_atomic(path, "abc")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "abc"
    assert [p.name for p in tmp_path.iterdir()] == ["digest"]
