"""Hypervisor backends behind one interface (``base.Backend``)."""

from __future__ import annotations

import os

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import BackendError


def make_backend(name: str, libvirt_uri: str | None = None) -> Backend:
    """The backend called ``name`` (libvirt or virtualbox), connected.

    libvirt: the domain type from ``$STX_LIBVIRT_DOMAIN_TYPE`` (``auto``, the default, probes
    KVM; ``kvm`` or ``qemu`` force one). VirtualBox: ``VBoxManage`` from PATH, or the path in
    ``$STX_VBOXMANAGE``.
    """
    from pytest_starlingx.labstate import state_dir

    if name == "libvirt":
        from pytest_starlingx.backends.libvirt import (
            DEFAULT_URI,
            DomainType,
            LibvirtBackend,
            LibvirtConfig,
        )

        chosen = os.environ.get("STX_LIBVIRT_DOMAIN_TYPE", "auto")
        if chosen not in set(DomainType):
            raise BackendError(f"STX_LIBVIRT_DOMAIN_TYPE={chosen!r}: use {', '.join(DomainType)}")
        config = LibvirtConfig(
            uri=libvirt_uri or DEFAULT_URI, state_dir=state_dir(), domain_type=DomainType(chosen)
        )
        return LibvirtBackend(config)
    if name == "virtualbox":
        from pytest_starlingx.backends.virtualbox import VirtualBoxBackend, VirtualBoxConfig

        vboxmanage = os.environ.get("STX_VBOXMANAGE") or "VBoxManage"
        return VirtualBoxBackend(VirtualBoxConfig(state_dir=state_dir(), vboxmanage=vboxmanage))
    raise BackendError(f"unknown backend {name!r}; use libvirt or virtualbox")
