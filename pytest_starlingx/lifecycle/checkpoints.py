"""Per-stage snapshots (opt-in): resume a failed bring-up from its last good stage, or jump back.

With checkpoints on, the lab is snapshotted (all nodes at one instant) after each stage that
finishes while no other stage runs, as ``stage-<node>-<stage>``; ``<lab dir>/checkpoints.json``
records, per snapshot, the stages done at that moment. Reverting to one puts the guests and the
done-list back together, so the next ``provision()`` runs exactly the stages after it.
Names of the custom-stage points work too: ``bootstrapped``, ``controller-0-configured``,
``controller-0-unlocked``.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import StxError
from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.lab import Lab, attach_lab, image_path, lab_passwords
from pytest_starlingx.lifecycle.state import LabState, LabStatus, lab_state_path
from pytest_starlingx.model import ACTIVE_CONTROLLER, NAMED_POINTS, LabSpec, StageName, lab_key

log = logging.getLogger("pytest_starlingx.lifecycle.checkpoints")

PREFIX = "stage-"


@dataclass(frozen=True)
class Checkpoint:
    """One per-stage snapshot: its name, the stage after which it was taken, what was done."""

    name: str
    stage: str  # node:stage
    done: list[str]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def _path(lab_id: str) -> Path:
    return lab_state_path(lab_id).parent / "checkpoints.json"


def load_checkpoints(lab_id: str) -> list[Checkpoint]:
    """The lab's checkpoints, oldest first; none when the file is missing or unreadable."""
    try:
        return [Checkpoint(**c) for c in json.loads(_path(lab_id).read_text())]
    except (OSError, ValueError, TypeError):
        return []


def _save(lab_id: str, checkpoints: list[Checkpoint]) -> None:
    path = _path(lab_id)
    write_json_atomic(path, [asdict(c) for c in checkpoints])


def snapshot_name(stage_key: str) -> str:
    """``stage-controller-0-bootstrap`` for ``controller-0:bootstrap``."""
    return PREFIX + stage_key.replace(":", "-")


def enable_checkpoints(lab: Lab) -> None:
    """Snapshot the lab after every stage that ends while no other stage runs."""

    def checkpoint(stage_key: str) -> None:
        name = snapshot_name(stage_key)
        lab.handle.delete_snapshot(name)  # a resumed bring-up redoes a stage
        lab.handle.snapshot(name)
        kept = [c for c in load_checkpoints(lab.lab_id) if c.name != name]
        _save(lab.lab_id, [*kept, Checkpoint(name, stage_key, list(lab.state.done))])
        log.info("%s: checkpoint %s", lab.name, name)

    lab.checkpoint = checkpoint


def find_checkpoint(lab_id: str, name: str) -> Checkpoint:
    """A checkpoint by snapshot name, stage key, or point name; ``StxError`` naming the known."""
    checkpoints = load_checkpoints(lab_id)
    stage = NAMED_POINTS.get(name, name)
    for checkpoint in checkpoints:
        if name == checkpoint.name or stage == checkpoint.stage:
            return checkpoint
    known = ", ".join(c.name for c in checkpoints) or "none (bring it up with stage snapshots)"
    raise StxError(f"lab {lab_id} has no checkpoint {name!r}; it has: {known}")


def revert_lab(lab: Lab, snapshot: str) -> None:
    """Revert every node to ``snapshot``: restored paused, consoles attached, resumed together.

    The lab's consoles must not be open yet (a revert may start new QEMU processes).
    """
    lab.handle.revert(snapshot, before_resume=lambda machine: lab.machines[machine].attach())
    for name in lab.nodes:
        lab.bringup.shells.forget(name)


def set_clock(lab: Lab, nodes: list[str]) -> None:
    """Log in on each node (in parallel) and set its clock from the host's.

    A revert puts a guest back to the time of its snapshot. controller-0's shell was open in
    every snapshot taken after its first login, so login() finds a prompt and cannot tell which
    password is valid: the forced change happened before the snapshot.
    """

    def fix(node: str) -> None:
        lab.bringup.shells.login(node, booting=False)
        if node == ACTIVE_CONTROLLER:
            lab.bringup.consoles[node].password = lab.bringup.passwords["sysadmin"]
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        lab.bringup.shells.shell(node, f"sudo date -u -s '{now}' >/dev/null", phase="login")

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        list(pool.map(fix, nodes))


def revert_checkpoint(lab: Lab, checkpoint: Checkpoint) -> None:
    """Guests and done-list back to ``checkpoint``; the consoles of ``lab`` must not be open."""
    revert_lab(lab, checkpoint.name)
    if f"{ACTIVE_CONTROLLER}:{StageName.FIRST_LOGIN}" in checkpoint.done:
        set_clock(lab, [ACTIVE_CONTROLLER])
    lab.state.done = list(checkpoint.done)
    lab.state.status = LabStatus.PROVISIONING
    lab.state.save()
    log.info("%s: reverted to %s (%d stages done)", lab.name, checkpoint.name, len(checkpoint.done))


def last_good(lab_id: str, done: list[str]) -> Checkpoint | None:
    """The newest checkpoint whose stages are all still recorded as done."""
    good = [c for c in load_checkpoints(lab_id) if set(c.done) <= set(done)]
    return good[-1] if good else None


def open_lab_at(
    spec: LabSpec, backend: Backend, state: LabState, artifacts: Path, name: str | None = None
) -> Lab:
    """A lab created earlier, reverted to checkpoint ``name`` (default: its last good one).

    Without checkpoints it is attached as it is (:func:`~pytest_starlingx.lab.attach_lab`).
    """
    checkpoint = (
        find_checkpoint(state.lab_id, name) if name else last_good(state.lab_id, state.done)
    )
    if checkpoint is None:
        return attach_lab(spec, backend, state, artifacts)
    if state.key != lab_key(spec, str(image_path(spec))):
        raise StxError(f"lab {state.lab_id} was built from a different description or image")
    artifacts.mkdir(parents=True, exist_ok=True)
    lab = Lab(spec, backend.open_lab(state.lab_id), state, lab_passwords(spec, state), artifacts)
    revert_checkpoint(lab, checkpoint)
    return lab
