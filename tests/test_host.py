"""``stx-lab doctor`` and ``stx-lab host-setup`` on this very machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def stx_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_starlingx.cli", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_doctor_gives_a_true_picture_of_this_host():
    done = stx_lab("doctor")
    lines = {line.split("]", 1)[1].split(":", 1)[0].strip(): line
             for line in done.stdout.splitlines()}  # fmt: skip
    assert set(lines) == {"qemu", "libvirt", "acceleration", "disk", "memory",
                          "simulator build", "uplink", "virtualbox"}  # fmt: skip
    assert lines["uplink"].startswith("[ ok ] uplink: slirp4netns, nft")
    assert lines["qemu"].startswith("[ ok ] qemu: QEMU emulator version")
    assert lines["libvirt"].startswith("[ ok ] libvirt: qemu:///system: libvirt ")
    if _kvm_works():
        assert lines["acceleration"].startswith("[ ok ] acceleration: KVM works")
    else:
        assert lines["acceleration"].startswith("[info] acceleration: KVM unusable (")
        assert "software emulation (TCG)" in lines["acceleration"]
    assert lines["simulator build"].startswith("[ ok ]")
    assert lines["virtualbox"].startswith("[info] virtualbox: VBoxManage not on PATH")
    failed = [line for line in lines.values() if line.startswith("[FAIL]")]
    assert done.returncode == (1 if failed else 0), done.stdout


def _kvm_works() -> bool:
    from pytest_starlingx.backends.libvirt import DomainType, LibvirtBackend, LibvirtConfig
    from pytest_starlingx.lifecycle.state import state_dir

    backend = LibvirtBackend(LibvirtConfig(state_dir=state_dir()))
    try:
        return backend.domain_type() is DomainType.KVM
    finally:
        backend.close()


def test_doctor_reports_an_unreachable_libvirt_with_a_fix():
    done = stx_lab("doctor", "--uri", "qemu:///nosuchdriver")
    assert done.returncode == 1
    (line,) = [ln for ln in done.stdout.splitlines() if "libvirt:" in ln]
    assert line.startswith("[FAIL] libvirt: cannot connect to qemu:///nosuchdriver")
    assert "run `stx-lab host-setup` as root" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="host-setup installs packages and needs root")
def test_host_setup_is_idempotent():
    first = stx_lab("host-setup")
    assert first.returncode == 0, first.stderr
    again = stx_lab("host-setup")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "Debian packages: all installed",
        "virtlogd: already running",
        "libvirtd: already running",
        "libvirt: answering on /run/libvirt/libvirt-sock",
    ]


@pytest.mark.fast
def test_host_setup_installs_openssh_server_without_starting_sshd(tmp_path, monkeypatch):
    """The flag Debian's ssh.service and init script honour exists before apt-get runs."""
    from pytest_starlingx.host import setup

    flag = tmp_path / "ssh" / "sshd_not_to_be_run"
    runs: list[tuple[list[str], bool]] = []
    monkeypatch.setattr(setup, "SSHD_NOT_TO_BE_RUN", flag)
    monkeypatch.setattr(setup, "missing_packages", lambda packages: ["openssh-server"])
    monkeypatch.setattr(setup, "_require_root", lambda what: None)
    monkeypatch.setattr(setup, "_run", lambda argv, env: runs.append((argv, flag.exists())))
    monkeypatch.setattr(setup, "_running", lambda name: True)
    monkeypatch.setattr(setup, "_wait_for_socket", lambda: None)
    lines = list(setup.host_setup())
    assert lines[0] == f"created {flag}: the new openssh-server starts no sshd here"
    assert runs[-1] == (["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                         "openssh-server"], True)  # fmt: skip


@pytest.mark.fast
def test_doctor_names_the_uplink_programs_and_who_needs_them(monkeypatch):
    from pytest_starlingx.host import doctor

    monkeypatch.setattr(doctor.shutil, "which", lambda program: None)
    line = doctor.check_uplink().line()
    assert line.startswith("[info] uplink: slirp4netns, nft not on PATH - needed by labs with")
    assert "`oam.uplink: nat` (a real ISO's default); run `stx-lab host-setup` as root" in line
    monkeypatch.setattr(doctor.shutil, "which", lambda program: f"/usr/bin/{program}")
    assert doctor.check_uplink().line().startswith("[ ok ] uplink: slirp4netns, nft")


def test_doctor_checks_each_host_of_a_multi_host_lab_through_libvirt():
    """Two URIs of this host's libvirtd, and one whose socket is missing: the missing one is a
    single FAIL line, the others a block of checks each, then this machine's build tools."""
    missing = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    done = stx_lab("doctor", "--uri", "qemu:///system", "--uri", "qemu+unix:///system",
                   "--uri", missing)  # fmt: skip
    assert done.returncode == 1, done.stdout
    names = [line.split("]", 1)[1].split(":", 1)[0].strip() for line in done.stdout.splitlines()]
    checks = ("libvirt", "qemu", "kvm", "memory", "disk", "networks", "underlay mtu", "tunnel")
    assert names == [*(f"localhost#1 {c}" for c in checks), *(f"localhost#2 {c}" for c in checks),
                     "localhost#3 libvirt", "simulator build"]  # fmt: skip
    lines = dict(zip(names, done.stdout.splitlines(), strict=True))
    assert lines["localhost#2 libvirt"].startswith("[ ok ] localhost#2 libvirt: "
                                                   "qemu+unix:///system: libvirt ")  # fmt: skip
    assert lines["localhost#1 qemu"].startswith("[ ok ] localhost#1 qemu: /usr/bin/qemu-")
    assert lines["localhost#1 networks"].startswith("[ ok ]")
    assert " MiB free, 2 CPUs (" in lines["localhost#1 memory"]
    assert lines["localhost#1 tunnel"].startswith("[info] localhost#1 tunnel: not checkable")
    assert lines["localhost#3 libvirt"].startswith(
        f"[FAIL] localhost#3 libvirt: cannot connect to {missing}: "
    )
    assert [n for n, line in lines.items() if line.startswith("[FAIL]")] == ["localhost#3 libvirt"]


@pytest.mark.fast
def test_doctor_names_hosts_by_their_uris_host_unless_two_share_it():
    from pytest_starlingx.host.doctor import host_labels

    assert host_labels(["qemu:///system", "qemu+ssh://root@hv2/system"]) == ["localhost", "hv2"]
    assert host_labels(["qemu:///system", "qemu+ssh://hv2/system", "qemu:///session"]) == [
        "localhost#1", "hv2", "localhost#3",
    ]  # fmt: skip


@pytest.mark.fast
def test_doctor_says_whether_an_interface_carries_vxlan_with_a_1500_byte_lab_mtu():
    from pytest_starlingx.host.doctor import mtu_check

    assert mtu_check({"eth0": 1500, "eth1": 9000}).line() == (
        "[ ok ] underlay mtu: eth0 1500, eth1 9000: eth1 carries 1500-byte lab packets in VXLAN"
    )
    short = mtu_check({"eth0": 1500}).line()
    assert short.startswith("[info] underlay mtu: eth0 1500: none reaches 1550, what 1500-byte")
    assert "raise the underlay interface's MTU to 1550 or more" in short
    assert mtu_check({}).ok is None
