"""A lab's platform endpoints from the host, at loopback ports the lab owns.

StarlingX is reached at its OAM addresses: SSH at the floating address and at each
controller's own (unit) address, sysinv's REST API at 6385 and keystone at 5000 on the
floating address (starlingx/test ``config/lab/files/default.json5``: ``floating_ip``,
``ssh_port``; stx-puppet ``platform/manifests/haproxy.pp``: sysinv-restapi and
keystone-restapi on the OAM floating address). The host never talks to those addresses
itself: the backend gives the lab's OAM network a gateway namespace holding the OAM gateway
address, whose relay serves each endpoint at ``127.0.0.1:<port>`` (see the backend's
``open_gateway``). So two labs with the same addressing (both the documented 10.10.10.0/24)
are reachable side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pytest_starlingx.backends.base import LabHandle
from pytest_starlingx.errors import BackendError
from pytest_starlingx.model import LabSpec, Personality

log = logging.getLogger("pytest_starlingx.access")

SSH_PORT = 22
SYSINV_PORT = 6385  # sysinv-restapi
KEYSTONE_PORT = 5000  # keystone-restapi (public)
OAM_NETWORK = "oam"


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a lab: what it reaches in the lab and where the host reaches it."""

    name: str
    address: str  # in the lab (OAM)
    port: int  # in the lab
    local_port: int  # on 127.0.0.1

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<local port>`` (the host's way to it)."""
        return f"http://127.0.0.1:{self.local_port}"


def endpoint_targets(spec: LabSpec) -> dict[str, tuple[str, int]]:
    """Each endpoint's name and its (OAM address, port) in the lab: ``ssh`` (the floating
    address), ``ssh-<controller>`` (a controller's own address, with two controllers:
    ansible-playbooks bootstrap's ``external_oam_node_0_address`` and ``..._1_...`` are for
    duplex and standard systems), ``sysinv``, ``keystone``."""
    oam = spec.oam
    floating = str(oam.floating)
    targets = {
        "ssh": (floating, SSH_PORT),
        "sysinv": (floating, SYSINV_PORT),
        "keystone": (floating, KEYSTONE_PORT),
    }
    controllers = [n.name for n in spec.nodes if n.personality is Personality.CONTROLLER]
    if len(controllers) > 1:  # a simplex controller has the floating address only
        units = {"controller-0": oam.controller_0, "controller-1": oam.controller_1}
        for name in controllers:
            targets[f"ssh-{name}"] = (str(units[name]), SSH_PORT)
    return targets


def gateway_address(spec: LabSpec) -> str:
    """The OAM gateway address with the OAM prefix, as the gateway namespace holds it."""
    return f"{spec.oam.gateway}/{spec.oam.subnet.prefixlen}"


def endpoints(spec: LabSpec, ports: Mapping[tuple[str, int], int]) -> dict[str, Endpoint]:
    """The lab's endpoints, given the local port of each (address, port) target."""
    return {
        name: Endpoint(name, address, port, ports[(address, port)])
        for name, (address, port) in endpoint_targets(spec).items()
    }


def open_endpoints(spec: LabSpec, handle: LabHandle, lab_dir: Path) -> dict[str, Endpoint]:
    """Open the lab's OAM gateway (or find it open) and name its endpoints.

    One process at a time per lab (xdist workers share labs): ``lab_dir``'s ``gateway.lock``.
    A recorded gateway the backend will not hand back (its relay gone after a host reboot, an
    opening cut short by a kill -9) is closed and opened anew: under the lock, no other
    process of ours is opening it.
    """
    targets = sorted(set(endpoint_targets(spec).values()))
    address = gateway_address(spec)
    with FileLock(lab_dir / "gateway.lock"):
        try:
            gateway = handle.open_gateway(OAM_NETWORK, address, targets)
        except BackendError as exc:
            log.warning("lab %s: %s; opening it anew", spec.name, exc)
            handle.close_gateway(OAM_NETWORK)
            gateway = handle.open_gateway(OAM_NETWORK, address, targets)
    return endpoints(spec, gateway.ports)


#: starlingx/test's lab types (``config/lab/objects/lab_type_enum.py``) by topology.
STARLINGX_TEST_LAB_TYPES = {
    "simplex": "Simplex",
    "duplex": "Duplex",
    "standard": "Standard",
    "storage": "Storage",
}
#: starlingx/test's node types (``config/lab/files/template_*.json5``) by personality.
STARLINGX_TEST_NODE_TYPES = {"controller": "Controller", "worker": "Compute", "storage": "Storage"}


def starlingx_test_config(
    spec: LabSpec, ports: Mapping[str, Endpoint], passwords: Mapping[str, str]
) -> dict[str, object]:
    """The lab as a starlingx/test lab configuration (``config/lab/files/*.json5``, read by
    ``config/lab/objects/lab_config.py``, ``node.py``): its floating address and SSH port are
    the loopback forward of the OAM floating address; a controller with an OAM address of its
    own is reached at its own forward (simplex's at the floating one), the other nodes only
    from the active controller (``ip`` their host name, which the controllers resolve, at
    the node default port 22). ``admin_credentials`` log in over SSH
    (sysadmin); REST and Horizon use keystone's admin."""
    ssh = ports["ssh"].local_port
    nodes: dict[str, object] = {}
    for node in spec.nodes:
        entry: dict[str, object] = {"ip": node.name}  # from the active controller, port 22
        own = ports.get(f"ssh-{node.name}")
        if own is not None:
            entry = {"ip": "127.0.0.1", "ssh_port": own.local_port}
        elif spec.topology.value == "simplex" and node.name == "controller-0":
            entry = {"ip": "127.0.0.1", "ssh_port": ssh}
        nodes[node.name] = entry | {
            "node_type": STARLINGX_TEST_NODE_TYPES[node.personality.value],
            "node_capabilities": [],
        }
    admin = {"user_name": "admin", "password": passwords["admin"]}
    return {
        "floating_ip": "127.0.0.1",
        "lab_name": spec.name,
        "lab_type": STARLINGX_TEST_LAB_TYPES[spec.topology.value],
        "admin_credentials": {"user_name": "sysadmin", "password": passwords["sysadmin"]},
        "rest_credentials": admin,
        "horizon_credentials": admin,
        "bm_password": "",
        "use_jump_server": False,
        "ssh_port": ssh,
        "lab_capabilities": [],
        "nodes": nodes,
    }
