"""Per-lab state on the host: what a bring-up finished, who owns the lab, its passwords.

``<state dir>/labs/<lab id>/lab.json`` (mode 0600: it may hold a generated password) sits
beside the backend's own files for the lab. A re-run reads which stages are done and resumes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import string
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.ownership import Holder, process_start
from pytest_starlingx.settings import env_settings

LAB_ID_ALPHABET = string.ascii_lowercase + string.digits
LAB_ID_LENGTH = 6


class LabStatus(StrEnum):
    """Where a lab is in its life: the ``status`` of ``lab.json`` and of a lab in the xdist
    registry (``stx-shared/registry.json``). The JSON files hold the plain strings."""

    CREATING = "creating"  # lab.json: state written, the hypervisor objects being made
    PROVISIONING = "provisioning"  # lab.json: stages running (also after a checkpoint revert)
    READY = "ready"  # lab.json, registry: provisioned and usable
    FAILED = "failed"  # lab.json, registry: the bring-up failed
    RESTORING = "restoring"  # lab.json: a golden lab being reverted to its snapshot
    GOLDEN = "golden"  # lab.json: a golden lab, powered off, free for the next user
    BUILDING = "building"  # registry: an xdist worker is building the run's lab
    RELEASED = "released"  # registry: the run's last worker has handed the lab back


def state_dir() -> Path:
    """``$STX_STATE_DIR`` or ``/var/lib/pytest-starlingx`` (:mod:`pytest_starlingx.settings`)."""
    return env_settings().state_dir


def new_lab_id() -> str:
    """A short random id; with the lab name it prefixes every object of the lab."""
    return "".join(secrets.choice(LAB_ID_ALPHABET) for _ in range(LAB_ID_LENGTH))


@dataclass
class LabState:
    """What the host remembers about one lab."""

    lab_id: str
    name: str
    topology: str
    backend: str
    source: str | None = None  # the lab file, if the lab came from one
    key: str = ""  # identifies the lab description, for reuse
    owner_pid: int = field(default_factory=os.getpid)
    owner_host: str = field(default_factory=socket.gethostname)
    owner_start: int | None = field(default_factory=lambda: process_start(os.getpid()))
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    status: LabStatus = LabStatus.CREATING
    kept: bool = False
    done: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)  # generated ones only
    #: What reaching the lab takes (``access.LabFacts``), for ``stx-lab env`` and ``export``.
    access: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = LabStatus(self.status)

    @property
    def owner(self) -> Holder:
        """The process that created the lab."""
        return Holder(self.owner_host, self.owner_pid, self.owner_start)

    @property
    def path(self) -> Path:
        """Where this state is stored."""
        return lab_state_path(self.lab_id)

    def save(self) -> None:
        """Write atomically, readable by the owner only."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, asdict(self), mode=0o600)

    @classmethod
    def load(cls, lab_id: str) -> LabState:
        """The saved state of ``lab_id``; ``FileNotFoundError`` when there is none."""
        return cls(**json.loads(lab_state_path(lab_id).read_text()))


def lab_dir(lab_id: str) -> Path:
    """The directory of ``lab_id``: its state, leases, ledger and checkpoints."""
    return state_dir() / "labs" / lab_id


def lab_state_path(lab_id: str) -> Path:
    """The state file of ``lab_id``."""
    return lab_dir(lab_id) / "lab.json"


def forget_lab(lab_id: str, root: Path | None = None) -> None:
    """Remove the lab's directory: state, leases and whatever other layers kept there.

    Called once the backend has removed the lab's objects (their ledger goes with it).
    """
    shutil.rmtree((root or state_dir()) / "labs" / lab_id, ignore_errors=True)


def all_states() -> list[LabState]:
    """Every lab state on this host, oldest first; unreadable files are skipped."""
    states = []
    for path in sorted((state_dir() / "labs").glob("*/lab.json")):
        try:
            states.append(LabState(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(states, key=lambda s: s.created)


class DoneStages:
    """The finished stages of a lab, saved with its state after every addition."""

    def __init__(self, state: LabState) -> None:
        self._state = state

    def __contains__(self, key: object) -> bool:
        return key in self._state.done

    def add(self, key: str) -> None:
        """Record ``key`` as done and save."""
        if key not in self._state.done:
            self._state.done.append(key)
            self._state.save()
