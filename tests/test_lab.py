"""Lab creation's own checks, before any hypervisor object exists."""

from __future__ import annotations

import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.errors import BackendError, StxError
from pytest_starlingx.lab import create_lab
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.resources import SERVER_CPU_WEIGHT, lab_resources

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


class EmulatedHost:
    """A backend on a host where KVM does not work; it must not be asked to create anything."""

    def software_emulated(self) -> bool:
        return True

    def create_lab(self, resources: object) -> None:
        raise AssertionError("a lab was created")


def test_a_real_iso_is_refused_where_kvm_does_not_work(tmp_path, monkeypatch):
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    iso = tmp_path / "starlingx-10.0.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001")  # the ISO 9660 signature, at sector 16
    spec = lab_from_mapping({"name": "real", "topology": "simplex", "image": str(iso)})
    with pytest.raises(StxError) as info:
        create_lab(spec, EmulatedHost(), tmp_path / "artifacts")  # type: ignore[arg-type]
    message = str(info.value)
    assert "KVM does not work on this host" in message and "stx-lab doctor" in message
    assert "STX_LIBVIRT_DOMAIN_TYPE=qemu" in message
    assert not (tmp_path / "state").exists()  # nothing recorded, nothing made


def test_a_bad_libvirt_domain_type_names_the_choices(monkeypatch):
    monkeypatch.setenv("STX_LIBVIRT_DOMAIN_TYPE", "hvf")
    with pytest.raises(BackendError, match=r"STX_LIBVIRT_DOMAIN_TYPE='hvf': use auto, kvm, qemu"):
        make_backend("libvirt")


def test_controller_0_weighs_more_on_a_busy_hosts_cpus_than_the_nodes_it_serves():
    spec = lab_from_mapping({"name": "std", "topology": "standard"})
    machines = lab_resources(spec, "ab12", iso=None).machines
    assert {m.name: m.cpu_weight for m in machines} == {
        "controller-0": SERVER_CPU_WEIGHT,
        "controller-1": 1,
        "worker-0": 1,
        "worker-1": 1,
    }


def test_lab_status_is_an_enum_stored_as_plain_strings(tmp_path, monkeypatch):
    import json

    from pytest_starlingx.lifecycle.state import LabState, LabStatus

    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    state = LabState("abc123", "simplex", "simplex", "libvirt")
    assert state.status is LabStatus.CREATING
    state.status = LabStatus.READY
    state.save()
    assert json.loads(state.path.read_text())["status"] == "ready"
    assert oct(state.path.stat().st_mode & 0o777) == "0o600"
    assert LabState.load("abc123").status is LabStatus.READY
