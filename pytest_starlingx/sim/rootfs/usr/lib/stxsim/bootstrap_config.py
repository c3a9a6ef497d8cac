"""localhost.yml: read it (YAML subset) and validate it the way the bootstrap playbook does.

The real playbook has defaults for most keys (host_vars/bootstrap/default.yml). The
simulator requires the keys every documented localhost.yml sets, so that a forgotten key
fails the play loudly with a message naming it, instead of silently taking a default.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from stxsim import miniyaml

REQUIRED = (
    "system_mode",
    "external_oam_subnet",
    "external_oam_gateway_address",
    "external_oam_floating_address",
    "admin_password",
    "ansible_become_pass",
)
DUPLEX_REQUIRED = ("external_oam_node_0_address", "external_oam_node_1_address")
DEFAULTS: dict[str, Any] = {
    "admin_username": "admin",
    "dns_servers": ["8.8.8.8", "8.8.4.4"],
    "management_subnet": "192.168.204.0/24",
    # ansible-playbooks r/stx.10.0 host_vars/bootstrap/default.yml
    "pxeboot_subnet": "169.254.202.0/24",
}


class ConfigError(ValueError):
    """A bad or missing value; the message names the key (shown as the task's `msg`)."""


def _network(cfg: dict[str, Any], key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(cfg[key]), strict=True)
    except ValueError:
        raise ConfigError(f"Invalid subnet value for {key}: {cfg[key]}") from None


def _address(cfg: dict[str, Any], key: str, subnet: Any) -> str:
    try:
        addr = ipaddress.ip_address(str(cfg[key]))
    except ValueError:
        raise ConfigError(f"Invalid address value for {key}: {cfg[key]}") from None
    if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
        raise ConfigError(
            f"{key} {addr} is not a valid host address in external_oam_subnet {subnet}"
        )
    return str(addr)


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return the effective configuration (defaults filled) or raise ConfigError."""
    cfg = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    for key in REQUIRED:
        if key not in cfg:
            raise ConfigError(f"{key} is not defined in localhost.yml")
    if cfg["system_mode"] not in ("simplex", "duplex", "duplex-direct"):
        raise ConfigError(
            f"Invalid system_mode: {cfg['system_mode']}. Valid values are "
            "simplex, duplex and duplex-direct."
        )
    if cfg["system_mode"] != "simplex":
        for key in DUPLEX_REQUIRED:
            if key not in cfg:
                raise ConfigError(f"{key} must be defined for system_mode {cfg['system_mode']}")
    oam = _network(cfg, "external_oam_subnet")
    addresses = {}
    for key in ("external_oam_gateway_address", "external_oam_floating_address", *DUPLEX_REQUIRED):
        if key in cfg:
            addresses[key] = _address(cfg, key, oam)
    if len(set(addresses.values())) != len(addresses):
        raise ConfigError(
            "external_oam addresses must be distinct: "
            + ", ".join(f"{k}={v}" for k, v in addresses.items())
        )
    mgmt = _network(cfg, "management_subnet")
    if mgmt.num_addresses < 16 or mgmt.overlaps(oam):
        raise ConfigError(
            f"Invalid management_subnet {mgmt}: it must hold at least 16 "
            "addresses and not overlap external_oam_subnet"
        )
    pxeboot = _network(cfg, "pxeboot_subnet")
    if pxeboot.num_addresses < 16 or pxeboot.overlaps(mgmt) or pxeboot.overlaps(oam):
        raise ConfigError(
            f"Invalid pxeboot_subnet {pxeboot}: it must hold at least 16 addresses and not "
            "overlap management_subnet or external_oam_subnet"
        )
    dns = cfg["dns_servers"]
    if not isinstance(dns, list) or not dns:
        raise ConfigError(f"dns_servers must be a list of addresses, got {dns!r}")
    for server in dns:
        try:
            ipaddress.ip_address(str(server))
        except ValueError:
            raise ConfigError(f"Invalid address in dns_servers: {server}") from None
    return {
        **cfg,
        **addresses,
        "external_oam_subnet": str(oam),
        "management_subnet": str(mgmt),
        "pxeboot_subnet": str(pxeboot),
        "admin_password": str(cfg["admin_password"]),
        "ansible_become_pass": str(cfg["ansible_become_pass"]),
    }


def load(path: str) -> dict[str, Any]:
    """Read and validate the overrides file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"Unable to read {path}: {exc.strerror}") from None
    try:
        return validate(miniyaml.loads(text, path))
    except miniyaml.YamlError as exc:
        raise ConfigError(f"Syntax Error while loading YAML: {exc}") from None
