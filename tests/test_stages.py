"""The stage runner and pipelines: order, parallelism, resume, failures, custom stages."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pytest_starlingx.console import CommandFailed, Result
from pytest_starlingx.errors import LabConfigError, StageError
from pytest_starlingx.lab import plan_stages
from pytest_starlingx.labfile import parse_lab
from pytest_starlingx.model import resolve_lab, stage_plan
from pytest_starlingx.platform_api import ApiUnavailable
from pytest_starlingx.stages import base, custom, shells
from pytest_starlingx.stages.base import Bringup, Stage, run_stages
from pytest_starlingx.stages.custom import CustomStage, from_lab_file, insert
from pytest_starlingx.stages.pipelines import pipeline
from pytest_starlingx.timings import StepRecorder
from pytest_starlingx.waits import Deadline

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def bringup(done=None) -> Bringup:
    spec = resolve_lab("standard")
    return Bringup(spec, {}, {}, {}, StepRecorder(spec.name), done=set(done or ()))


def recording(log: list[str], name: str, gate: threading.Barrier | None = None):
    def action(b: Bringup) -> None:
        if gate is not None:
            gate.wait(timeout=5)
        log.append(name)

    return action


def test_stages_run_after_their_prerequisites():
    log: list[str] = []
    stages = [
        Stage("c", "n", recording(log, "c"), ("n:b",)),
        Stage("a", "n", recording(log, "a")),
        Stage("b", "n", recording(log, "b"), ("n:a",)),
    ]
    b = bringup()
    run_stages(stages, b)
    assert log == ["a", "b", "c"]
    assert set(b.done) == {"n:a", "n:b", "n:c"}
    assert [r.outcome for r in b.recorder.records] == ["done"] * 3


def test_independent_stages_run_at_the_same_time():
    log: list[str] = []
    gate = threading.Barrier(3)  # each waits until all three run: fails if run one by one
    stages = [Stage("install", f"w{i}", recording(log, f"w{i}", gate)) for i in range(3)]
    run_stages(stages, bringup(), max_parallel=3)
    assert sorted(log) == ["w0", "w1", "w2"]


def test_a_resumed_run_skips_finished_stages():
    log: list[str] = []
    stages = [
        Stage("a", "n", recording(log, "a")),
        Stage("b", "n", recording(log, "b"), ("n:a",)),
    ]
    b = bringup(done={"n:a"})
    run_stages(stages, b)
    assert log == ["b"]
    assert [(r.stage, r.outcome) for r in b.recorder.records] == [("a", "skipped"), ("b", "done")]
    assert "skipped" in b.recorder.table()


def test_a_failure_names_lab_node_and_stage_and_stops_the_rest():
    log: list[str] = []

    def broken(b: Bringup) -> None:
        raise RuntimeError("disk on fire")

    stages = [
        Stage("bootstrap", "controller-0", broken),
        Stage("unlock", "controller-0", recording(log, "unlock"), ("controller-0:bootstrap",)),
    ]
    b = bringup()
    with pytest.raises(StageError) as info:
        run_stages(stages, b)
    assert str(info.value).startswith(
        "lab 'standard' node controller-0: stage 'bootstrap' failed: RuntimeError: disk on fire"
    )
    assert log == []
    assert "controller-0:bootstrap" not in b.done
    assert b.cancelled.is_set()
    assert b.recorder.records[0].outcome == "failed"


def test_unknown_prerequisites_are_refused():
    with pytest.raises(ValueError, match=r"waits for unknown stages \['n:nope'\]"):
        run_stages([Stage("a", "n", recording([], "a"), ("n:nope",))], bringup())


@pytest.mark.parametrize(
    ("topology", "count"), [("simplex", 5), ("duplex", 10), ("standard", 19), ("storage", 26)]
)
def test_every_pipeline_is_complete_and_ends_with_all_unlocked(topology, count):
    spec = resolve_lab(topology)
    stages = pipeline(spec)
    assert len(stages) == count
    keys = {s.key for s in stages}
    assert {f"{n.name}:unlock" for n in spec.nodes} <= keys
    assert all(set(s.after) <= keys for s in stages)


def test_unlock_order_follows_the_guides():
    stages = {s.key: s for s in pipeline(resolve_lab("storage"))}
    assert "controller-1:unlock" in stages["storage-0:unlock"].after
    assert {"storage-0:unlock", "storage-1:unlock"} <= set(stages["worker-0:unlock"].after)
    assert stages["worker-1:power-on"].after == ("controller-0:unlock",)


def test_the_standard_options_controllers_get_osds_once_the_workers_run():
    stages = {s.key: s for s in pipeline(resolve_lab("standard"))}
    assert stages["controller-0:osds"].after == ("worker-0:unlock", "worker-1:unlock")
    assert not any(s.name == "osds" for s in pipeline(resolve_lab("storage")))


def test_host_add_adds_hosts_before_powering_them_on():
    spec = parse_lab("topology: duplex\nadd_hosts: host-add\n")
    stages = {s.key: s for s in pipeline(spec)}
    assert stages["controller-0:add-hosts"].after == ("controller-0:unlock",)
    assert stages["controller-1:power-on"].after == ("controller-0:add-hosts",)


def test_custom_stages_go_where_the_lab_file_says():
    spec = parse_lab(
        "topology: duplex\nstages:\n"
        "  - {name: labels, after: controller-0-configured, before: controller-0-unlocked,\n"
        "     system: [host-label-assign controller-0 openstack-control-plane=enabled]}\n"
        "  - {name: smoke, shell: [uptime]}\n"
    )
    stages = {s.key: s for s in insert(spec, pipeline(spec), from_lab_file(spec.stages))}
    assert stages["controller-0:labels"].after == ("controller-0:configure",)
    assert "controller-0:labels" in stages["controller-0:unlock"].after
    assert set(stages["controller-0:smoke"].after) == {"controller-0:unlock", "controller-1:unlock"}


@pytest.mark.parametrize(
    ("topology", "where"),
    [
        ("simplex", {"after": "worker-0:unlock"}),
        ("simplex", {"after": "controller-1:unlock"}),
        ("duplex", {"after": "controller-1:bootstrap"}),
        ("duplex", {"before": "worker-0:install"}),
        ("standard", {"before": "available"}),
    ],
)
def test_custom_stage_at_a_point_the_lab_lacks_is_a_config_error(topology, where):
    spec = resolve_lab(topology)
    point = where.get("after") or where["before"]
    with pytest.raises(LabConfigError) as info:
        insert(spec, pipeline(spec), [CustomStage("x", recording([], "x"), **where)])
    (problem,) = info.value.problems
    assert f"custom stage 'x': {next(iter(where))}: {point!r} is not a pipeline point" in problem
    assert f"of a {topology} lab" in problem
    assert "use one of bootstrapped, controller-0-configured, controller-0-unlocked" in problem
    assert "controller-0:unlock" in problem


def test_registered_stage_at_a_missing_point_fails_when_the_lab_is_planned(monkeypatch):
    monkeypatch.setattr(custom, "_REGISTERED", [])
    custom.stx_stage(after="controller-1:bootstrap")(lambda b: None)
    with pytest.raises(LabConfigError, match="'controller-1:bootstrap' is not a pipeline point"):
        plan_stages(resolve_lab("duplex"))
    assert plan_stages(resolve_lab("duplex"), registered_stages=False)


def test_custom_stage_on_a_missing_node_or_clashing_is_a_config_error():
    spec = resolve_lab("simplex")
    action = recording([], "x")
    with pytest.raises(LabConfigError) as info:
        insert(spec, pipeline(spec), [CustomStage("x", action, node="worker-0"),
                                      CustomStage("bootstrap", action)])  # fmt: skip
    assert info.value.problems == [
        "lab 'simplex': custom stage 'x': no node 'worker-0' in a simplex lab (it has "
        "controller-0)",
        "lab 'simplex': custom stage controller-0:bootstrap clashes with a stage of the pipeline",
    ]


def test_custom_stage_can_follow_an_earlier_custom_stage():
    spec = resolve_lab("simplex")
    first = CustomStage("first", recording([], "first"))
    second = CustomStage("second", recording([], "second"), after="controller-0:first")
    stages = {s.key: s for s in insert(spec, pipeline(spec), [first, second])}
    assert stages["controller-0:second"].after == ("controller-0:first",)


@pytest.mark.parametrize("topology", ["simplex", "duplex", "standard", "storage"])
def test_the_pipeline_has_exactly_the_stages_of_the_model(topology):
    spec = resolve_lab(topology)
    plan = stage_plan(spec.topology, [n.name for n in spec.nodes])
    assert [s.key for s in pipeline(spec)] == [f"{node}:{stage}" for node, stage in plan]


class Sysinv(Bringup):
    """A bring-up whose `system` answers host-unlock as sysinv does while platform-integ-apps
    applies (host.py, r/stx.10.0): refused ``refusals`` times, then accepted."""

    def __init__(self, refusals: int, message: str) -> None:
        spec = resolve_lab("duplex")
        super().__init__(spec, {}, {}, {}, StepRecorder(spec.name))
        self.refusals, self.message, self.sent = refusals, message, []

    def system(self, args: str, phase: str = "command") -> str:
        self.sent.append(args)
        if len(self.sent) <= self.refusals:
            error = CommandFailed(f"command 'system {args}' exited with status 1", lab="l",
                                  node="controller-0", stage="unlock", tail=[])  # fmt: skip
            error.result = Result(f"system {args}", self.message, 1)
            raise error
        return ""


APPLYING = (
    "Rejected: Can not unlock host controller-1 while an application is being applied, "
    "updated or recovered. Please try again later."
)


def test_an_unlock_refused_while_an_application_applies_is_tried_again(monkeypatch, caplog):
    monkeypatch.setattr(base, "UNLOCK_RETRY_EVERY", 0.01)
    b = Sysinv(refusals=2, message=APPLYING)
    with caplog.at_level("INFO", "pytest_starlingx.stages"):
        b.unlock_host("controller-1", "node_unlock")
    assert b.sent == ["host-unlock controller-1"] * 3
    assert "controller-1: waiting for sysinv to accept controller-1's unlock" in caplog.text


def test_other_unlock_refusals_fail_at_once(monkeypatch):
    monkeypatch.setattr(base, "UNLOCK_RETRY_EVERY", 0.01)
    b = Sysinv(refusals=1, message="Can not unlock node until at least one OSD is configured.")
    with pytest.raises(CommandFailed):
        b.unlock_host("controller-1", "node_unlock")
    assert b.sent == ["host-unlock controller-1"]


class OpenrcConsole:
    """A console whose ``source openrc`` prints each of ``outputs`` in turn (status 1), then
    succeeds: openrc.admin.erb on a booting controller."""

    node = "controller-0"

    def __init__(self, *outputs: str) -> None:
        self.outputs, self.sent = list(outputs), []

    def run_checked(self, command: str, deadline) -> str:
        self.sent.append(command)
        if len(self.sent) <= len(self.outputs):
            error = CommandFailed(f"command {command!r} exited with status 1", lab="l",
                                  node=self.node, stage="unlock", tail=[])  # fmt: skip
            error.result = Result(command, self.outputs[len(self.sent) - 1], 1)
            raise error
        return ""


def test_openrc_is_sourced_again_while_the_platform_filesystem_is_not_mounted(monkeypatch):
    monkeypatch.setattr(shells, "OPENRC_RETRY_EVERY", 0.01)
    console = OpenrcConsole(shells.OPENRC_NOT_READY, shells.OPENRC_NOT_READY)
    bringup().shells._source_openrc(console, Deadline(60, "openrc"))
    assert console.sent == [f"source {shells.OPENRC}"] * 3


def test_openrc_racing_the_mount_is_sourced_once_more_and_a_real_lack_of_rights_fails():
    raced = OpenrcConsole(shells.OPENRC_RACED)
    bringup().shells._source_openrc(raced, Deadline(60, "openrc"))
    assert raced.sent == [f"source {shells.OPENRC}"] * 2
    denied = OpenrcConsole(shells.OPENRC_RACED, shells.OPENRC_RACED)
    with pytest.raises(CommandFailed, match="exited with status 1"):
        bringup().shells._source_openrc(denied, Deadline(60, "openrc"))
    assert denied.sent == [f"source {shells.OPENRC}"] * 2


class Maintenance(Bringup):
    """A bring-up whose host-list shows worker-0 with the given availabilities in turn, and
    host-show the given task while it is failed."""

    def __init__(self, states: list[str], task: str) -> None:
        spec = resolve_lab("standard")
        super().__init__(spec, {}, {}, {}, StepRecorder(spec.name))
        self.states, self.task = states, task

    def hosts(self, fresh_within: float = 0.0) -> list[dict[str, str]]:
        self.availability = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        operational = "enabled" if self.availability == "available" else "disabled"
        return [{"hostname": "worker-0", "administrative": "unlocked",
                 "operational": operational, "availability": self.availability}]  # fmt: skip

    def host_show(self, host: str) -> dict[str, str]:
        return {"hostname": host, "task": self.task, "availability": self.availability}


def poll_at_once(ready, *args, **kwargs) -> None:
    """``waits.poll`` without its pauses."""
    while not ready():
        pass


def test_a_host_maintenance_re_enables_is_waited_for(monkeypatch):
    monkeypatch.setattr(base, "poll", poll_at_once)
    task = "Configuration Failed, re-enabling"
    b = Maintenance(["intest", "failed", "intest", "available"], task)
    b.wait_hosts(["worker-0"], "node_unlock", "worker-0 available", availability="available")
    assert b.states == ["available"]  # it went on polling past the failed state


def test_a_failed_host_in_an_older_listing_is_checked_again_before_failing(monkeypatch):
    """host-list said failed, but host-show says maintenance has the host in test again
    (the listing was shared, or older than the re-enable): the wait goes on."""
    monkeypatch.setattr(base, "poll", poll_at_once)
    b = Maintenance(["failed", "available"], task="None")
    b.host_show = lambda host: {"hostname": host, "task": "None", "availability": "intest"}
    b.wait_hosts(["worker-0"], "node_unlock", "worker-0 available", availability="available")
    assert b.states == ["available"]


def test_a_host_maintenance_gave_up_on_fails_the_wait_with_its_task(monkeypatch):
    monkeypatch.setattr(base, "poll", poll_at_once)
    task = "Configuration failure, threshold reached, Lock/Unlock to retry"
    b = Maintenance(["failed"], task)
    failed = r"worker-0 became unlocked \| disabled \| failed"
    with pytest.raises(StageError, match=rf"{failed} .*\(task: {task}\)"):
        b.wait_hosts(["worker-0"], "node_unlock", "worker-0 available", availability="available")


HOST_LIST = """\
+----+--------------+-------------+----------------+-------------+--------------+
| id | hostname     | personality | administrative | operational | availability |
+----+--------------+-------------+----------------+-------------+--------------+
| 1  | controller-0 | controller  | unlocked       | enabled     | available    |
+----+--------------+-------------+----------------+-------------+--------------+
"""


class SlowSysinv(Bringup):
    """A bring-up whose ``system`` takes a while, as cgtsclient does on a busy controller."""

    def __init__(self) -> None:
        spec = resolve_lab("standard")
        super().__init__(spec, {}, {}, {}, StepRecorder(spec.name))
        self.sent: list[str] = []

    def system(self, args: str, phase: str = "command") -> str:
        self.sent.append(args)
        time.sleep(0.3)
        return HOST_LIST


def test_nodes_waiting_at_once_share_one_host_listing():
    b = SlowSysinv()
    with ThreadPoolExecutor(3) as pool:
        listings = list(pool.map(lambda _: b.hosts(fresh_within=5), range(3)))
    assert b.sent == ["host-list --nowrap"]
    assert all(rows[0]["availability"] == "available" for rows in listings)
    b.hosts()  # a caller that wants the list as it is now gets a fresh one
    assert b.sent == ["host-list --nowrap"] * 2


class Api:
    """sysinv's REST API as the bring-up sees it: rows, or no answer while ``rows`` is None."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] | None = None

    def hosts(self) -> list[dict[str, str]]:
        if self.rows is None:
            raise ApiUnavailable("GET /v1/ihosts/: [Errno 111] Connection refused")
        return self.rows


def test_host_lists_come_from_the_api_and_from_the_console_while_it_does_not_answer():
    b = SlowSysinv()
    b.api = api = Api()
    api.rows = [{"id": "1", "hostname": "controller-0", "availability": "degraded"}]
    assert b.hosts() == api.rows
    assert b.sent == []  # no CLI on the controller
    api.rows = None  # e.g. the controller reboots
    assert [row["availability"] for row in b.hosts()] == ["available"]
    assert b.sent == ["host-list --nowrap"]
    api.rows = [{"id": "1", "hostname": "controller-0", "availability": "available"}]
    b.hosts()
    assert b.sent == ["host-list --nowrap"] * 2  # the API is left alone for a while


def test_a_pipeline_stage_is_named_in_plain_words():
    """Messages quote stage names: ``stage 'install' failed``, never the enum's repr."""
    spec = resolve_lab("simplex")
    names = [stage.name for stage in pipeline(spec)]
    assert names[0] == "install" and all(type(name) is str for name in names)
    assert repr(names[0]) == "'install'"
