"""controller-0's platform services: mgmt addresses, keystone and sysinv-api, the network
boot service; once controller-0 is unlocked, also the OAM floating address.

Started by bootstrap and again by stx-platform-boot at every boot of a bootstrapped
controller-0. Idempotent: a running keystone or sysinv-api is left alone.
"""

from __future__ import annotations

import ipaddress
import os
import time

from stxsim import endpoints, env, sysops
from stxsim.sysinv import db

#: Started in this order, as bootstrap does (ansible-playbooks r/stx.10.0 apply-manifest
#: apply_bootstrap_manifest.yml: keystone_bootstrap.yml, then sysinv_bootstrap.yml).
SERVICES = ("keystone-api", "sysinv-api")


def _running(name: str) -> bool:
    """True while the daemon `name` (its pid in /run/stx-sim/<name>.pid) is alive."""
    try:
        with open(env.path(f"/run/stx-sim/{name}.pid"), encoding="utf-8") as f:
            os.kill(int(f.read().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def wait_for(url: str, timeout: float) -> None:
    """Return once `GET url` answers 200; raise RuntimeError after `timeout` seconds."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=2)
        try:
            conn.request("GET", parts.path or "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered at {url} within {timeout:.0f}s")
        time.sleep(0.1)


def start_services() -> None:
    """Configure the addresses, start keystone, sysinv-api and the boot service."""
    with db.transaction(write=False) as data:
        system = data["system"]
        unlocked = endpoints.unlocked(data)
        oam = endpoints.oam_floating(data) if unlocked else None
        oam_unit = endpoints.oam_unit(data, "controller-0") if unlocked else None
        keystone = endpoints.keystone_internal_url(data)
    mgmt_if = env.boot_info().get("mgmt_if")
    if not mgmt_if:
        raise RuntimeError("no management interface known (/run/stx-sim/boot has no mgmt_if)")
    prefix = ipaddress.ip_network(system["management_subnet"]).prefixlen
    pxe_prefix = ipaddress.ip_network(system["pxeboot_subnet"]).prefixlen
    # The pxeboot network shares the mgmt interface, untagged (StarlingX's default).
    for address, length in (
        (system["mgmt_c0"], prefix),
        (system["mgmt_floating"], prefix),
        (system["pxeboot_c0"], pxe_prefix),
        (system["pxeboot_floating"], pxe_prefix),
    ):
        sysops.add_address(mgmt_if, f"{address}/{length}")
    if oam_unit:  # its own OAM address, on a system with two controllers
        sysops.add_address(env.boot_info()["oam_if"], oam_unit)
    if oam:
        # SM's oam-ipv4 service, which haproxy's frontends need (endpoints.py)
        sysops.add_address(env.boot_info()["oam_if"], oam)
    for name in SERVICES:
        if not _running(name):
            sysops.daemon(name, sysops.launcher(name))
    wait_for(f"{keystone}/v3", timeout=env.scaled(30))
    wait_for(f"{env.api_url(system['mgmt_floating'])}/", timeout=env.scaled(30))
    sysops.hook(
        "netboot-server",
        "start",
        mgmt_if,
        f"{system['mgmt_floating']}/{prefix}",
        f"{system['pxeboot_floating']}/{pxe_prefix}",
    )
