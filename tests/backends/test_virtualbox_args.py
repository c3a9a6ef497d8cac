"""Exact VBoxManage argument lists of the VirtualBox backend (VirtualBox 7.0 manual syntax)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import pytest
from libvirt_helpers import lab_resources, new_lab_id
from vbox_helpers import (  # noqa: F401
    EMULATOR_DIR,
    emulator,
    monkeypatch_module,
    vbox,
    vbox_lab_factory,
)

from pytest_starlingx.backends import make_backend
from pytest_starlingx.backends.base import BootDevice, NetworkSpec
from pytest_starlingx.backends.virtualbox import (
    boot_argv,
    createvm_argv,
    modifyvm_argv,
    nat_gateway_problems,
    natnetwork_argv,
    nic_argv,
    oem_argvs,
    storage_argvs,
)
from pytest_starlingx.errors import BackendError

ISO = Path("/isos/stx.iso")
OEM = "VBoxInternal/Devices/pcbios/0/Config/DmiOEMVBoxVer"
NETS = {n: ("intnet", f"stx-t-abcd-{n}") for n in ("oam", "mgmt", "data0", "data1")}


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_modifyvm_of_a_starlingx_node():
    spec = lab_resources(1, "abcd", cdrom=ISO).machine("node-0")
    argv = modifyvm_argv("stx-t-abcd-node-0", spec, NETS, Path("/s/node-0.sock"), 3000)
    assert argv == [
        "modifyvm", "stx-t-abcd-node-0", "--memory", "256", "--cpus", "1",
        "--ioapic", "on", "--rtc-use-utc", "on", "--bios-logo-display-time", "3000",
        "--firmware", "bios",
        "--boot1", "disk", "--boot2", "dvd", "--boot3", "net", "--boot4", "none",
        "--nic1", "intnet", "--nic-type1", "82540EM", "--intnet1", "stx-t-abcd-oam",
        "--cable-connected1", "on",
        "--nic2", "intnet", "--nic-type2", "82540EM", "--intnet2", "stx-t-abcd-mgmt",
        "--cable-connected2", "on", "--nic-boot-prio2", "1",
        "--nic3", "intnet", "--nic-type3", "virtio", "--intnet3", "stx-t-abcd-data0",
        "--cable-connected3", "on",
        "--nic4", "intnet", "--nic-type4", "virtio", "--intnet4", "stx-t-abcd-data1",
        "--cable-connected4", "on",
        "--uart1", "0x3F8", "4", "--uart-mode1", "server", "/s/node-0.sock",
    ]  # fmt: skip


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_a_uefi_node_gets_virtualboxs_efi_firmware():
    spec = dataclasses.replace(lab_resources(1, "abcd").machine("node-0"), uefi=True)
    argv = modifyvm_argv("vm", spec, NETS, Path("/s/node-0.sock"), 0)
    assert argv[argv.index("--firmware") + 1] == "efi"


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_storage_disks_in_mb_and_the_iso_as_dvd():
    spec = lab_resources(1, "abcd", cdrom=ISO).machine("node-0")  # disks 600 and 200 GiB
    disks = [Path("/b/vm/vm-disk0.vdi"), Path("/b/vm/vm-disk1.vdi")]
    assert storage_argvs("vm", spec, disks) == [
        ["storagectl", "vm", "--name", "SATA", "--add", "sata", "--controller", "IntelAhci",
         "--portcount", "3", "--bootable", "on"],
        ["createmedium", "disk", "--filename", "/b/vm/vm-disk0.vdi", "--size", "614400",
         "--format", "VDI", "--variant", "Standard"],
        ["storageattach", "vm", "--storagectl", "SATA", "--port", "0", "--device", "0",
         "--type", "hdd", "--medium", "/b/vm/vm-disk0.vdi"],
        ["createmedium", "disk", "--filename", "/b/vm/vm-disk1.vdi", "--size", "204800",
         "--format", "VDI", "--variant", "Standard"],
        ["storageattach", "vm", "--storagectl", "SATA", "--port", "1", "--device", "0",
         "--type", "hdd", "--medium", "/b/vm/vm-disk1.vdi"],
        ["storageattach", "vm", "--storagectl", "SATA", "--port", "2", "--device", "0",
         "--type", "dvddrive", "--medium", str(ISO)],
    ]  # fmt: skip


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_small_builders():
    assert createvm_argv("vm", Path("/b")) == [
        "createvm", "--name", "vm", "--basefolder", "/b", "--ostype", "Linux_64", "--register",
    ]  # fmt: skip
    assert boot_argv([BootDevice.CDROM, BootDevice.DISK]) == [
        "--boot1", "dvd", "--boot2", "disk", "--boot3", "none", "--boot4", "none",
    ]  # fmt: skip
    assert oem_argvs("vm", ["stx-sim:slow=2"]) == [
        ["setextradata", "vm", OEM, "stx-sim:slow=2"],
        ["setextradata", "vm", OEM.replace("Ver", "Rev")],  # no value: key removed
    ]
    nat = NetworkSpec("oam", nat=True, gateway="10.10.10.1/24")
    assert natnetwork_argv("stx-t-abcd-oam", nat) == [
        "natnetwork", "add", "--netname", "stx-t-abcd-oam", "--network", "10.10.10.0/24",
        "--enable", "--dhcp", "off",
    ]  # fmt: skip
    nets = {**NETS, "oam": ("natnetwork", "stx-t-abcd-oam")}
    spec = lab_resources(1, "abcd").machine("node-0")
    assert nic_argv(spec, nets)[:6] == [
        "--nic1", "natnetwork", "--nic-type1", "82540EM", "--nat-network1", "stx-t-abcd-oam",
    ]  # fmt: skip


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_builders_refuse_what_virtualbox_cannot_do():
    with pytest.raises(BackendError, match="2 SMBIOS OEM strings"):
        oem_argvs("vm", ["a", "b", "c"])
    spec = lab_resources(1, "abcd").machine("node-0")
    odd = replace(spec, nics=(replace(spec.nics[1], model="rtl8139"),))
    with pytest.raises(BackendError, match="rtl8139"):
        nic_argv(odd, NETS)


@pytest.mark.parametrize("machines", [1, 2, 4])
def test_create_lab_calls_per_topology(vbox, emulator, machines):  # noqa: F811
    lab_id = new_lab_id()
    res = lab_resources(machines, lab_id, cdrom=ISO.parent / "missing.iso")
    with pytest.raises(BackendError, match="VERR_FILE_NOT_FOUND"):
        vbox.create_lab(res)  # the ISO does not exist: the emulator refuses like VBoxManage
    assert emulator.leftovers(lab_id) == []  # the failed create removed what it made
    res = lab_resources(machines, lab_id)
    before = len(emulator.calls())
    lab = vbox.create_lab(res)
    calls = emulator.calls()[before:]
    base = emulator.state_dir / "labs" / lab_id / "vbox"
    nets = {n: ("intnet", f"stx-t-{lab_id}-{n}") for n in ("oam", "mgmt", "data0", "data1")}
    expected = []
    for spec in res.machines:
        name = f"stx-t-{lab_id}-{spec.name}"
        disks = [base / name / f"{name}-disk{i}.vdi" for i in range(len(spec.disks))]
        expected += [
            createvm_argv(name, base),
            modifyvm_argv(name, spec, nets, lab.socket_path(spec.name), 3000),
            *storage_argvs(name, spec, disks),
            *oem_argvs(name, spec.oem_strings),
        ]
        owner = [c for c in calls if c[:3] == ["setextradata", name, "pytest-starlingx/owner"]]
        assert len(owner) == 1 and f'"lab-id": "{lab_id}"' in owner[0][3]
    lookups = ("--version", "list", "getextradata", "showvminfo")
    made = [c for c in calls if c[0] not in lookups and "pytest-starlingx/owner" not in c]
    assert made == expected
    lab.destroy()
    assert emulator.leftovers(lab_id) == []


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_missing_vboxmanage_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("STX_VBOXMANAGE", raising=False)
    with pytest.raises(BackendError, match=r"install VirtualBox 7\.0 .* or put VBoxManage on PATH"):
        make_backend("virtualbox")


def test_make_backend_finds_vboxmanage_on_path(monkeypatch, emulator):  # noqa: F811
    monkeypatch.setenv("PATH", f"{EMULATOR_DIR}:{Path('/usr/bin')}:{Path('/bin')}")
    monkeypatch.setenv("VBOX_EMULATOR_HOME", str(emulator.home))
    monkeypatch.setenv("STX_STATE_DIR", str(emulator.state_dir))
    backend = make_backend("virtualbox")
    assert backend.lab_ids() == []


def test_errors_name_command_machine_exit_code_and_hint(vbox, vbox_lab_factory):  # noqa: F811
    lab = vbox_lab_factory(lab_resources(1, new_lab_id()))
    lab.power_on("node-0")
    try:
        with pytest.raises(BackendError) as err:
            lab.set_boot_order("node-0", [BootDevice.NETWORK])
        message = str(err.value)
        assert "VBoxManage modifyvm" in message and "machine node-0" in message
        assert "exit code 1" in message and "already locked for a session" in message
        assert "power it off" in message
    finally:
        lab.power_off("node-0")


@pytest.mark.fast  # the argv builders alone; the others run the emulator
def test_a_nat_network_gateway_must_be_where_the_nat_engine_answers():
    assert nat_gateway_problems([NetworkSpec("oam", nat=True, gateway="10.10.10.1/24")]) == []
    assert nat_gateway_problems([NetworkSpec("mgmt"), NetworkSpec("oam")]) == []
    assert nat_gateway_problems([NetworkSpec("oam", nat=True, gateway="10.10.10.254/24")]) == [
        "network oam: gateway 10.10.10.254 is not 10.10.10.1, where VirtualBox's NAT engine "
        "answers on a NAT network; put the gateway there or make the network isolated"
    ]
