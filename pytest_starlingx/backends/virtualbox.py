"""The VirtualBox backend: a lab's networks, disks and VMs through ``VBoxManage``.

Written to the VirtualBox 7.0 user manual (chapter 8, "VBoxManage"); VirtualBox's Python API
ships only with its SDK, so every call goes through :meth:`VirtualBoxBackend._vbox` as an
argument list (no shell). A failed call becomes a ``BackendError`` naming the command, the
machine, VBoxManage's exit code and stderr, and a hint.

What it makes, for a lab ``<lab>`` with id ``<id>`` (names all start ``stx-<lab>-<id>-``):

* networks: an isolated :class:`NetworkSpec` is a VirtualBox *internal network*
  (``--nic<N> intnet --intnet<N> stx-<lab>-<id>-<net>``): VM to VM only, no host interface, no
  address on the host, nothing to create or remove. ``nat=True`` makes a *NAT network*
  (``natnetwork add --netname stx-<lab>-<id>-<net> --network <cidr> --dhcp off``), whose NAT
  engine is the gateway, at the network's first address (another gateway is refused). Host-only
  networks are never used: they give the host an address that routes to the guests;
* one VM per machine: ``createvm --register --basefolder <state>/labs/<id>/vbox``, then one
  ``modifyvm`` (memory, CPUs, I/O APIC, UTC clock, boot order, NICs with the boot NIC at
  ``--nic-boot-prio<N> 1``, UART 1 at 0x3F8/IRQ 4 in server mode on a unix socket, the BIOS
  logo time), a SATA controller (IntelAhci), one dynamically allocated VDI per disk
  (``createmedium disk --format VDI --variant Standard``, sizes in MB) on ports 0.., the ISO as
  a DVD drive on the next port (DVD media are read-only);
* SMBIOS type 11 (OEM) strings: VirtualBox has two, set with the extradata keys
  ``VBoxInternal/Devices/pcbios/0/Config/DmiOEMVBoxVer`` and ``.../DmiOEMVBoxRev``; a machine
  may therefore have at most two OEM strings (the simulator's knobs are one).

Ownership. Every VM carries extradata ``pytest-starlingx/owner`` = the owner record as JSON
(lab, lab id, host, pid, created), set right after ``createvm``; media and NAT networks, which
have no extradata, are listed in the lab's ledger ``<state>/labs/<id>/owner.json``. Teardown
removes only VMs whose owner record names the lab id, and media/NAT networks the ledger lists.

Console and power-on. VBoxManage cannot start a VM paused (``VBoxHeadless --start-paused``
can, but that is not VBoxManage). :meth:`VirtualBoxLab.power_on` runs ``startvm --type
headless`` (which returns once the VM runs), ``controlvm pause``, calls ``before_resume``
(attach the console there), then ``controlvm resume``. No byte is missed because VirtualBox's
BIOS writes nothing to the serial port and holds the boot for ``--bios-logo-display-time``
(``VirtualBoxConfig.bios_hold_ms``, 3 s by default) before any boot loader runs: the pause
lands well inside that window. The server-mode UART socket exists from power-on.

Snapshots: ``snapshot take`` on all machines while the running ones are paused (memory
included), ``snapshot restore`` on powered-off machines (running ones are powered off first;
a snapshot of a running machine restores to the *saved* state, which ``startvm`` resumes),
``snapshot delete``. Whether a machine was running, and when, is kept in the description.

State directory (``lifecycle.state.state_dir()``); teardown removes only these files::

    labs/<id>/owner.json          ledger: owner, VBoxManage, the LabResources, media, NAT nets
    labs/<id>/vbox/<vm>/          VirtualBox machine folder (settings, disks)
    labs/<id>/run/<m>.sock        serial console socket of machine <m>
    labs/<id>/run/<m>.serial.log  everything read from that console (VirtualBox keeps no log)
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from pytest_starlingx.backends.base import (
    BeforeResume,
    BootDevice,
    LabResources,
    MachineSpec,
    NetworkSpec,
    Owner,
    PowerState,
    SnapshotInfo,
    name_prefix,
)
from pytest_starlingx.backends.common import LabBackendBase, LabHandleBase, LedgerBase
from pytest_starlingx.backends.gateway import Gateway
from pytest_starlingx.errors import BackendError
from pytest_starlingx.settings import DEFAULT_VBOXMANAGE
from pytest_starlingx.transport import Transport, UnixSocketTransport

logger = logging.getLogger("pytest_starlingx.backend")

MANUAL_VERSION = "7.0"
OWNER_KEY = "pytest-starlingx/owner"
OEM_KEYS = (
    "VBoxInternal/Devices/pcbios/0/Config/DmiOEMVBoxVer",
    "VBoxInternal/Devices/pcbios/0/Config/DmiOEMVBoxRev",
)
INSTALL_HINT = (
    f"install VirtualBox {MANUAL_VERSION} (https://www.virtualbox.org/wiki/Linux_Downloads) or "
    "put VBoxManage on PATH (or set STX_VBOXMANAGE to its path)"
)
NIC_TYPES = {"e1000": "82540EM", "virtio": "virtio"}
BOOT_DEVICES = {BootDevice.DISK: "disk", BootDevice.CDROM: "dvd", BootDevice.NETWORK: "net"}
STATES = {
    "running": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "poweroff": PowerState.OFF,
    "saved": PowerState.OFF,
    "aborted": PowerState.OFF,
    "gurumeditation": PowerState.CRASHED,
}
MAX_NICS = 8
SATA = "SATA"
_SNAPSHOT_MARK = re.compile(r"pytest-starlingx snapshot; machine was (running|off); created (\S+)")


@dataclass(frozen=True)
class VirtualBoxConfig:
    """Where and how labs run (host facts, not lab facts)."""

    state_dir: Path
    vboxmanage: str = DEFAULT_VBOXMANAGE  # a name looked up on PATH, or a path
    bios_hold_ms: int = 3000  # --bios-logo-display-time: the window to attach the console
    timeout: float = 900.0  # seconds one VBoxManage call may take


class VBoxError(BackendError):
    """A VBoxManage call failed; ``returncode`` and ``stderr`` are VBoxManage's."""

    def __init__(self, message: str, returncode: int, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr

    @property
    def gone(self) -> bool:
        """The object named in the call does not exist (any more)."""
        return any(
            s in self.stderr
            for s in (
                "VBOX_E_OBJECT_NOT_FOUND",
                "Could not find a registered machine",
                "Could not find a snapshot",
                "VERR_FILE_NOT_FOUND",
                "Could not find NAT network",
            )
        )


def _hint(stderr: str) -> str:
    hints = (
        ("already locked", "the machine is running or another VBoxManage holds it; power it off"),
        ("not currently running", "the machine is off; power it on first"),
        ("Could not find a registered machine", "the VM was removed outside pytest-starlingx"),
        ("VERR_ALREADY_EXISTS", "a file of that name exists; remove it or destroy the old lab"),
        ("already exists", "an object of that name exists; destroy the old lab or pick an id"),
        ("vboxdrv", "VirtualBox's kernel driver is not loaded; run /sbin/vboxconfig as root"),
        ("VERR_VMX", "hardware virtualisation is unavailable or taken by KVM; unload kvm_*"),
        ("VERR_SVM", "hardware virtualisation is unavailable or taken by KVM; unload kvm_*"),
    )
    for pattern, hint in hints:
        if pattern in stderr:
            return hint
    return f"see the VirtualBox {MANUAL_VERSION} manual, chapter 8 (VBoxManage)"


# --------------------------------------------------------------------------- argv builders


def vm_name(resources: LabResources, machine: str) -> str:
    """The VirtualBox VM name of ``machine``."""
    return name_prefix(resources.lab_name, resources.lab_id) + machine


def createvm_argv(name: str, basefolder: Path) -> list[str]:
    """``createvm``: registered, Linux 64-bit, settings under ``basefolder``."""
    return [
        "createvm",
        "--name",
        name,
        "--basefolder",
        str(basefolder),
        "--ostype",
        "Linux_64",
        "--register",
    ]


def boot_argv(order: Sequence[BootDevice]) -> list[str]:
    """``--boot1..4`` for ``order``, the rest ``none``."""
    devices = [BOOT_DEVICES[BootDevice(d)] for d in order]
    devices += ["none"] * (4 - len(devices))
    return [arg for i, d in enumerate(devices, 1) for arg in (f"--boot{i}", d)]


def nic_argv(spec: MachineSpec, networks: dict[str, tuple[str, str]]) -> list[str]:
    """``--nic<N>`` settings; ``networks``: spec network -> (``intnet``|``natnetwork``, name)."""
    if len(spec.nics) > MAX_NICS:
        raise BackendError(f"machine {spec.name}: VirtualBox has at most {MAX_NICS} NICs")
    argv = []
    for i, nic in enumerate(spec.nics, 1):
        if nic.model not in NIC_TYPES:
            raise BackendError(
                f"machine {spec.name}: NIC model {nic.model!r} has no VirtualBox NIC type "
                f"(known: {', '.join(NIC_TYPES)})"
            )
        kind, net = networks[nic.network]
        option = "--intnet" if kind == "intnet" else "--nat-network"
        argv += [
            f"--nic{i}",
            kind,
            f"--nic-type{i}",
            NIC_TYPES[nic.model],
            f"{option}{i}",
            net,
            f"--cable-connected{i}",
            "on",
        ]
        if nic.boot:
            argv += [f"--nic-boot-prio{i}", "1"]
    return argv


def modifyvm_argv(
    name: str,
    spec: MachineSpec,
    networks: dict[str, tuple[str, str]],
    socket: Path,
    bios_hold_ms: int,
) -> list[str]:
    """The one ``modifyvm`` that shapes a new VM."""
    return [
        "modifyvm",
        name,
        "--memory",
        str(spec.memory_mib),
        "--cpus",
        str(spec.vcpus),
        "--ioapic",
        "on",
        "--rtc-use-utc",
        "on",
        "--bios-logo-display-time",
        str(bios_hold_ms),
        "--firmware",
        "efi" if spec.uefi else "bios",
        *boot_argv(spec.boot_order),
        *nic_argv(spec, networks),
        "--uart1",
        "0x3F8",
        "4",
        "--uart-mode1",
        "server",
        str(socket),
    ]


def storage_argvs(name: str, spec: MachineSpec, disk_paths: Sequence[Path]) -> list[list[str]]:
    """``storagectl``, ``createmedium`` and ``storageattach`` calls for disks and the ISO."""
    ports = len(spec.disks) + (1 if spec.cdrom else 0)
    argvs = [
        [
            "storagectl",
            name,
            "--name",
            SATA,
            "--add",
            "sata",
            "--controller",
            "IntelAhci",
            "--portcount",
            str(max(ports, 1)),
            "--bootable",
            "on",
        ]
    ]
    for port, (disk, path) in enumerate(zip(spec.disks, disk_paths, strict=True)):
        argvs.append(
            [
                "createmedium",
                "disk",
                "--filename",
                str(path),
                "--size",
                str(disk.size_gib * 1024),
                "--format",
                "VDI",
                "--variant",
                "Standard",
            ]
        )
        argvs.append(_storageattach(name, port, "hdd", path))
    if spec.cdrom:
        argvs.append(_storageattach(name, len(spec.disks), "dvddrive", spec.cdrom))
    return argvs


def _storageattach(name: str, port: int, kind: str, medium: Path) -> list[str]:
    """``storageattach`` of ``medium`` (``hdd`` or ``dvddrive``) on a SATA port."""
    return ["storageattach", name, "--storagectl", SATA, "--port", str(port), "--device", "0",
            "--type", kind, "--medium", str(medium)]  # fmt: skip


def oem_argvs(name: str, strings: Sequence[str]) -> list[list[str]]:
    """``setextradata`` for the two SMBIOS OEM strings (no value removes the key)."""
    if len(strings) > len(OEM_KEYS):
        raise BackendError(
            f"VM {name}: VirtualBox has {len(OEM_KEYS)} SMBIOS OEM strings, got {len(strings)}"
        )
    values = [*strings, *[None] * (len(OEM_KEYS) - len(strings))]
    return [
        ["setextradata", name, key, *([value] if value is not None else [])]
        for key, value in zip(OEM_KEYS, values, strict=True)
    ]


def nat_gateway_problems(networks: Sequence[NetworkSpec]) -> list[str]:
    """NAT networks whose gateway is not where VirtualBox's NAT engine answers: the network's
    first address (VirtualBox 7.0 manual, "Network Address Translation Service")."""
    problems = []
    for spec in networks:
        if not (spec.nat and spec.gateway):
            continue
        gateway = ipaddress.ip_interface(spec.gateway)
        first = next(gateway.network.hosts())
        if gateway.ip != first:
            problems.append(
                f"network {spec.name}: gateway {gateway.ip} is not {first}, where VirtualBox's "
                "NAT engine answers on a NAT network; put the gateway there or make the network "
                "isolated"
            )
    return problems


def natnetwork_argv(name: str, spec: NetworkSpec) -> list[str]:
    """``natnetwork add`` for a NAT network; the gateway (.1) is VirtualBox's NAT engine."""
    network = ipaddress.ip_interface(spec.gateway or "").network
    return [
        "natnetwork",
        "add",
        "--netname",
        name,
        "--network",
        str(network),
        "--enable",
        "--dhcp",
        "off",
    ]


def parse_machinereadable(text: str) -> dict[str, str]:
    """``key="value"`` / ``key=value`` lines (``showvminfo``/``snapshot list``)."""
    out = {}
    for line in text.splitlines():
        match = re.fullmatch(r'("?)([^"=]+)\1=(.*)', line)
        if not match:
            continue
        value = match.group(3)
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(
                r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1]
            )
        out[match.group(2)] = value
    return out


# --------------------------------------------------------------------------- ledger


@dataclass
class Ledger(LedgerBase):
    """What a lab created that carries no extradata: ``labs/<id>/owner.json``."""

    vboxmanage: str
    media: list[str] = field(default_factory=list)
    natnetworks: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- backend


class VirtualBoxBackend(LabBackendBase[Ledger, "VirtualBoxLab"]):
    """Creates, finds and removes labs through VBoxManage (implements ``base.Backend``)."""

    config: VirtualBoxConfig
    ledger_type = Ledger
    hypervisor_error = VBoxError
    state_dir_hint = "use a shorter state directory (STX_STATE_DIR)"

    def __init__(self, config: VirtualBoxConfig) -> None:
        self.config = config
        path = shutil.which(config.vboxmanage)
        if path is None:
            raise BackendError(f"VBoxManage ({config.vboxmanage}) not found; {INSTALL_HINT}")
        self.vboxmanage = path
        version = self._vbox("--version").strip()
        if not version.startswith(MANUAL_VERSION + "."):
            logger.warning(
                "VBoxManage %s is version %s; this backend follows the VirtualBox %s manual",
                path,
                version,
                MANUAL_VERSION,
            )
        logger.debug("VBoxManage %s, version %s", path, version)

    def _vbox(self, *argv: str, machine: str = "") -> str:
        """Run VBoxManage with ``argv``; its stdout, or ``VBoxError``."""
        what = f"VBoxManage {' '.join(argv[:2])}" + (f" (machine {machine})" if machine else "")
        logger.debug("%s", " ".join([self.vboxmanage, *argv]))
        try:
            proc = subprocess.run(
                [self.vboxmanage, *argv],
                capture_output=True,
                text=True,
                timeout=self.config.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"{what} did not finish within {self.config.timeout:.0f}s") from exc
        except OSError as exc:
            raise BackendError(
                f"{what}: cannot run {self.vboxmanage}: {exc}; {INSTALL_HINT}"
            ) from exc
        if proc.returncode != 0:
            stderr = proc.stderr.strip()
            raise VBoxError(
                f"{what} failed with exit code {proc.returncode}: "
                f"{stderr or proc.stdout.strip()} ({_hint(stderr)})",
                proc.returncode,
                stderr,
            )
        return proc.stdout

    def close(self) -> None:
        """Nothing to let go: every call is a VBoxManage process of its own."""

    # ---------------------------------------------------------------- listing

    def vm_names(self) -> list[str]:
        """Names of all registered VMs."""
        return re.findall(r'^"(.*)" \{[0-9a-f-]+\}$', self._vbox("list", "vms"), re.M)

    def vm_owner(self, name: str) -> Owner | None:
        """The owner record on VM ``name``, if it carries a well-formed one."""
        out = self._vbox("getextradata", name, OWNER_KEY, machine=name).strip()
        if not out.startswith("Value: "):
            return None
        try:
            return Owner.from_attributes(json.loads(out.removeprefix("Value: ")))
        except (ValueError, KeyError, TypeError):
            return None

    def owned_objects(self) -> list[tuple[str, str, Owner]]:
        """("VM", name, owner) of every VM carrying our owner record (media and NAT networks
        have no extradata: the ledger lists them)."""
        found = []
        for name in self.vm_names():
            if not name.startswith("stx-"):
                continue
            try:
                owner = self.vm_owner(name)
            except VBoxError as exc:
                if exc.gone:
                    continue
                raise
            if owner is not None:
                found.append(("VM", name, owner))
        return found

    def media_paths(self) -> set[str]:
        """Locations of all registered hard disk media."""
        return set(re.findall(r"^Location:\s+(.*)$", self._vbox("list", "hdds"), re.M))

    def natnetwork_names(self) -> set[str]:
        """Names of all NAT networks."""
        return set(re.findall(r"^NetworkName:\s+(.*)$", self._vbox("list", "natnets"), re.M))

    # ---------------------------------------------------------------- labs

    def _new_ledger(self, res: LabResources) -> Ledger:
        """Make the lab's directories; the ledger names the VBoxManage used."""
        lab_dir = self.lab_dir(res.lab_id)
        for path in (lab_dir, lab_dir / "run", lab_dir / "vbox"):
            path.mkdir(parents=True, exist_ok=True)
        logger.info(
            "creating lab %s (id %s) on VirtualBox: %d networks, %d machines",
            res.lab_name,
            res.lab_id,
            len(res.networks),
            len(res.machines),
        )
        owner = Owner(res.lab_name, res.lab_id)
        return Ledger(self.ledger_path(res.lab_id), owner, res, self.vboxmanage)

    def _handle(self, ledger: Ledger) -> VirtualBoxLab:
        return VirtualBoxLab(self, ledger)

    def _check_host(self, res: LabResources) -> None:
        """A NAT network's gateway is VirtualBox's NAT engine, at the network's first address."""
        problems = nat_gateway_problems(res.networks)
        if problems:
            raise BackendError(f"lab {res.lab_name}: " + "; ".join(problems))

    def _clashes(self, res: LabResources) -> list[str]:
        """VMs and NAT networks with the lab's names."""
        prefix = name_prefix(res.lab_name, res.lab_id)
        vms = set(self.vm_names())
        clashes = [f"VM {prefix}{m.name}" for m in res.machines if prefix + m.name in vms]
        if any(n.nat for n in res.networks):
            nats = self.natnetwork_names()
            clashes += [
                f"NAT network {prefix}{n.name}"
                for n in res.networks
                if n.nat and prefix + n.name in nats
            ]
        return clashes

    def software_emulated(self) -> bool:
        """Never: VirtualBox runs 64-bit guests with the CPU's virtualisation (VT-x/AMD-V) only."""
        return False

    def _remove_objects(
        self, lab_id: str, owned: list[tuple[str, str]], ledger: Ledger | None, remaining: list[str]
    ) -> None:
        """VMs (with their attached disks), then the media and NAT networks the ledger lists."""
        for _, name in owned:
            self._remove(remaining, f"VM {name}", partial(self._remove_vm, name))
        if ledger is None:
            return
        registered = self.media_paths()
        for path in (p for p in ledger.media if p in registered):
            close = partial(self._vbox, "closemedium", "disk", path, "--delete")
            self._remove(remaining, f"medium {path}", close)
        if ledger.natnetworks:
            present = self.natnetwork_names()
            for net in (n for n in ledger.natnetworks if n in present):
                remove = partial(self._vbox, "natnetwork", "remove", "--netname", net)
                self._remove(remaining, f"NAT network {net}", remove)

    def _teardown_problem(self, exc: Exception) -> str | None:
        assert isinstance(exc, VBoxError)
        return None if exc.gone else str(exc)

    def _remove_vm(self, name: str) -> None:
        state = parse_machinereadable(
            self._vbox("showvminfo", name, "--machinereadable", machine=name)
        ).get("VMState")
        if state in ("running", "paused"):
            self._vbox("controlvm", name, "poweroff", machine=name)
        self._vbox("unregistervm", name, "--delete", machine=name)

    def _remove_own_files(self, lab_dir: Path, ledger: Ledger | None) -> None:
        """The machine folders the ledger names, then the folder holding them if empty."""
        if ledger is not None:
            for machine in ledger.resources.machines:
                shutil.rmtree(
                    lab_dir / "vbox" / vm_name(ledger.resources, machine.name), ignore_errors=True
                )
        with contextlib.suppress(OSError):
            (lab_dir / "vbox").rmdir()


# --------------------------------------------------------------------------- one lab


class _LoggedTransport:
    """A console transport that appends everything it reads to a log file."""

    def __init__(self, inner: UnixSocketTransport, log: Path) -> None:
        self._inner = inner
        self._log = log

    def connect(self) -> None:
        """Open the channel."""
        self._inner.connect()

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes (also appended to the log)."""
        data = self._inner.read(size, timeout)
        if data:
            with self._log.open("ab") as log:
                log.write(data)
        return data

    def write(self, data: bytes) -> None:
        """Send ``data``."""
        self._inner.write(data)

    def close(self) -> None:
        """Close the channel; idempotent."""
        self._inner.close()


class VirtualBoxLab(LabHandleBase):
    """Power, consoles and snapshots of one lab (implements ``base.LabHandle``)."""

    backend: VirtualBoxBackend
    ledger: Ledger

    def vm_name(self, machine: str) -> str:
        """The VirtualBox VM name of ``machine``."""
        self.resources.machine(machine)
        return self.prefix + machine

    def _vbox(self, *argv: str, machine: str) -> str:
        return self.backend._vbox(*argv, machine=machine)

    # ---------------------------------------------------------------- creation

    def build(self) -> None:
        """Create NAT networks and VMs with their disks (called by ``create_lab``)."""
        res, prefix = self.resources, self.prefix
        networks: dict[str, tuple[str, str]] = {}
        for spec in res.networks:
            name = prefix + spec.name
            if spec.nat:
                self.backend._vbox(*natnetwork_argv(name, spec))
                self.ledger.natnetworks.append(name)
                self.ledger.save()
            networks[spec.name] = ("natnetwork" if spec.nat else "intnet", name)
        basefolder = self.backend.lab_dir(self.lab_id) / "vbox"
        owner = json.dumps(self.ledger.owner.as_attributes())
        for machine in res.machines:
            name = self.vm_name(machine.name)
            self._vbox(*createvm_argv(name, basefolder), machine=machine.name)
            self._vbox("setextradata", name, OWNER_KEY, owner, machine=machine.name)
            self._vbox(
                *modifyvm_argv(
                    name,
                    machine,
                    networks,
                    self.socket_path(machine.name),
                    self.backend.config.bios_hold_ms,
                ),
                machine=machine.name,
            )
            disks = [basefolder / name / f"{name}-disk{i}.vdi" for i in range(len(machine.disks))]
            for argv in storage_argvs(name, machine, disks):
                if argv[0] == "createmedium":
                    self.ledger.media.append(argv[3])
                    self.ledger.save()
                self._vbox(*argv, machine=machine.name)
            for argv in oem_argvs(name, machine.oem_strings):
                self._vbox(*argv, machine=machine.name)

    # ---------------------------------------------------------------- power

    def _info(self, machine: str) -> dict[str, str]:
        name = self.vm_name(machine)
        info = parse_machinereadable(
            self._vbox("showvminfo", name, "--machinereadable", machine=machine)
        )
        owner = self.backend.vm_owner(name)
        if owner is None or owner.lab_id != self.lab_id:
            raise BackendError(f"VM {name} is not ours (lab id {self.lab_id}); left alone")
        return info

    def state(self, machine: str) -> PowerState:
        """The machine's power state."""
        return STATES.get(self._info(machine).get("VMState", ""), PowerState.OTHER)

    def _start_paused(self, machine: str) -> None:
        """Start headless and pause at once (inside the BIOS hold)."""
        self._vbox("startvm", self.vm_name(machine), "--type", "headless", machine=machine)
        self._pause(machine, f"pausing {machine}")

    def _pause(self, machine: str, what: str) -> None:
        self._vbox("controlvm", self.vm_name(machine), "pause", machine=machine)

    def _resume(self, machine: str, what: str) -> None:
        self._vbox("controlvm", self.vm_name(machine), "resume", machine=machine)

    def power_off(self, machine: str) -> None:
        """Pull the plug; nothing to do when the machine is off."""
        if self.state(machine) in (PowerState.RUNNING, PowerState.PAUSED):
            self._vbox("controlvm", self.vm_name(machine), "poweroff", machine=machine)
            logger.info("%s: powered off", machine)

    def reset(self, machine: str) -> None:
        """Hard reset; the VM process (and the console socket) stays."""
        self._vbox("controlvm", self.vm_name(machine), "reset", machine=machine)
        logger.info("%s: reset", machine)

    def set_boot_order(self, machine: str, order: Sequence[BootDevice]) -> None:
        """Boot order from the next power-on (the machine must be off)."""
        self._vbox("modifyvm", self.vm_name(machine), *boot_argv(order), machine=machine)
        logger.info("%s: boot order %s", machine, ", ".join(str(d) for d in order))

    def set_oem_strings(self, machine: str, strings: Sequence[str]) -> None:
        """SMBIOS OEM strings from the next power-on (simulator fault knobs)."""
        for argv in oem_argvs(self.vm_name(machine), strings):
            self._vbox(*argv, machine=machine)
        logger.info("%s: OEM strings %s", machine, list(strings))

    def mac_addresses(self, machine: str) -> tuple[str, ...]:
        """MAC of each NIC in spec order (VirtualBox assigns them at creation)."""
        info = self._info(machine)
        macs = [
            info.get(f"macaddress{i}", "")
            for i in range(1, len(self.resources.machine(machine).nics) + 1)
        ]
        return tuple(":".join(m[i : i + 2] for i in range(0, 12, 2)).lower() for m in macs)

    # ---------------------------------------------------------------- gateways

    def open_gateway(
        self, network: str, address: str, targets: Sequence[tuple[str, int]]
    ) -> Gateway:
        """Not yet: an internal network has no host-side bridge to put a gateway on."""
        raise BackendError(
            f"lab {self.lab_id}: a gateway on network {network} is not supported by the "
            "VirtualBox backend"
        )

    def close_gateway(self, network: str) -> None:
        """Nothing to do: the VirtualBox backend never opens a gateway."""

    # ---------------------------------------------------------------- console

    def console(self, machine: str) -> Transport:
        """An unconnected transport to the machine's UART socket, logging what it reads."""
        return _LoggedTransport(self._socket_transport(machine), self.log_path(machine))

    def console_log(self, machine: str) -> bytes:
        """Everything read from the machine's console so far."""
        self.resources.machine(machine)
        try:
            return self.log_path(machine).read_bytes()
        except FileNotFoundError:
            return b""

    # ---------------------------------------------------------------- snapshots

    def _take_snapshot(self, machine: str, name: str, state: PowerState, created: str) -> None:
        """``snapshot take``; whether the machine ran, and when, goes in the description."""
        was = "off" if state is PowerState.OFF else "running"
        description = f"pytest-starlingx snapshot; machine was {was}; created {created}"
        self._vbox(
            "snapshot",
            self.vm_name(machine),
            "take",
            name,
            "--description",
            description,
            machine=machine,
        )

    def _snapshot_list(self, machine: str) -> dict[str, str]:
        try:
            out = self._vbox(
                "snapshot", self.vm_name(machine), "list", "--machinereadable", machine=machine
            )
        except VBoxError as exc:
            if "does not have any snapshots" in str(exc):
                return {}
            raise
        return parse_machinereadable(out)

    def _snapshots_of(self, machine: str) -> list[SnapshotInfo]:
        listing = self._snapshot_list(machine)
        infos = []
        for key, snap_name in listing.items():
            if not key.startswith("SnapshotName"):
                continue
            description = listing.get("SnapshotDescription" + key[len("SnapshotName") :], "")
            mark = _SNAPSHOT_MARK.fullmatch(description)
            if mark is None:
                created, running = datetime.min.replace(tzinfo=UTC), False
            else:
                created, running = datetime.fromisoformat(mark.group(2)), mark.group(1) == "running"
            infos.append(SnapshotInfo(snap_name, machine, created, running))
        return infos

    def _snapshot_was_running(self, machine: str, name: str) -> bool:
        found = [s for s in self.snapshots(machine) if s.name == name]
        if not found:
            raise BackendError(f"{machine}: no snapshot {name!r} to revert to")
        return found[-1].running

    def _restore(self, machine: str, name: str, running: bool) -> None:
        """Power off, then ``snapshot restore`` (a running snapshot restores to saved)."""
        self.power_off(machine)
        self._vbox("snapshot", self.vm_name(machine), "restore", name, machine=machine)

    def _resume_reverted(self, machine: str, name: str, before_resume: BeforeResume | None) -> None:
        """``startvm`` resumes the saved state: power on as usual."""
        self.power_on(machine, before_resume)

    def _delete_snapshot(self, machine: str, name: str) -> None:
        listing = self._snapshot_list(machine)
        if any(k.startswith("SnapshotName") and v == name for k, v in listing.items()):
            self._vbox("snapshot", self.vm_name(machine), "delete", name, machine=machine)
