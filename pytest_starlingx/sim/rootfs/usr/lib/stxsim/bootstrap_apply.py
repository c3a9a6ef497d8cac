"""The privileged half of bootstrap (`stx-platform-boot --bootstrap CONFIG OWNER`), run as root.

Writes identity and credentials, creates the sysinv database with controller-0 in it, then
starts controller-0's services. CONFIG is the validated configuration as JSON; OWNER is
`uid:gid` of the user who ran the playbook (the keyring file becomes theirs, as openrc
must read it).
"""

from __future__ import annotations

import ipaddress
import json
import os

from stxsim import controller, env, inventory, sysops
from stxsim.sysinv import db, hosts, pxe

OPENRC = """\
unset OS_SERVICE_TOKEN

export OS_ENDPOINT_TYPE=internalURL
export CINDER_ENDPOINT_TYPE=internalURL

export OS_USERNAME={username}
export OS_PASSWORD=`cat {keyring} 2>/dev/null`
export OS_AUTH_TYPE=password
export OS_AUTH_URL=http://{floating}:5000/v3

export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
export OS_INTERFACE=internal

if [ ! -z "${{OS_PASSWORD}}" ]; then
    export PS1='[\\u@\\h \\W(keystone_$OS_USERNAME)]\\$ '
else
    if [ ! -e {keyring} ]; then
        echo 'Openstack Admin credentials can only be loaded from the active controller.'
    else
        echo 'Not enough privileges to read keyring password.'
    fi
    export PS1='\\h:\\w\\$ '
    return 1
fi

return 0
"""
#: The admin keyring on the platform filesystem (DRBD-backed /opt/platform on StarlingX, where
#: stx-puppet's openrc.admin.erb reads it; the directory is the release's SW_VERSION).
#: /opt/platform is hidden at boot until the platform mounts it (rc.sysinit, platform_boot):
#: openrc fails meanwhile.
KEYRING = "/opt/platform/.keyring/{sw_version}/.CREDENTIAL"
APPS = (  # what a fresh STX 8 system lists; platform-integ-apps applies once available
    ("cert-manager", "22.12-0", "cert-manager-fluxcd-manifests", "fluxcd-manifests", "applied"),
    (
        "nginx-ingress-controller",
        "22.12-0",
        "nginx-ingress-controller-fluxcd-manifests",
        "fluxcd-manifests",
        "applied",
    ),
    (
        "oidc-auth-apps",
        "22.12-0",
        "oidc-auth-apps-fluxcd-manifests",
        "fluxcd-manifests",
        "uploaded",
    ),
    (
        "platform-integ-apps",
        "22.12-0",
        "platform-integ-apps-fluxcd-manifests",
        "fluxcd-manifests",
        "uploaded",
    ),
)


def _write(guest_path: str, text: str, mode: int = 0o644) -> str:
    file = env.path(guest_path)
    os.makedirs(os.path.dirname(file), exist_ok=True)
    with open(file + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(file + ".tmp", mode)
    os.replace(file + ".tmp", file)
    return file


def _identity(cfg: dict, owner: tuple[int, int]) -> dict[str, str]:
    """Hostname, platform.conf's system_mode, openrc and keyring; returns platform.conf."""
    conf = env.read_kv("/etc/platform/platform.conf")
    if "subfunction" not in conf:
        raise RuntimeError("/etc/platform/platform.conf has no subfunction (not installed?)")
    conf["system_mode"] = cfg["system_mode"]
    _write("/etc/platform/platform.conf", "".join(f"{k}={v}\n" for k, v in conf.items()))
    _write("/etc/hostname", "controller-0\n")
    sysops.system("hostname", "controller-0")
    keyring = _write(
        KEYRING.format(sw_version=env.sw_version()), cfg["admin_password"] + "\n", 0o600
    )
    os.chown(keyring, *owner)
    mgmt = ipaddress.ip_network(cfg["management_subnet"])
    _write(
        "/etc/platform/openrc",
        OPENRC.format(
            username=cfg["admin_username"], keyring=keyring, floating=mgmt.network_address + 2
        ),
    )
    return conf


def _database(cfg: dict, subfunctions: str) -> None:
    mgmt = ipaddress.ip_network(cfg["management_subnet"])
    pxeboot = ipaddress.ip_network(cfg["pxeboot_subnet"])
    with db.transaction() as data:
        data.clear()
        data["system"] = {
            "uuid": db.new_uuid(),
            "system_mode": cfg["system_mode"],
            "system_type": "All-in-one" if "worker" in subfunctions else "Standard",
            "controller_subfunctions": subfunctions,
            "active": "controller-0",
            "management_subnet": str(mgmt),
            "mgmt_floating": str(mgmt.network_address + 2),
            "mgmt_c0": str(mgmt.network_address + 3),
            # the pxeboot pool starts at the subnet's first address: floating, then
            # controller-0 (ansible-playbooks validate-config default_pxeboot_start_address)
            "pxeboot_subnet": cfg["pxeboot_subnet"],
            "pxeboot_floating": str(pxeboot.network_address + 1),
            "pxeboot_c0": str(pxeboot.network_address + 2),
            "oam": {k: v for k, v in cfg.items() if k.startswith("external_oam_")},
            "dns_servers": cfg["dns_servers"],
            "admin_username": cfg["admin_username"],
            "admin_password_sha256": db.password_digest(cfg["admin_password"]),
            "cluster": {"name": "ceph_cluster", "uuid": db.new_uuid()},
        }
        for net in hosts.NETWORKS:
            db.insert(data, "networks", {"name": net, "type": net})
        db.insert(data, "tiers", {"name": "storage", "status": "defined", "backend_uuid": None})
        for name, version, manifest, file, status in APPS:
            db.insert(
                data,
                "apps",
                {
                    "name": name,
                    "version": version,
                    "manifest_name": manifest,
                    "manifest_file": file,
                    "status": status,
                },
            )
        inv = inventory.collect()
        mgmt_if = env.boot_info().get("mgmt_if", "")
        mac = next((n["mac"] for n in inv["nics"] if n["name"] == mgmt_if), "")
        c0 = hosts.new_host(
            data,
            mac,
            hostname="controller-0",
            personality="controller",
            subfunctions=subfunctions,
            availability="online",
            invprovision="provisioning",
            mgmt_ip=data["system"]["mgmt_c0"],
        )
        hosts.add_inventory(data, c0, inv)
        hosts.write_dhcp_hosts(data)


def main(argv: list[str]) -> int:
    """Apply CONFIG (JSON file) for OWNER (`uid:gid`); exit 0, or 1 with a message."""
    with open(argv[0], encoding="utf-8") as f:
        cfg = json.load(f)
    uid, gid = (int(x) for x in argv[1].split(":"))
    conf = _identity(cfg, (uid, gid))
    sysops.system("ip", "route", "replace", "default", "via", cfg["default_route"])
    _database(cfg, conf["subfunction"])
    pxe.link_default()
    controller.start_services()
    return 0
