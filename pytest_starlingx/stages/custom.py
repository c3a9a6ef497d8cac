"""Stages users add without editing the plugin: from a conftest or from the lab YAML.

A custom stage runs on a node once the stage it comes ``after`` is done, and can hold back a
stage ``before`` it. Points are the stage keys the lab's pipeline has (``controller-0:bootstrap``;
:func:`pytest_starlingx.model.stage_plan`), keys of custom stages placed earlier, or these names
(:data:`pytest_starlingx.model.NAMED_POINTS`):

* ``bootstrapped``: after controller-0's bootstrap;
* ``controller-0-configured``: controller-0 configured, not unlocked yet;
* ``controller-0-unlocked``: controller-0 available;
* ``available``: every node available (the end of the bring-up; a point to go after only).

From a conftest::

    from pytest_starlingx import stx_stage

    @stx_stage(after="controller-0-configured", before="controller-0-unlocked")
    def openstack_labels(lab):
        lab.system("host-label-assign controller-0 openstack-control-plane=enabled")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.model import (
    ACTIVE_CONTROLLER,
    AVAILABLE_POINT,
    NAMED_POINTS,
    LabSpec,
    StageName,
    StageSpec,
    point_problem,
    stage_plan,
)
from pytest_starlingx.stages.base import Bringup, Stage, StageAction


@dataclass(frozen=True)
class CustomStage:
    """A user's stage: what it does, on which node, and where it goes in the pipeline."""

    name: str
    action: StageAction
    after: str = AVAILABLE_POINT
    before: str | None = None
    node: str = ACTIVE_CONTROLLER


_REGISTERED: list[CustomStage] = []


def stx_stage(
    after: str = AVAILABLE_POINT, before: str | None = None, node: str = ACTIVE_CONTROLLER,
    name: str | None = None,
) -> Callable[[StageAction], StageAction]:  # fmt: skip
    """Decorator: add the function as a stage of every lab's bring-up in this session."""

    def register(action: StageAction) -> StageAction:
        _REGISTERED.append(CustomStage(name or action.__name__, action, after, before, node))
        return action

    return register


def registered() -> list[CustomStage]:
    """The stages added with :func:`stx_stage` so far."""
    return list(_REGISTERED)


def commands_action(
    node: str, system: Iterable[str] = (), shell: Iterable[str] = ()
) -> StageAction:
    """A stage action: ``system`` CLI commands (active controller), then shell commands on
    ``node``."""
    system, shell = tuple(system), tuple(shell)

    def action(b: Bringup) -> None:
        for args in system:
            b.system(args)
        for command in shell:
            b.shell(node, command)

    return action


def check(spec: LabSpec, custom: Iterable[CustomStage]) -> None:
    """:class:`LabConfigError` listing every custom stage that ``spec``'s lab has no place for:
    a node it lacks, a point its pipeline lacks (the model's :func:`point_problem`), a name
    that clashes with a pipeline stage. A stage may go after or before an earlier custom one.
    """
    nodes = [n.name for n in spec.nodes]
    keys = {f"{node}:{stage}" for node, stage in stage_plan(spec.topology, nodes)}
    placed: list[str] = []
    problems = []
    for extra in custom:
        where = f"custom stage {extra.name!r}"
        if extra.node not in nodes:
            problems.append(
                f"{where}: no node {extra.node!r} in a {spec.topology.value} lab "
                f"(it has {', '.join(nodes)})"
            )
        for point, before in ((extra.after, False), (extra.before, True)):
            if point is not None:
                problem = point_problem(point, spec.topology, nodes, before, placed)
                if problem:
                    problems.append(f"{where}: {'before' if before else 'after'}: {problem}")
        key = f"{extra.node}:{extra.name}"
        if key in keys:
            problems.append(f"custom stage {key} clashes with a stage of the pipeline")
        keys.add(key)
        placed.append(key)
    if problems:
        raise LabConfigError([f"lab {spec.name!r}: {p}" for p in problems])


def insert(spec: LabSpec, stages: list[Stage], custom: Iterable[CustomStage]) -> list[Stage]:
    """``stages`` (``spec``'s pipeline) with the custom ones placed at their points;
    :func:`check` first, so a stage the lab has no place for is a :class:`LabConfigError`."""
    custom = list(custom)
    check(spec, custom)
    stages = list(stages)
    unlock_keys = tuple(s.key for s in stages if s.name == StageName.UNLOCK)
    for extra in custom:
        after = unlock_keys if extra.after == AVAILABLE_POINT else (_key(extra.after),)
        stage = Stage(extra.name, extra.node, extra.action, after)
        if extra.before is not None:
            target = _key(extra.before)
            stages = [
                Stage(s.name, s.node, s.action, (*s.after, stage.key)) if s.key == target else s
                for s in stages
            ]
        stages.append(stage)
    return stages


def _key(point: str) -> str:
    return NAMED_POINTS.get(point, point)


def from_lab_file(specs: Iterable[StageSpec]) -> list[CustomStage]:
    """The custom stages a lab file describes."""
    return [
        CustomStage(s.name, commands_action(s.node, s.system, s.shell), s.after, s.before, s.node)
        for s in specs
    ]
