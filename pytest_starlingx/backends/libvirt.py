"""The libvirt/QEMU backend: a lab's networks, disks and VMs through libvirt-python.

What it makes, for a lab ``<lab>`` with id ``<id>`` (names all start ``stx-<lab>-<id>-``):

* one libvirt network per :class:`NetworkSpec`, isolated (no ``<ip>``, no ``<forward>``, so no
  host address, no DHCP, no routing) on a bridge ``stx<id>n<i>`` (at most 14 characters), a
  NAT network (``nat=True``) too: its way out is its gateway (below), opened with the lab;
* a directory storage pool ``stx-<lab>-<id>-disks`` at ``<state>/labs/<id>/disks`` (or, with
  ``LibvirtConfig.pool``, an existing pool) holding one sparse qcow2 volume per disk;
* one persistent q35 domain per machine: SeaBIOS, a VGA device, SATA disks, the ISO as a
  read-only SATA CD, NICs in the given order, per-device ``<boot order>``, SMBIOS OEM strings,
  ``on_reboot=restart`` and the first serial port on a unix socket (mode bind) with a
  ``<log>`` file beside it;
* on request (:meth:`LibvirtLab.open_gateway`), a gateway on a network: namespace
  ``stx-<lab>-<id>-gw-<net>`` on the network's bridge through veth ``stx<id>g<i>``, holding the
  gateway address, and its relay serving ``127.0.0.1`` ports (``backends/gateway.py``); on a
  NAT network the gateway holds ``NetworkSpec.gateway`` and has an uplink (forwarding and
  masquerading in the namespace, slirp4netns as its way out), opened when the lab is created
  and again at a power-on that finds it gone (a host reboot), its relay added on request.

Firmware output stays on the VGA device, as in StarlingX's own libvirt domains (starlingx/tools
``deployment/libvirt/controller_allinone.xml``: a video device, no serial BIOS console): with
``<bios useserial='yes'/>`` and no video device SeaBIOS copies what a boot loader writes to the
screen onto the serial port, while ISOLINUX (``SERIAL 0 115200`` in a StarlingX ISO's
isolinux.cfg) writes there itself, and every character of the boot menu arrives twice
(shared/real-menus.md). A boot that finds no bootable device is retried by SeaBIOS after
``REBOOT_TIMEOUT_MS`` (``rebootTimeout``): a node whose network boot went unanswered (controller-0
busy) tries again by itself, as StarlingX's automation power-cycles such nodes.

Ownership. Domains and networks carry ``<stx:owner lab= lab-id= host= pid= created=/>`` in
namespace ``urn:pytest-starlingx:owner:1`` inside ``<metadata>``; that is what teardown looks
for. Pools and volumes have no metadata slot: the per-lab pool is ours when its name and its
target directory (inside our lab directory) both match; volumes in a shared pool are ours when
the lab's ledger (``owner.json``) lists them; so are a gateway's namespace, veth and relay, named
in the ledger before they are made (the relay is stopped only while its pid and start time
match). A same-named object without our record for the lab id is reported (``BackendError``)
and never touched.

State directory (default ``/var/lib/pytest-starlingx``, owned by root, mode 0755 so that
libvirt's QEMU user can reach sockets and disks; libvirt's global config is never changed).
Teardown removes only these files; other layers may keep their own files in the lab dir::

    kvm-probe.json               result of the KVM probe, per libvirt host
    image-digests.json           sha256 of CD images uploaded (remote files), by path, size, mtime
    image-cache-<uri hash>.lock  held while an image is uploaded to a host (remote files)
    labs/<id>/owner.json         ledger: owner, URI, the LabResources, pool, volumes, gateways
    labs/<id>/run/<m>.sock       serial console socket of machine <m>
    labs/<id>/run/<m>.serial.log everything machine <m> printed (written by virtlogd; in
                                 remote-files mode, what its console streams read)
    labs/<id>/run/<ns>.relay.*   a gateway relay's state (pid, start, ports) and log
    labs/<id>/run/<ns>.uplink.*  a gateway uplink process's state (pid, start) and log
    labs/<id>/run/gateways.lock  held while the ledger's gateways change
    labs/<id>/disks/             the per-lab pool's volumes

Console and power-on. A ``mode='bind'`` socket drops what the guest prints while nobody is
connected, so :meth:`LibvirtLab.power_on` starts the domain paused, calls ``before_resume``
(attach the console there: ``power_on(m, before_resume=lambda m: transport.connect())``) and
only then resumes it. The ``<log>`` file records every byte in any case.

Snapshots are internal qcow2 snapshots (memory and disks in the disk images themselves).
libvirt 9.0, Debian 12's, cannot revert external snapshots at all (that arrived in 9.9), while
internal ones revert in one call (~2-3 s for a small guest under TCG) and leave no overlay chain
behind. They need every writable disk to be qcow2 and no UEFI varstore (raw pflash): our disks
are all qcow2, firmware is SeaBIOS, and libvirt marks the read-only raw CD ``snapshot='no'``
by itself. Reverting a running snapshot makes libvirt start a new QEMU process, so the console
socket is re-created: :meth:`LibvirtLab.revert` restores paused and calls ``before_resume``
first, like ``power_on``.

libvirtd restarts. Guests and their console sockets outlive libvirtd; every libvirt call goes
through :meth:`LibvirtBackend.call`, which reopens a lost connection (``libvirt_conn``) and
repeats the step, looked up by name again (each step checks the state before acting).

Remote files. With a URI naming another host (``qemu+ssh://host/system``), or with
``LibvirtConfig.remote_files=True``, nothing of a lab's machines is on this machine; everything
goes through libvirt's API (the mode is recorded in the ledger, so whoever opens the lab later
uses it too):

* the per-lab pool is at ``<remote_pool_dir>/<pool name>`` on the libvirt host
  (``LibvirtConfig.remote_pool_dir``, default ``/var/lib/libvirt/images``);
* a CD image is uploaded into the host's image cache (``libvirt_images``: a pool
  ``stx-image-cache`` that belongs to no lab, one volume per image digest, uploaded once) and
  the domain's CD is that volume's path on the host;
* the serial port is a ``<serial type='pty'>`` without a log, reached through libvirt's
  console stream (``libvirt_console``); :meth:`LibvirtLab.console_log` returns what this
  machine's streams read, which they append to ``labs/<id>/run/<m>.serial.log`` here (output
  while no stream is open, e.g. between a power-on and the console's attach, is not in it);
* gateways (and so NAT networks) are refused with a ``BackendError``: they are made on the
  libvirt host's bridge from this machine.

With a remote URI and ``remote_files=False`` the console socket and log paths are on the remote
host: everything but :meth:`LibvirtLab.console` / :meth:`LibvirtLab.console_log` works.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import libvirt
from filelock import FileLock

from pytest_starlingx.backends.base import (
    OWNER_NAMESPACE,
    BeforeResume,
    BootDevice,
    DiskSpec,
    LabResources,
    MachineSpec,
    NetworkSpec,
    Owner,
    PowerState,
    SnapshotInfo,
    name_prefix,
)
from pytest_starlingx.backends.common import LabBackendBase, LabHandleBase, LedgerBase
from pytest_starlingx.backends.gateway import (
    UPLINK_TOOLS,
    Gateway,
    GatewayRecord,
    add_relay,
    existing,
    open_gateway,
    remove_gateway,
)
from pytest_starlingx.backends.libvirt_conn import Connection, error, is_alive
from pytest_starlingx.backends.libvirt_console import ConsoleStreamTransport, start_event_loop
from pytest_starlingx.backends.libvirt_images import (
    CACHE_POOL,
    cache_pool_xml,
    cached_image,
    image_digest,
)
from pytest_starlingx.errors import BackendError, LeakError
from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.settings import DEFAULT_LIBVIRT_URI, DEFAULT_STATE_DIR
from pytest_starlingx.transport import Transport

if TYPE_CHECKING:
    from pytest_starlingx.backends.multihost import SpanningLab

logger = logging.getLogger("pytest_starlingx.backend")

CPU_SHARES = 1024  # a domain's cgroup cpu shares at MachineSpec.cpu_weight 1 (libvirt's default)
_POLL = 0.2  # seconds between polls of a probe or a state change
#: SeaBIOS retries a boot that found no bootable device (a network boot left unanswered) after this.
REBOOT_TIMEOUT_MS = 5000
#: UEFI firmware: Debian's ``ovmf`` build of OVMF with its variable store in RAM, loaded as a
#: ROM. A pflash loader would keep the variables in a file, but libvirt refuses internal
#: snapshots of a domain with pflash firmware, and golden labs and stage snapshots need them.
#: The variables are then lost at power-off, which the labs do not need: the boot order is
#: libvirt's per-device order, and an installed disk boots by its removable-media path
#: (``\EFI\BOOT\BOOTX64.EFI``).
OVMF_ROM = Path("/usr/share/ovmf/OVMF.fd")

#: Held while a NAT network's gateway is checked and opened (threads of one process).
_UPLINKS = threading.Lock()

ET.register_namespace("stx", OWNER_NAMESPACE)
_OWNER_TAG = f"{{{OWNER_NAMESPACE}}}owner"
T = TypeVar("T")
_GONE = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
}


class DomainType(StrEnum):
    """Which accelerator domains use; AUTO probes KVM once per host and falls back to QEMU."""

    AUTO = "auto"
    KVM = "kvm"
    QEMU = "qemu"


@dataclass(frozen=True)
class LibvirtConfig:
    """Where and how labs run (host facts, not lab facts)."""

    uri: str = DEFAULT_LIBVIRT_URI
    state_dir: Path = DEFAULT_STATE_DIR
    pool: str | None = None  # an existing storage pool for volumes; None: a pool per lab
    domain_type: DomainType = DomainType.AUTO
    kvm_probe_timeout: float = 20.0  # seconds a probe guest gets to boot a kernel under KVM
    disk_cache: str = "unsafe"  # labs are throwaway: no host flushes, fastest installs
    reconnect_timeout: float = 60.0  # seconds a restarted libvirtd gets to answer again
    #: Whether a lab's files live on the libvirt host, reached through libvirt's API only
    #: (see "Remote files" above); None: when the URI names another host. True forces it on a
    #: local libvirtd (the tests do), False forces local files.
    remote_files: bool | None = None
    #: In remote-files mode, the directory on the libvirt host holding the per-lab pools
    #: (``<dir>/<pool name>``) and the image cache (``<dir>/stx-image-cache``).
    remote_pool_dir: str = "/var/lib/libvirt/images"
    #: The image cache's pool on the libvirt host, at ``<remote_pool_dir>/<image_cache>``.
    image_cache: str = CACHE_POOL

    @property
    def is_local(self) -> bool:
        """True when libvirt runs on this host (console sockets are reachable)."""
        return urlsplit(self.uri).hostname in (None, "", "localhost")

    @property
    def uses_remote_files(self) -> bool:
        """Whether new labs keep their files on the libvirt host (``remote_files``)."""
        return not self.is_local if self.remote_files is None else self.remote_files


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def _op(what: str) -> Iterator[None]:
    """Turn a libvirt error into a BackendError saying ``what`` was being done."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise error(what, exc) from exc


def _is_gone(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in _GONE


def _existing(lookup: Callable[[], T]) -> T | None:
    """What ``lookup`` finds, or None when there is no such object."""
    try:
        return lookup()
    except libvirt.libvirtError as exc:
        if _is_gone(exc):
            return None
        raise


# --------------------------------------------------------------------------- XML


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.replace("_", "-"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _tostring(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def _metadata(root: ET.Element, owner: Owner) -> None:
    _sub(_sub(root, "metadata"), _OWNER_TAG, **{k: v for k, v in owner.as_attributes().items()})


def owner_from_xml(xml: str) -> Owner | None:
    """The owner record in a domain's or network's XML, if it carries a well-formed one."""
    el = ET.fromstring(xml).find(f"metadata/{_OWNER_TAG}")
    if el is None:
        return None
    try:
        return Owner.from_attributes(dict(el.attrib))
    except (KeyError, ValueError):
        return None


def bridge_name(lab_id: str, index: int) -> str:
    """Linux bridge of a lab's ``index``-th network: unique per lab id, <= 15 characters."""
    return f"stx{lab_id}n{index}"


def gateway_veth(lab_id: str, index: int) -> str:
    """Host end of the gateway veth on a lab's ``index``-th network: as :func:`bridge_name`."""
    return f"stx{lab_id}g{index}"


def network_xml(spec: NetworkSpec, name: str, bridge: str, owner: Owner) -> str:
    """A libvirt network: always isolated, so the host has no address on it (libvirt's own
    ``<forward mode='nat'>`` would give the host ``<ip>`` on the bridge and add rules to the
    host's tables); a NAT network's way out is its gateway namespace."""
    root = ET.Element("network")
    _sub(root, "name", name)
    _metadata(root, owner)
    _sub(root, "bridge", name=bridge, stp="off", delay="0")
    return _tostring(root)


def pool_xml(name: str, path: Path | str) -> str:
    """A directory storage pool."""
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", str(path))
    _sub(_sub(target, "permissions"), "mode", "0755")
    return _tostring(root)


def volume_xml(name: str, disk: DiskSpec) -> str:
    """A sparse qcow2 volume (allocation 0: blocks are allocated as the guest writes)."""
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(disk.size_gib), unit="GiB")
    _sub(root, "allocation", "0")
    target = _sub(root, "target")
    _sub(target, "format", type="qcow2")
    return _tostring(root)


@dataclass(frozen=True)
class DomainPlan:
    """Host-side facts a domain's XML needs besides its :class:`MachineSpec`."""

    name: str
    domain_type: DomainType
    volumes: tuple[str, ...]  # paths, one per spec disk
    networks: tuple[str, ...]  # libvirt network names, one per spec NIC
    socket: Path | None  # the serial console's unix socket; None: a pty (remote files)
    log: Path | None  # virtlogd's log of the serial console, beside its socket
    disk_cache: str
    cdrom: str | None = None  # the CD image's path on the libvirt host, if not spec.cdrom


def domain_xml(spec: MachineSpec, plan: DomainPlan, owner: Owner) -> str:
    """A q35/SeaBIOS domain for ``spec``."""
    root = ET.Element("domain", type=str(plan.domain_type))
    _sub(root, "name", plan.name)
    _metadata(root, owner)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    if spec.cpu_weight != 1:
        # cgroup cpu shares, relative to the default 1024 of every other domain
        _sub(_sub(root, "cputune"), "shares", str(CPU_SHARES * spec.cpu_weight))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if spec.uefi:
        _sub(os_el, "loader", str(OVMF_ROM), readonly="yes", type="rom")
    else:
        _sub(os_el, "bios", rebootTimeout=str(REBOOT_TIMEOUT_MS))
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if plan.domain_type is DomainType.KVM:
        _sub(root, "cpu", mode="host-passthrough")
    _sub(root, "clock", offset="utc")
    for event, action in (("poweroff", "destroy"), ("reboot", "restart"), ("crash", "destroy")):
        _sub(root, f"on_{event}", action)
    devices = _sub(root, "devices")
    targets = (f"sd{chr(ord('a') + i)}" for i in range(26))
    for path in plan.volumes:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", cache=plan.disk_cache, discard="unmap")
        _sub(disk, "source", file=path)
        _sub(disk, "target", dev=next(targets), bus="sata")
    if spec.cdrom is not None:
        cdrom = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cdrom, "driver", name="qemu", type="raw")
        _sub(cdrom, "source", file=plan.cdrom or str(spec.cdrom))
        _sub(cdrom, "target", dev=next(targets), bus="sata")
        _sub(cdrom, "readonly")
    for nic, network in zip(spec.nics, plan.networks, strict=True):
        iface = _sub(devices, "interface", type="network")
        _sub(iface, "source", network=network)
        _sub(iface, "model", type=nic.model)
    if plan.socket is None:  # reached through libvirt's console stream
        serial = _sub(devices, "serial", type="pty")
    else:
        serial = _sub(devices, "serial", type="unix")
        _sub(serial, "source", mode="bind", path=str(plan.socket))
        if plan.log is not None:
            _sub(serial, "log", file=str(plan.log), append="on")
    _sub(serial, "target", port="0")
    _sub(_sub(devices, "video"), "model", type="vga")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    set_boot_order(root, spec.boot_order, spec.boot_nic)
    set_oem_strings(root, spec.oem_strings)
    return _tostring(root)


def set_boot_order(root: ET.Element, order: Sequence[BootDevice], boot_nic: int | None) -> None:
    """Give the first disk, the CD and the boot NIC a ``<boot order>`` following ``order``."""
    devices = root.find("devices")
    assert devices is not None, "domain XML without <devices>"
    for parent in devices:
        for boot in parent.findall("boot"):
            parent.remove(boot)
    nics = devices.findall("interface")
    candidates = {
        BootDevice.DISK: devices.find("disk[@device='disk']"),
        BootDevice.CDROM: devices.find("disk[@device='cdrom']"),
        BootDevice.NETWORK: nics[boot_nic] if boot_nic is not None and nics else None,
    }
    rank = 1
    for device in order:
        element = candidates[BootDevice(device)]
        if element is not None:
            _sub(element, "boot", order=str(rank))
            rank += 1


def set_oem_strings(root: ET.Element, strings: Sequence[str]) -> None:
    """Replace the SMBIOS type 11 (OEM strings) table."""
    os_el = root.find("os")
    assert os_el is not None, "domain XML without <os>"
    for old in root.findall("sysinfo[@type='smbios']"):
        root.remove(old)
    for old in os_el.findall("smbios"):
        os_el.remove(old)
    if not strings:
        return
    sysinfo = ET.Element("sysinfo", type="smbios")
    oem = _sub(sysinfo, "oemStrings")
    for text in strings:
        _sub(oem, "entry", text)
    root.insert(list(root).index(os_el), sysinfo)
    _sub(os_el, "smbios", mode="sysinfo")


# --------------------------------------------------------------------------- ledger


@dataclass
class Ledger(LedgerBase):
    """What a lab created that libvirt cannot label: written to ``labs/<id>/owner.json``."""

    uri: str
    pool: str
    pool_owned: bool
    volumes: list[str] = field(default_factory=list)  # paths of volumes we created
    remote_files: bool = False  # files on the libvirt host (console stream, uploaded CD)
    pool_path: str = ""  # the per-lab pool's directory on the libvirt host ("": older ledger)
    # network spec name -> GatewayRecord.to_json(), recorded before the gateway is made
    gateways: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------- backend


class LibvirtBackend(LabBackendBase[Ledger, "LibvirtLab"]):
    """Creates, finds and removes labs on one libvirt host (implements ``base.Backend``).

    Every libvirt call goes through :meth:`call`, so a lab survives a libvirtd restart.
    """

    config: LibvirtConfig
    ledger_type = Ledger
    hypervisor_error = libvirt.libvirtError
    state_dir_hint = "use a shorter state_dir"

    def __init__(self, config: LibvirtConfig | None = None) -> None:
        self.config = config or LibvirtConfig()
        self.libvirt = Connection(self.config.uri, self.config.reconnect_timeout)
        self._domain_type: DomainType | None = None
        self._consoles: Connection | None = None
        self._consoles_lock = threading.Lock()
        #: The backends of the parts of labs spanning hosts (``backends/multihost.py``), by
        #: URI and state directory; closed with this one.
        self.host_backends: dict[tuple[str, Path], LibvirtBackend] = {}

    @property
    def conn(self) -> libvirt.virConnect:
        """The current libvirt connection (a new one after libvirtd restarted)."""
        return self.libvirt.conn

    def call(self, what: str, action: Callable[[libvirt.virConnect], T]) -> T:
        """``action(conn)``, repeated on a new connection if libvirtd restarted meanwhile.

        A libvirt error becomes a BackendError saying ``what`` was being done.
        """
        with _op(what):
            return self.libvirt.run(action)

    def close(self) -> None:
        """Close the libvirt connections (and those of the hosts of labs spanning hosts)."""
        for backend in self.host_backends.values():
            backend.close()
        self.host_backends.clear()
        self.libvirt.close()
        if self._consoles is not None:
            self._consoles.close()

    @property
    def consoles(self) -> Connection:
        """The connection console streams run on, opened on first use after libvirt's event
        loop (``libvirt_console``); the others never depend on that loop."""
        with self._consoles_lock:
            if self._consoles is None:
                start_event_loop()
                self._consoles = Connection(self.config.uri, self.config.reconnect_timeout)
            return self._consoles

    # ---------------------------------------------------------------- image cache

    def cache_pool_path(self) -> PurePosixPath:
        """The image cache's directory on the libvirt host."""
        return PurePosixPath(self.config.remote_pool_dir) / self.config.image_cache

    def cached_image(self, image: Path) -> str:
        """The path on the libvirt host of ``image`` (a local file) in its image cache,
        uploaded unless it is there (``libvirt_images``). Uploads from this machine's
        processes to one host run one at a time."""
        digest = self._image_digest(image)
        with self._image_cache_lock():
            self.call(
                f"creating the image cache {self.config.image_cache} at {self.cache_pool_path()}",
                self._create_cache_pool,
            )
            return self.call(
                f"uploading {image} to the image cache of {self.config.uri}",
                partial(
                    cached_image, pool_name=self.config.image_cache, image=image, digest=digest
                ),
            )

    def clear_image_cache(self) -> list[str]:
        """Remove the host's image cache, its volumes and pool, when no domain uses it; the
        volumes removed. ``BackendError`` names the domains using it (left alone)."""
        prefix = f"{self.cache_pool_path()}/"

        def users(conn: libvirt.virConnect) -> list[str]:
            found = []
            for dom in conn.listAllDomains():
                xml = _existing(partial(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))
                sources = [] if xml is None else ET.fromstring(xml).iterfind("devices/disk/source")
                if any(src.get("file", "").startswith(prefix) for src in sources):
                    found.append(dom.name())
            return sorted(found)

        with self._image_cache_lock():
            using = self.call("listing the domains that use the image cache", users)
            if using:
                raise BackendError(
                    f"the image cache {self.config.image_cache} of {self.config.uri} is used by "
                    f"{', '.join(using)}; remove their labs first"
                )

            name = self.config.image_cache

            def clear(conn: libvirt.virConnect) -> list[str]:
                pool = _existing(lambda: conn.storagePoolLookupByName(name))
                if pool is None:
                    return []
                self._check_cache_pool(pool)
                if not pool.isActive():
                    pool.create(libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
                names = sorted(pool.listVolumes())
                _remove_pool(conn, name)
                return names

            removed = self.call(f"removing the image cache {name}", clear)
        logger.info("removed the image cache of %s (%d volumes)", self.config.uri, len(removed))
        return removed

    def _image_digest(self, image: Path) -> str:
        """The image's sha256, computed once per path, size and modification time (a
        StarlingX ISO takes seconds to hash)."""
        record = self.config.state_dir / "image-digests.json"
        try:
            info = image.stat()
            key = f"{image.resolve()} {info.st_size} {info.st_mtime_ns}"
            try:
                known = json.loads(record.read_text())
            except (OSError, ValueError):
                known = {}
            if key not in known:
                known[key] = image_digest(image)
                write_json_atomic(record, known)
        except OSError as exc:
            raise BackendError(f"cannot read image {image}: {exc}") from exc
        return str(known[key])

    def _image_cache_lock(self) -> FileLock:
        key = hashlib.sha256(self.config.uri.encode()).hexdigest()[:12]
        return FileLock(self.config.state_dir / f"image-cache-{key}.lock")

    def _create_cache_pool(self, conn: libvirt.virConnect) -> None:
        name = self.config.image_cache
        pool = _existing(lambda: conn.storagePoolLookupByName(name))
        if pool is not None:
            self._check_cache_pool(pool)
        _create_pool(conn, name, cache_pool_xml(name, self.cache_pool_path()))

    def _check_cache_pool(self, pool: libvirt.virStoragePool) -> None:
        """Refuse a pool called like the cache that is not at the cache's path."""
        target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if target != str(self.cache_pool_path()):
            raise BackendError(
                f"storage pool {self.config.image_cache} is at {target}, not at "
                f"{self.cache_pool_path()} (LibvirtConfig.remote_pool_dir): not our image "
                "cache, left alone"
            )

    # ---------------------------------------------------------------- labs spanning hosts

    def open_lab(self, lab_id: str) -> LibvirtLab | SpanningLab:  # type: ignore[override]
        """A handle on a lab created earlier; a lab spanning hosts as a whole."""
        from pytest_starlingx.backends import multihost

        if multihost.is_spanning(self, lab_id):
            return multihost.open_lab(self, lab_id)
        return super().open_lab(lab_id)

    def destroy_lab(self, lab_id: str) -> None:
        """Remove every object of ours for ``lab_id``; a lab spanning hosts on every host
        (``LeakError`` naming each host where something remains)."""
        from pytest_starlingx.backends import multihost

        if multihost.is_spanning(self, lab_id):
            multihost.destroy_lab(self, lab_id)
        else:
            super().destroy_lab(lab_id)

    # ---------------------------------------------------------------- domain type

    def domain_type(self) -> DomainType:
        """KVM or QEMU: as configured, or probed once per host (cached in the state dir)."""
        if self._domain_type is None:
            if self.config.domain_type is not DomainType.AUTO:
                self._domain_type = self.config.domain_type
            else:
                self._domain_type = DomainType.KVM if self._kvm_works() else DomainType.QEMU
                if self._domain_type is DomainType.QEMU:
                    logger.warning(
                        "KVM does not work on libvirt host %s: using QEMU software emulation "
                        "(domain type 'qemu', much slower); force with domain_type=kvm|qemu",
                        self._host()[0],
                    )
        return self._domain_type

    def software_emulated(self) -> bool:
        """True when the KVM probe chose QEMU software emulation (not a configured choice)."""
        return self.config.domain_type is DomainType.AUTO and self.domain_type() is DomainType.QEMU

    def _host(self) -> tuple[str, int]:
        """The libvirt host's name and QEMU version."""
        return self.call("reading the libvirt host", lambda c: (c.getHostname(), c.getVersion()))

    def _kvm_works(self) -> bool:
        cache = self.config.state_dir / "kvm-probe.json"
        host, version = self._host()
        key = f"{self.config.uri} {host} qemu {version}"
        if self.config.is_local:
            key += f" kernel {os.uname().release}"
        try:
            cached = json.loads(cache.read_text())
        except (OSError, ValueError):
            cached = {}
        if key in cached:
            return bool(cached[key]["kvm"])
        timeout = self.config.kvm_probe_timeout
        if self.config.uses_remote_files:  # the serial through libvirt's console stream
            with _op("probing KVM"):
                works = self.consoles.run(lambda c: probe_kvm(c, None, timeout))
        else:
            probe_dir = self._probe_dir()
            works = self.call("probing KVM", lambda c: probe_kvm(c, probe_dir, timeout))
        cached[key] = {"kvm": works, "checked": datetime.now(UTC).isoformat(timespec="seconds")}
        write_json_atomic(cache, cached)
        return works

    def _probe_dir(self) -> Path:
        path = self.config.state_dir / "probe"
        _make_dir(path)
        return path

    # ---------------------------------------------------------------- labs

    def _new_ledger(self, res: LabResources) -> Ledger:
        """Probe the domain type, make the lab's directories (0755); the ledger names the pool."""
        domain_type = self.domain_type()
        lab_dir = self.lab_dir(res.lab_id)
        for path in (self.config.state_dir, lab_dir.parent, lab_dir, lab_dir / "run"):
            _make_dir(path)
        remote = self.config.uses_remote_files
        logger.info(
            "creating lab %s (id %s): %d networks, %d machines, domain type %s%s",
            res.lab_name,
            res.lab_id,
            len(res.networks),
            len(res.machines),
            domain_type,
            ", files on the libvirt host" if remote else "",
        )
        pool = self.config.pool or f"{name_prefix(res.lab_name, res.lab_id)}disks"
        pool_path = (
            str(PurePosixPath(self.config.remote_pool_dir) / pool)
            if remote
            else str(lab_dir / "disks")
        )
        return Ledger(
            path=self.ledger_path(res.lab_id),
            owner=Owner(res.lab_name, res.lab_id, state_dir=str(self.config.state_dir)),
            resources=res,
            uri=self.config.uri,
            pool=pool,
            pool_owned=self.config.pool is None,
            remote_files=remote,
            pool_path=pool_path if self.config.pool is None else "",
        )

    def _handle(self, ledger: Ledger) -> LibvirtLab:
        return LibvirtLab(self, ledger)

    def owned_objects(self) -> list[tuple[str, str, Owner]]:
        """(kind, name, owner) of every domain and network carrying our owner record."""
        return self.call("listing libvirt domains and networks", _owned_objects)

    def _clashes(self, res: LabResources) -> list[str]:
        """Domains, networks, bridges, the pool and volumes with the lab's names."""
        prefix = name_prefix(res.lab_name, res.lab_id)
        clashes = []
        domains, nets, bridges, pools = self.call("listing libvirt objects", _names)
        clashes += [f"domain {prefix}{m.name}" for m in res.machines if prefix + m.name in domains]
        clashes += [f"network {prefix}{n.name}" for n in res.networks if prefix + n.name in nets]
        for index in range(len(res.networks)):
            bridge = bridge_name(res.lab_id, index)
            if bridge in bridges:
                clashes.append(f"bridge {bridge} (of network {bridges[bridge]})")
        if self.config.pool is None and f"{prefix}disks" in pools:
            clashes.append(f"storage pool {prefix}disks")
        if self.config.pool is not None:
            clashes += self._volume_clashes(res)
        return clashes

    def _check_host(self, res: LabResources) -> None:
        """UEFI machines need OVMF on a local libvirt host; NAT networks a local libvirt host
        with the uplink's programs (their gateways are made on its bridges)."""
        if any(m.uefi for m in res.machines) and self.config.is_local and not OVMF_ROM.exists():
            raise BackendError(
                f"UEFI firmware needs {OVMF_ROM}, from Debian's ovmf package: run "
                "'apt-get install ovmf' or 'stx-lab host-setup'"
            )
        nat = [n.name for n in res.networks if n.nat]
        if not nat:
            return
        if self.config.uses_remote_files:
            raise BackendError(
                f"NAT network {', '.join(nat)}: libvirt at {self.config.uri} keeps the lab's "
                "files on its host (remote files); a NAT network's way out is a gateway, "
                "which that mode cannot make yet"
            )
        if not self.config.is_local:
            raise BackendError(
                f"NAT network {', '.join(nat)}: libvirt at {self.config.uri} is remote; a NAT "
                "network's way out is a gateway namespace on the libvirt host's bridge, made "
                "from that host"
            )
        missing = {p: pkg for p, pkg in UPLINK_TOOLS.items() if shutil.which(p) is None}
        if missing:
            raise BackendError(
                f"NAT network {', '.join(nat)} needs {', '.join(missing)} on this host: run "
                f"'apt-get install {' '.join(missing.values())}' or 'stx-lab host-setup'"
            )

    def _volume_clashes(self, res: LabResources) -> list[str]:
        pool_name = self.config.pool

        def volumes(conn: libvirt.virConnect) -> set[str]:
            pool = conn.storagePoolLookupByName(pool_name)
            return set(pool.listVolumes()) if pool.isActive() else set()

        existing = self.call(f"looking up storage pool {pool_name}", volumes)
        prefix = name_prefix(res.lab_name, res.lab_id)
        return [
            f"volume {name} in pool {pool_name}"
            for m in res.machines
            for name in (_volume_name(prefix, m.name, i) for i in range(len(m.disks)))
            if name in existing
        ]

    def _remove_objects(
        self, lab_id: str, owned: list[tuple[str, str]], ledger: Ledger | None, remaining: list[str]
    ) -> None:
        """Gateways, domains, volumes in a shared pool, the per-lab pool, then networks."""
        if ledger is not None:
            run_dir = self.lab_dir(lab_id) / "run"
            for network, record in ledger.gateways.items():
                remaining += [
                    f"gateway of network {network}: {problem}"
                    for problem in _remove_gateway(GatewayRecord.from_json(record), run_dir)
                ]
        for name in (n for k, n in owned if k == "domain"):
            self._teardown(remaining, f"domain {name}", partial(_remove_domain, name=name))
        if ledger is not None and not ledger.pool_owned:
            for path in ledger.volumes:
                self._teardown(remaining, f"volume {path}", partial(_remove_volume, path=path))
        for name in self._owned_pools(lab_id, ledger):
            self._teardown(remaining, f"storage pool {name}", partial(_remove_pool, name=name))
        for name in (n for k, n in owned if k == "network"):
            self._teardown(remaining, f"network {name}", partial(_remove_network, name=name))

    def _teardown(
        self, remaining: list[str], what: str, step: Callable[[libvirt.virConnect], None]
    ) -> None:
        """One teardown step on the current connection (see ``_remove``)."""
        self._remove(remaining, what, lambda: self.libvirt.run(step))

    def _teardown_problem(self, exc: Exception) -> str | None:
        assert isinstance(exc, libvirt.libvirtError)
        return None if _is_gone(exc) else exc.get_error_message()

    def _remove_own_files(self, lab_dir: Path, ledger: Ledger | None) -> None:
        """The per-lab pool's directory, empty once the pool is deleted."""
        with contextlib.suppress(OSError):
            (lab_dir / "disks").rmdir()

    def _owned_pools(self, lab_id: str, ledger: Ledger | None) -> list[str]:
        """Our per-lab pool: named ``stx-*-<id>-disks`` with its target in our lab dir or, in
        remote-files mode, the one the ledger records (or ``<remote_pool_dir>/<name>``)."""
        local = str(self.lab_dir(lab_id) / "disks")
        remote_dir = PurePosixPath(self.config.remote_pool_dir)

        def ours(pool: libvirt.virStoragePool) -> bool:
            name = pool.name()
            if not name.endswith(f"-{lab_id}-disks"):
                return False
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
            recorded = {ledger.pool_path} if ledger is not None and ledger.pool_path else set()
            return target in {local, str(remote_dir / name), *recorded}

        def pools(conn: libvirt.virConnect) -> list[str]:
            return [pool.name() for pool in conn.listAllStoragePools() if ours(pool)]

        return self.call("listing storage pools", pools)


def _owned_objects(conn: libvirt.virConnect) -> list[tuple[str, str, Owner]]:
    """(kind, name, owner) of every domain and network carrying an owner record."""
    found = []
    for kind, objects in (("domain", conn.listAllDomains()), ("network", conn.listAllNetworks())):
        for obj in objects:
            xml = _existing(partial(obj.XMLDesc, 0))  # gone meanwhile: not ours to list
            owner = None if xml is None else owner_from_xml(xml)
            if owner is not None:
                found.append((kind, obj.name(), owner))
    return found


def _names(conn: libvirt.virConnect) -> tuple[set[str], set[str], dict[str, str], set[str]]:
    """Names of all domains, networks, bridges (to their network) and storage pools."""
    nets = conn.listAllNetworks()
    bridges = {}
    for net in nets:
        with contextlib.suppress(libvirt.libvirtError):  # e.g. a network without a bridge
            bridges[net.bridgeName()] = net.name()
    return (
        {d.name() for d in conn.listAllDomains()},
        {n.name() for n in nets},
        bridges,
        {p.name() for p in conn.listAllStoragePools()},
    )


def _remove_gateway(record: GatewayRecord, run_dir: Path) -> list[str]:
    """Remove a recorded gateway, open or cut short; what remains."""
    gateway = record.gateway
    relay = None if gateway is None else gateway.relay
    uplink = None if gateway is None or gateway.uplink is None else gateway.uplink.process
    return remove_gateway(record.namespace, record.host_veth, run_dir, relay=relay, uplink=uplink)


def _make_dir(path: Path) -> None:
    """A directory libvirt's QEMU user can traverse (0755)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    except OSError as exc:
        raise BackendError(
            f"cannot create {path}: {exc}; run as root or set LibvirtConfig.state_dir to a "
            "directory you own that libvirt's QEMU user can traverse"
        ) from exc


def _volume_name(prefix: str, machine: str, index: int) -> str:
    return f"{prefix}{machine}-disk{index}.qcow2"


# Teardown steps: each looks its object up by name, so it can run again after a reconnect.


def _remove_domain(conn: libvirt.virConnect, name: str) -> None:
    dom = conn.lookupByName(name)
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )


def _remove_volume(conn: libvirt.virConnect, path: str) -> None:
    conn.storageVolLookupByPath(path).delete(0)


def _remove_pool(conn: libvirt.virConnect, name: str) -> None:
    pool = conn.storagePoolLookupByName(name)
    if not pool.isActive():  # its directory may be gone already: build it to start it
        pool.create(libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
    pool.refresh(0)
    for vol in pool.listAllVolumes():
        vol.delete(0)
    pool.destroy()
    pool.delete(libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
    pool.undefine()


def _remove_network(conn: libvirt.virConnect, name: str) -> None:
    net = conn.networkLookupByName(name)
    if net.isActive():
        net.destroy()
    if net.isPersistent():
        net.undefine()


# --------------------------------------------------------------------------- one lab


_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.OFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
}
_SNAPSHOT_MARK = "pytest-starlingx snapshot; machine was "


def _was_running(description: str | None) -> bool:
    """Whether a snapshot we took was of a running machine (from its description)."""
    return description == _SNAPSHOT_MARK + "running"


class LibvirtLab(LabHandleBase):
    """Power, consoles and snapshots of one lab (implements ``base.LabHandle``).

    Every step looks its domain up by name through ``backend.call``, so it still works, or
    runs again, after libvirtd restarted.
    """

    backend: LibvirtBackend
    ledger: Ledger

    def domain_name(self, machine: str) -> str:
        """The libvirt domain name of ``machine``."""
        self.resources.machine(machine)
        return self.prefix + machine

    # ---------------------------------------------------------------- creation

    def build(self) -> None:
        """Create networks, pool, volumes and domains (called by ``create_lab``).

        ``_check_new`` made sure no other object has these names, so each step creates its
        object unless it is there already: a step cut short by a libvirtd restart runs again.
        """
        res, owner, call = self.resources, self.ledger.owner, self.backend.call
        remote = self.ledger.remote_files
        domain_type = self.backend.domain_type()
        net_names = {}
        for index, spec in enumerate(res.networks):
            name = self.prefix + spec.name
            xml = network_xml(spec, name, bridge_name(res.lab_id, index), owner)
            call(f"creating network {name}", partial(_create_network, name=name, xml=xml))
            net_names[spec.name] = name
        self._pool()
        images: dict[Path, str] = {}  # local CD image -> its path on the libvirt host
        for machine in res.machines:
            volumes = []
            for index, disk in enumerate(machine.disks):
                name = _volume_name(self.prefix, machine.name, index)
                xml = volume_xml(name, disk)
                path = call(
                    f"creating {disk.size_gib} GiB volume {name} for {machine.name}",
                    partial(_create_volume, pool_name=self.ledger.pool, name=name, xml=xml),
                )
                volumes.append(path)
                if not self.ledger.pool_owned:
                    self.ledger.volumes.append(path)
                    self.ledger.save()
            cdrom = None
            if remote and machine.cdrom is not None:
                if machine.cdrom not in images:
                    images[machine.cdrom] = self.backend.cached_image(machine.cdrom)
                cdrom = images[machine.cdrom]
            plan = DomainPlan(
                name=self.prefix + machine.name,
                domain_type=domain_type,
                volumes=tuple(volumes),
                networks=tuple(net_names[nic.network] for nic in machine.nics),
                socket=None if remote else self.socket_path(machine.name),
                log=None if remote else self.log_path(machine.name),
                disk_cache=self.backend.config.disk_cache,
                cdrom=cdrom,
            )
            xml = domain_xml(machine, plan, owner)
            call(
                f"defining domain {plan.name} for {machine.name}",
                partial(_define_domain, name=plan.name, xml=xml),
            )
        for spec in res.networks:
            if spec.nat:
                self._open_uplink(spec)

    def _pool(self) -> None:
        """Create our per-lab pool, or check that the configured one is active."""
        pool = self.ledger.pool
        if self.ledger.pool_owned:
            path = self.ledger.pool_path or str(self.backend.lab_dir(self.lab_id) / "disks")
            self.backend.call(
                f"creating storage pool {pool} at {path}",
                lambda c: _create_pool(c, pool, pool_xml(pool, path)),
            )
        elif not self.backend.call(
            f"looking up storage pool {pool}", lambda c: c.storagePoolLookupByName(pool).isActive()
        ):
            raise BackendError(
                f"storage pool {pool} is not active; start it with `virsh pool-start {pool}`"
            )

    # ---------------------------------------------------------------- domains

    def _domain(self, conn: libvirt.virConnect, machine: str) -> libvirt.virDomain:
        """The machine's domain, checked to be ours."""
        name = self.domain_name(machine)
        dom = conn.lookupByName(name)
        owner = owner_from_xml(dom.XMLDesc(0))
        if owner is None or owner.lab_id != self.lab_id:
            raise BackendError(f"domain {name} is not ours (lab id {self.lab_id}); left alone")
        return dom

    def _on_domain(self, machine: str, what: str, action: Callable[[libvirt.virDomain], T]) -> T:
        """``action`` on the machine's domain (looked up again after a reconnect)."""
        return self.backend.call(what, lambda c: action(self._domain(c, machine)))

    def _update_definition(self, machine: str, change: Callable[[ET.Element], None]) -> None:
        def redefine(conn: libvirt.virConnect) -> None:
            root = ET.fromstring(
                self._domain(conn, machine).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            )
            change(root)
            conn.defineXML(_tostring(root))

        self.backend.call(f"redefining domain {self.domain_name(machine)} of {machine}", redefine)

    def state(self, machine: str) -> PowerState:
        """The machine's power state."""
        code = self._on_domain(machine, f"reading the state of {machine}", lambda d: d.state()[0])
        return _STATES.get(code, PowerState.OTHER)

    def _start_paused(self, machine: str) -> None:
        self._start_networks(machine)
        self._on_domain(machine, f"powering on {machine}", _start_paused)

    def _pause(self, machine: str, what: str) -> None:
        self._on_domain(machine, what, _suspend)

    def _resume(self, machine: str, what: str) -> None:
        self._on_domain(machine, what, _resume)

    def _start_networks(self, machine: str) -> None:
        """Start the machine's networks if they are down (they do not autostart at boot), and
        the gateways of its NAT networks if they are gone (a host reboot)."""
        networks = dict.fromkeys(nic.network for nic in self.resources.machine(machine).nics)
        for network in networks:
            name = self.prefix + network
            if self.backend.call(
                f"starting network {name} for {machine}",
                partial(self._start_network, name=name),
            ):
                logger.info("started network %s", name)
        self._open_uplinks(machine)

    def _open_uplinks(self, machine: str) -> None:
        """The gateways of the machine's NAT networks, opened unless they are open."""
        networks = {nic.network for nic in self.resources.machine(machine).nics}
        for spec in self.resources.networks:
            if spec.nat and spec.name in networks:
                self._open_uplink(spec)

    def _start_network(self, conn: libvirt.virConnect, name: str) -> bool:
        """Start our network ``name`` unless it runs; whether it was started."""
        net = conn.networkLookupByName(name)
        owner = owner_from_xml(net.XMLDesc(0))
        if owner is None or owner.lab_id != self.lab_id:
            raise BackendError(f"network {name} is not ours (lab id {self.lab_id})")
        if net.isActive():
            return False
        net.create()
        return True

    def power_off(self, machine: str) -> None:
        """Pull the plug; nothing to do when the machine is off."""
        if self._on_domain(machine, f"powering off {machine}", _pull_plug):
            logger.info("%s: powered off", machine)

    def reset(self, machine: str) -> None:
        """Hard reset, same QEMU process: the console stays connected."""
        self._on_domain(machine, f"resetting {machine}", lambda d: d.reset(0))
        logger.info("%s: reset", machine)

    def set_boot_order(self, machine: str, order: Sequence[BootDevice]) -> None:
        """Boot order from the next power-on (a reset keeps the running configuration)."""
        boot_nic = self.resources.machine(machine).boot_nic
        self._update_definition(machine, lambda root: set_boot_order(root, order, boot_nic))
        logger.info("%s: boot order %s", machine, ", ".join(str(d) for d in order))

    def set_oem_strings(self, machine: str, strings: Sequence[str]) -> None:
        """SMBIOS OEM strings from the next power-on (simulator fault knobs)."""
        self._update_definition(machine, lambda root: set_oem_strings(root, strings))
        logger.info("%s: OEM strings %s", machine, list(strings))

    def mac_addresses(self, machine: str) -> tuple[str, ...]:
        """MAC of each NIC in spec order (libvirt generates them at definition)."""
        xml = self._on_domain(
            machine,
            f"reading the NICs of {machine}",
            lambda d: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
        )
        root = ET.fromstring(xml)
        return tuple(mac.get("address", "") for mac in root.findall("devices/interface/mac"))

    # ---------------------------------------------------------------- gateways

    def open_gateway(
        self, network: str, address: str, targets: Sequence[tuple[str, int]]
    ) -> Gateway:
        """A gateway on ``network`` (a spec name) holding ``address`` (CIDR), with a loopback
        port per ``(address, port)`` target (see ``backends/gateway.py``).

        Its names (namespace ``stx-<lab>-<id>-gw-<network>``, host veth ``stx<id>g<i>``) are
        recorded in the ledger before anything is made. A NAT network's gateway holds the
        network's ``gateway`` address (another ``address`` is refused) and has an uplink; it is
        open from the lab's creation on, and this adds its relay. Opening a network's gateway
        again returns the open one when address and targets are the same and its processes
        run; anything else raises ``BackendError`` (close it first): nothing is replaced
        silently.
        """
        spec = self._network_spec(network)
        if spec.nat and address != spec.gateway:
            raise BackendError(
                f"lab {self.lab_id}: network {network} is a NAT network with its gateway at "
                f"{spec.gateway}; its gateway cannot hold {address}"
            )
        return self._open_gateway(network, address, tuple(targets), uplink=spec.nat)

    def _open_uplink(self, spec: NetworkSpec) -> Gateway:
        """The gateway of NAT network ``spec``, opened unless it is open with its processes
        running; one cut short or whose processes are gone (a host reboot) is removed first."""
        assert spec.gateway is not None  # NetworkSpec checks that a NAT network has one
        with _UPLINKS:  # machines powered on in parallel: one opens it, the others find it
            try:
                return self._open_gateway(spec.name, spec.gateway, (), uplink=True)
            except BackendError as exc:
                logger.warning("lab %s: %s; opening it anew", self.lab_id, exc)
            self.close_gateway(spec.name)
            return self._open_gateway(spec.name, spec.gateway, (), uplink=True)

    def _open_gateway(
        self, network: str, address: str, targets: tuple[tuple[str, int], ...], uplink: bool
    ) -> Gateway:
        namespace, host_veth, bridge = self._gateway_names(network)
        if self.ledger.remote_files:
            raise BackendError(
                f"gateway of network {network}: lab {self.lab_id} keeps its files on the "
                f"libvirt host (remote files, {self.ledger.uri}); a gateway is made on that "
                "host's bridge from this machine, which that mode cannot do yet"
            )
        if not self.backend.config.is_local:
            raise BackendError(
                f"gateway of network {network}: libvirt at {self.backend.config.uri} is remote; "
                "a gateway is made on the libvirt host's bridge, from that host"
                + (" (a NAT network's way out is its gateway)" if uplink else "")
            )
        wanted = GatewayRecord(namespace, host_veth, address, targets, uplink=uplink)
        with self._gateway_book() as book:
            if network in book:
                recorded = GatewayRecord.from_json(book[network])
                gateway = self._recorded_gateway(network, recorded, wanted)
                if recorded.targets or not targets:
                    return gateway
                gateway = add_relay(gateway, address, targets)  # an uplink's gateway, so far
                book[network] = replace(recorded, targets=targets, gateway=gateway).to_json()
                return gateway
            taken = existing(namespace, host_veth)
            if taken:
                raise BackendError(
                    f"lab {self.lab_id}: cannot open the gateway of network {network}: "
                    f"{', '.join(taken)} exist and are not recorded as ours, so they are left alone"
                )
            book[network] = wanted.to_json()
        try:
            name = self.prefix + network
            self.backend.call(
                f"starting network {name} for its gateway",
                partial(self._start_network, name=name),
            )
            gateway = open_gateway(
                namespace, bridge, address, targets, self.run_dir, host_veth=host_veth,
                uplink=uplink,
            )  # fmt: skip
        except BaseException:
            with self._gateway_book() as book:
                if not existing(namespace, host_veth):  # else destroy_lab removes it
                    del book[network]
            raise
        with self._gateway_book() as book:
            book[network] = replace(wanted, gateway=gateway).to_json()
        return gateway

    def close_gateway(self, network: str) -> None:
        """Remove the gateway of ``network``, if there is one; ``LeakError`` lists what remains
        (the ledger keeps it for ``destroy_lab``)."""
        self._gateway_names(network)
        with self._gateway_book() as book:
            if network not in book:
                return
            leftovers = _remove_gateway(GatewayRecord.from_json(book[network]), self.run_dir)
            if leftovers:
                raise LeakError(
                    f"lab {self.lab_id}: gateway of network {network}: " + "; ".join(leftovers)
                )
            del book[network]
        logger.info("closed the gateway of network %s", network)

    def _network_spec(self, network: str) -> NetworkSpec:
        """The spec of ``network``; ``BackendError`` naming the lab's networks otherwise."""
        for spec in self.resources.networks:
            if spec.name == network:
                return spec
        known = ", ".join(spec.name for spec in self.resources.networks)
        raise BackendError(f"lab {self.lab_id}: no network {network!r} (has {known})")

    def _gateway_names(self, network: str) -> tuple[str, str, str]:
        """Namespace, host veth and bridge of the gateway on ``network``."""
        self._network_spec(network)
        names = [spec.name for spec in self.resources.networks]
        index = names.index(network)
        return (
            f"{self.prefix}gw-{network}",
            gateway_veth(self.lab_id, index),
            bridge_name(self.lab_id, index),
        )

    @contextlib.contextmanager
    def _gateway_book(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The ledger's gateways as on disk, under a lock, saved when the block succeeds
        (another process may open a gateway of the same lab)."""
        with FileLock(self.run_dir / "gateways.lock"):
            ledger = Ledger.load(self.ledger.path)
            yield ledger.gateways
            ledger.save()
        self.ledger.gateways = ledger.gateways

    def _recorded_gateway(
        self, network: str, recorded: GatewayRecord, wanted: GatewayRecord
    ) -> Gateway:
        """The recorded gateway of ``network`` if it is the one wanted, or one it can become
        by adding its relay (an uplink's gateway without targets so far, or asked for without
        targets), and its processes run."""
        what = f"lab {self.lab_id}: the gateway of network {network}"
        if recorded.gateway is None:
            raise BackendError(
                f"{what} is being opened by another process, or its opening was cut short; "
                f"close_gateway({network!r}) removes what it left"
            )
        fits = recorded.targets == wanted.targets or not (recorded.targets and wanted.targets)
        if (recorded.address, recorded.uplink) != (wanted.address, wanted.uplink) or not fits:

            def shown(record: GatewayRecord) -> str:
                return f"at {record.address} to {list(record.targets)}" + (
                    " with an uplink" if record.uplink else ""
                )

            raise BackendError(
                f"{what} is open {shown(recorded)}, not {shown(wanted)}; "
                f"close_gateway({network!r}) first"
            )
        gone = [str(h) for h in recorded.gateway.processes() if not h.alive()]
        if gone:
            raise BackendError(
                f"{what} is recorded but its processes ({', '.join(gone)}) are gone; "
                f"close_gateway({network!r}) first"
            )
        return recorded.gateway

    # ---------------------------------------------------------------- console

    def console(self, machine: str) -> Transport:
        """An unconnected transport to the machine's serial console: its socket, or libvirt's
        console stream in remote-files mode (which logs what it reads to the console log)."""
        if self.ledger.remote_files:
            return self._stream_transport(machine)
        transport = self._socket_transport(machine)
        if not self.backend.config.is_local:
            raise BackendError(
                f"console of {machine}: libvirt at {self.backend.config.uri} is remote; console "
                "sockets are only reachable on the libvirt host"
            )
        return transport

    def console_log(self, machine: str) -> bytes:
        """The serial log, including virtlogd's rotated parts (``.N``, oldest first); in
        remote-files mode what this machine's console streams read, kept in the same file."""
        path = self.log_path(machine)
        rotated = sorted(
            path.parent.glob(f"{path.name}.[0-9]*"),
            key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else -1,
            reverse=True,
        )
        parts = []
        for part in [*rotated, path]:
            with contextlib.suppress(FileNotFoundError):
                parts.append(part.read_bytes())
        return b"".join(parts)

    def _stream_transport(self, machine: str) -> ConsoleStreamTransport:
        """An unconnected transport on libvirt's console stream of the machine's pty serial."""
        self.resources.machine(machine)

        def open_console(conn: libvirt.virConnect) -> tuple[libvirt.virConnect, libvirt.virStream]:
            return conn, _open_console(conn, self._domain(conn, machine))

        return ConsoleStreamTransport(
            lambda: self.backend.consoles.run(open_console),
            name=machine,
            alive=lambda: self._alive(machine),
            log=self.log_path(machine),
        )

    # ---------------------------------------------------------------- snapshots

    def _take_snapshot(self, machine: str, name: str, state: PowerState, created: str) -> None:
        """An internal snapshot; libvirt records its creation time itself."""
        was = "running" if state is PowerState.RUNNING else "stopped"
        root = ET.Element("domainsnapshot")
        _sub(root, "name", name)
        _sub(root, "description", _SNAPSHOT_MARK + was)
        take = _snapshot_taker(name, _tostring(root))
        self._on_domain(machine, f"taking snapshot {name} of {machine}", take)

    def _snapshots_of(self, machine: str) -> list[SnapshotInfo]:
        xmls = self._on_domain(
            machine,
            f"listing snapshots of {machine}",
            lambda d: [s.getXMLDesc(0) for s in d.listAllSnapshots(0)],
        )
        return [
            SnapshotInfo(
                name=root.findtext("name", ""),
                machine=machine,
                created=datetime.fromtimestamp(int(root.findtext("creationTime", "0")), UTC),
                running=_was_running(root.findtext("description")),
            )
            for root in map(ET.fromstring, xmls)
        ]

    def _snapshot_was_running(self, machine: str, name: str) -> bool:
        xml = self._on_domain(
            machine,
            f"looking up snapshot {name} of {machine}",
            lambda d: d.snapshotLookupByName(name, 0).getXMLDesc(0),
        )
        return _was_running(ET.fromstring(xml).findtext("description"))

    def _restore(self, machine: str, name: str, running: bool) -> None:
        """Revert paused when the snapshot ran; also restores the domain definition of the
        time (boot order, OEM strings). A NAT network's gateway is opened first if it is gone
        (a golden lab restored after a host reboot)."""
        if running:
            self._open_uplinks(machine)
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE
        if running:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
        self._on_domain(
            machine,
            f"reverting {machine} to snapshot {name}",
            lambda d: d.revertToSnapshot(d.snapshotLookupByName(name, 0), flags),
        )

    def _resume_reverted(self, machine: str, name: str, before_resume: BeforeResume | None) -> None:
        if before_resume is not None:
            before_resume(machine)
        self._resume(machine, f"resuming {machine} after revert to {name}")

    def _delete_snapshot(self, machine: str, name: str) -> None:
        self._on_domain(
            machine,
            f"deleting snapshot {name} of {machine}",
            lambda d: _delete_snapshot(d, name),
        )


# Steps of a lab's life, each safe to run again after a reconnect (check, then act).


def _create_network(conn: libvirt.virConnect, name: str, xml: str) -> None:
    net = _existing(lambda: conn.networkLookupByName(name)) or conn.networkDefineXML(xml)
    if not net.isActive():
        net.create()


def _create_pool(conn: libvirt.virConnect, name: str, xml: str) -> None:
    pool = _existing(lambda: conn.storagePoolLookupByName(name)) or conn.storagePoolDefineXML(
        xml, 0
    )
    if not pool.isActive():
        pool.build(0)
        pool.create(0)


def _create_volume(conn: libvirt.virConnect, pool_name: str, name: str, xml: str) -> str:
    """The volume's path."""
    pool = conn.storagePoolLookupByName(pool_name)
    vol = _existing(lambda: pool.storageVolLookupByName(name)) or pool.createXML(xml, 0)
    return str(vol.path())


def _open_console(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virStream:
    """A non-blocking stream joined to the domain's first serial console."""
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    try:
        dom.openConsole(None, stream, 0)
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return stream


def _define_domain(conn: libvirt.virConnect, name: str, xml: str) -> None:
    if _existing(lambda: conn.lookupByName(name)) is None:
        conn.defineXML(xml)


def _start_paused(dom: libvirt.virDomain) -> None:
    if not dom.isActive():
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)


def _suspend(dom: libvirt.virDomain) -> None:
    if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
        dom.suspend()


def _resume(dom: libvirt.virDomain) -> None:
    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()


def _pull_plug(dom: libvirt.virDomain) -> bool:
    """Destroy a running domain; whether it was running."""
    if not dom.isActive():
        return False
    dom.destroy()
    return True


def _snapshot_taker(name: str, xml: str) -> Callable[[libvirt.virDomain], None]:
    """Takes snapshot ``name``; run again after a reconnect, keeps the one the first run took."""
    tried = False

    def take(dom: libvirt.virDomain) -> None:
        nonlocal tried
        if tried and _existing(lambda: dom.snapshotLookupByName(name, 0)) is not None:
            return
        tried = True
        dom.snapshotCreateXML(xml, 0)

    return take


def _delete_snapshot(dom: libvirt.virDomain, name: str) -> None:
    snap = _existing(lambda: dom.snapshotLookupByName(name, 0))
    if snap is not None:
        snap.delete(0)


# --------------------------------------------------------------------------- KVM probe


def _raise_if_lost(conn: libvirt.virConnect, exc: libvirt.libvirtError) -> None:
    """Raise ``exc`` again when ``conn`` died: the error says nothing about KVM."""
    if not is_alive(conn):
        raise exc


def probe_kvm(
    conn: libvirt.virConnect, work_dir: Path | None, timeout: float, domain_type: str = "kvm"
) -> bool:
    """Whether a KVM guest really runs: boot a tiny transient domain and watch its serial.

    On some hosts /dev/kvm exists and SeaBIOS runs, yet a Linux kernel hangs without a byte
    of output; so when a host kernel is at hand (local libvirt) the probe boots it without
    a root file system and waits for its panic, else it waits for SeaBIOS to finish POST.
    The serial goes to a file in ``work_dir``; with ``work_dir`` None (remote files) it is a
    pty read through libvirt's console stream (``conn`` opened after the event loop started).
    A libvirt error on a connection that died is raised, not taken for an answer: the caller
    reconnects and probes again (the domain of the probe cut off is destroyed first).
    ``domain_type`` ``qemu`` checks the probe itself (software emulation always answers).
    """
    name = f"stx-kvm-probe-{os.getpid()}"
    try:
        conn.getDomainCapabilities(None, "x86_64", "q35", domain_type, 0)
    except libvirt.libvirtError as exc:
        _raise_if_lost(conn, exc)
        logger.info("KVM probe: libvirt offers no KVM domains: %s", exc.get_error_message())
        return False
    leftover = _existing(lambda: conn.lookupByName(name))
    if leftover is not None:  # the guest of a probe cut off by a lost connection
        _existing(leftover.destroy)
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    log = None if work_dir is None else work_dir / f"kvm-probe-{os.getpid()}.log"
    if log is not None:
        log.unlink(missing_ok=True)
    root = ET.Element("domain", type=domain_type)
    _sub(root, "name", name)
    _metadata(root, Owner("kvm-probe", "probe"))
    _sub(root, "memory", "128", unit="MiB")
    _sub(root, "vcpu", "1")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if kernels and urlsplit(conn.getURI()).hostname in (None, "", "localhost"):
        _sub(os_el, "kernel", str(kernels[-1]))
        _sub(os_el, "cmdline", "console=ttyS0 panic=-1")
        markers: tuple[bytes, ...] = (b"Kernel panic", b"VFS:")
    else:
        _sub(os_el, "bios", useserial="yes")
        markers = (b"No bootable device",)
    for event in ("poweroff", "reboot", "crash"):
        _sub(root, f"on_{event}", "destroy")
    if log is None:
        _sub(_sub(root, "devices"), "serial", type="pty")
    else:
        _sub(_sub(_sub(root, "devices"), "serial", type="file"), "source", path=str(log))
    started = time.monotonic()
    try:
        dom = conn.createXML(_tostring(root), 0 if log else libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as exc:
        _raise_if_lost(conn, exc)
        logger.info("KVM probe: a KVM guest does not start: %s", exc.get_error_message())
        return False
    output = _ProbeOutput(conn, dom, log)
    try:
        while time.monotonic() - started < timeout:
            if any(marker in output.read() for marker in markers):
                logger.info("KVM probe: KVM works (%.1fs)", time.monotonic() - started)
                return True
            if not dom.isActive():
                break
        logger.info("KVM probe: no kernel output from a KVM guest within %.0fs", timeout)
        return False
    except libvirt.libvirtError as exc:
        _raise_if_lost(conn, exc)
        if _is_gone(exc):
            return any(marker in output.read(wait=False) for marker in markers)
        raise error("probing KVM", exc) from exc
    finally:
        output.close()
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()


class _ProbeOutput:
    """What the probe's guest printed: its log file, or libvirt's console stream of its pty
    (attached while the guest is paused, then resumed, so nothing is missed)."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, log: Path | None):
        self.log = log
        self.seen = b""
        self._stream = None
        if log is None:
            self._stream = ConsoleStreamTransport(
                lambda: (conn, _open_console(conn, dom)),
                name="the KVM probe",
                alive=lambda: bool(_existing(dom.isActive)),
                connect_timeout=5,
            )
            self._stream.connect()
            dom.resume()

    def read(self, wait: bool = True) -> bytes:
        """Everything so far, after waiting up to a poll interval for more."""
        if self._stream is None:
            assert self.log is not None
            if wait:
                time.sleep(_POLL)
            self.seen = self.log.read_bytes() if self.log.exists() else b""
        else:
            with contextlib.suppress(EOFError):  # the guest is gone: what it printed stays
                self.seen += self._stream.read(65536, _POLL if wait else 0)
        return self.seen

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self.log is not None:
            self.log.unlink(missing_ok=True)
