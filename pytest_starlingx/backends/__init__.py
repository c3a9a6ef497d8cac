"""Hypervisor backends behind one interface (``base.Backend``)."""

from __future__ import annotations

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import BackendError


def make_backend(name: str, libvirt_uri: str | None = None) -> Backend:
    """The backend called ``name`` (libvirt or virtualbox), connected."""
    if name == "libvirt":
        from pytest_starlingx.backends.libvirt import DEFAULT_URI, LibvirtBackend, LibvirtConfig
        from pytest_starlingx.labstate import state_dir

        return LibvirtBackend(LibvirtConfig(uri=libvirt_uri or DEFAULT_URI, state_dir=state_dir()))
    raise BackendError(f"the {name} backend is not available yet; use --stx-backend=libvirt")
