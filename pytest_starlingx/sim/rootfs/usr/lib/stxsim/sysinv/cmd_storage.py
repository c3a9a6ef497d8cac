"""Disks, partitions, LVM, OSDs, storage backends and tiers, Ceph monitors."""

from __future__ import annotations

import argparse
import math

from stxsim.sysinv import db
from stxsim.sysinv.cmd_hosts import HOST_ARG
from stxsim.sysinv.db import Data, Row
from stxsim.sysinv.hosts import CommandError, find_host, has_function, is_aio, is_simplex
from stxsim.sysinv.registry import Ctx, arg, command
from stxsim.sysinv.storage_state import (
    backend_state,
    mon_state,
    partition_status,
    ready_at,
    stor_state,
)
from stxsim.table import render, render_dict

LVM_GUID = "ba5eba11-0000-1111-2222-000000000001"
CEPH_MON_GIB = 20


def gib(mib: float) -> float:
    """MiB to GiB rounded down to three decimals, as cgtsclient prints sizes."""
    return math.floor(mib / 1024 * 1000) / 1000.0


def find_disk(data: Data, host: Row, ident: str) -> Row | None:
    """A disk of `host` by uuid, device node, name or path (cgtsclient `_find_disk`)."""
    for disk in db.rows(data, "disks", host_uuid=host["uuid"]):
        if ident in (
            disk["uuid"],
            disk["device_node"],
            disk["device_node"][5:],
            disk["device_path"],
        ):
            return disk
    return None


@command("host-disk-list", HOST_ARG)
def disk_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List disks."""
    host = find_host(ctx.data, a.hostnameorid)
    rows = [
        [
            d["uuid"],
            d["device_node"],
            d["device_num"],
            d["device_type"],
            gib(d["size_mib"]),
            gib(d["available_mib"]),
            d["rpm"],
            d["serial_id"],
            d["device_path"],
        ]
        for d in sorted(
            db.rows(ctx.data, "disks", host_uuid=host["uuid"]), key=lambda d: d["device_node"]
        )
    ]
    return render(
        [
            "uuid",
            "device_node",
            "device_num",
            "device_type",
            "size_gib",
            "available_gib",
            "rpm",
            "serial_id",
            "device_path",
        ],
        rows,
    )


def _partition_show(part: Row, now: float) -> str:
    fields = dict(
        part,
        size_mib=part["size_mib"],
        ihost_uuid=part["host_uuid"],
        status=partition_status(part, now),
    )
    return render_dict(
        [
            (f, fields.get(f))
            for f in (
                "device_path",
                "device_node",
                "type_guid",
                "type_name",
                "start_mib",
                "end_mib",
                "size_mib",
                "uuid",
                "ihost_uuid",
                "idisk_uuid",
                "ipv_uuid",
                "status",
                "created_at",
                "updated_at",
            )
        ]
    )


@command(
    "host-disk-partition-add",
    arg("hostname_or_id", metavar="<hostname or id>", help="Name or ID of host [REQUIRED]"),
    arg(
        "disk_path_or_uuid",
        metavar="<disk path or uuid>",
        help="UUID of the disk to place the partition [REQUIRED]",
    ),
    arg(
        "size_gib",
        metavar="<partition size in GiB>",
        help="Requested size of the new partition in GiB [REQUIRED]",
    ),
    arg(
        "-t",
        "--partition_type",
        metavar="<partition type>",
        choices=["lvm_phys_vol"],
        default="lvm_phys_vol",
    ),
)
def partition_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a disk partition to a disk of a specified host."""
    try:
        size = int(a.size_gib)
    except ValueError:
        raise CommandError(
            f"Partition size must be an integer greater than 0: {a.size_gib}"
        ) from None
    host = find_host(ctx.data, a.hostname_or_id)
    disk = find_disk(ctx.data, host, a.disk_path_or_uuid)
    if disk is None:
        raise CommandError(f"Disk not found: {a.disk_path_or_uuid}")
    if size <= 0:
        raise CommandError("Partition size must be greater than 0.")
    if db.first(ctx.data, "stors", idisk_uuid=disk["uuid"]):
        raise CommandError(
            "Cannot create partition on a disk that is assigned as a storage volume."
        )
    if size * 1024 > disk["available_mib"]:
        raise CommandError(
            f"Requested size {size} GiB is larger than the "
            f"{gib(disk['available_mib'])} GiB available."
        )
    existing = db.rows(ctx.data, "partitions", idisk_uuid=disk["uuid"])
    # The installer's own partitions (boot, root, cgts-vg) take sdX1-sdX4 of the root disk.
    number = len(existing) + (5 if disk["device_node"] == host["rootfs_device"] else 1)
    start = disk["size_mib"] - disk["available_mib"]
    disk["available_mib"] -= size * 1024
    part = db.insert(
        ctx.data,
        "partitions",
        {
            "host_uuid": host["uuid"],
            "idisk_uuid": disk["uuid"],
            "ipv_uuid": None,
            "device_node": f"{disk['device_node']}{number}",
            "device_path": f"{disk['device_path']}-part{number}",
            "type_guid": LVM_GUID,
            "type_name": "LVM Physical Volume",
            "start_mib": start,
            "end_mib": start + size * 1024,
            "size_mib": size * 1024,
            "ready_at": ready_at(ctx.now),
        },
    )
    return _partition_show(part, ctx.now)


@command(
    "host-disk-partition-list", HOST_ARG, arg("--disk", metavar="<disk uuid>", help="UUID of disk")
)
def partition_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List disk partitions."""
    host = find_host(ctx.data, a.hostnameorid)
    parts = db.rows(ctx.data, "partitions", host_uuid=host["uuid"])
    if a.disk:
        parts = [p for p in parts if p["idisk_uuid"] == a.disk]
    rows = [
        [
            p["uuid"],
            p["device_path"],
            p["device_node"],
            p["type_guid"],
            p["type_name"],
            gib(p["size_mib"]),
            partition_status(p, ctx.now),
        ]
        for p in sorted(parts, key=lambda p: p["device_path"])
    ]
    return render(
        ["uuid", "device_path", "device_node", "type_guid", "type_name", "size_gib", "status"], rows
    )


def _lvg_show(lvg: Row) -> str:
    return render_dict(
        [
            ("lvm_vg_name", lvg["lvm_vg_name"]),
            ("vg_state", lvg["vg_state"]),
            ("uuid", lvg["uuid"]),
            ("ihost_uuid", lvg["host_uuid"]),
            ("lvm_vg_access", None),
            ("lvm_max_lv", 0),
            ("lvm_cur_lv", 0),
            ("lvm_max_pv", 0),
            ("lvm_cur_pv", 0),
            ("lvm_vg_size_gib", 0.0),
            ("lvm_vg_avail_size_gib", 0.0),
            ("lvm_vg_total_pe", 0),
            ("lvm_vg_free_pe", 0),
            ("created_at", lvg["created_at"]),
            ("updated_at", lvg["updated_at"]),
            ("parameters", {}),
        ]
    )


@command(
    "host-lvg-add",
    HOST_ARG,
    arg("lvm_vg_name", metavar="<lvg name>", help="Name of the Local Volume Group [REQUIRED]"),
)
def lvg_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a Local Volume Group."""
    host = find_host(ctx.data, a.hostnameorid)
    name = a.lvm_vg_name.replace(" ", "")
    if name not in ("nova-local", "cgts-vg", "cinder-volumes"):
        raise CommandError(
            f'Volume Group name ({name}) must be "nova-local", "cgts-vg" or "cinder-volumes"'
        )
    if host["administrative"] != "locked":
        raise CommandError("Host must be locked")
    if name == "nova-local" and not has_function(host, "worker"):
        raise CommandError("nova-local can only be added to a host which has a worker subfunction.")
    if db.first(ctx.data, "lvgs", host_uuid=host["uuid"], lvm_vg_name=name):
        raise CommandError(f"{name} volume group already exists")
    lvg = db.insert(
        ctx.data, "lvgs", {"host_uuid": host["uuid"], "lvm_vg_name": name, "vg_state": "adding"}
    )
    return _lvg_show(lvg)


@command("host-lvg-list", HOST_ARG)
def lvg_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List Local Volume Groups."""
    host = find_host(ctx.data, a.hostnameorid)
    rows = []
    for lvg in db.rows(ctx.data, "lvgs", host_uuid=host["uuid"]):
        pvs = db.rows(ctx.data, "pvs", host_uuid=host["uuid"], lvm_vg_name=lvg["lvm_vg_name"])
        rows.append(
            [
                lvg["uuid"],
                lvg["lvm_vg_name"],
                lvg["vg_state"],
                None,
                "thick",
                None,
                "wz--n-",
                0.0,
                0.0,
                len(pvs),
                0,
            ]
        )
    return render(
        [
            "UUID",
            "LVG Name",
            "State",
            "Function",
            "Type",
            "Pool Size",
            "Access",
            "Total Size (GiB)",
            "Avail Size (GiB)",
            "Current PVs",
            "Current LVs",
        ],
        sorted(rows, key=lambda r: r[0]),
    )


@command(
    "host-pv-add",
    HOST_ARG,
    arg("lvgname", metavar="<lvg name>", help="Name of local volume group on the host [REQUIRED]"),
    arg(
        "device_name_path_uuid",
        metavar="<device name or path or UUID>",
        help="Name or uuid of disk on the host [REQUIRED]",
    ),
)
def pv_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a Physical Volume."""
    host = find_host(ctx.data, a.hostnameorid)
    lvg = db.first(ctx.data, "lvgs", host_uuid=host["uuid"], lvm_vg_name=a.lvgname)
    if lvg is None:
        raise CommandError(f"Local volume group not found: {a.lvgname}")
    target = find_disk(ctx.data, host, a.device_name_path_uuid)
    pv_type = "disk"
    if target is None:
        pv_type = "partition"
        target = next(
            (
                p
                for p in db.rows(ctx.data, "partitions", host_uuid=host["uuid"])
                if a.device_name_path_uuid in (p["uuid"], p["device_node"], p["device_path"])
            ),
            None,
        )
    if target is None:
        raise CommandError(
            f"No disk or partition found on host '{host['hostname']}' "
            f"by device path or uuid {a.device_name_path_uuid}"
        )
    pv = db.insert(
        ctx.data,
        "pvs",
        {
            "host_uuid": host["uuid"],
            "lvm_vg_name": lvg["lvm_vg_name"],
            "pv_state": "adding",
            "pv_type": pv_type,
            "disk_or_part_uuid": target["uuid"],
            "disk_or_part_device_node": target["device_node"],
            "disk_or_part_device_path": target["device_path"],
        },
    )
    target["ipv_uuid"] = pv["uuid"]
    return render_dict(
        [
            (f, pv.get(f))
            for f in (
                "uuid",
                "pv_state",
                "pv_type",
                "disk_or_part_uuid",
                "disk_or_part_device_node",
                "disk_or_part_device_path",
                "lvm_vg_name",
                "created_at",
                "updated_at",
            )
        ]
        + [("lvm_pv_name", target["device_node"]), ("ihost_uuid", host["uuid"])]
    )


def _stor_show(data: Data, stor: Row, host: Row, now: float) -> str:
    disk = db.first(data, "disks", uuid=stor["idisk_uuid"]) or {}
    return render_dict(
        [
            ("osdid", stor["osdid"]),
            ("function", "osd"),
            ("state", stor_state(stor, host, now)),
            ("journal_location", stor["uuid"]),
            ("journal_size_gib", 1024),
            ("journal_path", f"{disk.get('device_path')}-part2"),
            ("journal_node", f"{disk.get('device_node')}2"),
            ("uuid", stor["uuid"]),
            ("ihost_uuid", host["uuid"]),
            ("idisk_uuid", stor["idisk_uuid"]),
            ("tier_uuid", stor["tier_uuid"]),
            ("tier_name", stor["tier_name"]),
            ("created_at", stor["created_at"]),
            ("updated_at", stor["updated_at"]),
        ]
    )


@command(
    "host-stor-add",
    arg("hostnameorid", metavar="<hostname or id>", help="Name or ID of host [REQUIRED]"),
    arg(
        "function",
        metavar="<function>",
        choices=["osd", "monitor", "journal"],
        nargs="?",
        default="osd",
        help="Type of the stor (default: osd)",
    ),
    arg("idisk_uuid", metavar="<idisk_uuid>", help="uuid of disk [REQUIRED]"),
    arg("--journal-location", metavar="<journal_location>"),
    arg("--journal-size", metavar="<size of the journal (GiB)>"),
    arg("--tier-uuid", metavar="<storage tier uuid>", help="storage tier to assign this OSD"),
)
def stor_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a storage to a host."""
    data = ctx.data
    host = find_host(data, a.hostnameorid)
    if not db.first(data, "backends", backend="ceph"):
        raise CommandError("System must have either a ceph or a ceph-rook backend")
    disk = db.first(data, "disks", host_uuid=host["uuid"], uuid=a.idisk_uuid)
    if disk is None:
        if db.first(data, "disks", uuid=a.idisk_uuid):
            raise CommandError("Disk is attached to a different host")
        raise CommandError("Missing idisk_uuid.")
    if disk["device_node"] == host["rootfs_device"]:
        raise CommandError("Can not associate to a rootfs disk")
    if db.first(data, "stors", idisk_uuid=disk["uuid"]):
        raise CommandError("Disk already assigned.")
    if db.first(data, "partitions", idisk_uuid=disk["uuid"]):
        raise CommandError(
            "Cannot assign storage function to a disk that contains other partitions."
        )
    tier = next((t for t in data["tiers"] if a.tier_uuid in (None, t["uuid"])), None)
    if tier is None:
        # Assumed wording of the API's unknown-tier rejection.
        raise CommandError(f"Storage tier not found: {a.tier_uuid}")
    data["system"]["next_osdid"] = osdid = data["system"].get("next_osdid", -1) + 1
    stor = db.insert(
        data,
        "stors",
        {
            "host_uuid": host["uuid"],
            "idisk_uuid": disk["uuid"],
            "osdid": osdid,
            "tier_uuid": tier["uuid"],
            "tier_name": tier["name"],
            "ready_at": ready_at(ctx.now),
        },
    )
    disk["available_mib"] = 0
    return _stor_show(data, stor, host, ctx.now)


@command("host-stor-list", HOST_ARG)
def stor_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List host storage."""
    host = find_host(ctx.data, a.hostnameorid)
    rows = []
    for s in db.rows(ctx.data, "stors", host_uuid=host["uuid"]):
        disk = db.first(ctx.data, "disks", uuid=s["idisk_uuid"]) or {}
        rows.append(
            [
                s["uuid"],
                "osd",
                s["osdid"],
                stor_state(s, host, ctx.now),
                s["idisk_uuid"],
                f"{disk.get('device_path')}-part2",
                f"{disk.get('device_node')}2",
                1,
                s["tier_name"],
            ]
        )
    return render(
        [
            "uuid",
            "function",
            "osdid",
            "state",
            "idisk_uuid",
            "journal_path",
            "journal_node",
            "journal_size_gib",
            "tier_name",
        ],
        sorted(rows, key=lambda r: r[0]),
    )


def _replication(data: Data) -> int:
    return 1 if is_simplex(data) else 2


def backend_list_text(data: Data, now: float) -> str:
    """The storage-backend-list table."""
    rows = []
    for b in data.get("backends", []):
        caps = f"replication: {_replication(data)}\nmin_replication: 1"
        if b["backend"] == "ceph-rook":
            caps = f"deployment_model: controller\n{caps}"
        rows.append(
            [b["uuid"], b["name"], b["backend"], backend_state(b, now), None, b["services"], caps]
        )
    return render(
        ["uuid", "name", "backend", "state", "task", "services", "capabilities"],
        sorted(rows, key=lambda r: r[0]),
    )


@command(
    "storage-backend-add",
    arg(
        "backend",
        metavar="<backend>",
        choices=["ceph", "ceph-external", "file", "lvm", "external", "ceph-rook"],
        help="The storage backend to add [REQUIRED]",
    ),
    arg("-s", "--services", metavar="<services>"),
    arg("-n", "--name", metavar="<name>"),
    arg("-t", "--tier_uuid", metavar="<tier_uuid>"),
    arg("-d", "--deployment", metavar="<deployment_model>"),
    arg(
        "--confirmed",
        action="store_true",
        help="Provide acknowledgement that the operation should continue as the action "
        "is not reversible.",
    ),
    arg("attributes", metavar="<parameter=value>", nargs="*", default=[]),
)
def backend_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add a storage backend."""
    data = ctx.data
    if a.backend not in ("ceph", "ceph-rook"):
        # Assumed wording: the simulator models only the Ceph backends.
        raise CommandError(f"Storage backend '{a.backend}' is not supported by this system.")
    name = a.name or f"{a.backend}-store"
    if db.first(data, "backends", backend=a.backend):
        raise CommandError(
            f"Storage backend {a.backend} is already configured "
            f"as '{db.first(data, 'backends', backend=a.backend)['name']}'."
        )
    services = a.services or "block,filesystem"
    if not a.confirmed:
        what = "osds" if is_simplex(data) else "storage nodes"
        options = (
            f"\nSystem configuration has changed.\nPlease follow the administrator "
            f"guide to complete configuring the system.\n\nbackend: {a.backend}\n"
            f"name: {name}\nservices: {services}"
        )
        raise CommandError(
            f"{options}\nWARNING : THIS OPERATION IS NOT REVERSIBLE AND CANNOT BE CANCELLED. "
            f"\n\nBy confirming this operation, Ceph backend will be created.\nA minimum of "
            f"{_replication(data)} {what} are required to complete the configuration.\n"
            f"Please set the 'confirmed' field to execute this operation for the "
            f"{a.backend} backend."
        )
    backend = db.insert(
        data,
        "backends",
        {"name": name, "backend": a.backend, "services": services, "ready_at": ready_at(ctx.now)},
    )
    for tier in data["tiers"]:
        db.touch(tier, status="in-use", backend_uuid=backend["uuid"])
    if a.backend == "ceph":
        for host in db.rows(data, "hosts", personality="controller"):
            add_mon(data, host, ctx.now)
    return backend_list_text(data, ctx.now)


def add_mon(data: Data, host: Row, now: float) -> Row:
    """A Ceph monitor on `host`."""
    return db.insert(
        data,
        "ceph_mons",
        {"host_uuid": host["uuid"], "hostname": host["hostname"], "ready_at": ready_at(now)},
    )


@command("storage-backend-list")
def backend_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List storage backends."""
    return backend_list_text(ctx.data, ctx.now)


@command(
    "storage-tier-list",
    arg("cluster_or_uuid", metavar="<cluster name or uuid>", help="Name or UUID of cluster"),
)
def tier_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List storage tiers."""
    cluster = ctx.data["system"]["cluster"]
    if a.cluster_or_uuid not in (cluster["name"], cluster["uuid"]):
        raise CommandError(f"cluster not found: {a.cluster_or_uuid}")
    rows = [[t["uuid"], t["name"], t["status"], t["backend_uuid"]] for t in ctx.data["tiers"]]
    return render(["uuid", "name", "status", "backend_using"], sorted(rows, key=lambda r: r[1]))


def _mon_list_text(data: Data, now: float) -> str:
    rows = [
        [m["uuid"], CEPH_MON_GIB, m["hostname"], mon_state(m, now), None]
        for m in data.get("ceph_mons", [])
    ]
    return render(
        ["uuid", "ceph_mon_gib", "hostname", "state", "task"], sorted(rows, key=lambda r: r[0])
    )


@command(
    "ceph-mon-add",
    arg("hostnameorid", metavar="<hostname or id>", help="name or ID of host [REQUIRED]"),
)
def mon_add(ctx: Ctx, a: argparse.Namespace) -> str:
    """Add ceph monitor."""
    data = ctx.data
    host = find_host(data, a.hostnameorid)
    if not db.first(data, "backends", backend="ceph"):
        raise CommandError("Ceph backend is not configured.")
    if db.first(data, "ceph_mons", host_uuid=host["uuid"]):
        raise CommandError(f"Ceph monitor already configured for host '{host['hostname']}'.")
    if host["personality"] == "worker" and (
        is_aio(data) or db.rows(data, "hosts", personality="storage")
    ):
        raise CommandError(
            "Can not add a storage monitor to a worker if ceph's deployments "
            "model is already set to storage-nodes or system is All-in-one."
        )
    if host["personality"] != "worker" and host["hostname"] != "storage-0":
        raise CommandError("Ceph monitor can only be added to storage-0 or any worker.")
    mon = add_mon(data, host, ctx.now)
    return render_dict(
        [
            ("uuid", mon["uuid"]),
            ("ceph_mon_gib", CEPH_MON_GIB),
            ("created_at", mon["created_at"]),
            ("updated_at", None),
            ("state", mon_state(mon, ctx.now)),
            ("task", None),
        ]
    )


@command("ceph-mon-list")
def mon_list(ctx: Ctx, a: argparse.Namespace) -> str:
    """List ceph mons."""
    return _mon_list_text(ctx.data, ctx.now)
