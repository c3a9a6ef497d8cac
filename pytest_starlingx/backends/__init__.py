"""Hypervisor backends behind one interface (``base.Backend``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import BackendError
from pytest_starlingx.settings import DEFAULT_LIBVIRT_URI, env_settings

KINDS = ("libvirt", "virtualbox")
LIBVIRT_RUN_DIR = Path("/run/libvirt")  # where the system libvirt daemons put their sockets


def make_backend(name: str, libvirt_uri: str | None = None, root: Path | None = None) -> Backend:
    """The backend called ``name`` (libvirt or virtualbox), connected, for the labs of state
    directory ``root`` (default: ``$STX_STATE_DIR``'s).

    libvirt: the domain type from ``$STX_LIBVIRT_DOMAIN_TYPE`` (``auto``, the default, probes
    KVM; ``kvm`` or ``qemu`` force one). VirtualBox: ``VBoxManage`` from PATH, or the path in
    ``$STX_VBOXMANAGE``.
    """
    knobs = env_settings()
    if name == "libvirt":
        from pytest_starlingx.backends.libvirt import DomainType, LibvirtBackend, LibvirtConfig

        chosen = knobs.domain_type
        if chosen not in set(DomainType):
            raise BackendError(f"STX_LIBVIRT_DOMAIN_TYPE={chosen!r}: use {', '.join(DomainType)}")
        return LibvirtBackend(
            LibvirtConfig(
                uri=libvirt_uri or DEFAULT_LIBVIRT_URI,
                state_dir=root or knobs.state_dir,
                domain_type=DomainType(chosen),
            )
        )
    if name == "virtualbox":
        from pytest_starlingx.backends.virtualbox import VirtualBoxBackend, VirtualBoxConfig

        return VirtualBoxBackend(
            VirtualBoxConfig(state_dir=root or knobs.state_dir, vboxmanage=knobs.vboxmanage)
        )
    raise BackendError(f"unknown backend {name!r}; use {' or '.join(KINDS)}")


def usable_kinds(libvirt_uri: str | None = None) -> list[str]:
    """The backend kinds this host can run, found without connecting to any hypervisor.

    libvirt: libvirt-python is installed and ``libvirt_uri`` (default ``qemu:///system``) is
    remote or its local daemon's socket exists. VirtualBox: ``VBoxManage`` (or
    ``$STX_VBOXMANAGE``) is found.
    """
    kinds = []
    if importlib.util.find_spec("libvirt") is not None and _libvirt_reachable(
        libvirt_uri or DEFAULT_LIBVIRT_URI
    ):
        kinds.append("libvirt")
    if shutil.which(env_settings().vboxmanage) is not None:
        kinds.append("virtualbox")
    return kinds


def _libvirt_reachable(uri: str) -> bool:
    """A remote URI may be; a local one is when its daemon's socket exists."""
    parts = urlsplit(uri)
    if parts.hostname not in (None, "", "localhost"):
        return True
    socket = parse_qs(parts.query).get("socket")
    if socket:
        return Path(socket[0]).exists()
    if parts.path == "/session":
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        run_dir = Path(runtime) / "libvirt"
    else:
        run_dir = LIBVIRT_RUN_DIR
    return any((run_dir / name).exists() for name in ("libvirt-sock", "virtqemud-sock"))
