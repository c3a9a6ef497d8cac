"""Command-line and ini options of the plugin, in one group named ``starlingx``.

Every option but the two flags has an ini twin (``stx_backend = virtualbox`` in pytest.ini);
the command line wins. :func:`settings_from_config` checks them all once, at startup, and
turns a bad value into a usage error that says what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.labfile import lab_from_mapping, load_lab
from pytest_starlingx.model import SIM_IMAGE, BackendKind
from pytest_starlingx.settings import DEFAULT_LIBVIRT_URI

# (option, metavar, help); each has an ini twin named like its dest, e.g. stx_backend
_VALUED = (
    ("backend", "libvirt|virtualbox", "hypervisor for the labs (default: libvirt)"),
    ("config", "FILE", "lab description (YAML) that topology fixtures use as their base"),
    ("image", "sim|PATH.iso", "what labs install: the built-in simulator or a StarlingX ISO"),
    ("libvirt-uri", "URI", f"libvirt connection URI (default: {DEFAULT_LIBVIRT_URI})"),
    ("artifacts", "DIR", "where transcripts, logs and stage timings go (default: under "
                         "pytest's basetemp)"),
    ("timeout-factor", "F", "multiply every stage timeout by F (e.g. 3 on a slow host)"),
)  # fmt: skip
_FLAGS = (
    ("keep", "leave labs up after the session and print how to reach and remove them"),
    ("reuse", "use a matching lab that is already up and provisioned instead of building one"),
    ("golden", "restore labs from their golden snapshots (built and kept on first use)"),
    ("stage-snapshots", "snapshot labs after each bring-up stage (resume, jump back)"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``starlingx`` option group and the ini twins."""
    group = parser.getgroup("starlingx", "StarlingX labs (pytest-starlingx)")
    for name, metavar, text in _VALUED:
        dest = f"stx_{name.replace('-', '_')}"
        group.addoption(f"--stx-{name}", dest=dest, metavar=metavar, default=None, help=text)
        parser.addini(dest, text)
    for name, text in _FLAGS:
        dest = f"stx_{name.replace('-', '_')}"
        group.addoption(f"--stx-{name}", dest=dest, action="store_true", help=text)


@dataclass(frozen=True)
class Settings:
    """The plugin's options, checked: what every lab of the session is built with."""

    backend: BackendKind
    base: dict[str, Any]  # the --stx-config file's mapping ({} without one)
    base_source: str
    libvirt_uri: str
    artifacts: Path | None
    timeout_factor: float
    keep: bool
    reuse: bool
    golden: bool = False
    stage_snapshots: bool = False


def _value(config: pytest.Config, name: str) -> str | None:
    dest = f"stx_{name.replace('-', '_')}"
    given = config.getoption(dest)
    return given if given is not None else (config.getini(dest) or None)


def settings_from_config(config: pytest.Config) -> Settings:
    """Check every option; a bad one is a ``pytest.UsageError`` naming it and what is allowed."""
    base, source = _base(_value(config, "config"))
    backend = _value(config, "backend") or base.get("backend") or BackendKind.LIBVIRT.value
    if backend not in {b.value for b in BackendKind}:
        raise pytest.UsageError(
            f"--stx-backend: {backend!r} is not a backend; use libvirt or virtualbox"
        )
    image = _value(config, "image")
    if image is not None:
        _check_image(image)
        base = {**base, "image": image}
    factor_text = _value(config, "timeout-factor") or "1"
    try:
        factor = float(factor_text)
    except ValueError:
        factor = 0.0
    if not 0 < factor <= 100:
        raise pytest.UsageError(
            f"--stx-timeout-factor: {factor_text!r} is not allowed; give a number above 0 "
            "and at most 100"
        )
    artifacts = _value(config, "artifacts")
    return Settings(
        backend=BackendKind(backend),
        base=base,
        base_source=source,
        libvirt_uri=_value(config, "libvirt-uri") or DEFAULT_LIBVIRT_URI,
        artifacts=Path(artifacts).resolve() if artifacts else None,
        timeout_factor=factor,
        keep=bool(config.getoption("stx_keep")),
        reuse=bool(config.getoption("stx_reuse")),
        golden=bool(config.getoption("stx_golden")),
        stage_snapshots=bool(config.getoption("stx_stage_snapshots")),
    )


def _base(path: str | None) -> tuple[dict[str, Any], str]:
    """The lab file's mapping, validated as a whole; ``({}, "<defaults>")`` without one."""
    if path is None:
        return {}, "<defaults>"
    try:
        lab = load_lab(path)
    except LabConfigError as exc:
        raise pytest.UsageError(f"--stx-config: the lab description is invalid:\n{exc}") from None
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if lab.image != SIM_IMAGE:
        data["image"] = lab.image  # resolved against the file's directory
    return data, path


def _check_image(image: str) -> None:
    if image == SIM_IMAGE:
        return
    try:
        lab_from_mapping({"topology": "simplex", "image": image}, source="--stx-image")
    except LabConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
