"""controller-0: install from the ISO, first login, bootstrap, configuration, unlock.

Follows starlingx.md sections 3-5 (Debian-era StarlingX): the boot menu entries, the forced
password change, ``localhost.yml`` and the bootstrap playbook, the ``system`` commands of the
deployment guides, and ``host-unlock`` with its reboot.
"""

from __future__ import annotations

import json
import re

from pytest_starlingx.console import LOGIN
from pytest_starlingx.errors import StageError
from pytest_starlingx.model import ACTIVE_CONTROLLER, Firmware, Topology
from pytest_starlingx.stages.base import AVAILABLE, AVAILABLE_TEXT, Bringup
from pytest_starlingx.system_output import parse_table
from pytest_starlingx.waits import poll

NODE = ACTIVE_CONTROLLER
BOOTSTRAP = "ansible-playbook /usr/share/ansible/stx-ansible/playbooks/bootstrap.yml"
LOCALHOST_YML = "/home/sysadmin/localhost.yml"
#: The install submenus of a StarlingX ISO: ISOLINUX's under BIOS, GRUB's under UEFI (starlingx/
#: tools base-bullseye.yaml ``iso-syslinux-entry`` and ``iso-grub-entry``), each holding
#: ``Serial Console`` and ``Graphical Console``.
MENU_AIO = "Debian All-in-one Install"
MENU_STANDARD = "Debian Controller Install"
MENU_UEFI = "UEFI "
MENU_CONSOLE = "Serial Console"
DNS_SERVERS = ("8.8.8.8", "8.8.4.4")
#: What the bootstrap prints when it cannot pull its container images (ansible-playbooks
#: ``roles/common/push-docker-images/files/download_images.py``): public registries by default.
IMAGES_FAILED = "Failed to download images"
IMAGES_HINT = (
    ": it could not download its container images, which it pulls from public registries "
    "(docker.io, quay.io, registry.k8s.io, ...) unless told otherwise. Give the lab a way out, "
    "or point it at a local registry or proxy in the lab description: bootstrap: "
    "{docker_registries: ..., docker_http_proxy: ..., docker_https_proxy: ..., "
    "docker_no_proxy: ...}"
)
_RECAP = re.compile(r"localhost\s*:\s*ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)")


def install(b: Bringup) -> None:
    """Power on, pick the install entry by its text, wait for the login prompt after reboot."""
    node = b.spec.node(NODE)
    console = b.consoles[NODE]
    b.machines[NODE].power_on()
    entry = MENU_AIO if node.all_in_one else MENU_STANDARD
    if b.spec.firmware is Firmware.UEFI:
        entry = MENU_UEFI + entry
    console.select_menu(entry, MENU_CONSOLE, deadline=b.deadline("menu"))
    console.expect(LOGIN, b.deadline("install"), what="the login prompt after the install")


def first_login(b: Bringup) -> None:
    """Log in as sysadmin through the forced password change."""
    b.shells.login(NODE)


def localhost_yml(b: Bringup) -> str:
    """The bootstrap overrides (starlingx.md section 4) for this lab, then the lab
    description's own ``bootstrap:`` keys (registries, proxies, DNS, ...; they win)."""
    spec = b.spec
    values: dict[str, object] = {
        "system_mode": spec.topology.system_mode,
        "dns_servers": list(DNS_SERVERS),
        "external_oam_subnet": str(spec.oam.subnet),
        "external_oam_gateway_address": str(spec.oam.gateway),
        "external_oam_floating_address": str(spec.oam.floating),
    }
    if spec.topology is not Topology.SIMPLEX:
        values["external_oam_node_0_address"] = str(spec.oam.controller_0)
        values["external_oam_node_1_address"] = str(spec.oam.controller_1)
    values |= {
        "management_subnet": str(spec.mgmt.subnet),
        "admin_username": "admin",
        "admin_password": b.passwords["admin"],
        "ansible_become_pass": b.passwords["sysadmin"],
        **spec.bootstrap,
    }
    return "".join(f"{key}: {_yaml(value)}\n" for key, value in values.items())


def _yaml(value: object) -> str:
    """A YAML value on one line: strings single-quoted, anything else as JSON (YAML's flow
    style: ``[...]``, ``{...}``, ``true``, ``null``, numbers)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)


def configure_oam(b: Bringup) -> None:
    """Give the OAM interface controller-0's address, bring it up and route by the OAM gateway,
    as the install guides do before the bootstrap ("Verify and/or configure IP connectivity"):
    the playbook's ``ip route replace default via <gateway>`` (ansible-playbooks
    ``roles/bootstrap/bringup-essential-services/tasks/setup_default_route.yml``) fails without
    an address on the gateway's subnet. ``replace``: a resumed bootstrap runs this again."""
    oam, _ = controller_interfaces(b)
    spec = b.spec.oam
    b.shell(NODE, f"sudo ip address replace {spec.controller_0}/{spec.subnet.prefixlen} dev {oam}")
    b.shell(NODE, f"sudo ip link set up dev {oam}")
    b.shell(NODE, f"sudo ip route replace default via {spec.gateway} dev {oam}")


def bootstrap(b: Bringup) -> None:
    """Configure the OAM interface, write localhost.yml, run the bootstrap playbook, check its
    recap and the host list."""
    configure_oam(b)
    with b.shells.lock(NODE):
        console = b.shells.logged_in(NODE)
        for secret in b.spec.bootstrap_secrets:
            console.add_secret(secret)
        console.write_file(LOCALHOST_YML, localhost_yml(b), b.deadline("command"), secret=True)
    check_recap(b.shell(NODE, BOOTSTRAP, phase="bootstrap"))
    b.wait_hosts([NODE], "command", "controller-0 online after bootstrap", availability="online")


def check_recap(output: str) -> None:
    """Raise StageError unless the playbook's last ``PLAY RECAP`` says nothing failed; say what
    to set when the failure is the image download."""
    recaps = _RECAP.findall(output)
    if not recaps or recaps[-1] != ("0", "0"):
        recap = next((ln for ln in output.splitlines() if "PLAY RECAP" in ln), "no PLAY RECAP")
        hint = IMAGES_HINT if IMAGES_FAILED in output else ""
        raise StageError(f"the bootstrap playbook did not succeed ({recap}; recap {recaps}){hint}")


def find_interfaces(b: Bringup, node: str) -> dict[str, str]:
    """Interface names on ``node`` by lab network, found by the MACs the hypervisor gave."""
    listing = b.shell(node, "for i in /sys/class/net/*; do echo ${i##*/} $(cat $i/address); done")
    by_mac = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2:
            by_mac[parts[1].lower()] = parts[0]
    names = {}
    for network in ("oam", "mgmt"):
        mac = b.machines[node].mac(network).lower()
        if mac not in by_mac:
            raise StageError(f"{node} has no interface with the {network} MAC {mac}: {by_mac}")
        names[network] = by_mac[mac]
    return names


def controller_interfaces(b: Bringup) -> tuple[str, str]:
    """controller-0's OAM and mgmt interface names, found once per bring-up (also when it
    resumes after the stage that found them); the other controller has the same hardware."""
    if "oam_if" not in b.facts:
        names = find_interfaces(b, NODE)
        b.facts["oam_if"], b.facts["mgmt_if"] = names["oam"], names["mgmt"]
    return b.facts["oam_if"], b.facts["mgmt_if"]


def configure(b: Bringup) -> None:
    """Interfaces, networks and storage of controller-0 (starlingx.md 5.2-5.5)."""
    oam, mgmt = controller_interfaces(b)
    if b.spec.topology is not Topology.SIMPLEX:
        b.system(f"host-if-modify {NODE} lo -c none")
        for row in parse_table(b.system(f"interface-network-list {NODE} --nowrap")):
            if row.get("ifname") == "lo":
                b.system(f"interface-network-remove {row['uuid']}")
    b.system(f"host-if-modify {NODE} {oam} -c platform")
    b.system(f"interface-network-assign {NODE} {oam} oam")
    if b.spec.topology is not Topology.SIMPLEX:
        b.system(f"host-if-modify {NODE} {mgmt} -c platform")
        b.system(f"interface-network-assign {NODE} {mgmt} mgmt")
        b.system(f"interface-network-assign {NODE} {mgmt} cluster-host")
    b.system("storage-backend-add ceph --confirmed")
    wait_storage_backends(b)
    if b.spec.topology.all_in_one:
        add_osd(b, NODE)


def wait_storage_backends(b: Bringup) -> None:
    """Poll ``storage-backend-list`` until every backend is ``configured``."""

    def configured() -> bool:
        rows = parse_table(b.system("storage-backend-list --nowrap"))
        return bool(rows) and all(row["state"] == "configured" for row in rows)

    poll(configured, b.deadline("command"), "the storage backends to be configured",
         poll_every=3.0)  # fmt: skip


def add_osd(b: Bringup, host: str, tier: bool = False) -> None:
    """An OSD on the host's second disk (SATA port 2, ``/dev/sdb`` in the guides), in the
    storage tier when asked."""
    disks = parse_table(b.system(f"host-disk-list {host} --nowrap"))
    disk = next((d for d in disks if d.get("device_path", "").endswith("-ata-2.0")), None)
    disk = disk or next((d for d in disks if d.get("device_node") == "/dev/sdb"), None)
    if disk is None:
        raise StageError(f"{host} has no second disk in host-disk-list: {disks}")
    tier_option = ""
    if tier:
        tiers = parse_table(b.system("storage-tier-list ceph_cluster --nowrap"))
        storage = next((t for t in tiers if t.get("name") == "storage"), None)
        if storage is None:
            raise StageError(f"no 'storage' tier in storage-tier-list: {tiers}")
        tier_option = f" --tier-uuid {storage['uuid']}"
    b.system(f"host-stor-add {host} {disk['uuid']}{tier_option}")


def unlock(b: Bringup) -> None:
    """``host-unlock``, the reboot, a fresh login, then wait for ``available``."""
    console = b.consoles[NODE]
    b.unlock_host(NODE, "unlock")
    console.expect(LOGIN, b.deadline("unlock"), what="the login prompt after the unlock reboot")
    b.shells.forget(NODE)
    b.shells.login(NODE)
    b.wait_hosts([NODE], "unlock", f"{NODE} {AVAILABLE_TEXT}", **AVAILABLE)
