"""--stx-keep leaves a lab up and says how to reach it; --stx-reuse takes it instead of building."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import objects_of, stx_lab

SUITE = """
import os
from pathlib import Path


def test_uses_the_lab(stx_simplex):
    Path(os.environ["RECORD_FILE"]).write_text(stx_simplex.lab_id)
    assert stx_simplex.node("controller-0").run("hostname").output.strip() == "controller-0"
"""


def _session(tmp_path: Path, state: Path, *options: str) -> tuple[str, str]:
    record = tmp_path / "lab-id"
    record.unlink(missing_ok=True)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
         f"--stx-artifacts={tmp_path / 'artifacts'}", *options, "test_kept.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "STX_STATE_DIR": str(state), "RECORD_FILE": str(record)},
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return record.read_text(), output


def test_keep_then_reuse(state_dir, tmp_path):
    (tmp_path / "test_kept.py").write_text(SUITE)
    kept_id, output = _session(tmp_path, state_dir, "--stx-keep")
    assert f"remove it: stx-lab down {kept_id}" in output
    assert "console of controller-0: socat" in output
    assert any(o.startswith("domain ") for o in objects_of(state_dir))
    assert stx_lab("gc", state=state_dir).returncode == 0  # a kept lab is not garbage
    assert any(o.startswith("domain ") for o in objects_of(state_dir))

    reused_id, output = _session(tmp_path, state_dir, "--stx-reuse")
    assert reused_id == kept_id
    assert not list((state_dir / "labs" / kept_id).glob("leases/*.json")), "lease not released"

    down = stx_lab("down", kept_id, state=state_dir)
    assert down.returncode == 0, down.stderr
    assert objects_of(state_dir) == set()
