"""Golden keys, partial golden records, the parallel cap, the critical path, checkpoints."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_starlingx.host.capacity import parallel_cap
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.golden import GoldenBroken, GoldenRecord, check_golden, golden_key
from pytest_starlingx.stages.base import Bringup, Stage, run_stages
from pytest_starlingx.stages.pipelines import PIPELINE_VERSION
from pytest_starlingx.timings import StepRecorder

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

SHA = "a" * 64


def spec(**extra):
    return lab_from_mapping({"topology": "simplex", **extra}, source="test")


def test_the_same_description_and_image_give_the_same_key():
    assert golden_key(spec(), SHA) == golden_key(spec(), SHA)


@pytest.mark.parametrize(
    "other",
    [
        {"name": "other"},
        {"node_defaults": {"memory_mib": 768}},
        {"stages": [{"name": "label", "system": ["host-label-assign controller-0 a=b"]}]},
    ],
)
def test_a_changed_description_misses_the_key(other):
    assert golden_key(spec(**other), SHA) != golden_key(spec(), SHA)


def test_a_changed_image_or_pipeline_misses_the_key():
    assert golden_key(spec(), "b" * 64) != golden_key(spec(), SHA)
    assert golden_key(spec(), SHA, PIPELINE_VERSION + 1) != golden_key(spec(), SHA)


def test_timeouts_do_not_change_the_key():
    slower = replace(spec(), timeout_factor=3.0)
    assert golden_key(slower, SHA) == golden_key(spec(), SHA)


def test_a_partial_golden_record_is_never_used():
    record = GoldenRecord("k", "abc123", "simplex", "simplex", "libvirt", SHA, 1,
                          ["controller-0"], [], complete=False)  # fmt: skip
    with pytest.raises(GoldenBroken, match="partial"):
        check_golden(record, spec(), backend=None)  # type: ignore[arg-type]


def test_parallel_cap_follows_cpus_and_memory():
    standard = lab_from_mapping({"topology": "standard", "workers": 2}, source="test")
    assert parallel_cap(spec()) == 1
    assert parallel_cap(standard, cpus=2, mem_available=64 * 1024) == 4  # all 3 secondaries
    assert parallel_cap(standard, cpus=1, mem_available=64 * 1024) == 3  # 2 per core
    assert parallel_cap(standard, cpus=8, mem_available=1024 + 600) == 2  # room for one


def test_the_critical_path_is_marked_in_the_table():
    done: set[str] = set()
    bringup = Bringup(spec(), {}, {}, {}, StepRecorder("t"), done=done)
    stages = [
        Stage("a", "n", lambda b: None),
        Stage("short", "n", lambda b: None, ("n:a",)),
        Stage("long", "n", lambda b: __import__("time").sleep(0.2), ("n:a",)),
        Stage("end", "n", lambda b: None, ("n:short", "n:long")),
    ]
    run_stages(stages, bringup)
    path = [r.stage for r in bringup.recorder.critical_path()]
    assert path == ["a", "long", "end"]
    table = bringup.recorder.table()
    short_row = next(line for line in table.splitlines() if " short " in line)
    assert not short_row.rstrip().endswith("*")
    assert next(line for line in table.splitlines() if " long " in line).rstrip().endswith("*")


def test_checkpoints_come_only_while_no_other_stage_runs():
    seen: list[tuple[str, frozenset[str]]] = []
    done: set[str] = set()
    bringup = Bringup(spec(), {}, {}, {}, StepRecorder("t"), done=done)
    stages = [
        Stage("a", "n", lambda b: None),
        Stage("b", "n", lambda b: None, ("n:a",)),
        Stage("c", "n", lambda b: None, ("n:b",)),
    ]
    run_stages(stages, bringup, checkpoint=lambda key: seen.append((key, frozenset(done))))
    assert [key for key, _ in seen] == ["n:a", "n:b", "n:c"]
    assert seen[1][1] == {"n:a", "n:b"}
