"""Labs of a pytest session: built lazily, once per distinct request, torn down at the end."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_starlingx.backends import make_backend
from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import BackendError, StxError
from pytest_starlingx.host.capacity import GUEST_OVERHEAD_MIB, mem_available_mib
from pytest_starlingx.lab import Lab
from pytest_starlingx.lifecycle.acquire import LabBroken
from pytest_starlingx.model import LabSpec
from pytest_starlingx.plugin.options import Settings
from pytest_starlingx.plugin.requests import LabRequest
from pytest_starlingx.plugin.sessionlabs import SessionLabs

log = logging.getLogger("pytest_starlingx.plugin")


class LabFactory:
    """Hands out labs by request; remembers a failed bring-up and fails fast after it."""

    def __init__(
        self,
        settings: Settings,
        artifacts: Path,
        worker: str | None = None,
        shared_root: Path | None = None,
    ) -> None:
        self.settings = settings
        self.artifacts = artifacts
        #: gc before the first lab, leases, signals, reuse, xdist sharing (sessionlabs.py)
        self.session_labs = SessionLabs(settings, worker, shared_root)
        self.labs: dict[LabRequest, Lab] = {}
        self._stack = ExitStack()
        self._backend: Backend | None = None

    def spec(self, request: LabRequest) -> LabSpec:
        """The lab description a request resolves to."""
        return request.spec(self.settings.base, self.settings.base_source)

    def backend(self) -> Backend:
        """The session's backend, connected on first use."""
        if self._backend is None:
            self._backend = make_backend(self.settings.backend.value, self.settings.libvirt_uri)
        return self._backend

    def get(self, request: LabRequest) -> Lab:
        """The lab for ``request``: built on first use, shared afterwards."""
        if request not in self.labs:
            self.labs[request] = self._build(request, self._stack)
        return self.labs[request]

    def build_private(self, request: LabRequest, stack: ExitStack) -> Lab:
        """A lab for one test only, torn down by ``stack``."""
        return self._build(request, stack)

    def _build(self, request: LabRequest, stack: ExitStack) -> Lab:
        spec = self.spec(request)
        spec = _scaled(spec, self.settings.timeout_factor)
        shortfall = memory_shortfall(spec)
        if shortfall:
            pytest.skip(shortfall)
        try:
            backend = self.backend()
        except BackendError as exc:
            pytest.skip(f"the {self.settings.backend.value} backend is not usable here: {exc}")
        private = request.private_to is not None
        suffix = self.session_labs.artifacts_suffix(private)
        artifacts = claim_dir(self.artifacts, spec.name, suffix, start=len(self.labs) + 1)
        try:
            return self.session_labs.get(spec, backend, artifacts, stack, private=private)
        except LabBroken as exc:
            raise pytest.fail.Exception(str(exc), pytrace=False) from None
        except StxError as exc:  # its first line names the lab, node and stage: the summary's
            raise pytest.fail.Exception(f"lab bring-up failed: {exc}", pytrace=False) from None

    def close(self) -> None:
        """Tear every session lab down (kept ones stay), newest first.

        A signal during the teardown is announced; a second one stops it (``stx-lab gc``).
        """
        try:
            with self.session_labs.signals.teardown():
                self._stack.close()
        finally:
            self.session_labs.close()


def memory_shortfall(spec: LabSpec) -> str | None:
    """Why this host cannot hold the lab's guests in memory, or None when it can (or when the
    kernel does not say how much memory is available). A lab with ``hosts:`` is placed on
    them by what each has free when it is brought up (``placement.py``), not checked here."""
    if spec.hosts:
        return None
    needed = spec.memory_mib + GUEST_OVERHEAD_MIB * len(spec.nodes)
    available = mem_available_mib()
    if available is None or needed <= available:
        return None
    return (
        f"the {spec.topology.value} lab {spec.name!r} needs {needed} MiB for its "
        f"{len(spec.nodes)} nodes, this host has {available} MiB available"
    )


def _scaled(spec: LabSpec, factor: float) -> LabSpec:
    return replace(spec, timeout_factor=spec.timeout_factor * factor)


def claim_dir(parent: Path, stem: str, suffix: str, start: int) -> Path:
    """The first new directory ``<parent>/<stem>-<n><suffix>`` from ``n = start``, created.

    Two sessions given the same ``--stx-artifacts`` directory get directories of their own, so
    their console transcripts (appended to) never interleave.
    """
    parent.mkdir(parents=True, exist_ok=True)
    n = start
    while True:
        path = parent / f"{stem}-{n}{suffix}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
