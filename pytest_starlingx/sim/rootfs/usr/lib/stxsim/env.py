"""Where things are: guest paths under STXSIM_ROOT, the knobs, the boot facts, durations."""

from __future__ import annotations

import os

API_PORT = 6385  # sysinv-api
KEYSTONE_PORT = 5000

# Simulated durations in seconds at slow=1; every one is multiplied by the `slow` knob.
BOOTSTRAP = 6.0  # the whole bootstrap playbook
SERVICES_START = 5.0  # from boot of an unlocked host to enabled/available
CONFIGURE = 3.0  # a partition, storage backend, ceph monitor or application settling
HEARTBEAT = 3.0  # agent heartbeat period
HEARTBEAT_TIMEOUT = 15.0  # silence after which sysinv shows a host offline
APP_APPLY = 3.0  # platform-integ-apps applying after controller-0's unlock (knob app_apply)
PLATFORM_FS = 3.0  # from boot of a bootstrapped controller to its platform filesystem mounted
AR_CONFIG_INTERVAL = 3.0  # maintenance re-enabling a failed host (mtc.conf: 30 s, scaled)


def root() -> str:
    """The directory standing for the guest's `/` (STXSIM_ROOT, default `/`)."""
    return os.environ.get("STXSIM_ROOT", "/")


def is_guest() -> bool:
    """True on the real guest; False in host tests, where system changes are recorded only."""
    return root() == "/"


def path(guest_path: str) -> str:
    """The real location of a guest path such as `/var/lib/stx/sysinv.json`."""
    return os.path.join(root(), guest_path.lstrip("/"))


def read_kv(guest_path: str) -> dict[str, str]:
    """Read a shell-style `KEY=VALUE` file; a missing file reads as empty."""
    try:
        with open(path(guest_path), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs}


def sw_version() -> str:
    """The simulated release as the platform names it (``SW_VERSION`` in /etc/build.info, which
    the simulator's build writes, e.g. ``24.09`` for StarlingX 10.0)."""
    version = read_kv("/etc/build.info").get("SW_VERSION")
    if not version:
        raise RuntimeError("/etc/build.info has no SW_VERSION")
    return version


def knobs() -> dict[str, str]:
    """Fault knobs of this node (`/run/stx-sim/knobs`, written by init at every boot)."""
    return read_kv("/run/stx-sim/knobs")


def knob_on(name: str) -> bool:
    """True when a boolean knob such as `bootstrap_fail` is set to 1."""
    return knobs().get(name, "0") not in ("", "0")


def boot_info() -> dict[str, str]:
    """`mode`, `mgmt_if`, `oam_if`, `server` from `/run/stx-sim/boot` (written by init)."""
    return read_kv("/run/stx-sim/boot")


def scaled(seconds: float) -> float:
    """A simulated duration multiplied by the `slow` knob."""
    try:
        factor = float(knobs().get("slow", "1"))
    except ValueError:
        factor = 1.0
    return seconds * factor


def api_url(default_host: str | None = None) -> str:
    """The sysinv API base URL: STXSIM_API, else `http://<default_host>:6385`."""
    url = os.environ.get("STXSIM_API")
    if url:
        return url.rstrip("/")
    if not default_host:
        raise RuntimeError("no sysinv API address known (STXSIM_API unset)")
    return f"http://{default_host}:{API_PORT}"
