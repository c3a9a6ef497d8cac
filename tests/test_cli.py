"""``stx-lab`` as users run it: a subprocess, its exit status and its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

EXAMPLES = Path(__file__).parent.parent / "examples"


def stx_lab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``stx-lab`` with the interpreter under test."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_starlingx.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_validate_accepts_the_shipped_examples(fake_iso, monkeypatch):
    import os

    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    assert len(files) == 5
    done = stx_lab("validate", *files, env={**os.environ, "STX_ISO": str(fake_iso)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok (") == 5
    assert "storage lab 'lab1', 6 nodes" in done.stdout


def test_validate_rejects_bad_files_with_exit_2_and_every_message(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("topology: simplex\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("topology: standard\nworkers: 99\nnodes:\n  worker-7: {}\n")
    done = stx_lab("validate", str(good), str(bad))
    assert done.returncode == 2
    assert f"{good}: ok (simplex lab 'simplex', 1 node)" in done.stdout
    assert done.stderr.splitlines() == [
        f"{bad}:2: workers: must be from 1 to 20, got 99",
        f"{bad}:4: nodes.worker-7: no such node in this standard lab (it has controller-0, "
        "controller-1, worker-0, worker-1) (did you mean 'worker-1'?)",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"topology: [\n", "the file is not valid YAML"),
        (b"\xff\xfe garbage", "cannot read the lab description"),
        (b"just a string\n", "must be a mapping of keys"),
    ],
)
def test_validate_never_shows_a_traceback(tmp_path, content, message):
    lab = tmp_path / "lab.yaml"
    lab.write_bytes(content)
    done = stx_lab("validate", str(lab))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_validate_missing_file():
    done = stx_lab("validate", "/nonexistent/lab.yaml")
    assert done.returncode == 2
    assert "/nonexistent/lab.yaml: cannot read the lab description" in done.stderr


def test_show_a_topology_lists_every_node_with_size_and_nics():
    done = stx_lab("show", "standard")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line}
    assert rows["controller-0"][1:5] == ["controller", "512", "1", "20G"]
    assert rows["controller-0"][7] == "ISO"
    assert rows["worker-1"][1] == "worker"
    assert rows["worker-1"][7] == "network"
    assert "mgmt:e1000 (boot)" in done.stdout
    assert "topology  standard (system_mode duplex)" in done.stdout
    assert "release   StarlingX 10.0 (24.09)" in done.stdout


def test_show_a_file_applies_its_overrides():
    done = stx_lab("show", str(EXAMPLES / "storage.yaml"))
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line}
    assert rows["controller-0"][2] == "768"
    assert rows["storage-1"][1] == "storage"
    assert rows["lab"] == ["lab", "lab1"]


def test_show_rejects_what_is_neither_file_nor_topology():
    done = stx_lab("show", "simplx")
    assert done.returncode == 2
    assert "simplx: neither a lab file nor a topology (simplex, duplex, standard, storage)" in (
        done.stderr
    )


def test_usage_errors_exit_2():
    done = stx_lab("frobnicate")
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr


def test_console_names_what_it_cannot_find(tmp_path):
    import os

    done = subprocess.run(
        [sys.executable, "-m", "pytest_starlingx.cli", "console", "nolab", "controller-0"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "STX_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 1
    assert "'nolab' must name exactly one lab (matches: none)" in done.stderr


def test_validate_rejects_a_custom_stage_at_a_point_the_topology_lacks(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        "topology: duplex\nstages:\n  - {name: x, after: controller-1:bootstrap, shell: [id]}\n"
    )
    done = stx_lab("validate", str(lab))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{lab}:3: stages[0].after: 'controller-1:bootstrap' is not a pipeline point of a "
        "duplex lab (nodes controller-0, controller-1) to go after; use one of bootstrapped, "
        "controller-0-configured, controller-0-unlocked, available, controller-0:install, "
        "controller-0:first-login, controller-0:bootstrap, controller-0:configure, "
        "controller-0:unlock, controller-0:add-hosts, controller-1:power-on, "
        "controller-1:install, controller-1:configure, controller-1:unlock"
    ]


def test_image_cache_clear_names_the_libvirt_host_it_cannot_reach():
    done = stx_lab("image-cache", "clear", "--uri", "qemu+unix:///system?socket=/nonexistent/s")
    assert done.returncode == 1
    assert "stx-lab image-cache: error: connecting to libvirt at qemu+unix:" in done.stderr
