"""The VirtualBox backend against the VBoxManage emulator (VMs run as QEMU, TCG)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from libvirt_helpers import READY, lab_resources, new_lab_id
from test_libvirt import read_until, shell
from vbox_helpers import emulator, monkeypatch_module, vbox, vbox_lab_factory  # noqa: F401

from pytest_starlingx.backends.base import BootDevice, PowerState
from pytest_starlingx.errors import BackendError


@pytest.mark.parametrize("machines", [1, 2, 4])
def test_create_and_destroy_lab_shapes(vbox, emulator, vbox_lab_factory, machines):  # noqa: F811
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
        assert len(set(lab.mac_addresses(spec.name))) == 4
        assert lab.state(spec.name) is PowerState.OFF
    assert vbox.lab_ids() == sorted({*vbox.lab_ids()}) and lab_id in vbox.lab_ids()
    lab.destroy()
    assert emulator.leftovers(lab_id) == []
    assert not (emulator.state_dir / "labs" / lab_id).exists()
    lab.destroy()  # idempotent


def test_two_labs_side_by_side_and_foreign_vms_left_alone(vbox, emulator, vbox_lab_factory):  # noqa: F811
    first_id, second_id = new_lab_id(), new_lab_id()
    first = vbox_lab_factory(lab_resources(2, first_id))
    second = vbox_lab_factory(lab_resources(2, second_id))  # same lab and machine names
    assert first.mac_addresses("node-0") != second.mac_addresses("node-0")
    third_id = new_lab_id()
    foreign = f"stx-t-{third_id}-node-0"  # our name pattern, no owner record
    folder = str(emulator.home.parent / "foreign")
    assert (
        emulator("createvm", "--name", foreign, "--basefolder", folder, "--register").returncode
        == 0
    )
    try:
        with pytest.raises(
            BackendError, match=f"VM {foreign}.*left alone|left alone.*VM {foreign}"
        ):
            vbox.create_lab(lab_resources(1, third_id))
        vbox.destroy_lab(third_id)  # finds nothing of ours
        second.destroy()
        assert emulator.leftovers(second_id) == []
        assert len([v for v in emulator.leftovers(first_id) if v.startswith("VM")]) == 2
        assert emulator.leftovers(third_id) == [f"VM {foreign}"]
    finally:
        emulator("unregistervm", foreign, "--delete")


def test_lab_id_in_use_is_refused(vbox, vbox_lab_factory):  # noqa: F811
    res = lab_resources(1, new_lab_id())
    vbox_lab_factory(res)
    with pytest.raises(BackendError, match="already exists"):
        vbox.create_lab(res)


def test_boot_console_snapshots_power_and_oem_strings(vbox_lab_factory, tiny_iso):  # noqa: F811
    lab = vbox_lab_factory(lab_resources(2, new_lab_id(), cdrom=tiny_iso))
    console = lab.console("node-0")
    started = time.monotonic()
    lab.power_on("node-0", before_resume=lambda _m: console.connect())
    try:
        first = read_until(console, READY)
        boot_seconds = time.monotonic() - started
        assert b"Booting `tiny'" in first  # GRUB's output from its first line on
        assert READY.encode() in lab.console_log("node-0")
        assert lab.state("node-1") is PowerState.OFF
        out = shell(console, "strings /sys/firmware/dmi/entries/11-0/raw")
        assert b"stx-sim:node=0,fail=none" in out  # DmiOEMVBoxVer as SMBIOS type 11

        shell(console, "echo before > /mnt/t/marker")
        lab.snapshot("s1")
        assert {(i.machine, i.running) for i in lab.snapshots()} == {
            ("node-0", True),
            ("node-1", False),
        }
        shell(console, "echo after > /mnt/t/marker")
        t0 = time.monotonic()
        lab.revert("s1", before_resume=lambda _m: console.connect())
        revert_seconds = time.monotonic() - t0
        assert lab.state("node-0") is PowerState.RUNNING
        assert lab.state("node-1") is PowerState.OFF
        out = shell(console, "cat /mnt/t/marker")
        assert b"before" in out and b"after\r\n" not in out
        lab.delete_snapshot("s1")
        lab.delete_snapshot("s1")
        assert lab.snapshots() == []

        lab.reset("node-0")
        read_until(console, READY)
        lab.power_off("node-0")
        with pytest.raises(EOFError):
            for _ in range(50):
                console.read(4096, 0.2)
        lab.set_oem_strings("node-0", ["stx-sim:slow=1"])
        lab.set_boot_order("node-0", [BootDevice.CDROM, BootDevice.DISK])
        lab.power_on("node-0", before_resume=lambda _m: console.connect())
        read_until(console, READY)
        assert b"stx-sim:slow=1" in shell(console, "strings /sys/firmware/dmi/entries/11-0/raw")
        print(f"\nboot to shell {boot_seconds:.1f}s, revert {revert_seconds:.1f}s")
    finally:
        console.close()
    lab.power_off("node-0")


def test_power_on_failure_in_callback_leaves_machine_paused(vbox_lab_factory, tiny_iso):  # noqa: F811
    lab = vbox_lab_factory(lab_resources(1, new_lab_id(), cdrom=tiny_iso))

    def broken(_machine: str) -> None:
        raise RuntimeError("console did not attach")

    with pytest.raises(RuntimeError):
        lab.power_on("node-0", before_resume=broken)
    assert lab.state("node-0") is PowerState.PAUSED
    lab.power_off("node-0")


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
