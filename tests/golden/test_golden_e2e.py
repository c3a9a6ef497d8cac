"""Golden labs on real libvirt with the simulator: restore, state kept, partial rebuilt, resume.

One simplex golden lab (built once for the module, with per-stage snapshots) serves every test;
the module removes it at the end. A few minutes in all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.backends.base import Backend, PowerState
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.acquire import How, Lifecycle, Policy
from pytest_starlingx.lifecycle.checkpoints import open_lab_at
from pytest_starlingx.lifecycle.golden import (
    GOLDEN_SNAPSHOT,
    GoldenRecord,
    list_golden,
    release,
    remove_golden,
)
from pytest_starlingx.lifecycle.leases import LeaseKeeper, live_leases
from pytest_starlingx.lifecycle.state import LabState, lab_dir
from pytest_starlingx.model import LabSpec

LABEL = "golden-test=yes"
STX_LAB = str(Path(sys.executable).parent / "stx-lab")


#: A simplex lab whose own stage assigns a label before the golden snapshot; its OAM network
#: has a NAT uplink (a real ISO's default), which a golden lab must keep across its restores.
LAB = {"topology": "simplex", "name": "goldt", "oam": {"uplink": "nat"}, "stages": [
    {"name": "label", "after": "available", "system": [f"host-label-assign controller-0 {LABEL}"]},
]}  # fmt: skip

#: A process that takes the golden lab and holds it until killed.
HOLDER = """
import json, sys, time
from pathlib import Path
from pytest_starlingx.backends import make_backend
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.acquire import Lifecycle, Policy

got = Lifecycle(Policy(golden=True)).bring_up(
    lab_from_mapping(json.loads(sys.argv[1]), source="test"), make_backend("libvirt"),
    Path(sys.argv[2]))
print(got.how, flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module", autouse=True)
def own_state_dir(new_state_dir) -> Iterator[Path]:
    """A state dir of this module only: no other session's start-up gc releases its golden lab
    before the gc test's own ``stx-lab gc`` does."""
    with pytest.MonkeyPatch.context() as patch:
        path = new_state_dir()
        patch.setenv("STX_STATE_DIR", str(path))
        yield path
    left = sorted(p.name for p in (path / "labs").glob("*"))
    assert not left, f"labs left behind in {path}: {left}"
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def spec() -> LabSpec:
    return lab_from_mapping(LAB, source="test")


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    backend = make_backend("libvirt")
    yield backend
    backend.close()  # type: ignore[attr-defined]


@pytest.fixture
def lifecycle() -> Iterator[Lifecycle]:
    lifecycle = Lifecycle(Policy(golden=True))
    yield lifecycle
    lifecycle.close()


@pytest.fixture(scope="module")
def golden(spec, backend, tmp_path_factory) -> Iterator[GoldenRecord]:
    """The module's golden lab, built once and released; removed at the end."""
    lifecycle = Lifecycle(Policy(golden=True, stage_snapshots=True))
    got = lifecycle.bring_up(spec, backend, tmp_path_factory.mktemp("build"))
    assert got.how is How.MADE_GOLDEN and got.golden_key is not None
    lifecycle.release(got, backend)
    lifecycle.close()
    assert not live_leases(lab_dir(got.lab.lab_id))
    record = GoldenRecord.load(got.golden_key)
    assert record is not None
    yield record
    for record in list_golden():
        if record.name == spec.name:
            remove_golden(record, backend)


def test_restore_gives_an_available_lab_with_its_state(spec, backend, golden, lifecycle, tmp_path):
    got = lifecycle.bring_up(spec, backend, tmp_path)
    try:
        assert got.how is How.RESTORED
        assert got.lab.lab_id == golden.lab_id
        assert {h.availability for h in got.lab.host_list()} == {"available"}
        assert "golden-test" in got.lab.system("host-label-list controller-0 --nowrap")
        guest = int(got.lab.node("controller-0").run("date -u +%s", check=True).stdout)
        assert abs(guest - time.time()) < 30, "the guest clock was not set after the restore"
        _check_uplink(got.lab)
        assert [lease.purpose for lease in live_leases(lab_dir(golden.lab_id))] == [
            "pytest session"
        ]  # in use: held by its user's lease
    finally:
        lifecycle.release(got, backend)
    assert LabState.load(golden.lab_id).status == "golden"
    assert not live_leases(lab_dir(golden.lab_id))


def _check_uplink(lab) -> None:
    """The NAT uplink by its plumbing (the gateway namespace routes out through its uplink
    and masquerades, in a table of ours) and by the guest reaching its gateway address: a
    TCP connection to a closed port there is refused by the namespace, not lost. Nothing is
    sent through the uplink."""
    namespace = f"stx-{lab.name}-{lab.lab_id}-gw-oam"

    def in_namespace(*argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", namespace, *argv], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    assert " dev up0" in in_namespace("ip", "route", "show", "default")
    assert "masquerade" in in_namespace("nft", "list", "table", "ip", "stx_uplink")
    probe = "timeout 10 bash -c 'echo > /dev/tcp/10.10.10.1/9' 2>&1; echo status=$?"
    out = lab.node("controller-0").run(probe, via="console").stdout
    assert "Connection refused" in out and "status=1" in out, out


def test_resume_from_a_stage_snapshot_skips_finished_stages(spec, backend, golden, tmp_path):
    state = LabState.load(golden.lab_id)
    lab = open_lab_at(spec, backend, state, tmp_path, "controller-0-configured")
    try:
        lab.provision()
        outcome = {r.key: r.outcome for r in lab.bringup.recorder.records}
        for stage in ("install", "first-login", "bootstrap", "configure"):
            assert outcome[f"controller-0:{stage}"] == "skipped"
        assert outcome["controller-0:unlock"] == "done"
        assert outcome["controller-0:label"] == "done"
        assert {h.availability for h in lab.host_list()} == {"available"}
    finally:
        release(lab, LeaseKeeper())


def test_gc_powers_off_a_golden_lab_whose_user_was_killed(backend, golden, tmp_path):
    # Its own process holds the lab: not the xdist run this test may be part of.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(LAB), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "restored"
    finally:
        holder.kill()  # SIGKILL: no release
        holder.wait()
    handle = backend.open_lab(golden.lab_id)
    assert handle.state("controller-0") is PowerState.RUNNING
    gc = subprocess.run([STX_LAB, "gc"], capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert (f"released golden lab {golden.key} (lab id {golden.lab_id}): its user "
            f"(pid {holder.pid}) is gone; powered off") in gc.stdout  # fmt: skip
    assert handle.state("controller-0") is PowerState.OFF
    assert LabState.load(golden.lab_id).status == "golden"
    assert not list((lab_dir(golden.lab_id) / "leases").glob("*.json"))
    assert golden.lab_id in backend.lab_ids()  # kept: powered off, not removed


def test_a_partial_golden_snapshot_is_detected_and_rebuilt(
    spec, backend, golden, lifecycle, tmp_path
):
    backend.open_lab(golden.lab_id).delete_snapshot(GOLDEN_SNAPSHOT)
    got = lifecycle.bring_up(spec, backend, Path(tmp_path))
    try:
        assert got.how is How.MADE_GOLDEN
        assert got.lab.lab_id != golden.lab_id
        assert golden.lab_id not in backend.lab_ids()
        assert "golden-test" in got.lab.system("host-label-list controller-0 --nowrap")
    finally:
        lifecycle.release(got, backend)
