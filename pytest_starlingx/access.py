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

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_starlingx.backends.base import LabHandle
from pytest_starlingx.errors import BackendError
from pytest_starlingx.model import OAM_NETWORK, LabSpec, Personality

log = logging.getLogger("pytest_starlingx.access")

SSH_PORT = 22
SYSINV_PORT = 6385  # sysinv-restapi
KEYSTONE_PORT = 5000  # keystone-restapi (public)


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


@dataclass(frozen=True)
class LabFacts:
    """What reaching a lab takes from its description: name, topology, OAM addresses, nodes
    (name, personality) and passwords. Saved with the lab's state when it is created, so
    ``stx-lab env`` and ``export`` know a lab built by pytest from a description they do not
    have."""

    name: str
    topology: str
    oam: dict[str, str]  # subnet, gateway, floating, controller_0, controller_1
    nodes: tuple[tuple[str, str], ...]
    passwords: dict[str, str]

    @classmethod
    def of(cls, spec: LabSpec, passwords: Mapping[str, str]) -> LabFacts:
        """The facts of ``spec`` with its resolved ``passwords``."""
        oam = {f.name: str(getattr(spec.oam, f.name)) for f in fields(spec.oam)}
        nodes = tuple((n.name, n.personality.value) for n in spec.nodes)
        return cls(spec.name, spec.topology.value, oam, nodes, dict(passwords))

    def to_json(self) -> dict[str, object]:
        """JSON-ready data (for the lab state)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabFacts:
        """Facts saved with :meth:`to_json`."""
        nodes = tuple((str(name), str(kind)) for name, kind in data["nodes"])
        return cls(data["name"], data["topology"], dict(data["oam"]), nodes,
                   dict(data["passwords"]))  # fmt: skip


def endpoint_targets(facts: LabFacts) -> dict[str, tuple[str, int]]:
    """Each endpoint's name and its (OAM address, port) in the lab: ``ssh`` (the floating
    address), ``ssh-<controller>`` (a controller's own address, with two controllers:
    ansible-playbooks bootstrap's ``external_oam_node_0_address`` and ``..._1_...`` are for
    duplex and standard systems), ``sysinv``, ``keystone``."""
    oam = facts.oam
    floating = oam["floating"]
    targets = {
        "ssh": (floating, SSH_PORT),
        "sysinv": (floating, SYSINV_PORT),
        "keystone": (floating, KEYSTONE_PORT),
    }
    controllers = [name for name, kind in facts.nodes if kind == Personality.CONTROLLER.value]
    if len(controllers) > 1:  # a simplex controller has the floating address only
        for name in controllers:
            targets[f"ssh-{name}"] = (oam[name.replace("-", "_")], SSH_PORT)
    return targets


def gateway_address(facts: LabFacts) -> str:
    """The OAM gateway address with the OAM prefix, as the gateway namespace holds it."""
    prefix = ipaddress.ip_network(facts.oam["subnet"]).prefixlen
    return f"{facts.oam['gateway']}/{prefix}"


def endpoints(facts: LabFacts, ports: Mapping[tuple[str, int], int]) -> dict[str, Endpoint]:
    """The lab's endpoints, given the local port of each (address, port) target."""
    return {
        name: Endpoint(name, address, port, ports[(address, port)])
        for name, (address, port) in endpoint_targets(facts).items()
    }


def open_endpoints(facts: LabFacts, handle: LabHandle, lab_dir: Path) -> dict[str, Endpoint]:
    """Open the lab's OAM gateway (or find it open) and name its endpoints.

    One process at a time per lab (xdist workers share labs): ``lab_dir``'s ``gateway.lock``.
    A recorded gateway the backend will not hand back (its relay gone after a host reboot, an
    opening cut short by a kill -9) is closed and opened anew: under the lock, no other
    process of ours is opening it.
    """
    targets = sorted(set(endpoint_targets(facts).values()))
    address = gateway_address(facts)
    with FileLock(lab_dir / "gateway.lock"):
        try:
            gateway = handle.open_gateway(OAM_NETWORK, address, targets)
        except BackendError as exc:
            log.warning("lab %s: %s; opening it anew", facts.name, exc)
            handle.close_gateway(OAM_NETWORK)
            gateway = handle.open_gateway(OAM_NETWORK, address, targets)
    return endpoints(facts, gateway.ports)


#: starlingx/test's lab types (``config/lab/objects/lab_type_enum.py``) by topology.
STARLINGX_TEST_LAB_TYPES = {
    "simplex": "Simplex",
    "duplex": "Duplex",
    "standard": "Standard",
    "storage": "Storage",
}
#: starlingx/test's node types (``config/lab/files/template_*.json5``) by personality.
STARLINGX_TEST_NODE_TYPES = {"controller": "Controller", "worker": "Compute", "storage": "Storage"}


def starlingx_test_config(facts: LabFacts, ports: Mapping[str, Endpoint]) -> dict[str, object]:
    """The lab as a starlingx/test lab configuration (``config/lab/files/*.json5``, read by
    ``config/lab/objects/lab_config.py``, ``node.py``): its floating address and SSH port are
    the loopback forward of the OAM floating address; a controller with an OAM address of its
    own is reached at its own forward (simplex's at the floating one), the other nodes only
    from the active controller (``ip`` their host name, which the controllers resolve, at
    the node default port 22). ``admin_credentials`` log in over SSH
    (sysadmin); REST and Horizon use keystone's admin."""
    ssh = ports["ssh"].local_port
    nodes: dict[str, object] = {}
    for name, kind in facts.nodes:
        entry: dict[str, object] = {"ip": name}  # from the active controller, port 22
        own = ports.get(f"ssh-{name}")
        if own is not None:
            entry = {"ip": "127.0.0.1", "ssh_port": own.local_port}
        elif facts.topology == "simplex" and name == "controller-0":
            entry = {"ip": "127.0.0.1", "ssh_port": ssh}
        nodes[name] = entry | {
            "node_type": STARLINGX_TEST_NODE_TYPES[kind],
            "node_capabilities": [],
        }
    admin = {"user_name": "admin", "password": facts.passwords["admin"]}
    return {
        "floating_ip": "127.0.0.1",
        "lab_name": facts.name,
        "lab_type": STARLINGX_TEST_LAB_TYPES[facts.topology],
        "admin_credentials": {"user_name": "sysadmin", "password": facts.passwords["sysadmin"]},
        "rest_credentials": admin,
        "horizon_credentials": admin,
        "bm_password": "",
        "use_jump_server": False,
        "ssh_port": ssh,
        "lab_capabilities": [],
        "nodes": nodes,
    }
