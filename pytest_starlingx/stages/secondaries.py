"""The other nodes: network boot from controller-0, identity, install, configuration, unlock.

Two ways to give a node its identity (starlingx.md 5.6): discover it (it network-boots, shows
up as a ``None`` host, then ``host-update <id> personality=...``), or ``host-add`` it by its
mgmt MAC before it powers on. Either way the node installs from controller-0 and reports
``online``; then it is configured and unlocked from controller-0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from pytest_starlingx.console import Console, ConsoleTimeout
from pytest_starlingx.errors import StageError
from pytest_starlingx.model import AddHosts, NodeSpec, Personality, Topology
from pytest_starlingx.stages.base import AVAILABLE, AVAILABLE_TEXT, Bringup
from pytest_starlingx.stages.controller0 import add_osd, controller_interfaces
from pytest_starlingx.system_output import parse_table
from pytest_starlingx.waits import Deadline, WaitTimeout, poll

log = logging.getLogger(__name__)

NOT_ASSIGNED = "None"
FIRST_WORKER = "worker-0"


def power_on(node: str):
    """A stage action: power the node on (it network-boots from controller-0)."""

    def action(b: Bringup) -> None:
        b.machines[node].power_on()

    return action


def _identity(node: NodeSpec) -> str:
    """``host-update``/``host-add`` arguments; controllers and storage nodes are named by
    sysinv in order, workers get the hostname we give."""
    if node.personality is Personality.WORKER:
        return f"personality=worker hostname={node.name}"
    return f"personality={node.personality.value}"


def add_hosts(nodes: Sequence[NodeSpec]):
    """A stage action: give every node its identity, in StarlingX's naming order."""

    def action(b: Bringup) -> None:
        if b.spec.add_hosts is AddHosts.HOST_ADD:
            for node in nodes:
                mac = b.machines[node.name].mac("mgmt")
                b.system(f"host-add -n {node.name} -p {node.personality.value} -m {mac}")
            return
        ids = _discover(b, nodes)
        for node in nodes:
            b.system(f"host-update {ids[node.name]} {_identity(node)}")

    return action


def _discover(b: Bringup, nodes: Sequence[NodeSpec]) -> dict[str, str]:
    """Host ids of the nodes, matched by mgmt MAC among the hosts that appeared unnamed."""
    wanted = {b.machines[n.name].mac("mgmt").lower(): n.name for n in nodes}
    found: dict[str, str] = {}
    macs: dict[str, str] = {}  # host id -> mgmt MAC, asked once per host

    def all_found() -> bool:
        b.check_cancelled()
        for row in b.hosts():
            if row["hostname"] != NOT_ASSIGNED or row["id"] in macs:
                continue
            mac = row.get("mgmt_mac", NOT_ASSIGNED)  # in the API's rows, not the CLI's
            if mac == NOT_ASSIGNED:
                mac = b.host_show(row["id"]).get("mgmt_mac", "")
            macs[row["id"]] = mac.lower()
            if macs[row["id"]] in wanted:
                found[wanted[macs[row["id"]]]] = row["id"]
        return len(found) == len(wanted)

    try:
        poll(all_found, b.deadline("node_install"), "the new hosts to appear", poll_every=2.0)
    except WaitTimeout as exc:
        missing = sorted(set(wanted.values()) - set(found))
        raise StageError(
            f"{exc}: {', '.join(missing)} never appeared in host-list (did it network-boot "
            "from controller-0?)"
        ) from None
    return found


#: pxelinux's countdowns on a network-booting node: metal's ``default`` (``MENU AUTOBOOT
#: Automatic retry in # seconds``, ``TIMEOUT 100``: it reloads pxelinux.0, which then finds the
#: node's own file) and menu.c32's own under the install menu sysinv writes per MAC (``TIMEOUT
#: 50``); starlingx/metal ``installer/pxe-network-installer``.
PXE_RETRY = re.compile(r"Automatic retry in (?:\x1b\[[\d;]*m)*\d+")  # the number in bold
PXE_BOOT = re.compile(r"Automatic boot in (?:\x1b\[[\d;]*m)*\d+")
PXELINUX = re.compile(r"PXELINUX \d")  # its banner, at every (re)load
#: GRUB's countdown under UEFI: metal's ``pxe-grub.cfg`` (its first entry loads the node's own
#: ``efi-01-<mac>.cfg``; failing that, the fallback entry reloads the menu) and the per-MAC
#: ``efi-pxe-*-install`` menu, ``timeout=10`` each.
GRUB_COUNTDOWN = re.compile(r"executed automatically in \d+s")
WAITING = "Waiting for this node to be configured."  # the first entry of both retry menus
#: How long a network-booting node may take to show a countdown before we stop looking: the
#: countdowns only save time, the node boots on when they run out.
PXE_MENU_WAIT = 60.0


def _skip_pxe_countdowns(b: Bringup, node: str) -> None:
    """Press Enter at the network boot loader's countdowns, as someone at the console would.

    pxelinux (BIOS): at the retry, pxelinux reloads (its banner) and finds the node's own
    install menu, whose default entry Enter then boots at once. GRUB (UEFI): Enter on the
    retry menu's first entry loads the node's own menu, where Enter boots. A retry menu back
    after Enter (the node's own file is not there yet) is left to its countdown, as is a node
    that shows no countdown in time."""
    console = b.consoles[node]
    deadline = b.deadline("node_install").within(PXE_MENU_WAIT, "the network boot menu")
    with b.shells.lock(node):
        console.discard()  # a countdown already printed may be long gone
        try:
            match = console.expect([PXE_RETRY, PXE_BOOT, GRUB_COUNTDOWN], deadline)
            if match.index == 2:
                _skip_grub_countdowns(console, node, deadline)
                return
            if match.index == 0:
                console.send_key("enter")
                console.expect(PXELINUX, deadline)
                match = console.expect([PXE_RETRY, PXE_BOOT], deadline)
        except ConsoleTimeout:
            log.info("%s: no network boot countdown seen; the node boots on its own", node)
            return
        if match.index == 0:
            log.info("%s: pxelinux has no menu of its own for it yet; it retries", node)
            return
        console.send_key("enter")


def _skip_grub_countdowns(console: Console, node: str, deadline: Deadline) -> None:
    """GRUB's half of :func:`_skip_pxe_countdowns`, its countdown on screen."""
    if console.screen.menu().find(WAITING) is not None:
        console.screen.reset()  # the next menu is drawn on a cleared screen
        console.send_key("enter")
        console.expect(GRUB_COUNTDOWN, deadline)
        if console.screen.menu().find(WAITING) is not None:
            log.info("%s: GRUB has no menu of its own for it yet; it retries", node)
            return
    console.send_key("enter")


def install(node: str):
    """A stage action: skip the network boot loader's countdowns, wait for the node to install
    and report ``online``."""

    def action(b: Bringup) -> None:
        _skip_pxe_countdowns(b, node)
        b.wait_hosts([node], "node_install", f"{node} installed and online",
                     availability="online")  # fmt: skip

    return action


def configure(node: NodeSpec):
    """A stage action: the node's networks and storage (starlingx.md 5.3-5.5)."""

    def action(b: Bringup) -> None:
        name = node.name
        if node.personality is Personality.CONTROLLER:
            oam, _ = controller_interfaces(b)  # identical hardware: the same name
            b.system(f"host-if-modify {name} {oam} -c platform")
            b.system(f"interface-network-assign {name} {oam} oam")
        b.system(f"interface-network-assign {name} mgmt0 cluster-host")
        if node.all_in_one:
            add_osd(b, name)
        elif node.personality is Personality.STORAGE:
            add_osd(b, name, tier=True)
        elif name == FIRST_WORKER and b.spec.topology is Topology.STANDARD:
            # Controller storage: the third Ceph monitor goes on a worker, or no worker unlocks.
            b.system(f"ceph-mon-add {name}")

    return action


def unlock(node: NodeSpec):
    """A stage action: ``host-unlock`` and wait for ``available``. In the standard (controller
    storage) option a worker unlocks only once worker-0's Ceph monitor is ``configured``
    (docs ``controller_storage_install_kubernetes.rst``: "wait ... ceph-mon-list")."""

    def action(b: Bringup) -> None:
        if node.personality is Personality.WORKER and b.spec.topology is Topology.STANDARD:
            wait_ceph_monitor(b, FIRST_WORKER)
        b.unlock_host(node.name, "node_unlock")
        b.wait_hosts([node.name], "node_unlock", f"{node.name} {AVAILABLE_TEXT}", **AVAILABLE)

    return action


def wait_ceph_monitor(b: Bringup, host: str) -> None:
    """Poll ``ceph-mon-list`` until ``host``'s monitor is ``configured``."""

    def configured() -> bool:
        mons = parse_table(b.system("ceph-mon-list --nowrap"))
        return any(m.get("hostname") == host and m.get("state") == "configured" for m in mons)

    poll(configured, b.deadline("node_unlock"), f"{host}'s Ceph monitor to be configured",
         poll_every=3.0)  # fmt: skip


def controller_osds(b: Bringup) -> None:
    """A stage action (standard option, after the workers' unlock): an OSD in the storage tier
    on each controller's second disk, then wait until none is ``configuring``
    (``controller_storage_install_kubernetes.rst``)."""
    controllers = [n.name for n in b.spec.nodes if n.personality is Personality.CONTROLLER]
    for host in controllers:
        add_osd(b, host, tier=True)

    def settled() -> bool:
        return all(
            stor.get("state") == "configured"
            for host in controllers
            for stor in parse_table(b.system(f"host-stor-list {host} --nowrap"))
        )

    poll(settled, b.deadline("node_unlock"), "the controllers' OSDs to be configured",
         poll_every=3.0)  # fmt: skip
