"""Golden labs on real libvirt with the simulator: restore, state kept, partial rebuilt, resume.

One simplex golden lab (built once for the module, with per-stage snapshots) serves every test;
the module removes it at the end. A few minutes in all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.backends.base import Backend
from pytest_starlingx.checkpoints import open_lab_at
from pytest_starlingx.golden import (
    GOLDEN_SNAPSHOT,
    GoldenRecord,
    list_golden,
    obtain,
    release,
    remove_golden,
)
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.labstate import LabState
from pytest_starlingx.model import LabSpec

LABEL = "golden-test=yes"


@pytest.fixture(scope="module")
def spec() -> LabSpec:
    """A simplex lab whose own stage assigns a label before the golden snapshot."""
    stage = {"name": "label", "after": "available",
             "system": [f"host-label-assign controller-0 {LABEL}"]}  # fmt: skip
    return lab_from_mapping({"topology": "simplex", "name": "goldt", "stages": [stage]},
                            source="test")  # fmt: skip


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    backend = make_backend("libvirt")
    yield backend
    backend.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def golden(spec, backend, tmp_path_factory) -> Iterator[GoldenRecord]:
    """The module's golden lab, built (or found) once and released; removed at the end."""
    got = obtain(spec, backend, tmp_path_factory.mktemp("build"), stage_snapshots=True)
    assert got is not None
    release(got.lab)
    yield got.record
    for record in list_golden():
        if record.name == spec.name:
            remove_golden(record, backend)


def test_restore_gives_an_available_lab_with_its_state(spec, backend, golden, tmp_path):
    got = obtain(spec, backend, tmp_path)
    assert got is not None
    try:
        assert got.how == "restored"
        assert got.lab.lab_id == golden.lab_id
        assert {h.availability for h in got.lab.host_list()} == {"available"}
        assert "golden-test" in got.lab.system("host-label-list controller-0 --nowrap")
        guest = int(got.lab.node("controller-0").run("date -u +%s", check=True).output)
        assert abs(guest - time.time()) < 30, "the guest clock was not set after the restore"
    finally:
        release(got.lab)


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
        release(lab)


def test_a_partial_golden_snapshot_is_detected_and_rebuilt(spec, backend, golden, tmp_path):
    backend.open_lab(golden.lab_id).delete_snapshot(GOLDEN_SNAPSHOT)
    got = obtain(spec, backend, Path(tmp_path))
    assert got is not None
    try:
        assert got.how == "built"
        assert got.lab.lab_id != golden.lab_id
        assert golden.lab_id not in backend.lab_ids()
        assert "golden-test" in got.lab.system("host-label-list controller-0 --nowrap")
    finally:
        release(got.lab)
