"""host-unlock semantic checks, in the order and with the wording of sysinv's host.py.

Only the checks a virtual lab can trip are kept: install/online state, an application being
applied, OAM on controllers,
storage backends settled, Ceph OSDs and monitors where Ceph is configured, nova-local for
OpenStack compute hosts, mgmt and cluster-host interfaces, partitions still being created.
"""

from __future__ import annotations

from stxsim.sysinv import db, storage_state
from stxsim.sysinv.db import Data, Row
from stxsim.sysinv.hosts import (
    CommandError,
    app_status,
    availability,
    has_function,
    is_aio,
    is_simplex,
)


def _networks(data: Data, host: Row) -> dict[str, Row]:
    """Network type -> the interface carrying it on `host`."""
    out = {}
    for link in db.rows(data, "interface_networks", host_uuid=host["uuid"]):
        iface = db.first(data, "interfaces", uuid=link["interface_uuid"])
        if iface:
            out[link["network_type"]] = iface
    return out


def check_unlock(data: Data, host: Row, now: float, force: bool) -> None:
    """Raise CommandError with sysinv's message when `host` may not be unlocked."""
    name = host["hostname"] or str(host["id"])
    if host.get("install_state") == "failed":
        raise CommandError(f"Cannot unlock host {name} due to installation failure")
    if host["administrative"] == "unlocked":
        raise CommandError(f"Avoiding 'unlock' action on already 'unlocked' host {name}")
    applying = [a for a in data.get("apps", []) if app_status(a, now)[0] == "applying"]
    if applying and not force:  # host.py check_unlock_application (r/stx.10.0)
        raise CommandError(
            f"Rejected: Can not unlock host {name} while an application is being applied, "
            "updated or recovered. Please try again later."
        )
    if not force and availability(host, now)[1] != "online":
        raise CommandError(
            f"Host {name} is not online. Wait for 'online' availability status and then 'unlock'"
        )
    if not (host["mgmt_mac"] and host["hostname"] and host["personality"]):
        raise CommandError(
            f"Can not unlock an unprovisioned host {name}. "
            "Please perform 'Edit Host' to provision host."
        )
    if not host.get("inventoried"):
        raise CommandError(
            f"Can not unlock host {name} that has not yet been inventoried. "
            "Please wait for host to complete initial inventory prior to unlock."
        )
    nets = _networks(data, host)
    if host["personality"] == "controller":
        _check_controller(data, nets, now)
    if has_function(host, "worker"):
        _check_worker(data, host)
    elif host["personality"] == "storage" and not db.rows(data, "stors", host_uuid=host["uuid"]):
        raise CommandError("Can not unlock a storage node without any Storage Volumes configured")
    _check_interfaces(data, name, nets)
    for part in db.rows(data, "partitions", host_uuid=host["uuid"]):
        if storage_state.partition_status(part, now) == "Creating":
            raise CommandError(
                f"Cannot unlock host {name} while partitions on the host are "
                "in a creating/deleting/modifying state."
            )


def _check_controller(data: Data, nets: dict[str, Row], now: float) -> None:
    if "oam" not in nets:
        raise CommandError(
            "Can not unlock a controller host without an oam interface. "
            "Add an oam interface before re-attempting this command."
        )
    for backend in data.get("backends", []):
        state = storage_state.backend_state(backend, now)
        if backend["backend"] == "ceph" and state != "configured":
            raise CommandError(
                f"{backend['backend'].title()} is {state}. All storage backends "
                "must be configured before operation is allowed."
            )


def _check_worker(data: Data, host: Row) -> None:
    ceph = db.first(data, "backends", backend="ceph")
    if ceph:
        host_stors = db.rows(data, "stors", host_uuid=host["uuid"])
        if is_simplex(data):
            for tier in data.get("tiers", []):
                if len(db.rows(data, "stors", tier_uuid=tier["uuid"])) < 1:
                    raise CommandError(
                        "Can not unlock node until at least 1 osd stor is "
                        f"configured for tier '{tier['name']}'."
                    )
        elif is_aio(data):
            if not host_stors:
                raise CommandError("Can not unlock node until at least one OSD is configured.")
        elif not _ceph_model_defined(data):
            raise CommandError(
                "Can not unlock a worker node until the third Ceph monitor is defined by "
                "either adding a storage node or configuring a monitor on a worker node. "
                "Note that this will select the storage deployment model, check "
                "documentation for details and restrictions."
            )
    labels = db.rows(data, "labels", host_uuid=host["uuid"])
    compute = any(
        lb["label_key"] == "openstack-compute-node" and lb["label_value"] == "enabled"
        for lb in labels
    )
    _check_nova_local(data, host, required=compute)


def _ceph_model_defined(data: Data) -> bool:
    """Storage hosts exist, or a worker carries the third Ceph monitor."""
    if db.rows(data, "hosts", personality="storage"):
        return True
    workers = {h["uuid"] for h in db.rows(data, "hosts", personality="worker")}
    return any(m["host_uuid"] in workers for m in data.get("ceph_mons", []))


def _check_nova_local(data: Data, host: Row, required: bool) -> None:
    required_msg = (
        "A host with worker functionality requires a cgts-vg/instances-lv "
        "or a nova-local volume group prior to being enabled. "
    )
    lvg = db.first(data, "lvgs", host_uuid=host["uuid"], lvm_vg_name="nova-local")
    if lvg:
        if not db.rows(data, "pvs", host_uuid=host["uuid"], lvm_vg_name="nova-local"):
            raise CommandError(
                f"{required_msg if required else ''}The nova-local volume group "
                "does not contain any physical volumes in the adding or "
                "provisioned state."
            )
    elif required:
        what = (
            "controller with worker functionality"
            if host["personality"] == "controller"
            else "worker"
        )
        raise CommandError(
            f"A {what} requires a cgts-vg/instances-lv or a nova-local volume "
            "group prior to being enabled. Please update the storage settings "
            "for the host."
        )


def _check_interfaces(data: Data, name: str, nets: dict[str, Row]) -> None:
    for net_type, label in (("mgmt", "management"), ("cluster-host", "cluster-host")):
        iface = nets.get(net_type)
        if iface is None:
            raise CommandError(
                f"Cannot unlock host {name} without configuring a {label} interface."
            )
        if iface["iftype"] == "virtual" and not is_simplex(data):
            raise CommandError(
                f"Cannot unlock host {name} when {label} interface is "
                "configured on a virtual interface."
            )
