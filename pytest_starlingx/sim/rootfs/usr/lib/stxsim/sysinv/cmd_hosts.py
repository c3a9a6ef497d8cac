"""`system host-*` commands for hosts themselves: list, show, add, update, lock, unlock, swact."""

from __future__ import annotations

import argparse
import re
import threading
from collections.abc import Sequence

from stxsim import env, sysops
from stxsim.sysinv import db, pxe, storage_state
from stxsim.sysinv.checks import check_unlock
from stxsim.sysinv.db import Data, Row
from stxsim.sysinv.hosts import (
    CommandError,
    app_status,
    assign_mgmt_ip,
    availability,
    find_host,
    is_simplex,
    new_host,
    show_fields,
    valid_mac,
)
from stxsim.sysinv.registry import Ctx, arg, command
from stxsim.table import FORMATS, render, render_dict, render_fields, render_records

HOST_ARG = arg("hostnameorid", metavar="<hostname or id>", help="Name or ID of host")
UPDATABLE = (
    "personality",
    "hostname",
    "boot_device",
    "rootfs_device",
    "install_output",
    "console",
    "location",
    "serialid",
)


def host_show(ctx: Ctx, host: Row, columns: Sequence[str] = (), fmt: str | None = None) -> str:
    """The host-show output: the chosen properties (all by default) in the chosen format."""
    fields = show_fields(ctx.data, host, ctx.now)
    if columns:
        shown = dict(fields)
        fields = [(column, shown.get(column, "")) for column in columns]
    return render_fields(fields, fmt)


# Options of host-list and host-show (cgtsclient v1/iHost_shell.py, r/stx.10.0).
COLUMN_ARG = arg("--column", action="append", default=[],
                 help="Specify the column(s) to include, can be repeated")  # fmt: skip
FORMAT_ARG = arg("--format", choices=list(FORMATS),
                 help="specify the output format, defaults to table")  # fmt: skip
HOST_LIST_FIELDS = ("id", "hostname", "personality", "administrative", "operational",
                    "availability")  # fmt: skip


@command("host-list", COLUMN_ARG, FORMAT_ARG)
def host_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List hosts."""
    fields = a.column or HOST_LIST_FIELDS
    rows = []
    for h in sorted(ctx.data["hosts"], key=lambda h: h["id"]):
        operational, avail = availability(h, ctx.now)
        record = {**h, "operational": operational, "availability": avail}
        rows.append([record.get(field, "") for field in fields])
    return render_records(fields, rows, a.format)


@command("host-show", HOST_ARG, COLUMN_ARG, FORMAT_ARG)
def do_host_show(ctx: Ctx, a: argparse.Namespace) -> str:
    """Show host attributes."""
    return host_show(ctx, find_host(ctx.data, a.hostnameorid), a.column, a.format)


def _free_name(data: Data, prefix: str) -> str:
    taken = {h["hostname"] for h in data["hosts"]}
    return next(f"{prefix}-{n}" for n in range(1000) if f"{prefix}-{n}" not in taken)


def provision(data: Data, host: Row, personality: str, hostname: str | None) -> None:
    """Give a discovered host its personality and name (sysinv `_check_*` semantics).

    controller and storage names are automatic, as in sysinv; workers must be named.
    """
    shown = hostname or host["hostname"] or host["uuid"]
    if personality == "controller":
        name = "controller-1"
        if db.first(data, "hosts", hostname=name) not in (None, host):
            raise CommandError(f"{shown}: Reject attempt to configure a third controller")
        subfunctions = data["system"]["controller_subfunctions"]
    elif personality == "storage":
        name = hostname or _free_name(data, "storage")
        if not re.fullmatch(r"storage-\d+", name):
            raise CommandError(
                f"Host {name} of personality storage, must be named starting with storage-(number)"
            )
        subfunctions = "storage"
    elif personality == "worker":
        if not hostname:
            raise CommandError(
                f"Host {host['uuid']} of personality worker, must be provisioned with a hostname."
            )
        if hostname in ("controller-0", "controller-1") or hostname.startswith("storage"):
            raise CommandError(
                f"Hostname {hostname} is not allowed for personality 'worker'. "
                "Please check hostname and personality."
            )
        name, subfunctions = hostname, "worker"
    else:
        raise CommandError(
            f"{shown}: Reject attempt to configure with invalid personality={personality} "
        )
    if db.first(data, "hosts", hostname=name) not in (None, host):
        raise CommandError("Host-add Rejected: Hostname already exists")
    db.touch(
        host,
        personality=personality,
        hostname=name,
        subfunctions=subfunctions,
        invprovision="unprovisioned",
    )
    assign_mgmt_ip(data, host)
    pxe.write_config(data, host)


@command(
    "host-add",
    arg("-n", "--hostname", metavar="<hostname>", help="Hostname of the host"),
    arg(
        "-p",
        "--personality",
        metavar="<personality>",
        choices=["controller", "worker", "edgeworker", "storage", "network", "profile"],
        help="Personality or type of host [REQUIRED]",
    ),
    arg("-s", "--subfunctions", metavar="<subfunctions>", choices=["lowlatency"]),
    arg(
        "-m",
        "--mgmt_mac",
        metavar="<mgmt_mac>",
        help="MAC Address of the host mgmt interface [REQUIRED]",
    ),
    arg("-b", "--boot_device", metavar="<boot_device>"),
    arg("-r", "--rootfs_device", metavar="<rootfs_device>"),
    arg("-o", "--install_output", metavar="<install_output>", choices=["text", "graphical"]),
    arg("-c", "--console", metavar="<console>"),
    arg("-l", "--location", metavar="<location>"),
)
def host_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a new host."""
    data = ctx.data
    if is_simplex(data):
        raise CommandError("Host-add Rejected: Adding a host on a simplex system is not allowed.")
    if a.personality == "worker" and not a.hostname:
        raise CommandError(
            f"Host-add Rejected. Must provide a hostname for a node of personality {a.personality}"
        )
    if not a.mgmt_mac:
        raise CommandError("Host-add Rejected: Must provide MAC Address of the host mgmt interface")
    if not valid_mac(a.mgmt_mac):
        raise CommandError("Host-add Rejected: Must provide a valid format of a MAC Address")
    host = db.first(data, "hosts", mgmt_mac=a.mgmt_mac.lower())
    if host and (host["hostname"] or host["personality"]):
        raise CommandError(f"Host-add Rejected: Host with mgmt_mac {a.mgmt_mac} already exists")
    host = host or new_host(data, a.mgmt_mac)
    for key in ("boot_device", "rootfs_device", "install_output", "console"):
        if getattr(a, key):
            host[key] = getattr(a, key)
    provision(data, host, a.personality or "", a.hostname)
    return host_show(ctx, host)


@command(
    "host-update",
    HOST_ARG,
    arg("attributes", metavar="<path=value>", nargs="+", help="Attributes to update "),
)
def host_update(ctx: Ctx, a: argparse.Namespace) -> str:
    """Update host attributes."""
    host = find_host(ctx.data, a.hostnameorid)
    changes = {}
    for item in a.attributes:
        key, sep, value = item.partition("=")
        if not sep or key not in UPDATABLE:
            # Assumed wording: the API rejects unknown patch paths as invalid input.
            raise CommandError(f"Invalid input for field/attribute {key or item}.")
        changes[key] = value
    personality = changes.pop("personality", None)
    hostname = changes.pop("hostname", None)
    if personality and personality != host["personality"]:
        if host["personality"]:
            # Assumed wording: sysinv refuses to change a provisioned host's personality.
            raise CommandError(
                f"Host {host['hostname']}: personality may not be changed "
                f"from {host['personality']} to {personality}"
            )
        provision(ctx.data, host, personality, hostname)
    elif hostname and hostname != host["hostname"]:
        if host["administrative"] != "locked":
            raise CommandError(f"Host {host['hostname']} must be locked.")
        if db.first(ctx.data, "hosts", hostname=hostname):
            raise CommandError("Host-add Rejected: Hostname already exists")
        host["hostname"] = hostname
    db.touch(host, **changes)
    return host_show(ctx, host)


@command(
    "host-lock",
    HOST_ARG,
    arg("-f", "--force", action="store_true", help="Force a lock operation "),
    arg("-u", "--unsafe", action="store_true", help="Force an unsafe operation "),
)
def host_lock(ctx: Ctx, a: argparse.Namespace) -> str:
    """Lock a host."""
    host = find_host(ctx.data, a.hostnameorid)
    if host["administrative"] == "locked":
        raise CommandError(f"Avoiding lock action on already 'locked' host {host['hostname']}")
    if (
        host["personality"] == "controller"
        and not is_simplex(ctx.data)
        and ctx.data["system"].get("active") == host["hostname"]
    ):
        raise CommandError(f"{host['hostname']} : Rejected: Can not lock an active controller.")
    _, avail = availability(host, ctx.now)
    # Locking takes services down but does not reboot: the host stays online.
    db.touch(
        host,
        administrative="locked",
        operational="disabled",
        task=None,
        availability="offline" if avail == "offline" else "online",
    )
    return host_show(ctx, host)


@command(
    "host-unlock",
    HOST_ARG,
    arg("-f", "--force", action="store_true", help="Force an unlock operation "),
)
def host_unlock(ctx: Ctx, a: argparse.Namespace) -> str:
    """Unlock a host."""
    host = find_host(ctx.data, a.hostnameorid)
    check_unlock(ctx.data, host, ctx.now, a.force)
    db.touch(host, administrative="unlocked", operational="disabled", task="Unlocking")
    _commit_storage(ctx.data, host, ctx.now)
    if host["hostname"] == "controller-0":
        # sysinv runs here: the reboot starts once the reply is on its way.
        ctx.after_commit.append(
            lambda: threading.Timer(
                env.scaled(1.0), sysops.hook, ("reboot",), {"wait": False}
            ).start()
        )
    else:
        host["pending"] = "unlock"
    return host_show(ctx, host)


def _commit_storage(data: Data, host: Row, now: float) -> None:
    """Storage configured while locked is applied by the unlock."""
    for stor in db.rows(data, "stors", host_uuid=host["uuid"]):
        stor["configured"] = True
    for pv in db.rows(data, "pvs", host_uuid=host["uuid"]):
        pv["pv_state"] = "provisioned"
        part = db.first(data, "partitions", uuid=pv["disk_or_part_uuid"])
        if part and storage_state.settled(part, now):
            part["in_use"] = True
    for lvg in db.rows(data, "lvgs", host_uuid=host["uuid"]):
        lvg["vg_state"] = "provisioned"


@command(
    "host-swact",
    HOST_ARG,
    arg("-f", "--force", action="store_true", help="Force a host swact operation "),
)
def host_swact(ctx: Ctx, a: argparse.Namespace) -> str:
    """Switch activity away from this active host.

    The simulator moves only the Active/Standby role; sysinv keeps running on controller-0.
    """
    host = find_host(ctx.data, a.hostnameorid)
    if host["personality"] != "controller":
        raise CommandError(f"Swact action not allowed for non controller host {host['hostname']}.")
    if host["administrative"] == "locked":
        raise CommandError("Controller is Locked ; No services to Swact")
    if is_simplex(ctx.data):
        raise CommandError("Swact action not allowed for a simplex system.")
    other = next(h for h in db.rows(ctx.data, "hosts", personality="controller") if h is not host)
    if availability(other, ctx.now) != ("enabled", "available"):
        # Assumed wording: sysinv refuses a swact to a controller that is not in service.
        raise CommandError(f"{other['hostname']} is not enabled and available; swact rejected.")
    ctx.data["system"]["active"] = other["hostname"]
    return host_show(ctx, host)


@command(
    "host-label-assign",
    HOST_ARG,
    arg("attributes", metavar="<name=value>", nargs="+", help="List of labels"),
    arg("--overwrite", action="store_true", help="Allow labels to be overwritten"),
)
def label_assign(ctx: Ctx, a: argparse.Namespace) -> str:
    """Update the Kubernetes labels on a host."""
    host = find_host(ctx.data, a.hostnameorid)
    out = []
    for item in a.attributes:
        key, _, value = item.partition("=")
        if not value:
            raise CommandError(
                f"Null input detected for Label {key} for host {host['hostname']}. Input invalid."
            )
        label = db.first(ctx.data, "labels", host_uuid=host["uuid"], label_key=key)
        if label and not a.overwrite:
            raise CommandError(
                f"Label {key} exists for host {host['hostname']}. "
                "Use overwrite option to assign a new value."
            )
        if label:
            db.touch(label, label_value=value)
        else:
            label = db.insert(
                ctx.data,
                "labels",
                {"host_uuid": host["uuid"], "label_key": key, "label_value": value},
            )
        out.append(
            render_dict([(f, label[f]) for f in ("uuid", "host_uuid", "label_key", "label_value")])
        )
    return "\n".join(out)


@command("host-label-list", HOST_ARG)
def label_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List kubernetes labels assigned to a host."""
    host = find_host(ctx.data, a.hostnameorid)
    rows = [
        [host["hostname"], lb["label_key"], lb["label_value"]]
        for lb in db.rows(ctx.data, "labels", host_uuid=host["uuid"])
    ]
    return render(["hostname", "label key", "label value"], sorted(rows))


@command("application-list")
def application_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List all containerized applications."""
    rows = []
    for app in sorted(ctx.data.get("apps", []), key=lambda x: x["name"]):
        status, progress = app_status(app, ctx.now)
        rows.append(
            [
                app["name"],
                app["version"],
                app["manifest_name"],
                app["manifest_file"],
                status,
                progress,
            ]
        )
    return render(
        ["application", "version", "manifest name", "manifest file", "status", "progress"], rows
    )


def _ntp_show(ctx: Ctx) -> str:
    system = ctx.data["system"]
    ntp = system.setdefault("ntp", {"uuid": db.new_uuid(), "ntpservers": ""})
    return render_dict(
        [
            ("uuid", ntp["uuid"]),
            ("ntpservers", ntp["ntpservers"]),
            ("isystem_uuid", system["uuid"]),
            ("created_at", None),
            ("updated_at", None),
        ]
    )


@command("ntp-show")
def ntp_show(ctx: Ctx, a: argparse.Namespace) -> str:
    """Show NTP (Network Time Protocol) attributes."""
    return _ntp_show(ctx)


@command(
    "ntp-modify",
    arg("attributes", metavar="<path=value>", nargs="+", help="NTP attributes to modify "),
)
def ntp_modify(ctx: Ctx, a: argparse.Namespace) -> str:
    """Modify NTP attributes (only recorded: the simulator keeps no clocks)."""
    _ntp_show(ctx)
    for item in a.attributes:
        key, sep, value = item.partition("=")
        if key != "ntpservers" or not sep:
            raise CommandError(f"Invalid input for field/attribute {key or item}.")
        ctx.data["system"]["ntp"]["ntpservers"] = value
    return _ntp_show(ctx)
