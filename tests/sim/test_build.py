"""``stx-lab sim build``: input hash, cache, reproducibility, host checks (real builds)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from pytest_starlingx.cli import main
from pytest_starlingx.errors import HostError
from pytest_starlingx.sim import build


@pytest.fixture
def sim_copy(tmp_path: Path) -> Path:
    """A copy of the simulator's sources, free to change."""
    src = tmp_path / "sim"
    shutil.copytree(build.SIM_DIR, src, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return src


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One cold build into a private cache: (cache dir, ISO)."""
    cache = tmp_path_factory.mktemp("cache")
    return cache, build.build(cache_dir=cache)


def test_input_key_is_deterministic(sim_copy: Path) -> None:
    assert build.input_key(sim_copy) == build.input_key(sim_copy) == build.input_key()


def test_input_key_covers_contents_and_modes(sim_copy: Path) -> None:
    before = build.input_key(sim_copy)
    hostname_file = sim_copy / "rootfs" / "etc" / "hostname"
    hostname_file.write_text("localhost\n\n")
    changed = build.input_key(sim_copy)
    assert changed != before
    hostname_file.chmod(0o755)
    assert build.input_key(sim_copy) != changed


def test_warm_build_is_a_cache_hit(built: tuple[Path, Path], tmp_path: Path) -> None:
    cache, iso = built
    start = time.monotonic()
    again = build.build(out=tmp_path / "out", cache_dir=cache)
    assert time.monotonic() - start < 1.0
    assert again == tmp_path / "out" / build.ISO_NAME
    assert again.read_bytes() == iso.read_bytes()
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [iso.parent.name]


def test_build_is_reproducible(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, iso = built
    other = build.build(cache_dir=tmp_path / "cache")
    assert other.read_bytes() == iso.read_bytes()


def test_changed_input_rebuilds(built: tuple[Path, Path], sim_copy: Path) -> None:
    cache, iso = built
    (sim_copy / "rootfs" / "etc" / "hostname").write_text("changed\n")
    rebuilt = build.build(cache_dir=cache, src=sim_copy)
    assert rebuilt.parent != iso.parent
    assert rebuilt.read_bytes() != iso.read_bytes()
    assert iso.is_file()  # the old entry stays valid for its own inputs


def test_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(build.HOST_TOOLS, "/nonexistent/grub-mkrescue", "grub-common")
    with pytest.raises(HostError, match=r"apt-get install grub-common.*stx-lab host-setup"):
        build.check_host()


def test_cli_sim_build_out(built: tuple[Path, Path], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    cache, iso = built
    monkeypatch.setenv("STX_SIM_CACHE", str(cache))
    assert main(["sim", "build", "--out", str(tmp_path)]) == 0
    assert (tmp_path / build.ISO_NAME).read_bytes() == iso.read_bytes()


def test_old_cache_entries_are_pruned(tmp_path: Path) -> None:
    for age, name in enumerate(["e4", "e3", "e2", "e1", "e0"]):
        (tmp_path / name).mkdir()
        mtime = 1_700_000_000 - age * 60
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / ".lock").touch()
    build._prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "e2", "e3", "e4"]


def test_a_release_the_simulator_does_not_have_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no StarlingX 8\.0; it simulates 9\.0, 10\.0, 11\.0"):
        build.build(cache_dir=tmp_path, release="8.0")
