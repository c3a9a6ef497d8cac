"""``stx-lab doctor``: one line per thing a lab needs, each with a fix when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_starlingx.host.capacity import GUEST_OVERHEAD_MIB, libvirt_free, mem_available_mib
from pytest_starlingx.host.setup import missing_packages
from pytest_starlingx.lifecycle.state import state_dir

QEMU = "qemu-system-x86_64"
MIN_FREE_GIB = 10
FIX_SETUP = "run `stx-lab host-setup` as root"
#: What VXLAN adds to a lab packet on the underlay: the outer IPv4 header 20 (IPv6 40), UDP 8,
#: VXLAN 8 and the inner Ethernet header 14 (RFC 7348 section 5; its section 4.3: VTEPs do not
#: fragment, the underlay's MTU is raised instead). The lab networks carry 1500-byte packets
#: (StarlingX's management MTU, PXE), so an IPv4 underlay needs an MTU of 1550.
LAB_MTU = 1500
VXLAN_OVERHEAD = 50
DEFAULT_POOL = "default"
#: libvirt's VIR_CONNECT_LIST_INTERFACES_ACTIVE
ACTIVE_INTERFACES = 2


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``ok`` None means informational (not needed by every lab)."""

    name: str
    ok: bool | None
    detail: str
    hint: str = ""

    def line(self) -> str:
        """``[ ok ] name: detail`` with the hint after a dash when there is a problem."""
        mark = {True: " ok ", False: "FAIL", None: "info"}[self.ok]
        hint = f" - {self.hint}" if self.hint and self.ok is not True else ""
        return f"[{mark}] {self.name}: {self.detail}{hint}"


def run_checks(uri: str) -> list[Check]:
    """Every check, in the order a person would fix things."""
    checks: list[Callable[[], Check]] = [
        check_qemu,
        lambda: check_libvirt(uri),
        lambda: check_acceleration(uri),
        check_disk,
        check_memory,
        check_sim_tools,
        check_uplink,
        check_vboxmanage,
    ]
    return [check() for check in checks]


def check_qemu() -> Check:
    """The QEMU system emulator for x86_64."""
    path = shutil.which(QEMU)
    if path is None:
        return Check("qemu", False, f"{QEMU} not found", FIX_SETUP)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return Check("qemu", True, version.stdout.splitlines()[0] if version.stdout else path)


def check_libvirt(uri: str) -> Check:
    """A libvirt connection at ``uri`` and the versions on both ends."""
    try:
        import libvirt
    except ImportError:
        return Check(
            "libvirt",
            False,
            "libvirt-python is not installed",
            "pip install pytest-starlingx (it needs libvirt-dev: " + FIX_SETUP + ")",
        )
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return Check(
            "libvirt",
            False,
            f"cannot connect to {uri}: {exc.get_error_message()}",
            "start libvirtd and virtlogd: " + FIX_SETUP,
        )
    try:
        lib = _version(conn.getLibVersion())
        hyper = _version(conn.getVersion())
    finally:
        conn.close()
    return Check("libvirt", True, f"{uri}: libvirt {lib}, {conn_type(uri)} {hyper}")


def conn_type(uri: str) -> str:
    """The hypervisor name in a libvirt URI (``qemu`` in ``qemu:///system``)."""
    return uri.split(":", 1)[0].split("+", 1)[0]


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def check_acceleration(uri: str) -> Check:
    """Whether KVM really runs a guest (the backend's probe); else software emulation (TCG)."""
    from pytest_starlingx.backends.libvirt import DomainType, LibvirtBackend, LibvirtConfig
    from pytest_starlingx.errors import BackendError

    try:
        backend = LibvirtBackend(LibvirtConfig(uri=uri, state_dir=state_dir()))
    except BackendError:
        return Check("acceleration", None, "unknown: libvirt is not reachable", FIX_SETUP)
    try:
        domain_type = backend.domain_type()
    finally:
        backend.close()
    if domain_type is DomainType.KVM:
        return Check("acceleration", True, "KVM works (a probe guest booted under KVM)")
    return Check(
        "acceleration",
        None,
        "KVM unusable (a probe guest did not boot under KVM); labs will use QEMU software "
        "emulation (TCG), which is slower",
        "the simulator is sized for TCG",
    )


def check_disk() -> Check:
    """Free space where lab disks and state live: the state directory, or the nearest
    directory above it that exists."""
    where = state_dir()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    ok = free >= MIN_FREE_GIB
    hint = "" if ok else f"free space on {where}: simulator labs need {MIN_FREE_GIB} GiB"
    return Check("disk", ok, f"{free:.0f} GiB free on {where}", hint)


def check_memory() -> Check:
    """Host memory available for guests."""
    available = mem_available_mib()
    cores = os.cpu_count() or 1
    return Check(
        "memory",
        True,
        f"{'unknown' if available is None else available} MiB available, {cores} CPU cores "
        "(a simulated simplex lab needs 512 MiB, a storage lab 3 GiB)",
    )


def check_sim_tools() -> Check:
    """The Debian packages ``stx-lab sim build`` takes the guest from."""
    from pytest_starlingx.sim.build import BUILD_PACKAGES

    missing = missing_packages(BUILD_PACKAGES)
    if missing:
        return Check(
            "simulator build", False, f"missing Debian packages: {' '.join(missing)}", FIX_SETUP
        )
    return Check("simulator build", True, f"all {len(BUILD_PACKAGES)} Debian packages installed")


def check_uplink() -> Check:
    """slirp4netns and nft, which a NAT lab's gateway namespace takes its way out with."""
    from pytest_starlingx.backends.gateway import UPLINK_TOOLS

    missing = {p: pkg for p, pkg in UPLINK_TOOLS.items() if shutil.which(p) is None}
    if missing:
        return Check(
            "uplink",
            None,
            f"{', '.join(missing)} not on PATH",
            f"needed by labs with `oam.uplink: nat` (a real ISO's default); {FIX_SETUP}",
        )
    return Check("uplink", True, f"{', '.join(UPLINK_TOOLS)} for labs with `oam.uplink: nat`")


def check_vboxmanage() -> Check:
    """VBoxManage, needed only for ``--stx-backend=virtualbox``."""
    path = shutil.which("VBoxManage")
    if path is None:
        return Check(
            "virtualbox", None, "VBoxManage not on PATH", "needed only for --stx-backend=virtualbox"
        )
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return Check("virtualbox", True, f"VBoxManage {version.stdout.strip()} at {path}")


# --- a libvirt host of a multi-host lab, through libvirt alone --------------------------


def host_labels(uris: Sequence[str]) -> list[str]:
    """What each host's lines are named by: the host in its URI (``hv2``), numbered by its
    place among the URIs when two have the same host (``localhost#1``, ``localhost#2`` for
    ``qemu:///system`` and ``qemu:///session``); each block's libvirt line shows the URI."""
    from pytest_starlingx.model import default_host_name

    names = [default_host_name(uri) for uri in uris]
    return [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names, 1)]


def run_host_checks(uris: Sequence[str]) -> list[Check]:
    """Every host's checks through libvirt alone, then this machine's simulator build tools
    (the simulator ISO is built here and taken to each host)."""
    checks = []
    for uri, label in zip(uris, host_labels(uris), strict=True):
        checks += host_checks(uri, label)
    return [*checks, check_sim_tools()]


def host_checks(uri: str, label: str) -> list[Check]:
    """What a lab's nodes need of the libvirt host at ``uri``, which may be another machine,
    so asked of libvirt alone: reachable, QEMU, KVM, memory, disk, the lab networks and their
    tunnels. Each check is named ``<label> <check>``; an unreachable host is one line."""
    import libvirt

    from pytest_starlingx.backends.libvirt_conn import Connection
    from pytest_starlingx.errors import BackendError
    from pytest_starlingx.model import LOCAL_HOST_NAME, default_host_name

    try:
        connection = Connection(uri, reconnect_timeout=0)
    except BackendError as exc:
        cause = exc.__cause__
        problem = cause.get_error_message() if isinstance(cause, libvirt.libvirtError) else exc
        hint = (
            "start libvirtd and virtlogd: " + FIX_SETUP
            if default_host_name(uri) == LOCAL_HOST_NAME
            else "is the host up, libvirtd running there, and the URI's transport open to you "
            "(ssh keys; tcp or tls listening)?"
        )
        return [Check(f"{label} libvirt", False, f"cannot connect to {uri}: {problem}", hint)]
    checks: dict[str, Callable[[Any], Check]] = {
        "libvirt": _host_libvirt,
        "qemu": _host_qemu,
        "kvm": _host_kvm,
        "memory": _host_memory,
        "disk": _host_disk,
        "networks": _host_networks,
        "underlay mtu": _host_underlay_mtu,
    }
    found = []
    try:
        for name, check in checks.items():
            try:
                found.append(_named(label, check(connection.conn)))
            except libvirt.libvirtError as exc:  # e.g. the connection lost meanwhile
                found.append(Check(f"{label} {name}", False, str(exc.get_error_message())))
    finally:
        connection.close()
    return [*found, _named(label, UNCHECKED_TUNNEL)]


def _named(label: str, check: Check) -> Check:
    return Check(f"{label} {check.name}", check.ok, check.detail, check.hint)


def _attempt(call: Callable[[], Any]) -> tuple[Any, str]:
    """``call()``'s result and "", or None and libvirt's message."""
    import libvirt

    try:
        return call(), ""
    except libvirt.libvirtError as exc:
        return None, str(exc.get_error_message())


def _host_libvirt(conn: Any) -> Check:
    return Check(
        "libvirt",
        True,
        f"{conn.getURI()}: libvirt {_version(conn.getLibVersion())}, QEMU "
        f"{_version(conn.getVersion())} on {conn.getHostname()}",
    )


def _host_qemu(conn: Any) -> Check:
    caps, problem = _attempt(lambda: conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0))
    if caps is None:
        return Check(
            "qemu",
            False,
            f"libvirt offers no QEMU x86_64 guests: {problem}",
            "install QEMU on the host (Debian: apt-get install qemu-system-x86)",
        )
    path = ET.fromstring(caps).findtext("path") or "?"
    return Check("qemu", True, f"{path} (libvirt's domain capabilities)")


def _host_kvm(conn: Any) -> Check:
    caps, problem = _attempt(lambda: conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0))
    if caps is None:
        return Check(
            "kvm",
            None,
            f"libvirt offers no KVM guests ({problem}); nodes there run under QEMU software "
            "emulation (TCG), which is slower",
            "the simulator is sized for TCG; a real ISO wants KVM (/dev/kvm on the host)",
        )
    return Check(
        "kvm",
        True,
        "libvirt offers KVM guests (domain capabilities); whether one really runs is probed at "
        "a lab's bring-up",
    )


def _host_memory(conn: Any) -> Check:
    free = libvirt_free(conn, "")
    return Check(
        "memory",
        True,
        f"{free.memory_mib} MiB free, {free.cpus} CPUs ({free.vcpus_running} vCPUs running); "
        f"a simulator node takes 512 + {GUEST_OVERHEAD_MIB} MiB",
    )


def _host_disk(conn: Any) -> Check:
    pool, problem = _attempt(lambda: conn.storagePoolLookupByName(DEFAULT_POOL))
    if pool is None:
        return Check(
            "disk",
            None,
            f"no storage pool {DEFAULT_POOL!r}, so no free space known ({problem})",
            f"virsh pool-define-as {DEFAULT_POOL} dir --target /var/lib/libvirt/images; "
            f"virsh pool-build {DEFAULT_POOL}; virsh pool-start {DEFAULT_POOL}; "
            f"virsh pool-autostart {DEFAULT_POOL}",
        )
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or "?"
    if not pool.isActive():
        return Check(
            "disk",
            None,
            f"storage pool {DEFAULT_POOL!r} ({path}) is not active",
            f"virsh pool-start {DEFAULT_POOL}",
        )
    free = pool.info()[3] / 2**30
    ok = free >= MIN_FREE_GIB
    hint = "" if ok else f"free space in {path}: simulator labs need {MIN_FREE_GIB} GiB"
    return Check("disk", ok, f"{free:.0f} GiB free in pool {DEFAULT_POOL!r} ({path})", hint)


def _host_networks(conn: Any) -> Check:
    networks, problem = _attempt(conn.listAllNetworks)
    if networks is None:
        return Check(
            "networks",
            False,
            f"libvirt's network driver does not answer: {problem}",
            "each lab network is a libvirt network (a bridge) on every host: install and start "
            "libvirt's network driver (Debian 12: package libvirt-daemon)",
        )
    return Check(
        "networks", True, f"libvirt's network driver answers ({len(networks)} networks defined)"
    )


def _host_underlay_mtu(conn: Any) -> Check:
    """The largest MTU of the host's own interfaces (not the bridges of libvirt networks):
    the underlay's, at best, since libvirt does not say which interface has which address."""
    interfaces, problem = _attempt(lambda: conn.listAllInterfaces(ACTIVE_INTERFACES))
    if interfaces is None:
        return Check(
            "underlay mtu",
            None,
            f"unknown: libvirt lists no interfaces ({problem})",
            f"the underlay needs an MTU of {LAB_MTU + VXLAN_OVERHEAD} for {LAB_MTU}-byte lab "
            "packets in VXLAN",
        )
    bridges = {_bridge(n) for n in conn.listAllNetworks()}
    mtus = {}
    for iface in interfaces:
        xml = ET.fromstring(iface.XMLDesc(0))
        mtu = xml.find("mtu")
        if iface.name() != "lo" and iface.name() not in bridges and mtu is not None:
            mtus[iface.name()] = int(mtu.get("size", "0"))
    return mtu_check(mtus)


def _bridge(network: Any) -> str:
    name, _ = _attempt(network.bridgeName)
    return str(name or "")


def mtu_check(mtus: Mapping[str, int]) -> Check:
    """Whether an interface of these (name to MTU) can carry the lab's tunnels unfragmented."""
    needed = LAB_MTU + VXLAN_OVERHEAD
    if not mtus:
        return Check("underlay mtu", None, "no interface of the host's own is listed")
    name = max(mtus, key=lambda n: mtus[n])
    shown = ", ".join(f"{n} {m}" for n, m in sorted(mtus.items()))
    if mtus[name] >= needed:
        return Check(
            "underlay mtu", True, f"{shown}: {name} carries {LAB_MTU}-byte lab packets in VXLAN"
        )
    return Check(
        "underlay mtu",
        None,
        f"{shown}: none reaches {needed}, what {LAB_MTU}-byte lab packets need in VXLAN over "
        f"IPv4 ({VXLAN_OVERHEAD} bytes more, RFC 7348; 20 more over IPv6)",
        f"raise the underlay interface's MTU to {needed} or more (on every host and the switches "
        "between them), or the tunnels carry smaller packets",
    )


#: The tunnel's prerequisites that libvirt cannot see, said once per host.
UNCHECKED_TUNNEL = Check(
    "tunnel",
    None,
    "not checkable through libvirt: that the underlay address is the host's and reaches the "
    "other hosts' ones, UDP port 4789 (VXLAN) open between them, the kernel's vxlan module, "
    f"the path MTU ({LAB_MTU + VXLAN_OVERHEAD} for IPv4)",
    "on the host: `ip -br addr`, `modinfo vxlan`, `ping -M do -s "
    f"{LAB_MTU + VXLAN_OVERHEAD - 28} OTHER-UNDERLAY`",
)
