"""Every environment knob of pytest-starlingx, and the host defaults, in one place.

What a lab is comes from its description; where it runs comes from options and from these
variables. :func:`env_settings` reads them on each call (tests and ``stx-lab`` runs change them):

============================  ==================================  ===============================
variable                      field                               default
============================  ==================================  ===============================
``STX_STATE_DIR``             :attr:`EnvSettings.state_dir`       ``/var/lib/pytest-starlingx``
``STX_LIBVIRT_DOMAIN_TYPE``   :attr:`EnvSettings.domain_type`     ``auto`` (probe KVM)
``STX_VBOXMANAGE``            :attr:`EnvSettings.vboxmanage`      ``VBoxManage`` on ``PATH``
``STX_SIM_CACHE``             :attr:`EnvSettings.sim_cache`       ``$XDG_CACHE_HOME/...``
``XDG_CACHE_HOME``            (part of ``sim_cache``)             ``~/.cache``
============================  ==================================  ===============================

The libvirt URI is not read from the environment: ``--stx-libvirt-uri`` and ``stx-lab --uri``
set it, :data:`DEFAULT_LIBVIRT_URI` when they do not. Passwords named in a lab description
(``{env: NAME}``) and ``${VAR}`` in its ``image`` are the description's own variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LIBVIRT_URI = "qemu:///system"
DEFAULT_STATE_DIR = Path("/var/lib/pytest-starlingx")
DEFAULT_DOMAIN_TYPE = "auto"
DEFAULT_VBOXMANAGE = "VBoxManage"


@dataclass(frozen=True)
class EnvSettings:
    """The environment knobs, each with its default filled in (:func:`env_settings`)."""

    #: ``$STX_STATE_DIR``: lab states, ledgers, leases, golden records, placed images.
    state_dir: Path
    #: ``$STX_LIBVIRT_DOMAIN_TYPE``: ``auto`` probes KVM; ``kvm`` or ``qemu`` force one.
    domain_type: str
    #: ``$STX_VBOXMANAGE``: the VBoxManage to run, a name looked up on PATH or a path.
    vboxmanage: str
    #: ``$STX_SIM_CACHE``, else ``$XDG_CACHE_HOME/pytest-starlingx/sim`` (``~/.cache/...``):
    #: where built simulator images are kept.
    sim_cache: Path


def env_settings(environ: Mapping[str, str] | None = None) -> EnvSettings:
    """The knobs as ``environ`` (default: this process's environment) sets them. An empty
    variable counts as unset, except ``STX_LIBVIRT_DOMAIN_TYPE``, which must then name a type."""
    env = os.environ if environ is None else environ
    cache_home = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return EnvSettings(
        state_dir=Path(env.get("STX_STATE_DIR") or DEFAULT_STATE_DIR),
        domain_type=env.get("STX_LIBVIRT_DOMAIN_TYPE", DEFAULT_DOMAIN_TYPE),
        vboxmanage=env.get("STX_VBOXMANAGE") or DEFAULT_VBOXMANAGE,
        sim_cache=Path(env.get("STX_SIM_CACHE") or cache_home / "pytest-starlingx" / "sim"),
    )
