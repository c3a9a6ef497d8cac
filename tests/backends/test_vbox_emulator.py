"""The VBoxManage emulator rejects what VBoxManage 7.0 rejects, with VBoxManage's words."""

from __future__ import annotations

import pytest
from vbox_helpers import emulator  # noqa: F401


@pytest.fixture(scope="module")
def vm(emulator):  # noqa: F811
    """A registered VM ``t1`` with a SATA controller and one disk; ``running`` is started."""
    base = emulator.home.parent / "vms"
    for argv in (
        ["createvm", "--name", "t1", "--basefolder", str(base), "--ostype", "Linux_64",
         "--register"],
        ["storagectl", "t1", "--name", "SATA", "--add", "sata", "--controller", "IntelAhci",
         "--portcount", "2"],
        ["createmedium", "disk", "--filename", f"{base}/t1/d0.vdi", "--size", "64"],
        ["storageattach", "t1", "--storagectl", "SATA", "--port", "0", "--device", "0",
         "--type", "hdd", "--medium", f"{base}/t1/d0.vdi"],
        ["createvm", "--name", "running", "--basefolder", str(base), "--register"],
        ["modifyvm", "running", "--memory", "64", "--nic1", "null"],
        ["startvm", "running", "--type", "headless"],
    ):  # fmt: skip
        result = emulator(*argv)
        assert result.returncode == 0, (argv, result.stderr)
    yield base
    for argv in (["controlvm", "running", "poweroff"], ["unregistervm", "running", "--delete"],
                 ["unregistervm", "t1", "--delete"]):  # fmt: skip
        emulator(*argv)
    assert emulator.registry()["vms"] == {}


CASES = [
    (["modifyvm", "t1", "--frobnicate", "on"], 2, "Unknown option: --frobnicate"),
    (["modifyvm", "t1", "--nic9", "intnet"], 2, "Unknown option: --nic9"),
    (["modifyvm", "t1", "--memory"], 2, "requires a value"),
    (["modifyvm", "nosuchvm", "--memory", "64"], 1,
     "Could not find a registered machine named 'nosuchvm'"),
    (["modifyvm", "running", "--memory", "128"], 1,
     "The machine 'running' is already locked for a session (or being unlocked)"),
    (["modifyvm", "t1", "--memory", "2"], 1, "Invalid RAM size: 2 MB"),
    (["modifyvm", "t1", "--memory", "lots"], 2, "Invalid number for --memory"),
    (["modifyvm", "t1", "--cpus", "0"], 1, "Invalid virtual CPU count: 0"),
    (["modifyvm", "t1", "--nic-type1", "e1000"], 1, "Invalid NIC type 'e1000' specified for NIC 1"),
    (["modifyvm", "t1", "--nic1", "ethernet"], 1, "Invalid type 'ethernet' specfied for NIC 1"),
    (["modifyvm", "t1", "--boot1", "cdrom"], 1, "Invalid boot device 'cdrom'"),
    (["modifyvm", "t1", "--uart-mode2", "server", "/tmp/x"], 1, "UART 2 is disabled"),
    (["createvm", "--name", "t1", "--basefolder", "{base}", "--register"], 1,
     "Machine settings file '{base}/t1/t1.vbox' already exists"),
    (["createvm", "--name", "x", "--ostype", "Windows11_64", "--register"], 1,
     "Guest OS type 'Windows11_64' is invalid"),
    (["createmedium", "disk", "--filename", "{base}/t1/d1.vdi", "--size", "0"], 1,
     "Invalid size '0'"),
    (["createmedium", "disk", "--filename", "{base}/t1/d1.vdi", "--size", "10G"], 1,
     "Invalid size '10G'"),
    (["createmedium", "disk", "--filename", "{base}/t1/d0.vdi", "--size", "64"], 1,
     "VERR_ALREADY_EXISTS"),
    (["createmedium", "disk", "--filename", "{base}/nodir/d.vdi", "--size", "64"], 1,
     "VERR_PATH_NOT_FOUND"),
    (["createmedium", "disk", "--filename", "{base}/t1/d2.vdi", "--size", "64", "--format",
      "QCOW"], 1, "Invalid format 'QCOW'"),
    (["storagectl", "t1", "--name", "SATA", "--add", "sata"], 1,
     "Storage controller named 'SATA' already exists"),
    (["storagectl", "t1", "--name", "S2", "--add", "sata", "--controller", "PIIX4"], 1,
     "Invalid --type argument 'PIIX4'"),
    (["storageattach", "t1", "--storagectl", "IDE", "--port", "0", "--device", "0", "--type",
      "hdd", "--medium", "{base}/t1/d0.vdi"], 1, "Could not find a controller named 'IDE'"),
    (["storageattach", "t1", "--storagectl", "SATA", "--port", "5", "--device", "0", "--type",
      "hdd", "--medium", "{base}/t1/d0.vdi"], 1, "port=5 (must be in range [0, 1])"),
    (["storageattach", "t1", "--storagectl", "SATA", "--port", "1", "--device", "0", "--type",
      "dvddrive", "--medium", "/nonexistent.iso"], 1, "VERR_FILE_NOT_FOUND"),
    (["startvm", "running", "--type", "headless"], 1, "is already locked by a session"),
    (["startvm", "t1", "--type", "fullscreen"], 1, "Invalid session type 'fullscreen'"),
    (["controlvm", "t1", "pause"], 1, "Machine 't1' is not currently running"),
    (["controlvm", "running", "resume"], 1, "Cannot resume the machine as it is not paused"),
    (["controlvm", "running", "explode"], 2, "Invalid parameter 'explode'"),
    (["snapshot", "t1", "restore", "nosuch"], 1, "Could not find a snapshot named 'nosuch'"),
    (["unregistervm", "running", "--delete"], 1,
     "Cannot unregister the machine 'running' while it is locked"),
    (["closemedium", "disk", "{base}/t1/d0.vdi", "--delete"], 1, "because it has 1 references"),
    (["closemedium", "disk", "/nonexistent.vdi"], 1, "VERR_FILE_NOT_FOUND"),
    (["getextradata", "nosuchvm", "k"], 1, "Could not find a registered machine named"),
    (["frobvm", "t1"], 2, "Invalid command 'frobvm'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "message"), CASES, ids=[" ".join(c[0][:3]) for c in CASES]
)
def test_invalid_call_is_rejected(emulator, vm, argv, code, message):  # noqa: F811
    before = emulator.registry()
    result = emulator(*[a.replace("{base}", str(vm)) for a in argv])
    assert result.returncode == code, result.stderr
    assert "VBoxManage: error: " in result.stderr
    assert message.replace("{base}", str(vm)) in result.stderr
    after = emulator.registry()
    assert after["vms"] == before["vms"] and after["media"] == before["media"]  # nothing changed


def test_extradata_and_snapshots_of_a_powered_off_vm(emulator, vm):  # noqa: F811
    assert emulator("getextradata", "t1", "k").stdout.strip() == "No value set!"
    assert emulator("setextradata", "t1", "k", "v 1").returncode == 0
    assert emulator("getextradata", "t1", "k").stdout.strip() == "Value: v 1"
    assert emulator("setextradata", "t1", "k").returncode == 0  # no value: removed
    assert emulator("getextradata", "t1", "k").stdout.strip() == "No value set!"
    assert emulator("snapshot", "t1", "take", "s1", "--description", "d").returncode == 0
    listing = emulator("snapshot", "t1", "list", "--machinereadable").stdout
    assert 'SnapshotName="s1"' in listing and 'SnapshotDescription="d"' in listing
    assert emulator("snapshot", "t1", "restore", "s1").returncode == 0
    assert emulator("snapshot", "t1", "delete", "s1").returncode == 0
    assert "does not have any snapshots" in emulator("snapshot", "t1", "list").stdout
