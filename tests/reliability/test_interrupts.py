"""Interrupted bring-ups on real libvirt: SIGTERM tears down, kill -9 is collected by gc, and a
lab its xdist worker left goes at the end of the run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest
from conftest import objects_of, on_host, stx_lab

from pytest_starlingx.waits import Deadline, poll

EXAMPLES = Path(__file__).parent.parent.parent / "conftest_examples"


def _start_session(
    state: Path, out: Path, *options: str, own_host: bool = False
) -> subprocess.Popen[bytes]:
    """``pytest conftest_examples/simplex`` in its own process group, output to ``out``
    (under ``host_of(state)`` with ``own_host``)."""
    artifacts = f"--stx-artifacts={out.parent / 'artifacts'}"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", artifacts,
               *options, str(EXAMPLES / "simplex")]  # fmt: skip
    with out.open("wb") as sink:
        return subprocess.Popen(
            on_host(state, command) if own_host else command,
            env={**os.environ, "STX_STATE_DIR": str(state)}, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _wait_until_running(state: Path, session: subprocess.Popen[bytes], out: Path) -> None:
    """Until a domain of ``state``'s lab runs (the bring-up is under way)."""
    conn = libvirt.open("qemu:///system")
    marker = f'state-dir="{state}"'

    def running() -> bool:
        assert session.poll() is None, out.read_text()
        for dom in conn.listAllDomains():
            with contextlib.suppress(libvirt.libvirtError):  # other sessions' come and go
                if marker in dom.XMLDesc(0) and dom.isActive():
                    return True
        return False

    try:
        poll(running, Deadline(300, "a lab domain running"), "a lab domain running",
             poll_every=0.5)  # fmt: skip
    finally:
        conn.close()


@pytest.mark.parametrize("options", [(), ("--stx-golden",)], ids=["plain", "golden-build"])
def test_kill_9_mid_bringup_then_gc_leaves_nothing(state_dir, tmp_path, options):
    out = tmp_path / "session.log"
    session = _start_session(state_dir, out, *options, own_host=True)  # its gc alone collects
    _wait_until_running(state_dir, session, out)
    os.killpg(session.pid, signal.SIGKILL)
    session.wait(timeout=60)
    before = objects_of(state_dir)
    print("after kill -9:", *sorted(before), sep="\n  ")
    kinds = {o.split()[0] for o in before}
    assert {"domain", "network", "pool", "volume", "file"} <= kinds, before
    assert any(o.endswith(".sock") for o in before), before
    result = stx_lab("gc", state=state_dir, own_host=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed lab" in result.stdout
    after = objects_of(state_dir)
    print("after stx-lab gc:", *sorted(after), sep="\n  ")
    assert after == set()


def test_sigterm_mid_bringup_tears_the_lab_down(state_dir, tmp_path):
    out = tmp_path / "session.log"
    session = _start_session(state_dir, out)
    _wait_until_running(state_dir, session, out)
    assert objects_of(state_dir)
    session.send_signal(signal.SIGTERM)
    status = session.wait(timeout=300)
    text = out.read_text()
    assert status != 0, text
    assert "SIGTERM: tearing the StarlingX labs down" in text
    assert objects_of(state_dir) == set(), text


def test_a_lab_its_xdist_worker_left_is_removed_at_the_end_of_the_run(state_dir, tmp_path):
    """Workers that die mid bring-up (kill -9 here; on a Ctrl-C, execnet ends a worker whose
    teardown lasts more than 15 s) leave their lab held by the run: the xdist controller
    removes it once its workers are gone, not the next session's gc."""
    out = tmp_path / "session.log"
    session = _start_session(state_dir, out, "-n", "2")
    _wait_until_running(state_dir, session, out)
    workers = Path(f"/proc/{session.pid}/task/{session.pid}/children").read_text().split()
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    status = session.wait(timeout=300)
    text = out.read_text()
    assert status != 0, text
    assert "left by the xdist workers: removed lab 'simplex'" in text
    assert objects_of(state_dir) == set(), text
