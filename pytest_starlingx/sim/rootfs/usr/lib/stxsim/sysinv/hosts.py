"""Host records: lookup, the state sysinv shows, management addresses, inventory."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import time
from typing import Any

from stxsim import env
from stxsim.sysinv import db
from stxsim.sysinv.db import Data, Row

DHCP_HOSTS = "/var/lib/stx/dhcp-hosts"
DNSMASQ_PID = "/run/stx-sim/dnsmasq.pid"
NETWORKS = ("mgmt", "oam", "cluster-host", "pxeboot")


class CommandError(Exception):
    """A refused request; the message is what the real client prints (exit status 1)."""


def find_host(data: Data, ident: str) -> Row:
    """A host by id, uuid or hostname (cgtsclient's `_find_ihost`)."""
    for h in data.get("hosts", []):
        if ident in (str(h["id"]), h["uuid"], h["hostname"]):
            return h
    raise CommandError(f"host not found: {ident}")


def is_simplex(data: Data) -> bool:
    """True on an AIO-SX system."""
    return data["system"]["system_mode"] == "simplex"


def is_aio(data: Data) -> bool:
    """True when controller-0 has the worker subfunction (All-in-one)."""
    return data["system"]["system_type"] == "All-in-one"


def has_function(host: Row, function: str) -> bool:
    """True when `function` is among the host's subfunctions."""
    return function in (host.get("subfunctions") or "").split(",")


def availability(host: Row, now: float) -> tuple[str, str]:
    """(operational, availability) as shown: a silent installed host is disabled/offline.

    controller-0 runs sysinv itself, so it is never judged by heartbeats.
    """
    if host["hostname"] == "controller-0" or host.get("install_state") not in ("completed",):
        return host["operational"], host["availability"]
    if now - host.get("last_seen", 0) > env.scaled(env.HEARTBEAT_TIMEOUT):
        return "disabled", "offline"
    return host["operational"], host["availability"]


def app_status(app: Row, now: float) -> tuple[str, str]:
    """An application's status and progress (`system application-list`): one being applied
    (from controller-0 becoming available until its `apply_at`) is `applying`, with one of
    sysinv's progress texts, then `applied` / `completed`."""
    if app.get("apply_at") is None:
        return app["status"], "completed"
    if now >= app["apply_at"]:
        return "applied", "completed"
    return "applying", "retrieving docker images"


#: What a host row leaves unset is what sysinv's database gives it (starlingx/config sysinv
#: ``db/sqlalchemy/models.py`` ``ihost``, r/stx.10.0): column defaults, else null.
SUBFUNCTION_DEFAULTS = ("disabled", "not-installed")  # subfunction_oper, subfunction_avail

#: The properties `system host-show` prints (cgtsclient ``v1/iHost_shell.py``
#: ``_print_ihost_show``, r/stx.10.0), before the conditional ones.
SHOW_FIELDS = (
    "id", "uuid", "personality", "hostname", "invprovision", "administrative", "operational",
    "availability", "task", "action", "mgmt_mac", "serialid", "capabilities", "bm_type",
    "bm_username", "bm_ip", "config_applied", "config_target", "config_status", "location",
    "uptime", "reserved", "created_at", "updated_at", "boot_device", "rootfs_device",
    "hw_settle", "install_output", "console", "tboot", "vim_progress_status", "install_state",
    "install_state_info", "inv_state", "clock_synchronization", "device_image_update",
    "reboot_needed", "max_cpu_mhz_configured", "min_cpu_mhz_allowed", "max_cpu_mhz_allowed",
    "cstates_available", "apparmor", "iscsi_initiator_name", "nvme_host_id", "nvme_host_nqn",
    "sw_version",
)  # fmt: skip


def host_fields(data: Data, host: Row, now: float) -> dict[str, Any]:
    """The host as sysinv's API object has it (starlingx/config sysinv
    ``api/controllers/v1/host.py`` ``Host``, r/stx.10.0): every field it serializes, in the
    order it declares them, without the links. `system host-show` prints a choice of these."""
    operational, avail = availability(host, now)
    caps: dict[str, str] = {}
    if host["personality"] == "controller":
        role = "Active" if data["system"].get("active") == host["hostname"] else "Standby"
        caps = {"is_max_cpu_configurable": "configurable", "Personality": f"Controller-{role}"}
    sub_oper, sub_avail = SUBFUNCTION_DEFAULTS
    if host.get("subfunctions") != host["personality"] and has_function(host, "controller"):
        sub_oper, sub_avail = operational, avail  # an AIO controller's worker subfunction
    boot = host.get("booted_at")
    return {
        "id": host["id"],
        "uuid": host["uuid"],
        "hostname": host["hostname"],
        "invprovision": host.get("invprovision"),
        "mgmt_mac": host["mgmt_mac"],
        "mgmt_ip": host.get("mgmt_ip"),  # get_one/_ihosts_get: the <hostname>-mgmt address
        "bm_ip": None,
        "bm_type": None,
        "bm_username": None,
        "personality": host["personality"],
        "subfunctions": host.get("subfunctions"),
        "subfunction_oper": sub_oper,
        "subfunction_avail": sub_avail,
        "serialid": host.get("serialid"),  # host-update serialid=...
        "administrative": host["administrative"],
        "operational": operational,
        "availability": avail,
        "action": "none",
        "ihost_action": None,
        "inv_state": "inventoried" if host.get("inventoried") else None,
        "vim_progress_status": "services-enabled" if avail == "available" else None,
        "task": host.get("task"),
        "mtce_info": None,
        "reserved": False,
        "config_status": None,
        "config_applied": None,
        "config_target": None,
        "clock_synchronization": "ntp",
        "uptime": int(now - boot) if boot and avail != "offline" else 0,
        "location": {},
        "capabilities": caps,
        "forisystemid": 1,  # the one i_system row
        "isystem_uuid": data["system"]["uuid"],
        "peers": None,  # storage peer groups are not modelled
        "boot_device": host["boot_device"],
        "rootfs_device": host["rootfs_device"],
        "hw_settle": "0",
        "install_output": host["install_output"],
        "console": host["console"],
        "tboot": "false",
        "ttys_dcd": False,  # objects/utils.py bool_or_none: an unset column reads False
        "apparmor": "disabled",
        # host_upgrade's loads: bootstrap's populate_load_config creates the release's load
        # before any host, and ihost_create gives every host a host_upgrade row with it
        "software_load": env.sw_version(),
        "target_load": env.sw_version(),
        "install_state": host.get("install_state"),
        "install_state_info": None,
        "max_cpu_mhz_configured": None,
        "min_cpu_mhz_allowed": None,
        "max_cpu_mhz_allowed": None,
        "cstates_available": None,
        "iscsi_initiator_name": f"iqn.2018-05.io.starlingx:{host['uuid'][:12]}",
        "nvme_host_id": None,
        "nvme_host_nqn": None,
        "device_image_update": None,
        "reboot_needed": False,
        "sw_version": env.sw_version(),
        "created_at": host["created_at"],
        "updated_at": host["updated_at"],
    }


def show_fields(data: Data, host: Row, now: float) -> list[tuple[str, Any]]:
    """The `system host-show` properties (cgtsclient `_print_ihost_show`): SHOW_FIELDS, the
    subfunctions where they differ from the personality (with their states on a controller)
    and the optional ``ttys_dcd``, which the API object always carries (``peers`` too, when
    set: never, here)."""
    fields = host_fields(data, host, now)
    # Shown by older releases (starlingx.md 5.1); provisioning code reads it.
    shown = [*SHOW_FIELDS, "mgmt_ip"]
    if fields["subfunctions"] != fields["personality"]:
        shown.append("subfunctions")
        if has_function(host, "controller"):
            shown += ["subfunction_oper", "subfunction_avail"]
    shown.append("ttys_dcd")
    return [(name, fields[name]) for name in shown]


def new_host(data: Data, mgmt_mac: str, **fields: Any) -> Row:
    """A locked host record; unknown (PXE-discovered) hosts have no hostname or personality."""
    row: Row = {
        "hostname": None,
        "personality": None,
        "subfunctions": None,
        "administrative": "locked",
        "operational": "disabled",
        "availability": "offline",
        "task": None,
        "mgmt_mac": mgmt_mac.lower(),
        "mgmt_ip": None,
        "invprovision": None,
        "install_state": None,
        "install_output": "text",
        "console": "ttyS0,115200",
        "boot_device": "/dev/sda",
        "rootfs_device": "/dev/sda",
        "inventoried": False,
        "last_seen": 0.0,
        "pending": None,
    }
    row.update(fields)
    return db.insert(data, "hosts", row)


def valid_mac(mac: str) -> bool:
    """True for a colon-separated 48-bit MAC address."""
    return re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac) is not None


def assign_mgmt_ip(data: Data, host: Row) -> None:
    """Give `host` its static mgmt address (controller-1 .4, others the next free one).

    StarlingX reserves the subnet's .2 (floating), .3 and .4 (controllers); the boot
    service's dynamic range must stay clear of the addresses handed out here (DESIGN.md).
    """
    if host.get("mgmt_ip"):
        return
    net = ipaddress.ip_network(data["system"]["management_subnet"])
    used = {h.get("mgmt_ip") for h in data["hosts"]}
    if host["hostname"] == "controller-1":
        host["mgmt_ip"] = str(net.network_address + 4)
    else:
        host["mgmt_ip"] = next(
            str(a) for k, a in enumerate(net.hosts(), 1) if k >= 5 and str(a) not in used
        )
    write_dhcp_hosts(data)


def etc_hosts(data: Data) -> str:
    """/etc/hosts as StarlingX's puppet writes it on every host (stx-puppet
    `platform::config::hosts`: localhost, then sysinv's hosts: the mgmt floating address as
    `controller` and each host's mgmt address by hostname)."""
    lines = [
        "127.0.0.1\tlocalhost\tlocalhost.localdomain localhost4 localhost4.localdomain4\n",
        f"{data['system']['mgmt_floating']}\tcontroller\n",
    ]
    lines += [
        f"{h['mgmt_ip']}\t{h['hostname']}\n"
        for h in data["hosts"]
        if h.get("mgmt_ip") and h.get("hostname")
    ]
    return "".join(lines)


def write_etc_hosts(text: str) -> None:
    """Replace this node's /etc/hosts with `text` when it differs."""
    file = env.path("/etc/hosts")
    try:
        with open(file, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(file + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(file + ".tmp", file)


def write_dhcp_hosts(data: Data) -> None:
    """Rewrite dnsmasq's static leases (`MAC,IP` lines) and make it reload them (SIGHUP);
    controller-0's /etc/hosts follows the same addresses."""
    write_etc_hosts(etc_hosts(data))
    lines = [
        f"{h['mgmt_mac']},{h['mgmt_ip']}\n"
        for h in data["hosts"]
        if h.get("mgmt_ip") and h["hostname"] != "controller-0"
    ]
    file = env.path(DHCP_HOSTS)
    with open(file + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(file + ".tmp", file)
    try:
        with open(env.path(DNSMASQ_PID), encoding="utf-8") as f:
            os.kill(int(f.read().split()[0]), signal.SIGHUP)
    except (OSError, ValueError, IndexError):
        pass  # no boot service running (yet): it reads the file when it starts


def add_inventory(data: Data, host: Row, inventory: dict[str, list]) -> None:
    """Create the host's ports, interfaces and disks from an agent's inventory, once.

    controller-0 gets one interface per port plus bootstrap's `lo` (mgmt, cluster-host);
    other hosts get `mgmt0` on their boot NIC (starlingx.md 1.3) and one per other port.
    """
    if host.get("inventoried"):
        return
    secondary = host["hostname"] != "controller-0"
    for nic in inventory["nics"]:
        boot = nic["mac"].lower() == host["mgmt_mac"]
        iface = db.insert(
            data,
            "interfaces",
            {
                "host_uuid": host["uuid"],
                "ifname": "mgmt0" if boot and secondary else nic["name"],
                "ifclass": "platform" if boot and secondary else None,
                "iftype": "ethernet",
                "ports": [nic["name"]],
                "imac": nic["mac"],
                "imtu": 1500,
            },
        )
        db.insert(
            data,
            "ports",
            {
                "host_uuid": host["uuid"],
                "name": nic["name"],
                "mac": nic["mac"],
                "pciaddr": nic["pciaddr"],
                "pdevice": nic["pdevice"],
                "numa_node": 0,
                "autoneg": "Yes",
                "bootp": boot and secondary,
                "interface_uuid": iface["uuid"],
            },
        )
        if boot and secondary:
            assign_network(data, iface, "mgmt")
    if not secondary:
        lo = db.insert(
            data,
            "interfaces",
            {
                "host_uuid": host["uuid"],
                "ifname": "lo",
                "ifclass": "platform",
                "iftype": "virtual",
                "ports": [],
                "imac": "00:00:00:00:00:00",
                "imtu": 1500,
            },
        )
        assign_network(data, lo, "mgmt")
        assign_network(data, lo, "cluster-host")
    if inventory["disks"]:
        # The installer writes the disk on the first SATA port (the inventory lists disks in
        # port order); the kernel's name for it is not always sda.
        host["rootfs_device"] = host["boot_device"] = inventory["disks"][0]["device_node"]
    for disk in inventory["disks"]:
        size = int(disk["size_mib"])
        root = disk["device_node"] == host["rootfs_device"]
        # The installer leaves roughly half the root disk free for user partitions.
        db.insert(
            data,
            "disks",
            dict(
                disk,
                host_uuid=host["uuid"],
                rpm="Undetermined",
                available_mib=size // 2 if root else size,
            ),
        )
    host["inventoried"] = True


def assign_network(data: Data, iface: Row, network: str) -> Row:
    """Record that `iface` carries platform network `network`."""
    net = find_network(data, network)
    return db.insert(
        data,
        "interface_networks",
        {
            "interface_uuid": iface["uuid"],
            "host_uuid": iface["host_uuid"],
            "network_id": net["id"],
            "network_name": net["name"],
            "network_type": net["type"],
        },
    )


def find_network(data: Data, ident: str) -> Row:
    """A platform network by id, uuid or name (cgtsclient `_find_network`)."""
    for net in data.get("networks", []):
        if ident in (str(net["id"]), net["uuid"], net["name"], net["type"]):
            return net
    raise CommandError(f"network not found: {ident}")


def mark_seen(host: Row) -> None:
    """Record a sign of life from the host's agent."""
    host["last_seen"] = time.time()
