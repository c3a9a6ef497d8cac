"""What host agents ask sysinv over the mgmt network: register, heartbeat, report state.

An agent identifies itself by the MAC of its mgmt NIC, as a PXE-booting node does to
StarlingX's dnsmasq and mtce. Replies carry the action the agent must take next:
`install` (with personality, subfunctions and hostname) or `unlock` (reboot into service).
"""

from __future__ import annotations

import time
from typing import Any

from stxsim import endpoints, env
from stxsim.sysinv import db, hosts
from stxsim.sysinv.db import Data, Row
from stxsim.sysinv.hosts import CommandError

REPORTABLE = ("install_state", "operational", "availability", "task")


def _public(host: Row) -> dict[str, Any]:
    keys = (
        "id",
        "uuid",
        "hostname",
        "personality",
        "subfunctions",
        "administrative",
        "install_state",
        "mgmt_ip",
    )
    return {k: host.get(k) for k in keys}


def _sysadmin_shadow() -> str | None:
    """controller-0's shadow entry for sysadmin: the real system keeps sysadmin's password the
    same on every host (no forced change on the others), so an installing node takes it."""
    try:
        with open(env.path("/etc/shadow"), encoding="utf-8") as f:
            return next((line for line in f if line.startswith("sysadmin:")), None)
    except OSError:
        return None


def _action(host: Row, mode: str) -> dict[str, Any] | None:
    if mode == "pxe":
        if host["personality"] and host.get("install_state") in (None, "preinstall"):
            host["install_state"] = "preinstall"
            return {
                "name": "install",
                "personality": host["personality"],
                "subfunctions": host["subfunctions"],
                "hostname": host["hostname"],
                "sysadmin": _sysadmin_shadow(),
            }
        return None
    if host.get("pending") == "unlock":
        host["pending"] = None
        return {"name": "unlock"}
    return None


def register(data: Data, body: dict[str, Any]) -> dict[str, Any]:
    """A booted agent says hello. Hosts are listed by their network boot's DHCP lease
    (`pxe.dhcp_lease`) or by host-add; an agent whose MAC sysinv does not know is refused."""
    mac = body["mac"].lower()
    host = db.first(data, "hosts", mgmt_mac=mac)
    if host is None:
        raise CommandError(f"no host with mgmt_mac {mac}")
    hosts.mark_seen(host)
    if body["mode"] == "disk":
        hosts.add_inventory(data, host, body["inventory"])
        host["booted_at"] = time.time()
        if host.get("install_state") != "completed":
            # First boot after the install: offline until the agent reports `completed`.
            db.touch(host, install_state="booting", task="Booting")
        elif host["administrative"] == "locked":
            db.touch(host, operational="disabled", availability="online", task=None)
        else:
            db.touch(host, operational="disabled", availability="intest", task="Booting")
    unlocked = host["administrative"] == "unlocked"
    return {
        "host": _public(host),
        "action": _action(host, body["mode"]),
        "etc_hosts": hosts.etc_hosts(data),
        # an unlocked controller's own OAM address, which puppet configures at its boot
        "oam_address": endpoints.oam_unit(data, host["hostname"]) if unlocked else None,
    }


def _host(data: Data, body: dict[str, Any]) -> Row:
    host = db.first(data, "hosts", uuid=body["uuid"])
    if host is None:
        raise CommandError(f"host not found: {body['uuid']}")
    return host


def heartbeat(data: Data, body: dict[str, Any]) -> dict[str, Any]:
    """A sign of life; the reply carries the next action, if any."""
    host = _host(data, body)
    hosts.mark_seen(host)
    unlocked = host["administrative"] == "unlocked"
    return {
        "host": _public(host),
        "action": _action(host, body["mode"]),
        "etc_hosts": hosts.etc_hosts(data),
        # an unlocked controller's own OAM address, which puppet configures at its boot
        "oam_address": endpoints.oam_unit(data, host["hostname"]) if unlocked else None,
    }


def report(data: Data, body: dict[str, Any]) -> dict[str, Any]:
    """The agent reports a state change (install progress, services up, failure)."""
    host = _host(data, body)
    changes = {k: v for k, v in body["changes"].items() if k in REPORTABLE}
    if changes.get("install_state") == "completed" and host.get("install_state") == "booting":
        changes.update(operational="disabled", availability="online", task=None)
    db.touch(host, **changes)
    if changes.get("availability") == "available":
        host["invprovision"] = "provisioned"
    hosts.mark_seen(host)
    return {"host": _public(host)}
