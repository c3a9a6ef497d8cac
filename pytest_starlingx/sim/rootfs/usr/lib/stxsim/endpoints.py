"""Where controller-0's API services listen, and the endpoints keystone's catalog names.

StarlingX lays them out one way from bootstrap to controller-0's first unlock and another once
the controller manifest has run (r/stx.10.0 throughout):

* Bootstrap (ansible-playbooks ``roles/bootstrap/apply-manifest``): sysinv-api binds every
  address at 6385 (``templates/sysinv/sysinv.conf.j2``: ``sysinv_api_bind_ip=::``), keystone
  every address at 5000 (``templates/keystone/keystone-extra.conf.j2``:
  ``PUBLIC_BIND_ADDR=[::]``); the catalog's endpoints are ``http://127.0.0.1:5000``
  (``files/configure_keystone.py``) and ``http://127.0.0.1:6385/v1/``
  (``files/create_sysinv_endpoints.py``); sysinv's keystonemiddleware asks keystone at
  ``http://localhost:5000`` (``sysinv.conf.j2`` ``[keystone_authtoken] auth_uri``).
* Unlocked (stx-puppet's controller manifest; starlingx/config's sysinv ``puppet/``): sysinv-api
  and keystone bind the mgmt floating address (``puppet/inventory.py`` ``sysinv::api::
  bind_host`` from ``puppet/base.py`` ``_get_bind_host``; stx-puppet ``openstack/manifests/
  keystone.pp`` ``$bind_host``); haproxy's frontends ``sysinv-restapi`` and
  ``keystone-restapi`` (stx-puppet ``platform/manifests/sysinv.pp``, ``openstack/manifests/
  keystone.pp``, ``platform/manifests/haproxy.pp``) listen on the OAM floating address at the
  same ports (``puppet/platform.py`` ``_get_haproxy_config``: ``public_ip_address``), which
  SM's ``oam-ipv4`` service brings up before it starts ``haproxy`` (starlingx/ha
  ``service-mgmt/sm-db/database/create_sm_db.sql``); the catalog's public endpoints are on the
  OAM floating address, its internal and admin ones on the mgmt floating address
  (``puppet/inventory.py`` and ``puppet/keystone.py`` ``get_public_url``,
  ``get_internal_url``, ``get_admin_url``); keystonemiddleware asks keystone at
  ``http://<mgmt floating>:5000`` (``puppet/keystone.py`` ``get_auth_uri``).

Controller-0's unlock always reboots it, so a service takes its layout when it starts. In
host tests each listener's URL comes from the environment instead (``STXSIM_API``,
``STXSIM_KEYSTONE``, ``STXSIM_PUBLIC_API``, ``STXSIM_PUBLIC_KEYSTONE``, all on 127.0.0.1),
and the catalog names those URLs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass

from stxsim import env
from stxsim.sysinv import db
from stxsim.sysinv.db import Data

ALL_ADDRESSES = "0.0.0.0"
REGION = "RegionOne"  # keystone_bootstrap.yml --bootstrap-region-id; openrc OS_REGION_NAME
SYSINV_PATH = "/v1"  # puppet/inventory.py SERVICE_PATH


@dataclass(frozen=True)
class Listener:
    """One listening socket; `public` is haproxy's frontend on the OAM floating address."""

    host: str
    port: int
    public: bool = False


def unlocked(data: Data) -> bool:
    """True once controller-0 is unlocked: its controller manifest's layout applies."""
    c0 = db.first(data, "hosts", hostname="controller-0")
    return c0 is not None and c0["administrative"] == "unlocked"


def oam_floating(data: Data) -> str:
    """The OAM floating address with the OAM subnet's prefix (``address/prefix``)."""
    oam = data["system"]["oam"]
    prefix = ipaddress.ip_network(oam["external_oam_subnet"]).prefixlen
    return f"{oam['external_oam_floating_address']}/{prefix}"


def oam_unit(data: Data, hostname: str) -> str | None:
    """A controller's own OAM address with the OAM subnet's prefix, on a system with two
    controllers (bootstrap's ``external_oam_node_<N>_address``); None for a simplex system,
    whose only OAM address is the floating one, and for other hosts. Puppet puts it on the
    controller's OAM interface when the controller is unlocked (stx-puppet platform
    ``sm.pp``: ``$oam_my_unit_ip`` is ``oam::params::controller<N>_address`` on controller-N;
    ``network.pp`` configures each interface with its unit address), SM adds the floating one
    on the active controller. Only a controller with an interface assigned the oam network
    (``system interface-network-assign``) has an OAM interface to put it on."""
    unit = re.fullmatch(r"controller-([01])", hostname)
    oam = data["system"]["oam"]
    address = oam.get(f"external_oam_node_{unit[1]}_address") if unit else None
    host = db.first(data, "hosts", hostname=hostname)
    if not address or host is None:
        return None
    if not db.first(data, "interface_networks", host_uuid=host["uuid"], network_type="oam"):
        return None
    prefix = ipaddress.ip_network(oam["external_oam_subnet"]).prefixlen
    return f"{address}/{prefix}"


def _url(var: str, host: str, port: int) -> str:
    """The base URL of one listener: ``var`` from the environment (host tests), else
    ``http://host:port``; the guest's addresses are never used outside the guest."""
    override = os.environ.get(var)
    if override:
        return override.rstrip("/")
    if not env.is_guest():
        raise RuntimeError(f"{var} is unset: in host tests every listener is on 127.0.0.1")
    return f"http://{host}:{port}"


def _listener(var: str, host: str, port: int, public: bool = False) -> Listener:
    parts = urllib.parse.urlsplit(_url(var, host, port))
    return Listener(parts.hostname or host, parts.port or port, public)


def _oam_address(data: Data) -> str:
    return data["system"]["oam"]["external_oam_floating_address"]


def sysinv_listeners(data: Data) -> list[Listener]:
    """sysinv-api's sockets: every address until the unlock, then the mgmt floating address
    and haproxy's ``sysinv-restapi`` frontend on the OAM floating address."""
    return _listeners(data, "STXSIM_API", "STXSIM_PUBLIC_API", env.API_PORT)


def keystone_listeners(data: Data) -> list[Listener]:
    """keystone's sockets: every address until the unlock, then the mgmt floating address
    and haproxy's ``keystone-restapi`` frontend on the OAM floating address."""
    return _listeners(data, "STXSIM_KEYSTONE", "STXSIM_PUBLIC_KEYSTONE", env.KEYSTONE_PORT)


def _listeners(data: Data, variable: str, public_variable: str, port: int) -> list[Listener]:
    if not unlocked(data):
        return [_listener(variable, ALL_ADDRESSES, port)]
    return [
        _listener(variable, data["system"]["mgmt_floating"], port),
        _listener(public_variable, _oam_address(data), port, public=True),
    ]


def keystone_internal_url(data: Data) -> str:
    """Keystone on the mgmt floating address (where services on the management network, and
    the simulator waiting for it to start, reach it in both layouts)."""
    return _url("STXSIM_KEYSTONE", data["system"]["mgmt_floating"], env.KEYSTONE_PORT)


def keystone_auth_uri(data: Data) -> str:
    """Where sysinv's keystonemiddleware validates tokens (also its ``WWW-Authenticate``)."""
    if not unlocked(data):
        return _url("STXSIM_KEYSTONE", "localhost", env.KEYSTONE_PORT)
    return keystone_internal_url(data)


def catalog(data: Data) -> dict[str, dict[str, str]]:
    """The URL of each service type's ``public``, ``internal`` and ``admin`` endpoint."""
    if not unlocked(data):
        return {
            "identity": dict.fromkeys(("public", "internal", "admin"), "http://127.0.0.1:5000"),
            "platform": dict.fromkeys(("public", "internal", "admin"), "http://127.0.0.1:6385/v1/"),
        }
    mgmt, oam = data["system"]["mgmt_floating"], _oam_address(data)
    keystone = keystone_internal_url(data)
    sysinv = _url("STXSIM_API", mgmt, env.API_PORT) + SYSINV_PATH
    return {
        "identity": {
            "public": _url("STXSIM_PUBLIC_KEYSTONE", oam, env.KEYSTONE_PORT),
            "internal": keystone,
            "admin": keystone,
        },
        "platform": {
            "public": _url("STXSIM_PUBLIC_API", oam, env.API_PORT) + SYSINV_PATH,
            "internal": sysinv,
            "admin": sysinv,
        },
    }
