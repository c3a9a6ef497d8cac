"""Hypervisor backends behind one interface (``base.Backend``)."""

from __future__ import annotations

from pytest_starlingx.backends.base import Backend
from pytest_starlingx.errors import BackendError
from pytest_starlingx.settings import DEFAULT_LIBVIRT_URI, env_settings


def make_backend(name: str, libvirt_uri: str | None = None) -> Backend:
    """The backend called ``name`` (libvirt or virtualbox), connected.

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
        config = LibvirtConfig(
            uri=libvirt_uri or DEFAULT_LIBVIRT_URI,
            state_dir=knobs.state_dir,
            domain_type=DomainType(chosen),
        )
        return LibvirtBackend(config)
    if name == "virtualbox":
        from pytest_starlingx.backends.virtualbox import VirtualBoxBackend, VirtualBoxConfig

        config = VirtualBoxConfig(state_dir=knobs.state_dir, vboxmanage=knobs.vboxmanage)
        return VirtualBoxBackend(config)
    raise BackendError(f"unknown backend {name!r}; use libvirt or virtualbox")
