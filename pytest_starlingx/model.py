"""The lab description: topologies, nodes, networks and sizes, as frozen dataclasses.

A :class:`LabSpec` says what a lab is (topology, node sizes, addresses, passwords); where it
runs (libvirt URI, storage pool, artifact directory) comes from options, not from here.
Build one with :func:`resolve_lab` (from a topology name and overrides) or with
:func:`pytest_starlingx.labfile.load_lab` (from a YAML file, validated).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class Topology(StrEnum):
    """The four StarlingX deployment options, named as users say them."""

    SIMPLEX = "simplex"  # AIO-SX: controller-0
    DUPLEX = "duplex"  # AIO-DX: controller-0/1
    STANDARD = "standard"  # controller storage: controller-0/1 + workers
    STORAGE = "storage"  # dedicated storage: controller-0/1 + workers + storage nodes

    @property
    def all_in_one(self) -> bool:
        """True for the options whose controllers are also workers."""
        return self in (Topology.SIMPLEX, Topology.DUPLEX)

    @property
    def system_mode(self) -> str:
        """The bootstrap's ``system_mode``: duplex covers AIO-DX, standard and storage."""
        return "simplex" if self is Topology.SIMPLEX else "duplex"


class Personality(StrEnum):
    """A StarlingX node identity."""

    CONTROLLER = "controller"
    WORKER = "worker"
    STORAGE = "storage"


class BackendKind(StrEnum):
    """The hypervisors a lab can run on."""

    LIBVIRT = "libvirt"
    VIRTUALBOX = "virtualbox"


class AddHosts(StrEnum):
    """How the other nodes get their identity (starlingx.md 5.6)."""

    DISCOVER = "discover"  # network-boot, then `host-update <id> personality=...`
    HOST_ADD = "host-add"  # `host-add -n -p -m <mgmt MAC>` before power-on


class Firmware(StrEnum):
    """The nodes' firmware. A StarlingX ISO boots ISOLINUX under BIOS and GRUB under UEFI
    (starlingx/tools base-bullseye.yaml ``iso-syslinux-entry`` / ``iso-grub-entry``), and the
    other nodes network-boot pxelinux or GRUB (metal ``pxe-network-installer``)."""

    BIOS = "bios"
    UEFI = "uefi"


class Uplink(StrEnum):
    """The OAM network's way out. ``nat``: its gateway address and masquerading, as StarlingX's
    own libvirt set-up has them (starlingx/tools ``deployment/libvirt/setup_network.sh``), for a
    real ISO's bootstrap, which pulls its container images from public registries; the
    backend provides them without a host address on the lab network. ``isolated``: none, the
    lab reaches nothing outside it (what the simulator needs)."""

    NAT = "nat"
    ISOLATED = "isolated"


class Profile(StrEnum):
    """Node size profiles: StarlingX's documented minimums, or small simulator nodes."""

    REAL = "real"
    SIM = "sim"


# The four lab networks in StarlingX's NIC order; the mgmt NIC is the network-boot NIC.
NETWORKS: tuple[str, ...] = ("oam", "mgmt", "data0", "data1")
OAM_NETWORK = "oam"  # the external network: the lab's endpoints, and its uplink
BOOT_NETWORK = "mgmt"
NIC_MODELS: Mapping[str, str] = {
    "oam": "e1000",
    "mgmt": "e1000",
    "data0": "virtio",
    "data1": "virtio",
}

SIM_IMAGE = "sim"

#: The StarlingX releases a lab may run, each with what the platform calls it (``SW_VERSION``
#: in /etc/build.info and in paths such as /opt/platform/.keyring/24.09/).
RELEASES: Mapping[str, str] = {"9.0": "24.03", "10.0": "24.09", "11.0": "25.09"}
DEFAULT_RELEASE = "10.0"
#: The shortest password each release's pam_pwquality accepts (starlingx/config-files
#: ``pam-config/source-debian/common-password``: ``minlen=7`` on r/stx.9.0, ``minlen=12
#: minclass=4`` on r/stx.10.0, the same in ``pwquality.conf`` on r/stx.11.0). All demand a
#: digit, an upper-case and a lower-case letter and another character (``dcredit=-1
#: ucredit=-1 lcredit=-1 ocredit=-1``).
PASSWORD_MIN_LENGTH: Mapping[str, int] = {"9.0": 7, "10.0": 12, "11.0": 12}

#: The keys of the bootstrap playbook's overrides: ansible-playbooks
#: ``playbookconfig/src/playbooks/host_vars/bootstrap/default.yml`` (r/stx.10.0), its keys and
#: the optional ones it documents in comments.
BOOTSTRAP_KEYS: tuple[str, ...] = (
    "system_mode", "distributed_cloud_role", "region_name", "timezone", "dns_servers",
    "pxeboot_subnet", "management_subnet", "cluster_host_subnet", "cluster_pod_subnet",
    "cluster_service_subnet", "external_oam_subnet", "external_oam_gateway_address",
    "external_oam_floating_address", "management_multicast_subnet",
    "management_dynamic_address_allocation", "cluster_host_dynamic_address_allocation",
    "docker_registries", "user_dns_host_records", "apiserver_extra_volumes",
    "controllermanager_extra_volumes", "scheduler_extra_volumes", "admin_username",
    "admin_password", "password_change", "password_change_responses", "override_files_dir",
    "wipe_ceph_osds", "enable_volume_snapshot_support", "k8s_plugins", "applications",
    "add_docker_prefix", "kernel", "virtual_system",
    *(f"{net}_{end}_address" for net in ("pxeboot", "management", "cluster_host", "cluster_pod",
      "cluster_service", "external_oam", "management_multicast") for end in ("start", "end")),
    "external_oam_node_0_address", "external_oam_node_1_address", "banner",
    "docker_http_proxy", "docker_https_proxy", "docker_no_proxy",
    "additional_local_registry_images", "ssl_ca_cert", "k8s_root_ca_cert", "k8s_root_ca_key",
    "etcd_root_ca_cert", "etcd_root_ca_key", "apiserver_cert_sans", "apiserver_oidc",
    "apiserver_extra_args", "controllermanager_extra_args", "scheduler_extra_args",
    "kubelet_extra_args", "kubelet_configurations", "networking_configurations",
)  # fmt: skip
#: Bootstrap keys the plugin writes itself, and what in the lab description sets each.
BOOTSTRAP_MANAGED: Mapping[str, str] = {
    "system_mode": "topology",
    "external_oam_subnet": "oam.subnet",
    "external_oam_gateway_address": "oam.gateway",
    "external_oam_floating_address": "oam.floating",
    "external_oam_node_0_address": "oam.controller_0",
    "external_oam_node_1_address": "oam.controller_1",
    "management_subnet": "mgmt.subnet",
    "admin_username": "the plugin (admin)",
    "admin_password": "passwords.admin",
    "override_files_dir": "the plugin (it writes ~/localhost.yml)",
}
#: Words that make a bootstrap value a secret wherever they are in its key (registry
#: passwords, CA keys): masked like passwords.
SECRET_KEY_WORDS = ("password", "key", "secret", "token")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,19}")
PASSWORD_USERS: tuple[str, ...] = ("sysadmin", "admin")
DEFAULT_PASSWORD_ENV: Mapping[str, str] = {
    "sysadmin": "STX_SYSADMIN_PASSWORD",
    "admin": "STX_ADMIN_PASSWORD",
}

DEFAULT_WORKERS = 2
DEFAULT_STORAGE_NODES = 2


@dataclass(frozen=True)
class NodeSize:
    """Memory, vCPUs and disk sizes of one node."""

    memory_mib: int
    vcpus: int
    disks_gib: tuple[int, ...]


# Node kinds: an all-in-one controller, a standard controller, a worker, a storage node.
AIO, CONTROLLER, WORKER, STORAGE = "aio", "controller", "worker", "storage"

# starlingx.md section 1.1: the libvirt templates of starlingx/tools.
REAL_SIZES: Mapping[str, NodeSize] = {
    AIO: NodeSize(18 * 1024, 6, (600, 200, 200)),
    CONTROLLER: NodeSize(16 * 1024, 4, (250, 200)),
    WORKER: NodeSize(16 * 1024, 4, (200, 200)),
    STORAGE: NodeSize(16 * 1024, 4, (200, 200)),
}
# Simulator nodes: small, same disk counts (qcow2 is sparse, so sizes cost nothing).
SIM_SIZES: Mapping[str, NodeSize] = {
    AIO: NodeSize(512, 1, (20, 10, 10)),
    CONTROLLER: NodeSize(512, 1, (20, 10)),
    WORKER: NodeSize(512, 1, (20, 10)),
    STORAGE: NodeSize(512, 1, (20, 10)),
}
SIZES: Mapping[Profile, Mapping[str, NodeSize]] = {Profile.REAL: REAL_SIZES, Profile.SIM: SIM_SIZES}

# Per-phase timeouts in seconds (starlingx.md section 7): menu (power-on to the boot menu),
# install (menu to `login:` after the ISO install), boot (a reboot to `login:`), login, command,
# bootstrap, unlock (controller-0 to available), node_install and node_unlock (other nodes).
TIMEOUT_PHASES: tuple[str, ...] = (
    "menu", "install", "boot", "login", "command", "bootstrap", "unlock",
    "node_install", "node_unlock",
)  # fmt: skip
REAL_TIMEOUTS: Mapping[str, float] = {
    "menu": 300, "install": 3600, "boot": 1200, "login": 120, "command": 600,
    "bootstrap": 5400, "unlock": 9000, "node_install": 3600, "node_unlock": 3600,
}  # fmt: skip
# The simulator finishes each phase in seconds to minutes under software emulation.
SIM_TIMEOUTS: Mapping[str, float] = {
    "menu": 120, "install": 600, "boot": 300, "login": 60, "command": 120,
    "bootstrap": 600, "unlock": 900, "node_install": 900, "node_unlock": 900,
}  # fmt: skip
TIMEOUTS: Mapping[Profile, Mapping[str, float]] = {
    Profile.REAL: REAL_TIMEOUTS,
    Profile.SIM: SIM_TIMEOUTS,
}


@dataclass(frozen=True)
class NodeNic:
    """One NIC: the lab network it is on and the emulated device model."""

    network: str
    model: str


@dataclass(frozen=True)
class NodeSpec:
    """One StarlingX node as the hypervisor should build it."""

    name: str  # controller-0, worker-1, storage-0
    personality: Personality
    memory_mib: int
    vcpus: int
    disks_gib: tuple[int, ...]
    nics: tuple[NodeNic, ...]
    all_in_one: bool = False  # a controller that is also a worker (AIO-SX/DX)
    installs_from_iso: bool = False  # only controller-0; the others boot from the network
    host: str | None = None  # the lab host it is pinned to (HostSpec.name), if any

    @property
    def boot_nic_index(self) -> int:
        """Index of the network-boot NIC (the mgmt NIC) in :attr:`nics`."""
        return next(i for i, nic in enumerate(self.nics) if nic.network == BOOT_NETWORK)


#: The name a lab host gets from its URI when it has none: the URI's host name, or this one
#: for a URI without one (``qemu:///system``: libvirt on this machine).
LOCAL_HOST_NAME = "localhost"

Underlay = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HostSpec:
    """One libvirt host of a lab: its name (what ``host:`` pins say), its libvirt URI, the
    underlay address its lab networks' tunnels use (needed once there are two hosts) and, for
    a host reached without ssh, the argv prefix its network commands run behind (``ip netns
    exec <ns>`` for a host that is a network namespace of this machine; empty: here for a URI
    without a host name, over ssh for ``qemu+ssh://``)."""

    name: str
    uri: str
    underlay: Underlay | None = None
    commands: tuple[str, ...] = ()


def default_host_name(uri: str) -> str:
    """A host's name when the lab file gives none: the host name in ``uri``
    (``hv2`` in ``qemu+ssh://root@hv2/system``), ``localhost`` when it has none."""
    return urlsplit(uri).hostname or LOCAL_HOST_NAME


@dataclass(frozen=True)
class OamSpec:
    """The OAM (external) network: subnet, gateway, floating and per-controller addresses, and
    its way out (``uplink``; None until :func:`resolve_lab` sets it from the image: ``nat``
    for a StarlingX ISO, ``isolated`` for the simulator)."""

    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.10.10.0/24")
    gateway: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.10.1")
    floating: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.10.2")
    controller_0: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.10.3")
    controller_1: ipaddress.IPv4Address = ipaddress.IPv4Address("10.10.10.4")
    uplink: Uplink | None = None

    @property
    def gateway_interface(self) -> str:
        """The gateway address with the subnet's prefix length (``10.10.10.1/24``)."""
        return f"{self.gateway}/{self.subnet.prefixlen}"


@dataclass(frozen=True)
class MgmtSpec:
    """The management network (also PXE boot and cluster-host)."""

    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.204.0/24")


@dataclass(frozen=True)
class PasswordSource:
    """Where a password comes from: an environment variable, a literal, or generated.

    ``repr`` never shows a literal value.
    """

    env: str | None = None
    value: str | None = field(default=None, repr=False)
    generate: bool = False

    def resolve(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The password, or ``None`` when it must be generated (and remembered) per lab."""
        if self.value is not None:
            return self.value
        if self.env is not None:
            found = (os.environ if environ is None else environ).get(self.env)
            if found:
                return found
        return None


#: The keystone user whose password the bootstrap sets (``admin_password``), and the characters
#: keystone's ``password_regex`` counts as special: the keystone package's password-rules.conf
#: (starlingx/upstream ``openstack/keystone/debian``), same minimum lengths as above. The
#: bootstrap's store-passwd role also refuses quotes (ansible-playbooks
#: ``roles/bootstrap/store-passwd``).
KEYSTONE_USER = "admin"
KEYSTONE_SPECIALS = "!@#$%^&*()<>{}+=_\\[]-?|~`,.;:"


#: cracklib's checks before its dictionary (cracklib ``lib/fascist.c`` FascistLookUser), which
#: libpwquality runs for pam_pwquality: at least MINDIFF different characters, and no more
#: than ``3 + 0.09 * length`` neighbouring pairs one apart once lower-cased.
CRACKLIB_MIN_DIFFERENT = 5


def _cracklib_steps(password: str) -> tuple[int, int]:
    """How many neighbouring characters are one apart in ``password`` lower-cased and
    stripped, and how many cracklib allows."""
    folded = password.lower().strip()
    steps = sum(abs(ord(a) - ord(b)) == 1 for a, b in pairwise(folded))
    return steps, int(3 + 0.09 * len(folded))


def password_problems(
    password: str, release: str = DEFAULT_RELEASE, user: str = "sysadmin"
) -> list[str]:
    """What ``release``'s password rules find wrong with ``user``'s ``password`` (empty when
    none), said as what it needs: keystone's rule for admin, for sysadmin the rules
    libpwquality applies under StarlingX's options.

    For sysadmin this includes cracklib's checks short of its dictionary; a password the
    dictionary refuses is reported from the console.
    """
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH[release]:
        problems.append(f"at least {PASSWORD_MIN_LENGTH[release]} characters")
    if not any(c.isupper() for c in password):
        problems.append("an upper-case letter")
    if not any(c.islower() for c in password):
        problems.append("a lower-case letter")
    if not any(c.isdigit() for c in password):
        problems.append("a digit")
    if user == KEYSTONE_USER:
        if not any(c in KEYSTONE_SPECIALS for c in password):
            problems.append(f"a symbol of {KEYSTONE_SPECIALS}")
        if "'" in password or '"' in password:
            problems.append("no quote (' or \")")
        return problems
    if all(c.isalnum() for c in password):
        problems.append("a symbol")
    folded = password.casefold()
    if user.casefold() in folded or user.casefold()[::-1] in folded:  # libpwquality usercheck
        problems.append(f"not to contain the user name {user!r}")
    if len(set(password)) < CRACKLIB_MIN_DIFFERENT:
        problems.append(f"at least {CRACKLIB_MIN_DIFFERENT} different characters")
    steps, most = _cracklib_steps(password)
    if steps > most:
        problems.append(
            f"at most {most} neighbours one apart, like 'ab' or '21' (it has {steps}: "
            "cracklib's 'too simplistic/systematic')"
        )
    return problems


def generate_password() -> str:
    """A fresh random password that meets StarlingX's policy in every release, for sysadmin
    and for keystone's admin alike."""
    alphabet = string.ascii_letters + string.digits
    while True:
        body = "".join(secrets.choice(alphabet) for _ in range(12))
        password = f"St{secrets.choice(string.digits)}{body}*"
        if not any(
            password_problems(password, release, user)
            for release in RELEASES
            for user in ("sysadmin", KEYSTONE_USER)
        ):
            return password


class StageName(StrEnum):
    """The stages of the bring-up pipeline; ``node:stage`` (a stage key) names one stage."""

    INSTALL = "install"
    FIRST_LOGIN = "first-login"
    BOOTSTRAP = "bootstrap"
    CONFIGURE = "configure"
    UNLOCK = "unlock"
    ADD_HOSTS = "add-hosts"
    POWER_ON = "power-on"
    OSDS = "osds"


#: The node that installs from the ISO, bootstraps, and runs the ``system`` CLI.
ACTIVE_CONTROLLER = "controller-0"
#: Named points where custom stages can go, and the stage key each stands for.
NAMED_POINTS: Mapping[str, str] = {
    "bootstrapped": f"{ACTIVE_CONTROLLER}:{StageName.BOOTSTRAP}",
    "controller-0-configured": f"{ACTIVE_CONTROLLER}:{StageName.CONFIGURE}",
    "controller-0-unlocked": f"{ACTIVE_CONTROLLER}:{StageName.UNLOCK}",
}
#: The end of the bring-up (every node unlocked); a point to go after, not before.
AVAILABLE_POINT = "available"


def stage_plan(topology: Topology, nodes: Sequence[str]) -> list[tuple[str, StageName]]:
    """(node, stage) of every stage of the bring-up of a ``topology`` lab with ``nodes``,
    in pipeline order: controller-0's five stages; then, when there are other nodes, adding
    them, and each one's power-on, install, configure and unlock; the standard option ends
    with controller-0's OSDs."""
    c0 = ACTIVE_CONTROLLER
    plan = [(c0, s) for s in (StageName.INSTALL, StageName.FIRST_LOGIN, StageName.BOOTSTRAP,
                              StageName.CONFIGURE, StageName.UNLOCK)]  # fmt: skip
    others = [n for n in nodes if n != c0]
    if not others:
        return plan
    plan.append((c0, StageName.ADD_HOSTS))
    plan += [(n, StageName.POWER_ON) for n in others]
    for n in others:
        plan += [(n, StageName.INSTALL), (n, StageName.CONFIGURE)]
    plan += [(n, StageName.UNLOCK) for n in others]
    if topology is Topology.STANDARD:
        plan.append((c0, StageName.OSDS))
    return plan


def pipeline_points(
    topology: Topology, nodes: Sequence[str], before: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """Every point a custom stage can go ``after`` (or ``before``) in such a lab: the named
    points, then every stage key, then ``extra`` keys (custom stages placed earlier)."""
    named = list(NAMED_POINTS) if before else [*NAMED_POINTS, AVAILABLE_POINT]
    return [*named, *(f"{n}:{s}" for n, s in stage_plan(topology, nodes)), *extra]


def point_problem(
    point: object,
    topology: Topology,
    nodes: Sequence[str],
    before: bool = False,
    extra: Sequence[str] = (),
) -> str | None:
    """Why ``point`` is not a place for a custom stage in a ``topology`` lab with ``nodes``
    (naming the point, the topology and the valid points), or ``None`` when it is one."""
    valid = pipeline_points(topology, nodes, before, extra)
    if point in valid:
        return None
    where = "before" if before else "after"
    return (
        f"{point!r} is not a pipeline point of a {topology.value} lab (nodes "
        f"{', '.join(nodes)}) to go {where}; use one of {', '.join(valid)}"
    )


@dataclass(frozen=True)
class StageSpec:
    """A custom provisioning stage from the lab file: commands run at a pipeline point."""

    name: str
    after: str = AVAILABLE_POINT
    before: str | None = None
    node: str = ACTIVE_CONTROLLER
    system: tuple[str, ...] = ()  # `system` CLI arguments, run on the active controller
    shell: tuple[str, ...] = ()  # shell commands, run on the stage's node


@dataclass(frozen=True)
class LabSpec:
    """A resolved lab: every node with its size and NICs, the networks and passwords."""

    name: str
    topology: Topology
    backend: BackendKind
    image: str  # "sim" or the path of a StarlingX ISO
    profile: Profile
    nodes: tuple[NodeSpec, ...]
    oam: OamSpec
    mgmt: MgmtSpec
    passwords: Mapping[str, PasswordSource]
    timeouts: Mapping[str, float]
    timeout_factor: float = 1.0
    add_hosts: AddHosts = AddHosts.DISCOVER
    firmware: Firmware = Firmware.BIOS
    stages: tuple[StageSpec, ...] = ()
    source: Path | None = None  # the YAML file it came from, if any
    release: str = DEFAULT_RELEASE  # the StarlingX release it runs (RELEASES)
    #: Extra localhost.yml overrides (registries, proxies, NTP, DNS, ...; BOOTSTRAP_KEYS).
    bootstrap: Mapping[str, Any] = field(default_factory=dict)
    #: The libvirt hosts the lab spans; empty: the one host of the URI option, as always.
    hosts: tuple[HostSpec, ...] = ()

    @property
    def bootstrap_secrets(self) -> list[str]:
        """The string values of ``bootstrap`` under keys that name a secret (at any depth)."""
        found: list[str] = []

        def walk(value: Any, secret: bool) -> None:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    walk(item, secret or any(w in str(key).lower() for w in SECRET_KEY_WORDS))
            elif isinstance(value, list):
                for item in value:
                    walk(item, secret)
            elif secret and isinstance(value, str) and value:
                found.append(value)

        walk(self.bootstrap, False)
        return found

    @property
    def uses_simulator(self) -> bool:
        """True when the lab boots the built-in simulator guest."""
        return self.image == SIM_IMAGE

    @property
    def multi_host(self) -> bool:
        """True when the lab's nodes are spread over more than one libvirt host."""
        return len(self.hosts) > 1

    @property
    def workers(self) -> int:
        """Number of worker nodes."""
        return sum(1 for n in self.nodes if n.personality is Personality.WORKER)

    @property
    def storage_nodes(self) -> int:
        """Number of storage nodes."""
        return sum(1 for n in self.nodes if n.personality is Personality.STORAGE)

    @property
    def memory_mib(self) -> int:
        """Total guest memory of the lab."""
        return sum(n.memory_mib for n in self.nodes)

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``; ``KeyError`` names the nodes the lab has."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name!r} has no node {name!r} (has {node_list(self.nodes)})")

    def timeout(self, phase: str) -> float:
        """The timeout of ``phase`` in seconds, scaled by the lab's factor."""
        return self.timeouts[phase] * self.timeout_factor


def lab_key(spec: LabSpec, *parts: object) -> str:
    """The one lab key: a short hash of what makes two labs of ``spec`` interchangeable.

    That is the description, less where it was read from and how long its waits may take, the
    passwords it resolves to (hashed), and ``parts``: the image and, for golden labs, the
    pipeline version. Kept labs are reused, golden labs restored and xdist workers' labs shared
    by this key.
    """
    data = asdict(spec)
    for unused in ("source", "timeouts", "timeout_factor"):
        data.pop(unused, None)
    if not spec.hosts:  # a single-host lab keeps the key it had before labs had hosts
        del data["hosts"]
        for node in data["nodes"]:
            del node["host"]
    passwords = {user: source.resolve() for user, source in sorted(spec.passwords.items())}
    secret = hashlib.sha256(json.dumps(passwords).encode()).hexdigest()
    text = json.dumps([data, secret, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def node_list(nodes: tuple[NodeSpec, ...]) -> str:
    """Node names joined for messages."""
    return ", ".join(n.name for n in nodes)


def node_names(topology: Topology, workers: int, storage_nodes: int) -> list[tuple[str, str]]:
    """(name, kind) of every node of a topology, in StarlingX's order."""
    if topology is Topology.SIMPLEX:
        return [("controller-0", AIO)]
    if topology is Topology.DUPLEX:
        return [("controller-0", AIO), ("controller-1", AIO)]
    names = [("controller-0", CONTROLLER), ("controller-1", CONTROLLER)]
    if topology is Topology.STORAGE:
        names += [(f"storage-{i}", STORAGE) for i in range(storage_nodes)]
    names += [(f"worker-{i}", WORKER) for i in range(workers)]
    return names


@dataclass(frozen=True)
class NodeOverride:
    """Per-node (or default) size overrides from a lab description; ``None`` keeps the profile's."""

    memory_mib: int | None = None
    vcpus: int | None = None
    disks_gib: tuple[int, ...] | None = None

    def apply(self, size: NodeSize) -> NodeSize:
        """``size`` with the overridden fields replaced."""
        return NodeSize(
            self.memory_mib if self.memory_mib is not None else size.memory_mib,
            self.vcpus if self.vcpus is not None else size.vcpus,
            self.disks_gib if self.disks_gib is not None else size.disks_gib,
        )


_PERSONALITY = {
    AIO: Personality.CONTROLLER,
    CONTROLLER: Personality.CONTROLLER,
    WORKER: Personality.WORKER,
    STORAGE: Personality.STORAGE,
}


def build_nodes(
    topology: Topology,
    profile: Profile,
    workers: int,
    storage_nodes: int,
    defaults: NodeOverride = NodeOverride(),
    overrides: Mapping[str, NodeOverride] | None = None,
    pins: Mapping[str, str] | None = None,
) -> tuple[NodeSpec, ...]:
    """Every node of a topology, sized from the profile, then defaults, then per-node overrides;
    ``pins`` maps node names to the hosts they are pinned to."""
    overrides = overrides or {}
    pins = pins or {}
    nics = tuple(NodeNic(net, NIC_MODELS[net]) for net in NETWORKS)
    nodes = []
    for name, kind in node_names(topology, workers, storage_nodes):
        size = defaults.apply(SIZES[profile][kind])
        size = overrides.get(name, NodeOverride()).apply(size)
        nodes.append(
            NodeSpec(
                name=name,
                personality=_PERSONALITY[kind],
                memory_mib=size.memory_mib,
                vcpus=size.vcpus,
                disks_gib=size.disks_gib,
                nics=nics,
                all_in_one=kind == AIO,
                installs_from_iso=name == "controller-0",
                host=pins.get(name),
            )
        )
    return tuple(nodes)


def default_passwords() -> dict[str, PasswordSource]:
    """Environment variables by default; a policy-compliant password is generated when unset."""
    return {user: PasswordSource(env=DEFAULT_PASSWORD_ENV[user]) for user in PASSWORD_USERS}


def resolve_lab(
    topology: Topology | str,
    *,
    name: str | None = None,
    backend: BackendKind | str = BackendKind.LIBVIRT,
    image: str = SIM_IMAGE,
    profile: Profile | str | None = None,
    workers: int | None = None,
    storage_nodes: int | None = None,
    node_defaults: NodeOverride = NodeOverride(),
    nodes: Mapping[str, NodeOverride] | None = None,
    oam: OamSpec | None = None,
    mgmt: MgmtSpec | None = None,
    passwords: Mapping[str, PasswordSource] | None = None,
    timeouts: Mapping[str, float] | None = None,
    timeout_factor: float = 1.0,
    add_hosts: AddHosts | str = AddHosts.DISCOVER,
    firmware: Firmware | str = Firmware.BIOS,
    stages: tuple[StageSpec, ...] = (),
    source: Path | None = None,
    bootstrap: Mapping[str, Any] | None = None,
    release: str = DEFAULT_RELEASE,
    hosts: tuple[HostSpec, ...] = (),
    pins: Mapping[str, str] | None = None,
) -> LabSpec:
    """A lab of ``topology`` with defaults for everything not given.

    Raises ``ValueError`` for an unknown topology, backend, profile or release; nothing else is
    checked here. Files and user mappings go through :mod:`pytest_starlingx.labfile`,
    which validates every key first and then calls this.
    """
    topology = Topology(topology)
    if release not in RELEASES:
        raise ValueError(f"unknown StarlingX release {release!r}; known: {', '.join(RELEASES)}")
    profile = Profile(profile) if profile else (Profile.SIM if image == SIM_IMAGE else Profile.REAL)
    oam = oam or OamSpec()
    if oam.uplink is None:
        oam = replace(oam, uplink=Uplink.ISOLATED if image == SIM_IMAGE else Uplink.NAT)
    if topology not in (Topology.STANDARD, Topology.STORAGE):
        workers = 0
    if topology is not Topology.STORAGE:
        storage_nodes = 0
    built = build_nodes(
        topology,
        profile,
        workers=DEFAULT_WORKERS if workers is None else workers,
        storage_nodes=DEFAULT_STORAGE_NODES if storage_nodes is None else storage_nodes,
        defaults=node_defaults,
        overrides=nodes,
        pins=pins,
    )
    return LabSpec(
        name=name or topology.value,
        topology=topology,
        backend=BackendKind(backend),
        image=image,
        profile=profile,
        nodes=built,
        oam=oam,
        mgmt=mgmt or MgmtSpec(),
        passwords={**default_passwords(), **(passwords or {})},
        timeouts={**TIMEOUTS[profile], **(timeouts or {})},
        timeout_factor=timeout_factor,
        add_hosts=AddHosts(add_hosts),
        firmware=Firmware(firmware),
        stages=stages,
        source=source,
        bootstrap=dict(bootstrap or {}),
        release=release,
        hosts=hosts,
    )
