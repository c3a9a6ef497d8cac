"""Helpers of the end-to-end tests: lab descriptions and failed bring-ups."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.errors import StageError
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.acquire import Lifecycle, Policy
from pytest_starlingx.model import DEFAULT_RELEASE, LabSpec

SLACK = 15.0  # seconds past a stage's timeout within which its error must come


def spec(
    name: str, topology: str = "simplex", release: str = DEFAULT_RELEASE, **timeouts: float
) -> LabSpec:
    """A lab of ``topology`` and ``release`` named ``name`` with some phase timeouts shortened."""
    return lab_from_mapping(
        {"name": name, "topology": topology, "release": release, "timeouts": timeouts}
    )


def failed_bring_up(lab) -> tuple[str, float]:
    """The error message of a bring-up that must fail, and how long it took."""
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        lab.provision()
    return str(info.value), time.monotonic() - started


def bring_up_and_check_every_host(
    topology: str,
    personalities: dict[str, int],
    lab_name: str,
    artifacts: Path,
    knobs: Mapping[str, Mapping[str, object]] | None = None,
    settings: Mapping[str, object] | None = None,
) -> None:
    """Bring a lab up from blank VMs and check every host is available, as StarlingX names it.
    ``settings``: more keys of the lab description (workers, firmware, ...)."""
    lab_spec = lab_from_mapping({"name": lab_name, "topology": topology, **(settings or {})})
    backend = make_backend("libvirt")
    lifecycle = Lifecycle(Policy())
    try:
        with lifecycle.acquire(lab_spec, backend, artifacts, knobs=knobs) as lab:
            hosts = lab.host_list()
            counts: dict[str, int] = {}
            for host in hosts:
                counts[host.personality] = counts.get(host.personality, 0) + 1
            assert counts == personalities
            assert {h.hostname for h in hosts} == {n.name for n in lab_spec.nodes}
            assert all(
                (h.administrative, h.operational, h.availability)
                == ("unlocked", "enabled", "available")
                for h in hosts
            )
            last = lab_spec.nodes[-1].name
            assert lab.node(last).run("hostname", check=True).stdout == last
    finally:
        lifecycle.close()
        backend.close()


EXAMPLES = Path(__file__).parent.parent.parent / "conftest_examples"


def run_examples(pytester: pytest.Pytester, lab_file: Path, *args: str) -> pytest.RunResult:
    """``pytest`` on example suites in a subprocess, its labs based on ``lab_file``."""
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", f"--stx-artifacts={pytester.path / 'artifacts'}",
        f"--stx-config={lab_file}", *args,
    )  # fmt: skip


class Examples:
    """``pytest`` on example suites in a subprocess started now, its labs based on ``lab_file``
    and its artifacts under ``artifacts/<label>``: several can run at once (pytester's own
    runs share one output file)."""

    def __init__(self, pytester: pytest.Pytester, lab_file: Path, label: str, *args: str):
        self.artifacts = pytester.path / "artifacts" / label
        self.output = pytester.path / f"{label}.out"
        with self.output.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
                 f"--stx-artifacts={self.artifacts}", f"--stx-config={lab_file}", *args],
                cwd=pytester.path, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started = time.monotonic()

    def result(self, timeout: float) -> pytest.RunResult:
        """The run's result once it has ended (it is stopped after ``timeout`` seconds)."""
        try:
            ret = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # the plugin tears its labs down on SIGTERM
            self.proc.wait(300)
            raise
        lines = self.output.read_text(errors="replace").splitlines()
        return pytest.RunResult(ret, lines, [], time.monotonic() - self.started)
