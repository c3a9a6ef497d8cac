"""The libvirt backend against the real libvirt daemon and QEMU (software emulation)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from libvirt_helpers import (
    READY,
    TEST_ROOT,
    everything,
    lab_resources,
    new_lab_id,
    ours,
    read_until,
    shell,
)
from libvirt_relay import Relay

from pytest_starlingx.backends.base import OWNER_NAMESPACE, NetworkSpec
from pytest_starlingx.backends.libvirt import (
    DomainType,
    LibvirtBackend,
    LibvirtConfig,
    LibvirtLab,
    bridge_name,
    probe_kvm,
)
from pytest_starlingx.backends.libvirt_images import complete_volume, image_digest, uploader_tag
from pytest_starlingx.errors import BackendError
from pytest_starlingx.ownership import Holder


@pytest.mark.parametrize("machines", [1, 2, 4, 6])
def test_domains_networks_pool_and_volumes_of_a_lab(backend, lab_factory, machines, tiny_iso):
    """What libvirt holds of a new lab (the contract tests check creating and destroying)."""
    lab_id = new_lab_id()
    before = everything(backend.conn)
    res = lab_resources(machines, lab_id, cdrom=tiny_iso)
    lab = lab_factory(res)
    created = ours(everything(backend.conn) - before, lab_id)

    prefix = f"stx-t-{lab_id}-"
    assert {o for o in created if o.startswith(("domain", "network"))} == {
        *(f"domain {prefix}node-{i}" for i in range(machines)),
        *(f"network {prefix}{n}" for n in ("oam", "mgmt", "data0", "data1")),
    }
    assert f"pool {prefix}disks" in created
    volumes = [o for o in created if o.startswith("volume")]
    assert len(volumes) == sum(len(m.disks) for m in res.machines)

    for index, net_name in enumerate(("oam", "mgmt", "data0", "data1")):
        net = backend.conn.networkLookupByName(prefix + net_name)
        root = ET.fromstring(net.XMLDesc(0))
        assert net.isActive()
        assert root.find("ip") is None and root.find("forward") is None  # isolated
        assert root.find("bridge").get("name") == bridge_name(lab_id, index)
        assert len(bridge_name(lab_id, index)) <= 15
        assert root.find(f"metadata/{{{OWNER_NAMESPACE}}}owner").get("lab-id") == lab_id

    for spec in res.machines:
        dom = backend.conn.lookupByName(prefix + spec.name)
        root = ET.fromstring(dom.XMLDesc(0))
        assert root.get("type") == "qemu"
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        assert int(root.findtext("memory")) == spec.memory_mib * 1024
        assert int(root.findtext("vcpu")) == spec.vcpus
        shares = root.findtext("cputune/shares")
        assert shares == (str(1024 * spec.cpu_weight) if spec.cpu_weight != 1 else None)
        assert root.find("os/type").get("machine").startswith("pc-q35")
        assert root.find("os/bios").attrib == {"rebootTimeout": "5000"}  # no serial BIOS
        assert root.find("devices/video/model").get("type") == "vga"
        assert root.findtext("on_reboot") == "restart"
        owner = root.find(f"metadata/{{{OWNER_NAMESPACE}}}owner")
        assert (owner.get("lab"), owner.get("lab-id")) == ("t", lab_id)
        assert {"host", "pid", "created"} <= set(owner.keys())

        disks = root.findall("devices/disk[@device='disk']")
        assert [d.find("target").get("bus") for d in disks] == ["sata"] * len(spec.disks)
        assert [d.find("target").get("dev") for d in disks] == ["sda", "sdb"][: len(spec.disks)]
        for disk, disk_spec in zip(disks, spec.disks, strict=True):
            assert disk.find("driver").get("type") == "qcow2"
            vol = backend.conn.storageVolLookupByPath(disk.find("source").get("file"))
            _, capacity, allocation = vol.info()
            assert capacity == disk_spec.size_gib * 2**30
            assert allocation < 2**20  # sparse: a 600 GiB disk costs nothing
        cdroms = root.findall("devices/disk[@device='cdrom']")
        if spec.cdrom:
            (cdrom,) = cdroms
            assert cdrom.find("readonly") is not None
            assert cdrom.find("target").get("bus") == "sata"
            assert cdrom.find("source").get("file") == str(tiny_iso)
        else:
            assert cdroms == []

        nics = root.findall("devices/interface")
        assert [n.find("source").get("network") for n in nics] == [
            prefix + n for n in ("oam", "mgmt", "data0", "data1")
        ]
        assert [n.find("model").get("type") for n in nics] == ["e1000", "e1000", "virtio", "virtio"]
        pci = [
            (int(n.find("address").get("bus"), 16), int(n.find("address").get("slot"), 16))
            for n in nics
        ]
        assert len(set(pci)) == 4

        boots = {
            "disk": disks[0].find("boot"),
            "cdrom": cdroms[0].find("boot") if cdroms else None,
            "mgmt": nics[1].find("boot"),
        }
        expected = (
            {"disk": "1", "cdrom": "2", "mgmt": "3"}
            if spec.cdrom
            else {"disk": "1", "cdrom": None, "mgmt": "2"}
        )
        assert {
            k: (v.get("order") if v is not None else None) for k, v in boots.items()
        } == expected
        assert [n.find("boot") is not None for n in nics] == [False, True, False, False]
        assert root.find("os/boot") is None  # per-device boot order only

        serial = root.find("devices/serial")
        assert serial.get("type") == "unix"
        assert serial.find("source").get("mode") == "bind"
        assert serial.find("source").get("path") == str(lab.socket_path(spec.name))
        assert serial.find("log").get("file") == str(lab.log_path(spec.name))
        oem = [e.text for e in root.findall("sysinfo[@type='smbios']/oemStrings/entry")]
        assert oem == list(spec.oem_strings)
        assert root.find("os/smbios").get("mode") == "sysinfo"


def test_running_domain_has_its_cpu_weight_and_qemu_macs(backend, lab_factory):
    lab = lab_factory(lab_resources(1, new_lab_id()))  # nothing to boot: SeaBIOS retries
    lab.power_on("node-0")
    # the weight holds in the running domain's cgroup: 8 times a default domain's share
    dom = backend.conn.lookupByName(lab.domain_name("node-0"))
    assert dom.schedulerParameters()["cpu_shares"] == 8 * 1024
    macs = lab.mac_addresses("node-0")
    assert len(set(macs)) == 4 and all(m.startswith("52:54:00:") for m in macs)
    lab.power_off("node-0")


def test_refuses_to_touch_a_foreign_network_with_our_name(backend, used_lab_ids):
    # a foreign domain is the contract's test_objects_with_our_names_but_not_ours_are_left_alone
    lab_id = new_lab_id()
    used_lab_ids.add(lab_id)
    foreign_net = backend.conn.networkDefineXML(
        f"<network><name>stx-t-{lab_id}-mgmt</name><bridge name='zz{lab_id}'/></network>"
    )
    try:
        before = everything(backend.conn)
        with pytest.raises(BackendError, match=f"network stx-t-{lab_id}-mgmt"):
            backend.create_lab(lab_resources(1, lab_id))
        assert ours(everything(backend.conn), lab_id) == ours(before, lab_id)
        backend.destroy_lab(lab_id)  # finds nothing of ours: leaves the foreign one alone
        assert ours(everything(backend.conn), lab_id) == ours(before, lab_id)
    finally:
        foreign_net.undefine()


def test_refuses_existing_bridge_and_cleans_up_after_failed_create(backend, used_lab_ids):
    lab_id = new_lab_id()
    used_lab_ids.add(lab_id)
    other = backend.conn.networkDefineXML(
        f"<network><name>zz-other-{lab_id}</name><bridge name='{bridge_name(lab_id, 2)}'/>"
        "</network>"
    )
    try:
        before = everything(backend.conn)
        with pytest.raises(BackendError, match=f"bridge {bridge_name(lab_id, 2)}"):
            backend.create_lab(lab_resources(1, lab_id))
        assert ours(everything(backend.conn), lab_id) == ours(before, lab_id)
    finally:
        other.undefine()


def test_destroy_lab_partly_removed_by_hand(backend, lab_factory):
    lab_id = new_lab_id()
    lab = lab_factory(lab_resources(2, lab_id))
    prefix = f"stx-t-{lab_id}-"
    lab.power_on("node-0")
    backend.conn.lookupByName(prefix + "node-1").undefine()
    net = backend.conn.networkLookupByName(prefix + "data0")
    net.destroy()
    net.undefine()
    backend.conn.networkLookupByName(prefix + "oam").destroy()  # defined, not running
    pool = backend.conn.storagePoolLookupByName(prefix + "disks")
    pool.storageVolLookupByName(f"{prefix}node-0-disk1.qcow2").delete(0)
    pool.destroy()  # inactive pool

    reopened = backend.open_lab(lab_id)  # another process would do this
    assert reopened.resources == lab.resources
    assert lab_id in backend.lab_ids()
    other_layer_file = backend.lab_dir(lab_id) / "lab.json"
    other_layer_file.write_text("{}")
    reopened.destroy()
    assert other_layer_file.exists()  # teardown removes only the backend's own files
    assert sorted(p.name for p in backend.lab_dir(lab_id).iterdir()) == ["lab.json"]
    other_layer_file.unlink()
    assert ours(everything(backend.conn), lab_id) == set()
    assert lab_id not in backend.lab_ids()
    backend.destroy_lab(lab_id)


def test_destroy_lab_whose_pool_directory_is_gone(backend, lab_factory):
    # As a teardown cut off (libvirtd restarted) between deleting the pool and undefining it.
    lab_id = new_lab_id()
    lab = lab_factory(lab_resources(1, lab_id))
    pool = backend.conn.storagePoolLookupByName(f"stx-t-{lab_id}-disks")
    for volume in pool.listAllVolumes():
        volume.delete(0)
    pool.destroy()
    pool.delete(libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
    lab.destroy()
    assert ours(everything(backend.conn), lab_id) == set()
    assert lab_id not in backend.lab_ids()


def test_connection_error_names_uri_and_hint():
    with pytest.raises(BackendError, match="stx-lab host-setup"):
        LibvirtBackend(LibvirtConfig(uri="qemu+unix:///system?socket=/nonexistent/sock"))


def test_kvm_probe_is_bounded_and_cached(state_dir: Path):
    config = LibvirtConfig(
        state_dir=state_dir / "probe-test", domain_type=DomainType.AUTO, kvm_probe_timeout=15
    )
    config.state_dir.mkdir()
    backend = LibvirtBackend(config)
    t0 = time.monotonic()
    first = backend.domain_type()
    probe_seconds = time.monotonic() - t0
    assert first in (DomainType.KVM, DomainType.QEMU)
    assert probe_seconds < 15 + 10
    cache = json.loads((config.state_dir / "kvm-probe.json").read_text())
    assert [entry["kvm"] for entry in cache.values()] == [first is DomainType.KVM]
    again = LibvirtBackend(config)
    t0 = time.monotonic()
    assert again.domain_type() is first
    assert time.monotonic() - t0 < 1
    assert not any(d.name().startswith("stx-kvm-probe") for d in backend.conn.listAllDomains())
    print(f"\nKVM probe: {first} in {probe_seconds:.1f}s")
    backend.close()
    again.close()


# ------------------------------------------------------------------ remote files


def _cache(backend: LibvirtBackend) -> set[str]:
    pool = backend.conn.storagePoolLookupByName(backend.config.image_cache)
    return set(pool.listVolumes())


def _cd(backend: LibvirtBackend, lab: LibvirtLab, machine: str) -> str:
    root = ET.fromstring(backend.conn.lookupByName(lab.domain_name(machine)).XMLDesc(0))
    return root.find("devices/disk[@device='cdrom']/source").get("file")


def test_remote_files_keep_nothing_here_and_an_upload_serves_later_labs(
    remote_backend, remote_lab_factory, tiny_iso, caplog
):
    digest = image_digest(tiny_iso)
    first = remote_lab_factory(lab_resources(1, new_lab_id(), cdrom=tiny_iso))
    with caplog.at_level(logging.INFO, "pytest_starlingx.backend"):
        second = remote_lab_factory(lab_resources(1, new_lab_id(), cdrom=tiny_iso))
    assert "in the cache of the libvirt host" in caplog.text
    assert "uploaded" not in caplog.text  # the second lab found the first one's upload
    cache_dir = f"{remote_backend.config.remote_pool_dir}/{remote_backend.config.image_cache}/"
    path = _cd(remote_backend, first, "node-0")
    assert path.startswith(cache_dir + digest + ".") and path.endswith(".iso")
    assert _cd(remote_backend, second, "node-0") == path
    assert len([n for n in _cache(remote_backend) if n.startswith(digest)]) == 2  # .iso, .done

    for lab in (first, second):
        pool = remote_backend.conn.storagePoolLookupByName(lab.ledger.pool)
        target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        assert target == f"{remote_backend.config.remote_pool_dir}/{lab.ledger.pool}"
        root = ET.fromstring(remote_backend.conn.lookupByName(lab.domain_name("node-0")).XMLDesc(0))
        assert root.find("devices/serial").get("type") == "pty"
        assert root.find("devices/serial/log") is None
        assert all(
            src.get("file", "").startswith((target + "/", cache_dir))
            for src in root.iterfind("devices/disk/source")
        )
        assert sorted(p.name for p in remote_backend.lab_dir(lab.lab_id).rglob("*")) == [
            "owner.json",
            "run",
        ]  # no disks, socket or log here
    first.destroy()
    second.destroy()
    assert {n for n in _cache(remote_backend) if n.startswith(digest)}  # not a lab's: kept
    other = remote_lab_factory(lab_resources(1, new_lab_id(), cdrom=tiny_iso))
    with pytest.raises(BackendError, match=f"used by {other.domain_name('node-0')}"):
        remote_backend.clear_image_cache()


def test_an_interrupted_upload_is_never_taken_for_a_complete_one(
    remote_backend, monkeypatch, tmp_path
):
    image = TEST_ROOT / f"image-{new_lab_id()}.iso"  # libvirtd reads nothing of it: any bytes
    image.write_bytes(os.urandom(3 * 2**20 + 17))
    try:
        digest = image_digest(image)
        real_send_all = libvirt.virStream.sendAll

        def cut_short(stream, handler, opaque):
            stream.send(handler(stream, 2**20, opaque))  # one MiB arrives, then the end
            raise RuntimeError("killed mid-upload")

        monkeypatch.setattr(libvirt.virStream, "sendAll", cut_short)
        with pytest.raises(RuntimeError, match="killed"):
            remote_backend.cached_image(image)
        monkeypatch.setattr(libvirt.virStream, "sendAll", real_send_all)
        mine = f"{digest}.{uploader_tag(Holder.me())}"
        assert {n for n in _cache(remote_backend) if n.startswith(digest)} == {mine + ".iso"}
        assert complete_volume(_cache(remote_backend), digest) is None

        gone = f"{digest}.{uploader_tag(Holder(Holder.me().host, 2**22 + 7, 1))}.iso"
        pool = remote_backend.conn.storagePoolLookupByName(remote_backend.config.image_cache)
        pool.createXML(
            f"<volume><name>{gone}</name><capacity>{image.stat().st_size}</capacity></volume>", 0
        )  # a process of this host killed mid-upload

        path = remote_backend.cached_image(image)
        assert {n for n in _cache(remote_backend) if n.startswith(digest)} == {
            mine + ".iso",
            mine + ".done",
        }  # both cut-short uploads removed, a complete one made
        vol = remote_backend.conn.storageVolLookupByPath(path)
        stream = remote_backend.conn.newStream(0)
        vol.download(stream, 0, 0, 0)
        chunks: list[bytes] = []
        stream.recvAll(lambda _s, data, acc: acc.append(data), chunks)
        stream.finish()
        assert b"".join(chunks) == image.read_bytes()
        assert remote_backend.cached_image(image) == path  # complete: used as it is
    finally:
        image.unlink()


def test_remote_files_refuse_gateways_and_nat_networks(remote_backend, remote_lab_factory):
    lab = remote_lab_factory(lab_resources(1, new_lab_id()))
    with pytest.raises(BackendError, match=r"remote files.*cannot do yet"):
        lab.open_gateway("oam", "10.10.10.1/24", [("10.10.10.3", 22)])
    res = lab_resources(1, new_lab_id())
    nat = (NetworkSpec("oam", nat=True, gateway="10.10.10.1/24"), *res.networks[1:])
    with pytest.raises(BackendError, match=r"NAT network oam.*remote files"):
        remote_lab_factory(dataclasses.replace(res, networks=nat))
    assert not remote_backend.lab_dir(res.lab_id).exists()


def test_a_console_stream_comes_back_after_libvirtd_went_away(
    remote_backend, used_lab_ids, tiny_iso, tmp_path, caplog
):
    relay = Relay(tmp_path / "libvirt.sock")  # dropping it is a libvirtd restart to its clients
    relay.start()
    backend = LibvirtBackend(dataclasses.replace(remote_backend.config, uri=relay.uri))
    lab_id = new_lab_id()
    used_lab_ids.add(lab_id)
    try:
        lab = backend.create_lab(lab_resources(1, lab_id, cdrom=tiny_iso))
        console = lab.console("node-0")
        lab.power_on("node-0", before_resume=lambda _m: console.connect())
        read_until(console, READY)
        with caplog.at_level(logging.WARNING, "pytest_starlingx.backend"):
            relay.stop()
            threading.Timer(2.0, relay.start).start()
            assert b"back-2" in shell(console, "echo back-$((1+1))")
        assert f"reconnected to libvirt at {relay.uri}" in caplog.text
        lab.reset("node-0")  # the same QEMU process: the reopened stream sees it boot again
        read_until(console, READY)
        assert b"back-2" in lab.console_log("node-0")
        console.close()
    finally:
        backend.destroy_lab(lab_id)
        backend.close()
        relay.stop()


def test_the_kvm_probe_reads_a_remote_guest_through_the_console_stream(remote_backend):
    """The probe's serial as a pty and its stream (under TCG, which always answers)."""
    conn = remote_backend.consoles.conn
    started = time.monotonic()
    assert probe_kvm(conn, None, 60, domain_type="qemu")
    print(f"\nKVM probe over the console stream, under TCG: {time.monotonic() - started:.1f}s")
    assert not any(d.name().startswith("stx-kvm-probe") for d in conn.listAllDomains())
    state = TEST_ROOT / f"kvm-{os.getpid()}"
    state.mkdir()
    config = dataclasses.replace(
        remote_backend.config, domain_type=DomainType.AUTO, state_dir=state, kvm_probe_timeout=10
    )
    auto = LibvirtBackend(config)
    try:
        assert auto.domain_type() in (DomainType.KVM, DomainType.QEMU)  # through the stream
    finally:
        auto.close()
        shutil.rmtree(state, ignore_errors=True)
