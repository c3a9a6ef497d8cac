"""Ports, interfaces, platform network and data network assignments."""

from __future__ import annotations

import argparse
import re

from stxsim.sysinv import db
from stxsim.sysinv.cmd_hosts import HOST_ARG
from stxsim.sysinv.db import Data, Row
from stxsim.sysinv.hosts import CommandError, assign_network, find_host, find_network, has_function
from stxsim.sysinv.registry import Ctx, arg, command
from stxsim.table import render, render_dict

IF_ARG = arg("ifnameoruuid", metavar="<interface name or uuid>", help="Name or UUID of interface")
IF_SHOW = (
    "ifname",
    "iftype",
    "ports",
    "imac",
    "imtu",
    "ifclass",
    "ptp_role",
    "aemode",
    "schedpolicy",
    "txhashpolicy",
    "primary_reselect",
    "uuid",
    "ihost_uuid",
    "vlan_id",
    "uses",
    "used_by",
    "created_at",
    "updated_at",
    "sriov_numvfs",
    "sriov_vf_driver",
    "max_tx_rate",
    "max_rx_rate",
    "ovs_access",
    "channels",
    "sriov_vf_channels",
    "ipv4_mode",
    "ipv6_mode",
    "ipv4_pool",
    "ipv6_pool",
)


def find_interface(data: Data, host: Row, ident: str) -> Row:
    """An interface of `host` by name or uuid (cgtsclient `_find_interface`)."""
    for iface in db.rows(data, "interfaces", host_uuid=host["uuid"]):
        if ident in (iface["ifname"], iface["uuid"]):
            return iface
    raise CommandError(f"Interface not found: host {host['hostname']} if {ident}")


@command("host-port-list", HOST_ARG)
def port_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List host ports."""
    host = find_host(ctx.data, a.hostnameorid)
    rows = [
        [
            p["uuid"],
            p["name"],
            p["mac"],
            p["pciaddr"],
            p["numa_node"],
            p["autoneg"],
            p["pdevice"],
            p["bootp"],
        ]
        for p in sorted(db.rows(ctx.data, "ports", host_uuid=host["uuid"]), key=lambda p: p["name"])
    ]
    return render(
        [
            "uuid",
            "name",
            "mac address",
            "pci address",
            "processor",
            "auto neg",
            "device type",
            "boot i/f",
        ],
        rows,
    )


def _attributes(iface: Row) -> str:
    attrs = f"MTU={iface['imtu']}"
    if iface["ifclass"] == "data":
        attrs += ",accelerated=True"
    return attrs


@command(
    "host-if-list",
    HOST_ARG,
    arg(
        "-a",
        "--all",
        action="store_true",
        help="List all interface, including those without a configured network type",
    ),
)
def if_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List interfaces."""
    host = find_host(ctx.data, a.hostnameorid)
    rows = [
        [
            i["uuid"],
            i["ifname"],
            i["ifclass"],
            i["iftype"],
            None,
            i["ports"],
            [],
            [],
            _attributes(i),
        ]
        for i in db.rows(ctx.data, "interfaces", host_uuid=host["uuid"])
        if a.all or i["ifclass"] is not None
    ]
    return render(
        [
            "uuid",
            "name",
            "class",
            "type",
            "vlan id",
            "ports",
            "uses i/f",
            "used by i/f",
            "attributes",
        ],
        sorted(rows, key=lambda r: r[0]),
    )


def interface_show(iface: Row) -> str:
    """The host-if-show table."""
    defaults = {
        "ptp_role": "none",
        "uses": [],
        "used_by": [],
        "sriov_numvfs": 0,
        "ihost_uuid": iface["host_uuid"],
        "ipv4_mode": None,
        "ipv6_mode": None,
    }
    pairs = [(f, iface.get(f, defaults.get(f))) for f in IF_SHOW]
    return render_dict([*pairs, ("accelerated", [True])])


@command(
    "host-if-modify",
    HOST_ARG,
    IF_ARG,
    arg("-n", "--ifname", metavar="<new interface name>", help="The new name of the interface"),
    arg("-m", "--imtu", metavar="<mtu>", help="The MTU of the interface"),
    arg(
        "-c",
        "--ifclass",
        metavar="<class>",
        help="The class of the interface",
        choices=["platform", "data", "pci-sriov", "pci-passthrough", "none"],
    ),
    arg("-a", "--aemode", metavar="<ae mode>", choices=["balanced", "active_standby", "802.3ad"]),
    arg(
        "--ipv4-mode",
        dest="ipv4_mode",
        metavar="<ipv4_mode>",
        choices=["disabled", "static", "pool"],
    ),
    arg(
        "--ipv6-mode",
        dest="ipv6_mode",
        metavar="<ipv6_mode>",
        choices=["disabled", "static", "link-local", "pool"],
    ),
    arg("--ipv4-pool", dest="ipv4_pool", metavar="<ipv4 pool uuid or name>"),
    arg("--ipv6-pool", dest="ipv6_pool", metavar="<ipv6 pool uuid or name>"),
    arg("-N", "--num-vfs", dest="sriov_numvfs", metavar="<sriov numvfs>"),
    arg(
        "--vf-driver",
        dest="sriov_vf_driver",
        metavar="<sriov vf driver>",
        choices=["netdevice", "vfio"],
    ),
)
def if_modify(ctx: Ctx, a: argparse.Namespace) -> str:
    """Modify interface attributes."""
    host = find_host(ctx.data, a.hostnameorid)
    iface = find_interface(ctx.data, host, a.ifnameoruuid)
    if host["administrative"] != "locked":
        raise CommandError("Host must be locked.")
    changes: dict[str, object] = {}
    if a.ifclass:
        if a.ifclass == "data" and not has_function(host, "worker"):
            raise CommandError(
                "The data interface class is only supported on nodes supporting worker functions"
            )
        changes["ifclass"] = None if a.ifclass == "none" else a.ifclass
        if a.ifclass == "none" and iface["ports"] and not a.ifname:
            changes["ifname"] = iface["ports"][0]  # cgtsclient renames it after its port
    if a.ifname:
        if a.ifname != a.ifname.lower():
            raise CommandError("Interface name must be in lower case.")
        taken = db.first(ctx.data, "interfaces", host_uuid=host["uuid"], ifname=a.ifname)
        if taken not in (None, iface):
            raise CommandError(f"Interface Name {a.ifname} must be unique.")
        changes["ifname"] = a.ifname
    if a.imtu is not None:
        if not re.fullmatch(r"\d+", a.imtu):
            raise CommandError("MTU is an integer value.")
        changes["imtu"] = int(a.imtu)
    for key in (
        "aemode",
        "ipv4_mode",
        "ipv6_mode",
        "ipv4_pool",
        "ipv6_pool",
        "sriov_numvfs",
        "sriov_vf_driver",
    ):
        if getattr(a, key) is not None:
            changes[key] = getattr(a, key)
    db.touch(iface, **changes)
    return interface_show(iface)


def _link_show(data: Data, link: Row, name_key: str) -> str:
    host = db.first(data, "hosts", uuid=link["host_uuid"]) or {}
    iface = db.first(data, "interfaces", uuid=link["interface_uuid"]) or {}
    return render_dict(
        [
            ("hostname", host.get("hostname")),
            ("uuid", link["uuid"]),
            ("ifname", iface.get("ifname")),
            (name_key, link[name_key]),
        ]
    )


def _link_list(data: Data, table: str, name_key: str, host: Row, ident: str | None) -> str:
    links = db.rows(data, table, host_uuid=host["uuid"])
    if ident:
        iface = find_interface(data, host, ident)
        links = [lk for lk in links if lk["interface_uuid"] == iface["uuid"]]
    rows = []
    for link in links:
        iface = db.first(data, "interfaces", uuid=link["interface_uuid"]) or {}
        rows.append([host["hostname"], link["uuid"], iface.get("ifname"), link[name_key]])
    return render(["hostname", "uuid", "ifname", name_key], sorted(rows, key=lambda r: r[1]))


@command(
    "interface-network-list",
    HOST_ARG,
    arg("ifnameoruuid", metavar="<interface name or uuid>", nargs="?", help="Name of interface"),
)
def ifnet_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List network interfaces."""
    host = find_host(ctx.data, a.hostnameorid)
    return _link_list(ctx.data, "interface_networks", "network_name", host, a.ifnameoruuid)


@command(
    "interface-network-assign",
    HOST_ARG,
    IF_ARG,
    arg(
        "netnameoruuid",
        metavar="<network name or uuid>",
        help="Name of UUID of IP network [REQUIRED]",
    ),
)
def ifnet_assign(ctx: Ctx, a: argparse.Namespace) -> str:
    """Assign a network to an interface."""
    data = ctx.data
    host = find_host(data, a.hostnameorid)
    iface = find_interface(data, host, a.ifnameoruuid)
    net = find_network(data, a.netnameoruuid)
    if iface["ifclass"] != "platform":
        raise CommandError(
            f"An interface with interface class '{iface['ifclass']}' "
            "cannot assign platform networks."
        )
    if db.first(data, "interface_networks", interface_uuid=iface["uuid"], network_id=net["id"]):
        raise CommandError(
            f"Interface network with interface ID '{iface['id']}' "
            f"and network ID '{net['id']}' already exists."
        )
    if db.first(data, "interface_networks", host_uuid=host["uuid"], network_type=net["type"]):
        raise CommandError(
            f"An interface with '{net['type']}' network type is already provisioned on this node"
        )
    if net["type"] == "oam" and host["personality"] != "controller":
        raise CommandError("The 'oam' network type is only supported on controller nodes.")
    return _link_show(data, assign_network(data, iface, net["type"]), "network_name")


@command(
    "interface-network-remove",
    arg(
        "interface_network_uuid",
        metavar="<interface network uuid>",
        help="UUID of interface network entry",
    ),
)
def ifnet_remove(ctx: Ctx, a: argparse.Namespace) -> str:
    """Remove an assigned network from an interface."""
    link = db.first(ctx.data, "interface_networks", uuid=a.interface_network_uuid)
    if link is None:
        # Assumed wording of the API's 404 for an unknown interface-network uuid.
        raise CommandError(f"Interface network {a.interface_network_uuid} could not be found.")
    db.delete(ctx.data, "interface_networks", link)
    return f"Deleted Interface Network: {a.interface_network_uuid}"


def _datanetwork_show(dn: Row) -> str:
    return render_dict(
        [(f, dn[f]) for f in ("id", "uuid", "name", "network_type", "mtu", "description")]
    )


@command(
    "datanetwork-add",
    arg("name", metavar="<datanetwork_name>", help="Name of the datanetwork [REQUIRED]"),
    arg(
        "network_type",
        metavar="<network_type>",
        choices=["flat", "vlan", "vxlan"],
        help="Type of the datanetwork [REQUIRED]",
    ),
    arg("-d", "--description", metavar="<description>"),
    arg("-m", "--mtu", metavar="<mtu>", default="1500"),
    arg("-M", "--mode", metavar="<mode>", choices=["dynamic", "static"], default="dynamic"),
)
def datanetwork_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a datanetwork."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", a.name):
        raise CommandError(
            f"DataNetwork name '{a.name}' is not allowed: name may only "
            "contain letters, numbers, underscores, periods and hyphens."
        )
    if db.first(ctx.data, "datanetworks", name=a.name):
        # Assumed wording of the API's duplicate-name conflict.
        raise CommandError(f"DataNetwork with name {a.name} already exists.")
    dn = db.insert(
        ctx.data,
        "datanetworks",
        {
            "name": a.name,
            "network_type": a.network_type,
            "mtu": int(a.mtu),
            "description": a.description,
        },
    )
    return _datanetwork_show(dn)


@command("datanetwork-list")
def datanetwork_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List datanetworks."""
    rows = [
        [d["uuid"], d["name"], d["network_type"], d["mtu"]]
        for d in ctx.data.get("datanetworks", [])
    ]
    return render(["uuid", "name", "network_type", "mtu"], sorted(rows, key=lambda r: r[1]))


@command(
    "interface-datanetwork-assign",
    HOST_ARG,
    IF_ARG,
    arg(
        "datanetnameoruuid",
        metavar="<datanetnameoruuid>",
        help="Name of UUID of datanetwork [REQUIRED]",
    ),
)
def ifdn_assign(ctx: Ctx, a: argparse.Namespace) -> str:
    """Assign a datanetwork to an interface."""
    data = ctx.data
    host = find_host(data, a.hostnameorid)
    iface = find_interface(data, host, a.ifnameoruuid)
    dn = next(
        (
            d
            for d in data.get("datanetworks", [])
            if a.datanetnameoruuid in (d["name"], d["uuid"], str(d["id"]))
        ),
        None,
    )
    if dn is None:
        raise CommandError(f"datanetwork not found: {a.datanetnameoruuid}")
    if iface["ifclass"] not in ("data", "pci-sriov", "pci-passthrough"):
        # Assumed wording, modelled on the platform-network check.
        raise CommandError(
            f"An interface with interface class '{iface['ifclass']}' cannot assign datanetworks."
        )
    if db.first(
        data, "interface_datanetworks", interface_uuid=iface["uuid"], datanetwork_uuid=dn["uuid"]
    ):
        raise CommandError(
            f"Interface network with interface ID '{iface['id']}' "
            f"and datanetwork ID '{dn['id']}' already exists."
        )
    link = db.insert(
        data,
        "interface_datanetworks",
        {
            "interface_uuid": iface["uuid"],
            "host_uuid": host["uuid"],
            "datanetwork_uuid": dn["uuid"],
            "datanetwork_name": dn["name"],
        },
    )
    return _link_show(data, link, "datanetwork_name")


@command(
    "interface-datanetwork-list",
    HOST_ARG,
    arg("ifnameoruuid", metavar="<interface name or uuid>", nargs="?", help="Name of interface"),
)
def ifdn_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List datanetwork interfaces."""
    host = find_host(ctx.data, a.hostnameorid)
    return _link_list(ctx.data, "interface_datanetworks", "datanetwork_name", host, a.ifnameoruuid)
