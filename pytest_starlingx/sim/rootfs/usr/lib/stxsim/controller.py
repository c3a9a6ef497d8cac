"""controller-0's platform services: mgmt addresses, sysinv-api, the network boot service.

Started by bootstrap and again by stx-platform-boot at every boot of a bootstrapped
controller-0. Idempotent: a running sysinv-api is left alone.
"""

from __future__ import annotations

import ipaddress
import os
import time

from stxsim import env, sysops
from stxsim.sysinv import db

API_PID = "/run/stx-sim/sysinv-api.pid"


def _api_running() -> bool:
    try:
        with open(env.path(API_PID), encoding="utf-8") as f:
            os.kill(int(f.read().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def wait_for_api(url: str, timeout: float) -> None:
    """Return once sysinv-api answers at `url`; raise RuntimeError after `timeout` seconds."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=2)
        try:
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"sysinv-api did not answer at {url} within {timeout:.0f}s")
        time.sleep(0.1)


def start_services() -> None:
    """Configure the mgmt addresses, start sysinv-api and the boot service."""
    with db.transaction(write=False) as data:
        system = data["system"]
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
    if not _api_running():
        sysops.daemon("sysinv-api", sysops.launcher("sysinv-api"))
    wait_for_api(env.api_url(system["mgmt_floating"]), timeout=env.scaled(30))
    sysops.hook(
        "netboot-server",
        "start",
        mgmt_if,
        f"{system['mgmt_floating']}/{prefix}",
        f"{system['pxeboot_floating']}/{pxe_prefix}",
    )
