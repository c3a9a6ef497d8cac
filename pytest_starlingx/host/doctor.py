"""``stx-lab doctor``: one line per thing a lab needs, each with a fix when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from pytest_starlingx.host.capacity import mem_available_mib
from pytest_starlingx.host.setup import missing_packages
from pytest_starlingx.lifecycle.state import state_dir

QEMU = "qemu-system-x86_64"
MIN_FREE_GIB = 10
FIX_SETUP = "run `stx-lab host-setup` as root"


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
