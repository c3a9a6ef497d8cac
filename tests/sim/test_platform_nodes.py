"""Other nodes join controller-0: PXE registration, install, unlock (starlingx.md 5.3-5.6).

Each node is its own STXSIM_ROOT with its own agent process; they reach controller-0's
sysinv-api on 127.0.0.1. A "reboot" is the test restarting the node's platform programs
after the node called its reboot hook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_platform_support import (
    DUPLEX_YML,
    Controller,
    Node,
    free_port,
    parse_show,
)

Lab = Callable[[str], Node]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Controller, Lab]]:
    """controller-0 bootstrapped as duplex (AIO unless the test says otherwise) + a factory."""
    api = f"http://127.0.0.1:{free_port()}"
    nodes: list[Node] = [Controller(tmp_path, "controller-0", api)]

    def new_node(name: str) -> Node:
        node = Node(tmp_path, name, api)
        node.write_run("boot", {"mode": "pxe", "mgmt_if": "enp2s2", "server": "192.168.204.2"})
        nodes.append(node)
        return node

    yield nodes[0], new_node
    for node in nodes:
        node.stop()


def _provision_c0(c0: Controller, osd: bool) -> None:
    """controller-0's interfaces as in starlingx.md 5.3/5.4, Ceph, then unlock and reboot."""
    c0.ok("host-if-modify", "controller-0", "lo", "-c", "none")
    for link in c0.table("interface-network-list", "controller-0"):
        c0.ok("interface-network-remove", link["uuid"])
    c0.ok("host-if-modify", "controller-0", "enp2s1", "-c", "platform")
    c0.ok("interface-network-assign", "controller-0", "enp2s1", "oam")
    c0.ok("host-if-modify", "controller-0", "enp2s2", "-c", "platform")
    c0.ok("interface-network-assign", "controller-0", "enp2s2", "mgmt")
    c0.ok("interface-network-assign", "controller-0", "enp2s2", "cluster-host")
    c0.ok("storage-backend-add", "ceph", "--confirmed")
    if osd:
        _add_osd(c0, "controller-0")
    c0.wait("ceph configured", lambda: c0.table("storage-backend-list")[0]["state"] == "configured")
    c0.ok("host-unlock", "controller-0")
    c0.wait("reboot hook", lambda: "reboot" in c0.hook_calls(), timeout=5)
    assert c0.reboot().returncode == 0
    c0.wait_state("controller-0", "unlocked", "enabled", "available")


def _add_osd(c0: Controller, host: str, tier: bool = False) -> None:
    sdb = next(
        d["uuid"] for d in c0.table("host-disk-list", host) if d["device_node"] == "/dev/sdb"
    )
    extra = []
    if tier:
        tiers = c0.table("storage-tier-list", "ceph_cluster")
        extra = ["--tier-uuid", next(t["uuid"] for t in tiers if t["name"] == "storage")]
    c0.ok("host-stor-add", host, sdb, *extra)


def _boot_installed(node: Node) -> subprocess.Popen[str]:
    """Boot the node from its disk: init runs stx-platform-boot."""
    node.write_run("boot", {"mode": "disk", "mgmt_if": "enp2s2", "oam_if": "enp2s1"})
    return node.start("stx-platform-boot")


def _lease(c0: Controller, node: Node, ip: str = "169.254.202.4") -> None:
    """What controller-0's dnsmasq runs when the node's firmware takes a pxeboot lease."""
    proc = c0.run(
        "sysinv-dnsmasq-lease-update", "add", node.macs[1], ip, DNSMASQ_TAGS="pxeboot bios enp2s2"
    )
    assert proc.returncode == 0, proc.stderr


def _pxe_path(c0: Controller, node: Node) -> Path:
    """Where pxelinux looks for the node's own file: `01-` and its boot MAC with dashes."""
    return c0.root / "var/pxeboot/pxelinux.cfg" / ("01-" + node.macs[1].replace(":", "-"))


def _pxe_config(c0: Controller, node: Node) -> str:
    """The pxelinux file sysinv wrote for the node."""
    return _pxe_path(c0, node).read_text()


def _install(
    c0: Controller, node: Node, *update: str, pre_added: bool = False
) -> subprocess.Popen[str]:
    """Network-boot `node` (its lease lists it), give it a personality, check the pxelinux file
    sysinv writes for it, let it install, boot it; returns its agent."""
    if not pre_added:
        _lease(c0, node)
        row = next(r for r in c0.table("host-list") if r["hostname"] == "None")
        assert (
            row["personality"],
            row["administrative"],
            row["operational"],
            row["availability"],
        ) == ("None", "locked", "disabled", "offline")
        show = c0.show("host-update", row["id"], *update)
        assert show["install_state"] in ("None", "preinstall")
    config = _pxe_config(c0, node)
    assert "KERNEL rel-24.09/bzImage-std" in config
    assert " ks=http://pxecontroller:8080/feed/rel-24.09/kickstart/kickstart.cfg " in config
    options = "instdev=/dev/sda console=ttyS0,115200 user_namespace.enable=1 no_timer_check"
    assert config.rstrip().endswith(f"{options}\n  IPAPPEND 2")
    # the UEFI twin GRUB reads through its .cfg link, filled the same way
    efi = _pxe_path(c0, node).with_name("efi-" + _pxe_path(c0, node).name)
    assert os.readlink(str(efi) + ".cfg") == str(efi)
    efi_config = efi.read_text()
    assert "linux rel-24.09/bzImage-std " in efi_config
    assert " BOOTIF=$net_default_mac " in efi_config
    assert f"{options}\n" in efi_config
    assert "initrd rel-24.09/initrd" in efi_config
    agent = node.start("stx-agent", "--pxe")
    out, _ = agent.communicate(timeout=20)
    assert agent.returncode == 0, out
    assert node.hook_calls()[-2].startswith("install-to-disk ")
    assert node.hook_calls()[-1] == "reboot"
    return _boot_installed(node)


def _unlock(
    c0: Controller, node: Node, name: str, platform: subprocess.Popen[str]
) -> subprocess.Popen[str]:
    """host-unlock: the node reboots (its agent exits after the hook) and comes back."""
    c0.ok("host-unlock", name)
    platform.wait(timeout=20)
    assert node.hook_calls()[-1] == "reboot"
    return _boot_installed(node)


def test_simplex_lists_no_network_booting_node(lab) -> None:
    c0, new_node = lab
    assert c0.bootstrap().returncode == 0
    node = new_node("controller-1")
    _lease(c0, node)
    assert [r["hostname"] for r in c0.table("host-list")] == ["controller-0"]
    assert not _pxe_path(c0, node).exists()


def test_aio_dx_controller_1_joins_over_pxe_and_becomes_available(lab) -> None:
    c0, new_node = lab
    assert c0.bootstrap(DUPLEX_YML).returncode == 0
    _provision_c0(c0, osd=True)
    node = new_node("controller-1")
    platform = _install(c0, node, "personality=controller")
    assert node.hook_calls()[-2] == "install-to-disk controller controller,worker controller-1"
    assert "MENU LABEL All-in-one\n" in _pxe_config(c0, node)
    assert " traits=controller,worker " in _pxe_config(c0, node)
    c0.wait_state("controller-1", "locked", "disabled", "online")
    assert node.hook_calls()[-1] == "dhcp-client enp2s2"
    show = c0.show("host-show", "controller-1")
    assert show["install_state"] == "completed"
    assert show["subfunctions"] == "controller,worker"
    assert show["mgmt_ip"] == "192.168.204.4"
    assert "Controller-Standby" in show["capabilities"]
    dhcp = (c0.root / "var/lib/stx/dhcp-hosts").read_text()
    assert f"{node.macs[1]},192.168.204.4\n" == dhcp
    # puppet's /etc/hosts, the same on both controllers (sudo resolves the hostname with it)
    etc_hosts = (c0.root / "etc/hosts").read_text()
    assert "192.168.204.3\tcontroller-0\n192.168.204.4\tcontroller-1\n" in etc_hosts
    assert (node.root / "etc/hosts").read_text() == etc_hosts
    ifs = {i["name"]: i for i in c0.table("host-if-list", "controller-1")}
    assert ifs["mgmt0"]["class"] == "platform" and ifs["mgmt0"]["ports"] == "['enp2s2']"
    boot_if = [p["boot i/f"] for p in c0.table("host-port-list", "controller-1")]
    assert boot_if == ["False", "True", "False", "False"]
    assert c0.fails("host-unlock", "controller-1") == (
        "Can not unlock a controller host without an oam interface. "
        "Add an oam interface before re-attempting this command."
    )
    c0.ok("host-if-modify", "controller-1", "enp2s1", "-c", "platform")
    c0.ok("interface-network-assign", "controller-1", "enp2s1", "oam")
    assert c0.fails("host-unlock", "controller-1") == (
        "Can not unlock node until at least one OSD is configured."
    )
    _add_osd(c0, "controller-1")
    assert c0.fails("host-unlock", "controller-1") == (
        "Cannot unlock host controller-1 without configuring a cluster-host interface."
    )
    c0.ok("interface-network-assign", "controller-1", "mgmt0", "cluster-host")
    platform = _unlock(c0, node, "controller-1", platform)
    c0.wait_state("controller-1", "unlocked", "enabled", "available")
    assert c0.fails("host-lock", "controller-0") == (
        "controller-0 : Rejected: Can not lock an active controller."
    )
    c0.ok("host-swact", "controller-0")
    assert "Controller-Active" in c0.show("host-show", "controller-1")["capabilities"]
    platform.kill()  # power off: heartbeats stop
    c0.wait_state("controller-1", "unlocked", "disabled", "offline")


def test_standard_workers_by_pxe_and_by_host_add(lab) -> None:
    c0, new_node = lab
    assert c0.bootstrap(DUPLEX_YML, subfunction="controller").returncode == 0
    assert c0.fails("host-if-modify", "controller-0", "enp2s3", "-c", "data") == (
        "The data interface class is only supported on nodes supporting worker functions"
    )
    _provision_c0(c0, osd=False)
    worker1 = new_node("worker-1")
    added = c0.show("host-add", "-n", "worker-1", "-p", "worker", "-m", worker1.macs[1])
    assert (added["hostname"], added["personality"], added["mgmt_ip"]) == (
        "worker-1",
        "worker",
        "192.168.204.5",
    )
    assert c0.fails("host-add", "-n", "worker-2", "-p", "worker", "-m", worker1.macs[1]) == (
        f"Host-add Rejected: Host with mgmt_mac {worker1.macs[1]} already exists"
    )
    assert "MENU LABEL Worker\n" in _pxe_config(c0, worker1)  # written by host-add already
    worker0 = new_node("worker-0")
    _lease(c0, worker0)
    _lease(c0, worker0, "169.254.202.5")  # a second lease of the same MAC lists no new host
    assert [r["hostname"] for r in c0.table("host-list")].count("None") == 1
    new_id = next(r["id"] for r in c0.table("host-list") if r["hostname"] == "None")
    assert c0.fails("host-update", new_id, "personality=worker").startswith(
        "Host "
    ) and "must be provisioned with a hostname" in c0.fails(
        "host-update", new_id, "personality=worker"
    )
    assert not _pxe_path(c0, worker0).exists()  # refused: still pxelinux's `default`
    platforms = {
        "worker-0": _install(c0, worker0, "personality=worker", "hostname=worker-0"),
        "worker-1": _install(c0, worker1, pre_added=True),
    }
    assert "install-to-disk worker worker worker-1" in worker1.hook_calls()
    for name in platforms:
        c0.wait_state(name, "locked", "disabled", "online")
    assert c0.fails("host-unlock", "worker-0") == (
        "Can not unlock a worker node until the third Ceph monitor is defined by either "
        "adding a storage node or configuring a monitor on a worker node. Note that this "
        "will select the storage deployment model, check documentation for details and "
        "restrictions."
    )
    assert c0.fails("ceph-mon-add", "controller-0") == (
        "Ceph monitor already configured for host 'controller-0'."
    )
    mon = parse_show(c0.ok("ceph-mon-add", "worker-0"))
    assert mon["state"] == "configuring"
    c0.wait(
        "monitor configured",
        lambda: all(m["state"] == "configured" for m in c0.table("ceph-mon-list")),
    )
    assert c0.fails("host-unlock", "worker-0") == (
        "Cannot unlock host worker-0 without configuring a cluster-host interface."
    )
    for name, node in (("worker-0", worker0), ("worker-1", worker1)):
        c0.ok("interface-network-assign", name, "mgmt0", "cluster-host")
        c0.ok("host-label-assign", name, "openstack-compute-node=enabled")
        assert c0.fails("host-unlock", name).startswith("A worker requires a cgts-vg")
        c0.ok("host-lvg-add", name, "nova-local")
        sdb = next(
            d["uuid"] for d in c0.table("host-disk-list", name) if d["device_node"] == "/dev/sdb"
        )
        c0.ok("host-pv-add", name, "nova-local", sdb)
        platforms[name] = _unlock(c0, node, name, platforms[name])
    worker1.write_run("knobs", {"slow": "0.1", "enable_fail": "2"})
    c0.wait_state("worker-0", "unlocked", "enabled", "available")
    c0.wait_state("worker-1", "unlocked", "disabled", "failed")


def test_dedicated_storage_node(lab) -> None:
    c0, new_node = lab
    assert c0.bootstrap(DUPLEX_YML, subfunction="controller").returncode == 0
    _provision_c0(c0, osd=False)
    storage = new_node("storage-0")
    platform = _install(c0, storage, "personality=storage")
    c0.wait_state("storage-0", "locked", "disabled", "online")
    assert "install-to-disk storage storage storage-0" in storage.hook_calls()
    assert "MENU LABEL Storage\n" in _pxe_config(c0, storage)
    c0.ok("interface-network-assign", "storage-0", "mgmt0", "cluster-host")
    assert c0.fails("host-unlock", "storage-0") == (
        "Can not unlock a storage node without any Storage Volumes configured"
    )
    _add_osd(c0, "storage-0", tier=True)
    stor = c0.table("host-stor-list", "storage-0")[0]
    assert (stor["function"], stor["state"], stor["tier_name"]) == (
        "osd",
        "configuring-on-unlock",
        "storage",
    )
    platform = _unlock(c0, storage, "storage-0", platform)
    c0.wait_state("storage-0", "unlocked", "enabled", "available")
    assert c0.table("host-stor-list", "storage-0")[0]["state"] == "configured"
    tiers = c0.table("storage-tier-list", "ceph_cluster")
    assert (tiers[0]["name"], tiers[0]["status"]) == ("storage", "in-use")


def test_sysinv_reloads_dnsmasq_when_it_assigns_an_address(lab) -> None:
    c0, _ = lab
    assert c0.bootstrap(DUPLEX_YML).returncode == 0
    marker = c0.root / "hup"
    script = (
        "import pathlib, signal, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "signal.signal(signal.SIGHUP, lambda *a: marker.write_text('hup'))\n"
        "marker.with_suffix('.ready').touch()\n"
        "time.sleep(30)\n"
    )
    fake = subprocess.Popen([sys.executable, "-c", script])
    try:
        (c0.root / "run/stx-sim/dnsmasq.pid").write_text(f"{fake.pid}\n")
        c0.wait("fake dnsmasq", marker.with_suffix(".ready").exists, timeout=5)
        c0.ok("host-add", "-n", "worker-3", "-p", "worker", "-m", "52:54:00:aa:bb:cc")
        c0.wait("SIGHUP to dnsmasq", marker.exists, timeout=5)
        assert (
            c0.root / "var/lib/stx/dhcp-hosts"
        ).read_text() == "52:54:00:aa:bb:cc,192.168.204.5\n"
    finally:
        fake.send_signal(signal.SIGKILL)
        fake.wait()
