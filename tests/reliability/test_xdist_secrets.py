"""One real run checks two guarantees: xdist shares one lab, and passwords leak nowhere.

``pytest -n 2`` with two tests on ``stx_simplex``, known passwords in STX_SYSADMIN_PASSWORD and
STX_ADMIN_PASSWORD. While it runs, every process's argv (``/proc/*/cmdline``) and every file
of the lab's state (serial logs, ledger) are sampled; afterwards the pytest output, the JUnit
report, the DEBUG log of both workers and every artifact are searched. Not searched: the 0600
``lab.json`` (it holds *generated* passwords so that a resumed lab can log in) and the guest's
disk images (what the guest itself stores, e.g. StarlingX's bootstrap overrides; removed with the
lab).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from conftest import objects_of

from pytest_starlingx.model import generate_password

SUITE = """
import os
from pathlib import Path


def record(lab):
    Path(os.environ["RECORD_DIR"], os.environ["PYTEST_XDIST_WORKER"]).write_text(lab.lab_id)


def test_one(stx_simplex):
    record(stx_simplex)
    assert stx_simplex.node("controller-0").run("hostname").output.strip() == "controller-0"


def test_two(stx_simplex):
    record(stx_simplex)
    assert [h.hostname for h in stx_simplex.host_list()] == ["controller-0"]
"""


class Sampler(threading.Thread):
    """Looks for the secrets in every process's argv and the lab's state files, and notes the
    lab ids that appear in the state dir."""

    def __init__(self, secrets: list[str], state: Path) -> None:
        super().__init__(daemon=True)
        self.secrets = [s.encode() for s in secrets]
        self.state = state
        self.leaks: set[str] = set()
        self.lab_ids: set[str] = set()
        self.argv_seen = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.3):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes()
                except OSError:
                    continue
                self.argv_seen += 1
                if any(s in argv for s in self.secrets):
                    self.leaks.add(f"argv of pid {cmdline.parent.name}: {argv[:80]!r}")
            for path in (self.state / "labs").glob("*/**/*"):
                self.lab_ids.add(path.relative_to(self.state / "labs").parts[0])
                if "disks" in path.parts or path.name == "lab.json" or path.is_socket():
                    continue
                if path.is_file():
                    try:
                        data = path.read_bytes()
                    except OSError:
                        continue
                    if any(s in data for s in self.secrets):
                        self.leaks.add(str(path))


def test_xdist_shares_one_lab_and_no_password_leaks(state_dir, tmp_path):
    secrets = [generate_password(), generate_password()]
    (tmp_path / "test_shared.py").write_text(SUITE)
    records = tmp_path / "records"
    records.mkdir()
    env = {**os.environ, "STX_STATE_DIR": str(state_dir), "RECORD_DIR": str(records),
           "STX_SYSADMIN_PASSWORD": secrets[0], "STX_ADMIN_PASSWORD": secrets[1]}  # fmt: skip
    sampler = Sampler(secrets, state_dir)
    sampler.start()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-v", "-rA",
             f"--stx-artifacts={tmp_path / 'artifacts'}", f"--junitxml={tmp_path / 'report.xml'}",
             f"--log-file={tmp_path / 'debug.log'}", "--log-file-level=DEBUG",
             "--log-file-mode=a", "test_shared.py"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        sampler.stop.set()
        sampler.join()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "2 passed" in output

    # one lab, built once, used by both workers, torn down once
    used = {p.name: p.read_text() for p in records.iterdir()}
    assert sorted(used) == ["gw0", "gw1"], used
    assert len(set(used.values())) == 1, used
    assert sampler.lab_ids == set(used.values()), sampler.lab_ids
    log = (tmp_path / "debug.log").read_text()
    (lab_id,) = set(used.values())
    assert log.count(f"destroyed lab {lab_id}") == 1
    assert objects_of(state_dir) == set()

    # no password anywhere
    assert sampler.argv_seen > 1000
    assert not sampler.leaks, sampler.leaks
    files = [tmp_path / "report.xml", tmp_path / "debug.log",
             *(p for p in (tmp_path / "artifacts").rglob("*") if p.is_file())]  # fmt: skip
    assert any(p.name.endswith(".console.log") for p in files)
    for secret in secrets:
        assert secret not in output
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
