"""Stages users add without editing the plugin: from a conftest or from the lab YAML.

A custom stage runs on a node once the stage it comes ``after`` is done, and can hold back a
stage ``before`` it. Points are stage keys (``controller-0:bootstrap``) or these names:

* ``bootstrapped``: after controller-0's bootstrap;
* ``controller-0-configured``: controller-0 configured, not unlocked yet;
* ``controller-0-unlocked``: controller-0 available;
* ``available``: every node available (the end of the bring-up).

From a conftest::

    from pytest_starlingx import stx_stage

    @stx_stage(after="controller-0-configured", before="controller-0-unlocked")
    def openstack_labels(lab):
        lab.system("host-label-assign controller-0 openstack-control-plane=enabled")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pytest_starlingx.model import StageSpec
from pytest_starlingx.stages.base import Bringup, Stage, StageAction
from pytest_starlingx.stages.shells import ACTIVE_CONTROLLER

POINTS = {
    "bootstrapped": f"{ACTIVE_CONTROLLER}:bootstrap",
    "controller-0-configured": f"{ACTIVE_CONTROLLER}:configure",
    "controller-0-unlocked": f"{ACTIVE_CONTROLLER}:unlock",
}
AVAILABLE_POINT = "available"


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


def insert(stages: list[Stage], custom: Iterable[CustomStage]) -> list[Stage]:
    """``stages`` with the custom ones placed at their points; unknown points are errors."""
    stages = list(stages)
    keys = {s.key for s in stages}
    unlock_keys = tuple(s.key for s in stages if s.name == "unlock")
    for extra in custom:
        after = unlock_keys if extra.after == AVAILABLE_POINT else (_point(extra.after, keys),)
        stage = Stage(extra.name, extra.node, extra.action, after)
        if stage.key in keys:
            raise ValueError(f"custom stage {stage.key} clashes with a stage of the pipeline")
        if extra.before is not None:
            target = _point(extra.before, keys)
            stages = [
                Stage(s.name, s.node, s.action, (*s.after, stage.key)) if s.key == target else s
                for s in stages
            ]
        stages.append(stage)
        keys.add(stage.key)
    return stages


def _point(point: str, keys: set[str]) -> str:
    key = POINTS.get(point, point)
    if key not in keys:
        known = ", ".join([*POINTS, AVAILABLE_POINT, *sorted(keys)])
        raise ValueError(f"no pipeline point {point!r}; use one of {known}")
    return key


def from_lab_file(specs: Iterable[StageSpec]) -> list[CustomStage]:
    """The custom stages a lab file describes."""
    return [
        CustomStage(s.name, commands_action(s.node, s.system, s.shell), s.after, s.before, s.node)
        for s in specs
    ]
