"""The stage pipeline of each deployment option: the model's stage plan, with actions and
prerequisites from the stage modules."""

from __future__ import annotations

from pytest_starlingx.model import (
    ACTIVE_CONTROLLER,
    AddHosts,
    LabSpec,
    NodeSpec,
    Personality,
    StageName,
    stage_plan,
)
from pytest_starlingx.stages import controller0, secondaries
from pytest_starlingx.stages.base import Stage

C0 = ACTIVE_CONTROLLER

#: Bumped whenever a change to the stages changes what a finished lab looks like; part of the
#: golden-lab key, so golden labs built by an older pipeline are never restored.
PIPELINE_VERSION = 3


def pipeline(spec: LabSpec) -> list[Stage]:
    """Every stage of ``spec``'s bring-up (:func:`~pytest_starlingx.model.stage_plan`) with
    its prerequisites.

    controller-0 first (install, first login, bootstrap, configure, unlock); then the other
    nodes network-boot and install together; controller-1 unlocks first, then storage nodes,
    then workers (the order of the StarlingX guides); in the standard option the controllers
    then get their OSDs.
    """
    nodes = {n.name: n for n in spec.nodes}
    plan = stage_plan(spec.topology, list(nodes))
    return [
        _controller0(spec, name) if node == C0 else _other(spec, nodes[node], name)
        for node, name in plan
    ]


def _controller0(spec: LabSpec, name: StageName) -> Stage:
    others = [n for n in spec.nodes if n.name != C0]
    match name:
        case StageName.INSTALL:
            return Stage(name, C0, controller0.install)
        case StageName.FIRST_LOGIN:
            return Stage(name, C0, controller0.first_login, (f"{C0}:{StageName.INSTALL}",))
        case StageName.BOOTSTRAP:
            return Stage(name, C0, controller0.bootstrap, (f"{C0}:{StageName.FIRST_LOGIN}",))
        case StageName.CONFIGURE:
            return Stage(name, C0, controller0.configure, (f"{C0}:{StageName.BOOTSTRAP}",))
        case StageName.UNLOCK:
            return Stage(name, C0, controller0.unlock, (f"{C0}:{StageName.CONFIGURE}",))
        case StageName.ADD_HOSTS:
            after: tuple[str, ...]
            if spec.add_hosts is AddHosts.HOST_ADD:  # add by MAC first, then power on
                after = (f"{C0}:{StageName.UNLOCK}",)
            else:  # power on, then find them in host-list
                after = tuple(f"{n.name}:{StageName.POWER_ON}" for n in others)
            return Stage(name, C0, secondaries.add_hosts(others), after)
        case StageName.OSDS:  # controller storage: OSDs once the workers run
            workers = tuple(
                f"{n.name}:{StageName.UNLOCK}" for n in others
                if n.personality is Personality.WORKER
            )  # fmt: skip
            return Stage(name, C0, secondaries.controller_osds, workers)
    raise ValueError(f"the pipeline has no stage {name!r} for {C0}")


def _other(spec: LabSpec, node: NodeSpec, name: StageName) -> Stage:
    added = f"{C0}:{StageName.ADD_HOSTS}"
    match name:
        case StageName.POWER_ON:
            host_add = spec.add_hosts is AddHosts.HOST_ADD
            after = added if host_add else f"{C0}:{StageName.UNLOCK}"
            return Stage(name, node.name, secondaries.power_on(node.name), (after,))
        case StageName.INSTALL:
            after_install = (added, f"{node.name}:{StageName.POWER_ON}")
            return Stage(name, node.name, secondaries.install(node.name), after_install)
        case StageName.CONFIGURE:
            return Stage(name, node.name, secondaries.configure(node),
                         (f"{node.name}:{StageName.INSTALL}",))  # fmt: skip
        case StageName.UNLOCK:
            after_unlock = [f"{node.name}:{StageName.CONFIGURE}"]
            if node.name != "controller-1":
                after_unlock.append(f"controller-1:{StageName.UNLOCK}")
            if node.personality is Personality.WORKER:
                after_unlock += [
                    f"{n.name}:{StageName.UNLOCK}" for n in spec.nodes
                    if n.personality is Personality.STORAGE
                ]  # fmt: skip
            return Stage(name, node.name, secondaries.unlock(node), tuple(after_unlock))
    raise ValueError(f"the pipeline has no stage {name!r} for {node.name}")
