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
