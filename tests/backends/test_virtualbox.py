"""The VirtualBox backend against the VBoxManage emulator (VMs run as QEMU, TCG)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from libvirt_helpers import lab_resources, new_lab_id, read_until
from vbox_helpers import emulator, monkeypatch_module, vbox, vbox_lab_factory  # noqa: F401

from pytest_starlingx.backends.base import PowerState


@pytest.mark.parametrize("machines", [1, 2, 4])
def test_vms_of_a_lab(emulator, vbox_lab_factory, machines):  # noqa: F811
    """What VirtualBox holds of a new lab (the contract tests check creating and destroying)."""
    lab_id = new_lab_id()
    lab = vbox_lab_factory(lab_resources(machines, lab_id))
    reg = emulator.registry()
    vms = {vm["name"]: vm for vm in reg["vms"].values() if lab_id in vm["name"]}
    assert sorted(vms) == [f"stx-t-{lab_id}-node-{i}" for i in range(machines)]
    for spec in lab.resources.machines:
        vm = vms[f"stx-t-{lab_id}-{spec.name}"]
        assert vm["state"] == "poweroff" and vm["memory"] == spec.memory_mib
        assert [vm["nics"][str(i)]["intnet"] for i in range(1, 5)] == [
            f"stx-t-{lab_id}-{n}" for n in ("oam", "mgmt", "data0", "data1")
        ]
        macs = [m.replace(":", "").upper() for m in lab.mac_addresses(spec.name)]
        assert macs == [vm["nics"][str(i)]["mac"] for i in range(1, 5)]
        assert lab.state(spec.name) is PowerState.OFF


def test_simulator_iso_shows_its_isolinux_menu(vbox_lab_factory, emulator):  # noqa: F811
    from pytest_starlingx.sim.build import build

    iso = emulator.home.parent / "stx-sim.iso"
    try:
        os.link(build(), iso)
    except OSError:
        iso.write_bytes(Path(build()).read_bytes())
    lab = vbox_lab_factory(lab_resources(1, new_lab_id(), cdrom=iso))
    console = lab.console("node-0")
    lab.power_on("node-0", before_resume=lambda _m: console.connect())
    try:
        seen = read_until(console, "Controller Install")
        assert b"ISOLINUX" in seen  # the boot loader's banner, then vesamenu's submenu title
    finally:
        console.close()
        lab.power_off("node-0")
