"""The stage pipeline of each deployment option, built from the stage modules."""

from __future__ import annotations

from pytest_starlingx.model import AddHosts, LabSpec, Personality, Topology
from pytest_starlingx.stages import controller0, secondaries
from pytest_starlingx.stages.base import Stage
from pytest_starlingx.stages.shells import ACTIVE_CONTROLLER

C0 = ACTIVE_CONTROLLER

#: Bumped whenever a change to the stages changes what a finished lab looks like; part of the
#: golden-lab key, so golden labs built by an older pipeline are never restored.
PIPELINE_VERSION = 3


def pipeline(spec: LabSpec) -> list[Stage]:
    """Every stage of ``spec``'s bring-up with its prerequisites.

    controller-0 first (install, first login, bootstrap, configure, unlock); then the other
    nodes network-boot and install together; controller-1 unlocks first, then storage nodes,
    then workers (the order of the StarlingX guides); in the standard option the controllers
    then get their OSDs.
    """
    stages = [
        Stage("install", C0, controller0.install),
        Stage("first-login", C0, controller0.first_login, (f"{C0}:install",)),
        Stage("bootstrap", C0, controller0.bootstrap, (f"{C0}:first-login",)),
        Stage("configure", C0, controller0.configure, (f"{C0}:bootstrap",)),
        Stage("unlock", C0, controller0.unlock, (f"{C0}:configure",)),
    ]
    others = [n for n in spec.nodes if n.name != C0]
    if not others:
        return stages
    unlocked = f"{C0}:unlock"
    identify = secondaries.add_hosts(others)
    if spec.add_hosts is AddHosts.HOST_ADD:  # add by MAC first, then power on
        add = Stage("add-hosts", C0, identify, (unlocked,))
        power_after: tuple[str, ...] = (add.key,)
    else:  # power on, then find them in host-list
        add = Stage("add-hosts", C0, identify, tuple(f"{n.name}:power-on" for n in others))
        power_after = (unlocked,)
    stages.append(add)
    stages += [Stage("power-on", n.name, secondaries.power_on(n.name), power_after) for n in others]
    for node in others:
        stages.append(Stage("install", node.name, secondaries.install(node.name),
                            (add.key, f"{node.name}:power-on")))  # fmt: skip
        stages.append(Stage("configure", node.name, secondaries.configure(node),
                            (f"{node.name}:install",)))  # fmt: skip
    storage = [n.name for n in others if n.personality is Personality.STORAGE]
    for node in others:
        after = [f"{node.name}:configure"]
        if node.name != "controller-1":
            after.append("controller-1:unlock")
        if node.personality is Personality.WORKER:
            after += [f"{s}:unlock" for s in storage]
        stages.append(Stage("unlock", node.name, secondaries.unlock(node), tuple(after)))
    if spec.topology is Topology.STANDARD:  # controller storage: OSDs once the workers run
        workers = tuple(f"{n.name}:unlock" for n in others if n.personality is Personality.WORKER)
        stages.append(Stage("osds", C0, secondaries.controller_osds, workers))
    return stages
