"""Network boot on sysinv's side: the DHCP leases dnsmasq reports and the per-MAC pxelinux
files under /var/pxeboot.

Sources (starlingx/config r/stx.10.0 sysinv): `conductor/manager.py` `handle_dhcp_lease` (a
lease on the pxeboot range lists an unknown MAC as a new host, except on simplex),
`_update_pxe_config` (which template, which file name, which options),
and `cmd/dnsmasq_lease_update.py`; starlingx/metal `pxeboot-update.sh` (how a template is
filled) and ansible-playbooks `roles/bootstrap/persist-config` (the `default` link).
"""

from __future__ import annotations

import os
from typing import Any

from stxsim import env
from stxsim.sysinv import db, hosts
from stxsim.sysinv.db import Data, Row

CONFIGS = "/var/pxeboot/pxelinux.cfg"
TEMPLATES = "/var/pxeboot/pxelinux.cfg.files"
BASE_URL = "http://pxecontroller:8080"  # sysinv's http service parameter, default port 8080
DEFAULT_DEVICE = "/dev/sda"
DEFAULT_CONSOLE = "ttyS0,115200"
# Not StarlingX's, the simulator's own (DESIGN.md, "Emulation"): as a KVM guest Linux skips its
# IO-APIC timer check (torvalds/linux arch/x86/kernel/kvm.c sets no_timer_check); under QEMU's
# TCG on a loaded host the check can miss its ticks and the kernel panics at boot.
EMULATION_OPTIONS = "no_timer_check"


def link_default() -> None:
    """`pxelinux.cfg/default` and `pxelinux.cfg/grub.cfg`, what a node sysinv has no
    personality for boots (pxelinux under BIOS, GRUB under UEFI): the links to metal's files
    that bootstrap makes on a dynamically addressed mgmt network."""
    for name in ("default", "grub.cfg"):
        _link(f"../pxelinux.cfg.files/{name}", env.path(f"{CONFIGS}/{name}"))


def _link(target: str, link: str) -> None:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


def config_path(mac: str, firmware: str = "") -> str:
    """The file for the node with this boot MAC: `01-` and the MAC with dashes, for pxelinux;
    with `firmware="efi-"`, GRUB's, which GRUB reads through a `.cfg` link to it."""
    return env.path(f"{CONFIGS}/{firmware}01-{mac.lower().replace(':', '-')}")


def _template(data: Data, host: Row) -> str:
    """The template `_update_pxe_config` picks for the host's personality."""
    kind = host["personality"]
    if kind == "controller":
        kind = "smallsystem" if hosts.is_aio(data) else "controller"
    return f"pxe-{kind}-install-{env.sw_version()}"


def _append_options(host: Row) -> str:
    """What pxeboot-update.sh -d puts for `xxxAPPEND_OPTIONSxxx`, and the simulator's
    `EMULATION_OPTIONS` after it."""
    options = f"instdev={host.get('boot_device') or DEFAULT_DEVICE}"
    console = host.get("console", DEFAULT_CONSOLE)
    if console:
        options += f" console={console}"
    return f"{options} user_namespace.enable=1 {EMULATION_OPTIONS}"


def write_config(data: Data, host: Row) -> None:
    """Render the host's per-MAC files from the template and its `efi-` twin (pxeboot-update.sh:
    `sed -e "s#xxxAPPEND_OPTIONSxxx#...#;s#xxxBASE_URLxxx#...#g"`), replacing any old ones,
    and link `efi-01-<mac>.cfg` to the UEFI one (`_update_pxe_config`, releases >= 22.12)."""
    options = _append_options(host)
    for firmware in ("", "efi-"):
        template = env.path(f"{TEMPLATES}/{firmware}{_template(data, host)}")
        with open(template, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        text = "".join(
            line.replace("xxxAPPEND_OPTIONSxxx", options, 1).replace("xxxBASE_URLxxx", BASE_URL)
            for line in lines
        )
        target = config_path(host["mgmt_mac"], firmware)
        with open(target + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(target + ".tmp", target)
    efi = config_path(host["mgmt_mac"], "efi-")
    _link(efi, efi + ".cfg")


def dhcp_lease(data: Data, body: dict[str, Any]) -> dict[str, Any]:
    """dnsmasq leased `ip` to `mac`: a client on the pxeboot range (the first of its `tags`)
    becomes a `None` host unless it is known; nothing happens on simplex or for mgmt leases."""
    mac = body["mac"].lower()
    tags = (body.get("tags") or "").split()
    if tags[:1] != ["pxeboot"] or hosts.is_simplex(data):
        return {"host": None}
    host = db.first(data, "hosts", mgmt_mac=mac) or hosts.new_host(data, mac)
    return {"host": host["uuid"]}
