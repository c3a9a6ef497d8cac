"""The hypervisor-neutral backend interface: machines, networks, power, consoles, snapshots.

Nothing here knows StarlingX. A layer above maps a lab description (controller-0, personalities,
...) to a :class:`LabResources`; a backend (libvirt, VirtualBox) turns that into hypervisor
objects and hands back a :class:`LabHandle` for power, consoles, snapshots and gateways.

Every object a backend creates carries an :class:`Owner` (lab name, lab id, host, pid, creation
time) and a name starting with :func:`name_prefix`; teardown touches only objects whose owner
record names the same lab id.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pytest_starlingx.backends.gateway import Gateway
from pytest_starlingx.ownership import Holder, process_start
from pytest_starlingx.transport import Transport

OWNER_NAMESPACE = "urn:pytest-starlingx:owner:1"
LAB_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,19}")
LAB_ID_PATTERN = re.compile(r"[a-z0-9]{4,8}")
OBJECT_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_CPU_WEIGHT = 64  # MachineSpec.cpu_weight: within what cgroups v1 and v2 can express


class BootDevice(StrEnum):
    """A device a machine's firmware may boot from."""

    DISK = "disk"
    CDROM = "cdrom"
    NETWORK = "network"


class PowerState(StrEnum):
    """What a machine is doing, as far as the hypervisor knows."""

    OFF = "off"
    RUNNING = "running"
    PAUSED = "paused"
    CRASHED = "crashed"
    OTHER = "other"


@dataclass(frozen=True)
class DiskSpec:
    """A blank virtual disk; it costs nothing on the host until the guest writes to it."""

    size_gib: int

    def __post_init__(self) -> None:
        if self.size_gib <= 0:
            raise ValueError(f"disk size must be positive, got {self.size_gib} GiB")


@dataclass(frozen=True)
class NicSpec:
    """A network card on ``network`` (a :class:`NetworkSpec` name) of a given model.

    ``boot`` marks the one NIC the firmware network-boots from (when the boot order has
    ``network``).
    """

    network: str
    model: str = "virtio"
    boot: bool = False


@dataclass(frozen=True)
class MachineSpec:
    """One virtual machine.

    Disks and NICs appear to the guest in the order given (first disk is sda, first NIC is
    the lowest PCI slot). ``oem_strings`` become SMBIOS type 11 strings the guest can read
    (the simulator takes its fault knobs from ``stx-sim:k=v,...`` entries there).
    ``cpu_weight`` is the machine's share of a busy host's CPUs relative to a machine of
    weight 1 (a backend without such a control ignores it). ``uefi`` boots UEFI firmware
    instead of a BIOS.
    """

    name: str
    memory_mib: int
    vcpus: int
    disks: tuple[DiskSpec, ...] = ()
    cdrom: Path | None = None
    nics: tuple[NicSpec, ...] = ()
    boot_order: tuple[BootDevice, ...] = (BootDevice.DISK, BootDevice.CDROM, BootDevice.NETWORK)
    oem_strings: tuple[str, ...] = ()
    cpu_weight: int = 1
    uefi: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not OBJECT_NAME_PATTERN.fullmatch(self.name):
            problems.append(f"name {self.name!r} must match {OBJECT_NAME_PATTERN.pattern}")
        if self.memory_mib < 16 or self.vcpus < 1:
            problems.append(f"needs >= 16 MiB and >= 1 vCPU, got {self.memory_mib}/{self.vcpus}")
        if not 1 <= self.cpu_weight <= MAX_CPU_WEIGHT:
            problems.append(f"cpu_weight must be 1..{MAX_CPU_WEIGHT}, got {self.cpu_weight}")
        if len(set(self.boot_order)) != len(self.boot_order):
            problems.append(f"boot order {self.boot_order} repeats a device")
        if sum(nic.boot for nic in self.nics) > 1:
            problems.append("more than one NIC is marked as the boot NIC")
        if BootDevice.NETWORK in self.boot_order and self.nics and self.boot_nic is None:
            problems.append("boot order has 'network' but no NIC is marked boot=True")
        if problems:
            raise ValueError(f"machine {self.name!r}: " + "; ".join(problems))

    @property
    def boot_nic(self) -> int | None:
        """Index of the network-boot NIC, if any."""
        return next((i for i, nic in enumerate(self.nics) if nic.boot), None)


@dataclass(frozen=True)
class NetworkSpec:
    """A virtual network between machines.

    Isolated by default: the host has no address on it, gives no DHCP and forwards nothing.
    ``nat=True`` (for labs that need the internet) gives the network a way out through
    ``gateway`` (CIDR, e.g. ``10.10.10.1/24``), masquerading its traffic, still without a
    host address on it: on libvirt a gateway namespace with an uplink of its own
    (``backends/gateway.py``), on VirtualBox a NAT network, whose NAT engine is its ``.1``.
    """

    name: str
    nat: bool = False
    gateway: str | None = None

    def __post_init__(self) -> None:
        if not OBJECT_NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"network name {self.name!r} must match {OBJECT_NAME_PATTERN.pattern}")
        if self.nat and not self.gateway:
            raise ValueError(f"network {self.name!r}: nat=True needs a gateway address")
        if self.gateway is not None:
            try:
                interface = ipaddress.IPv4Interface(self.gateway)
            except ValueError as exc:
                raise ValueError(f"network {self.name!r}: gateway: {exc}") from exc
            if "/" not in self.gateway or interface.ip == interface.network.network_address:
                raise ValueError(
                    f"network {self.name!r}: gateway {self.gateway!r} must be an IPv4 host "
                    "address with its prefix length (e.g. 10.10.10.1/24)"
                )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkSpec:
        """A network from a ledger (an older one called the gateway ``host_address``)."""
        return cls(
            data["name"], data.get("nat", False), data.get("gateway", data.get("host_address"))
        )


@dataclass(frozen=True)
class LabResources:
    """Everything one lab needs from a hypervisor."""

    lab_name: str
    lab_id: str
    networks: tuple[NetworkSpec, ...]
    machines: tuple[MachineSpec, ...]

    def __post_init__(self) -> None:
        problems = []
        if not LAB_NAME_PATTERN.fullmatch(self.lab_name):
            problems.append(f"lab name {self.lab_name!r} must match {LAB_NAME_PATTERN.pattern}")
        if not LAB_ID_PATTERN.fullmatch(self.lab_id):
            problems.append(f"lab id {self.lab_id!r} must match {LAB_ID_PATTERN.pattern}")
        nets = [n.name for n in self.networks]
        machines = [m.name for m in self.machines]
        for kind, names in (("network", nets), ("machine", machines)):
            dups = sorted({n for n in names if names.count(n) > 1})
            if dups:
                problems.append(f"duplicate {kind} names: {', '.join(dups)}")
        for machine in self.machines:
            for nic in machine.nics:
                if nic.network not in nets:
                    problems.append(
                        f"machine {machine.name!r}: NIC on unknown network {nic.network!r}"
                    )
        if problems:
            raise ValueError(f"lab {self.lab_name!r}: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """The resources as JSON-ready data (for a backend's ledger)."""
        data = asdict(self)
        for machine in data["machines"]:
            machine["cdrom"] = str(machine["cdrom"]) if machine["cdrom"] is not None else None
            machine["boot_order"] = [str(b) for b in machine["boot_order"]]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabResources:
        """The inverse of :meth:`to_json`."""
        machines = tuple(
            MachineSpec(
                name=m["name"],
                memory_mib=m["memory_mib"],
                vcpus=m["vcpus"],
                disks=tuple(DiskSpec(**d) for d in m["disks"]),
                cdrom=Path(m["cdrom"]) if m["cdrom"] else None,
                nics=tuple(NicSpec(**n) for n in m["nics"]),
                boot_order=tuple(BootDevice(b) for b in m["boot_order"]),
                oem_strings=tuple(m["oem_strings"]),
                cpu_weight=m.get("cpu_weight", 1),
                uefi=m.get("uefi", False),
            )
            for m in data["machines"]
        )
        networks = tuple(NetworkSpec.from_json(n) for n in data["networks"])
        return cls(data["lab_name"], data["lab_id"], networks, machines)

    def machine(self, name: str) -> MachineSpec:
        """The machine called ``name``; ``KeyError`` naming the known ones otherwise."""
        for machine in self.machines:
            if machine.name == name:
                return machine
        raise KeyError(f"no machine {name!r} (has {', '.join(m.name for m in self.machines)})")


def name_prefix(lab_name: str, lab_id: str) -> str:
    """The prefix of every hypervisor object name of a lab: ``stx-<lab>-<id>-``."""
    return f"stx-{lab_name}-{lab_id}-"


@dataclass(frozen=True)
class Owner:
    """Who created a hypervisor object; recorded on the object (or beside it)."""

    lab_name: str
    lab_id: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    state_dir: str = ""  # the state directory holding the lab's ledger and state, if any
    start: int | None = field(default_factory=lambda: process_start(os.getpid()))

    @property
    def holder(self) -> Holder:
        """The creating process (pid and start time tell a reused pid apart)."""
        return Holder(self.host, self.pid, self.start)

    def as_attributes(self) -> dict[str, str]:
        """The owner as string attributes (for XML or JSON)."""
        attrs = {
            "lab": self.lab_name,
            "lab-id": self.lab_id,
            "host": self.host,
            "pid": str(self.pid),
            "created": self.created,
        }
        if self.state_dir:
            attrs["state-dir"] = self.state_dir
        if self.start is not None:
            attrs["pid-start"] = str(self.start)
        return attrs

    @classmethod
    def from_attributes(cls, attrs: dict[str, str]) -> Owner:
        """The inverse of :meth:`as_attributes`; ``KeyError``/``ValueError`` when malformed."""
        start = attrs.get("pid-start")
        return cls(
            attrs["lab"], attrs["lab-id"], attrs["host"], int(attrs["pid"]), attrs["created"],
            attrs.get("state-dir", ""), int(start) if start else None,
        )  # fmt: skip


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of one machine."""

    name: str
    machine: str
    created: datetime
    running: bool  # the machine was running (memory included) when it was taken


BeforeResume = Callable[[str], None]
"""Called with a machine name while it is paused, before it runs its first instruction."""


@runtime_checkable
class LabHandle(Protocol):
    """Power, consoles and snapshots of one created lab. Machine arguments are spec names."""

    @property
    def resources(self) -> LabResources:
        """What the lab was created from."""

    def power_on(self, machine: str, before_resume: BeforeResume | None = None) -> None:
        """Start ``machine`` paused, call ``before_resume(machine)``, then let it run.

        Attach the console in ``before_resume`` to see every byte from the firmware on. A
        running machine is left alone; a paused one is resumed.
        """

    def power_off(self, machine: str) -> None:
        """Pull the plug (no guest shutdown); a machine already off is left alone."""

    def reset(self, machine: str) -> None:
        """Hard reset; the console stays connected."""

    def state(self, machine: str) -> PowerState:
        """The machine's power state."""

    def console(self, machine: str) -> Transport:
        """A new, unconnected byte channel to the machine's first serial port."""

    def console_log(self, machine: str) -> bytes:
        """Everything the machine's serial port printed since the lab was created. The
        hypervisor's logger may write it a moment after a console read returned the bytes
        (libvirt's virtlogd writes the log apart from the console socket)."""

    def set_boot_order(self, machine: str, order: Sequence[BootDevice]) -> None:
        """Boot order used from the next power-on."""

    def set_oem_strings(self, machine: str, strings: Sequence[str]) -> None:
        """SMBIOS OEM strings seen by the guest from the next power-on."""

    def mac_addresses(self, machine: str) -> tuple[str, ...]:
        """MAC address of each NIC, in the order of the machine's ``nics``."""

    def snapshot(self, name: str, machines: Sequence[str] | None = None) -> None:
        """Snapshot the given machines (default: all) at one instant; running ones with memory."""

    def snapshots(self, machine: str | None = None) -> list[SnapshotInfo]:
        """Snapshots of one machine, or of all machines, oldest first."""

    def revert(
        self,
        name: str,
        machines: Sequence[str] | None = None,
        before_resume: BeforeResume | None = None,
    ) -> None:
        """Bring the machines back to snapshot ``name``; ``before_resume`` as in power_on."""

    def delete_snapshot(self, name: str, machines: Sequence[str] | None = None) -> None:
        """Remove snapshot ``name``; machines without it are skipped."""

    def open_gateway(
        self, network: str, address: str, targets: Sequence[tuple[str, int]]
    ) -> Gateway:
        """A gateway on ``network`` holding ``address`` (CIDR): the host reaches each
        ``(address, port)`` target at ``127.0.0.1:<gateway.ports[target]>`` without an address
        on the lab network (``backends/gateway.py``). Removed with the lab; ``BackendError``
        where the backend has no gateways."""

    def close_gateway(self, network: str) -> None:
        """Remove the gateway of ``network``, if there is one."""

    def destroy(self) -> None:
        """Remove everything of the lab; see :meth:`Backend.destroy_lab`."""


@runtime_checkable
class Backend(Protocol):
    """A hypervisor that can create, find and remove labs."""

    def create_lab(self, resources: LabResources) -> LabHandle:
        """Create networks, disks and machines (all powered off).

        Raises ``BackendError`` naming any existing object in the way, which is left alone;
        whatever this call created is removed again on failure.
        """

    def open_lab(self, lab_id: str) -> LabHandle:
        """A handle on a lab created earlier (possibly by another process)."""

    def lab_ids(self) -> list[str]:
        """Ids of every lab of ours that still has objects on this hypervisor."""

    def owned_objects(self) -> list[tuple[str, str, Owner]]:
        """(kind, name, owner) of every object carrying our owner record."""

    def destroy_lab(self, lab_id: str) -> None:
        """Remove every object carrying our owner record for ``lab_id``.

        Idempotent, tolerant of objects already gone, keeps going past single failures and
        then raises one ``LeakError`` listing what remains.
        """

    def software_emulated(self) -> bool:
        """True when machines would run under software emulation because hardware
        virtualisation does not work on the host (not because it was asked for)."""

    def close(self) -> None:
        """Let go of the hypervisor connection."""
