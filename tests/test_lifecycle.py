"""Lifecycle policies against an in-memory backend: what stays, what goes, who holds it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_starlingx.backends.base import LabResources, PowerState
from pytest_starlingx.errors import StageError
from pytest_starlingx.lab import Lab, create_lab
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.acquire import How, LabBroken, Lifecycle, Policy
from pytest_starlingx.lifecycle.leases import live_leases
from pytest_starlingx.lifecycle.state import LabState, all_states, lab_dir

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


class MemoryHandle:
    """A lab's machines, in memory: power and silent consoles."""

    def __init__(self, resources: LabResources) -> None:
        self.resources = resources
        self.power = {m.name: PowerState.OFF for m in resources.machines}

    def state(self, machine: str) -> PowerState:
        return self.power[machine]

    def power_on(self, machine: str, before_resume: object = None) -> None:
        self.power[machine] = PowerState.RUNNING

    def power_off(self, machine: str) -> None:
        self.power[machine] = PowerState.OFF

    def console(self, machine: str) -> SilentLink:
        return SilentLink()


class SilentLink:
    """A console transport on which nothing is ever said (no stage runs here)."""

    def connect(self) -> None:
        pass

    def read(self, size: int, timeout: float) -> bytes:
        time.sleep(timeout)
        return b""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryBackend:
    """The backend calls a lifecycle makes, recorded."""

    def __init__(self) -> None:
        self.labs: dict[str, MemoryHandle] = {}
        self.created = 0

    def software_emulated(self) -> bool:
        return False

    def create_lab(self, resources: LabResources) -> MemoryHandle:
        self.created += 1
        self.labs[resources.lab_id] = MemoryHandle(resources)
        return self.labs[resources.lab_id]

    def open_lab(self, lab_id: str) -> MemoryHandle:
        return self.labs[lab_id]

    def destroy_lab(self, lab_id: str) -> None:
        self.labs.pop(lab_id, None)


@pytest.fixture
def spec(tmp_path, monkeypatch, fake_iso):
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    return lab_from_mapping({"name": "mem", "topology": "simplex", "image": str(fake_iso)})


@pytest.fixture
def provision(monkeypatch) -> Iterator[list[str]]:
    """Stages replaced by a script: each call takes the next outcome ("ok" or "fail")."""
    outcomes: list[str] = []

    def provision(lab: Lab, registered_stages: bool = True) -> None:
        outcome = outcomes.pop(0) if outcomes else "ok"
        if outcome == "fail":
            lab.state.status = "failed"
            lab.state.save()
            raise StageError(f"lab {lab.name!r}: controller-0:install failed")
        for machine in lab.machines.values():
            lab.handle.power_on(machine._name)  # type: ignore[attr-defined]
        lab.state.status = "ready"
        lab.state.save()

    monkeypatch.setattr(Lab, "provision", provision)
    yield outcomes


def test_a_lab_is_held_while_in_use_and_removed_after(spec, provision, tmp_path):
    backend = MemoryBackend()
    lifecycle = Lifecycle(Policy())
    with lifecycle.acquire(spec, backend, tmp_path / "a") as lab:  # type: ignore[arg-type]
        assert [lease.purpose for lease in live_leases(lab_dir(lab.lab_id))] == ["pytest session"]
    lifecycle.close()
    assert backend.labs == {}
    assert all_states() == []


def test_a_kept_lab_stays_up_and_needs_no_holder(spec, provision, tmp_path):
    backend = MemoryBackend()
    lifecycle = Lifecycle(Policy(keep=True))
    with lifecycle.acquire(spec, backend, tmp_path / "a") as lab:  # type: ignore[arg-type]
        lab_id = lab.lab_id
    lifecycle.close()
    assert list(backend.labs) == [lab_id]
    assert LabState.load(lab_id).kept
    assert live_leases(lab_dir(lab_id)) == []


def test_a_failed_bring_up_is_removed_remembered_and_not_tried_again(spec, provision, tmp_path):
    backend = MemoryBackend()
    lifecycle = Lifecycle(Policy())
    provision.append("fail")
    with pytest.raises(StageError, match="controller-0:install failed"):
        lifecycle.bring_up(spec, backend, tmp_path / "a")  # type: ignore[arg-type]
    assert backend.labs == {} and all_states() == []
    with pytest.raises(LabBroken, match="failed earlier in this session") as info:
        lifecycle.bring_up(spec, backend, tmp_path / "b")  # type: ignore[arg-type]
    assert "controller-0:install failed" in str(info.value)
    assert backend.created == 1  # failing again would cost a whole bring-up
    [failure] = lifecycle.broken.values()
    assert (failure.name, failure.topology) == ("mem", "simplex")
    lifecycle.close()


def test_a_failed_bring_up_left_for_inspection_stays_unheld(spec, provision, tmp_path):
    backend = MemoryBackend()
    lifecycle = Lifecycle(Policy(keep=True, leave_failed=True, purpose="stx-lab up"))
    provision.append("fail")
    with pytest.raises(StageError):
        lifecycle.bring_up(spec, backend, tmp_path / "a")  # type: ignore[arg-type]
    [failure] = lifecycle.broken.values()
    assert failure.lab_id in backend.labs
    state = LabState.load(str(failure.lab_id))
    assert state.kept and state.status == "failed"
    assert live_leases(lab_dir(state.lab_id)) == []
    lifecycle.close()


def test_reuse_takes_a_kept_ready_lab_nobody_holds_and_leaves_it_up(spec, provision, tmp_path):
    backend = MemoryBackend()
    keeper = Lifecycle(Policy(keep=True))
    with keeper.acquire(spec, backend, tmp_path / "a") as lab:  # type: ignore[arg-type]
        kept = lab.lab_id
    keeper.close()
    user = Lifecycle(Policy(reuse=True))
    got = user.bring_up(spec, backend, tmp_path / "b")  # type: ignore[arg-type]
    assert (got.how, got.lab.lab_id) == (How.REUSED, kept)
    assert backend.created == 1
    other = Lifecycle(Policy(reuse=True))
    second = other.bring_up(spec, backend, tmp_path / "c")  # type: ignore[arg-type]
    assert (second.how, backend.created) == (How.BUILT, 2)  # the kept one is held: not shared
    other.release(second, backend)
    user.release(got, backend)
    assert kept in backend.labs and live_leases(lab_dir(kept)) == []
    user.close()
    other.close()


def test_stx_lab_up_holds_a_golden_lab_durably(tmp_path):
    """A durable lease outlives its holder: `stx-lab up --golden` holds until `down`."""
    from pytest_starlingx.lifecycle.leases import LeaseKeeper

    keeper = LeaseKeeper()
    keeper.take(tmp_path, "stx-lab up", durable=True)
    keeper.stop()
    [lease] = live_leases(tmp_path)
    assert lease.durable and "until released" in lease.describe()
    assert Path(lease.path).exists()


def test_the_controller_is_the_active_one_after_a_swact(fake_iso, tmp_path, monkeypatch):
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    spec = lab_from_mapping({"name": "dx", "topology": "duplex", "image": str(fake_iso)})
    backend = MemoryBackend()
    lab = create_lab(spec, backend, tmp_path / "a")  # type: ignore[arg-type]
    active = ["controller-0"]
    monkeypatch.setattr(lab.bringup, "host_show", lambda host: {"capabilities": (
        "{Personality: Controller-Active}" if host == active[0]
        else "{Personality: Controller-Standby}")})  # fmt: skip
    assert lab.controller.name == "controller-0"
    active[0] = "controller-1"  # system host-swact controller-0
    assert lab.controller.name == "controller-1"
