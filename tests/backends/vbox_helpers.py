"""Fixtures and helpers for the VirtualBox backend tests, run against the VBoxManage emulator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_starlingx.backends.virtualbox import VirtualBoxBackend, VirtualBoxConfig

EMULATOR_DIR = Path(__file__).parent / "vbox_emulator"
EMULATOR = EMULATOR_DIR / "VBoxManage"


@dataclass
class Emulator:
    """One emulator registry (``VBOX_EMULATOR_HOME``) and a state dir for the backend."""

    home: Path
    state_dir: Path

    def __call__(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run the emulator."""
        env = {**os.environ, "VBOX_EMULATOR_HOME": str(self.home)}
        return subprocess.run(
            [str(EMULATOR), *argv], capture_output=True, text=True, env=env, check=False
        )

    def registry(self) -> dict[str, Any]:
        """The registry file's content."""
        path = self.home / "registry.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def calls(self) -> list[list[str]]:
        """Every successful call so far, in order."""
        path = self.home / "calls.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [entry["argv"] for entry in map(json.loads, lines) if entry["rc"] == 0]

    def leftovers(self, lab_id: str) -> list[str]:
        """VMs, hard disks, internal networks and switches of ``lab_id`` still known."""
        reg = self.registry()
        found = [f"VM {vm['name']}" for vm in reg.get("vms", {}).values() if lab_id in vm["name"]]
        found += [f"medium {p}" for p in reg.get("media", {}) if lab_id in p]
        found += [f"switch {k}" for k in reg.get("switches", {}) if lab_id in k]
        intnets = self("list", "intnets").stdout
        found += [f"intnet {line}" for line in intnets.splitlines() if lab_id in line]
        return found

    def kill_everything(self) -> list[str]:
        """Kill QEMU and vde_switch processes still in the registry; what was killed."""
        reg = self.registry()
        pids = [vm["pid"] for vm in reg.get("vms", {}).values() if vm.get("pid")]
        pids += list(reg.get("switches", {}).values())
        killed = []
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline or b"vde_switch" in cmdline:
                os.kill(pid, signal.SIGKILL)
                killed.append(cmdline.replace(b"\0", b" ").decode()[:80])
        return killed


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """A fresh emulator registry; at the end, nothing of it may still run."""
    if not shutil.which("vde_switch") or not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs vde_switch (vde2) and qemu-system-x86_64 (stx-lab host-setup)")
    root = Path(tempfile.mkdtemp(prefix="vbe-", dir="/tmp"))  # short: unix socket paths
    emu = Emulator(home=root / "h", state_dir=root / "s")
    emu.state_dir.mkdir()
    yield emu
    killed = emu.kill_everything()
    shutil.rmtree(root, ignore_errors=True)
    assert not killed, f"processes left running by the tests: {killed}"


@pytest.fixture(scope="module")
def vbox(emulator: Emulator, monkeypatch_module: pytest.MonkeyPatch) -> VirtualBoxBackend:
    """The VirtualBox backend driving the emulator."""
    monkeypatch_module.setenv("VBOX_EMULATOR_HOME", str(emulator.home))
    return VirtualBoxBackend(
        VirtualBoxConfig(state_dir=emulator.state_dir, vboxmanage=str(EMULATOR))
    )


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """A module-scoped monkeypatch."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture
def vbox_lab_factory(vbox: VirtualBoxBackend) -> Iterator:
    """Create labs; every lab created is destroyed at the end of the test."""
    created = []

    def make(resources):
        created.append(resources.lab_id)
        return vbox.create_lab(resources)

    yield make
    for lab_id in created:
        vbox.destroy_lab(lab_id)


@pytest.fixture
def vbox_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator first on PATH as ``VBoxManage``, state in the emulator's directories."""
    monkeypatch.setenv("PATH", f"{EMULATOR_DIR}:{os.environ['PATH']}")
    monkeypatch.setenv("VBOX_EMULATOR_HOME", str(emulator.home))
    monkeypatch.setenv("STX_STATE_DIR", str(emulator.state_dir))
    return emulator


def run_example_suite(emu: Emulator, pytester: pytest.Pytester, suite: str, passed: int) -> None:
    """``pytest conftest_examples/<suite> --stx-backend=virtualbox``; then nothing is left."""
    examples = Path(__file__).parent.parent.parent / "conftest_examples" / suite
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", "--stx-backend=virtualbox",
        f"--stx-artifacts={pytester.path / 'artifacts'}", str(examples),
    )  # fmt: skip
    result.assert_outcomes(passed=passed)
    assert "StarlingX labs" in result.stdout.str()
    assert emu.registry().get("vms", {}) == {}
