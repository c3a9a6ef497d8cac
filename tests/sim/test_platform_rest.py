"""The simulator's keystone and sysinv REST API on the host: tokens, then `GET /v1/ihosts`.

Real processes against temporary STXSIM_ROOTs, as in test_platform.py; every listener on
127.0.0.1 (the controller's `urls`). StarlingX's own client, cgtsclient, is not installable
here (it is not on PyPI, and only the package registries are reachable), so the replies are
checked against what its sources say: field names from sysinv's host.py, bodies from
keystone, keystonemiddleware, wsme and sysinv's ParsableErrorMiddleware.
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_platform_support import DUPLEX_YML, PASSWORD, ROOTFS, Controller, free_port

sys.path.insert(0, str(ROOTFS / "usr" / "lib"))
from stxsim import endpoints

from pytest_starlingx.platform_api import ApiUnavailable, PlatformApi
from pytest_starlingx.system_output import parse_table as parse_host_list

pytestmark = pytest.mark.fast  # needs no VM: host processes only

#: A host in `GET /v1/ihosts`: starlingx/config sysinv api/controllers/v1/host.py (r/stx.10.0)
#: Host.convert_with_links' minimum_fields, less ``peer_id`` (not a field of the API's Host)
#: and ``vsc_controllers`` (unset unless the vswitch is nuage_vrs), plus the links.
COLLECTION_FIELDS = {
    "id", "uuid", "hostname", "personality", "subfunctions", "subfunction_oper",
    "subfunction_avail", "administrative", "operational", "availability", "invprovision",
    "task", "mtce_info", "action", "uptime", "reserved", "ihost_action", "vim_progress_status",
    "mgmt_mac", "mgmt_ip", "location", "bm_ip", "bm_type", "bm_username", "isystem_uuid",
    "capabilities", "serialid", "config_status", "config_applied", "config_target",
    "created_at", "updated_at", "boot_device", "rootfs_device", "hw_settle", "install_output",
    "console", "tboot", "ttys_dcd", "software_load", "target_load", "peers", "install_state",
    "install_state_info", "iscsi_initiator_name", "device_image_update", "reboot_needed",
    "inv_state", "clock_synchronization", "max_cpu_mhz_configured", "min_cpu_mhz_allowed",
    "max_cpu_mhz_allowed", "cstates_available", "apparmor", "nvme_host_id", "nvme_host_nqn",
    "sw_version", "links",
}  # fmt: skip
#: What `GET /v1/ihosts/<id>` adds (every field: ``forisystemid``, the sub-collections' links).
SUBCOLLECTIONS = {
    "iinterfaces", "ports", "ethernet_ports", "inodes", "icpus", "imemorys", "istors",
    "idisks", "partitions", "ceph_mon", "ipvs", "ilvgs", "host_fs", "kube_update_ca",
    "isensors", "isensorgroups", "pci_devices", "lldp_agents", "lldp_neighbours", "labels",
}  # fmt: skip
HOST_FIELDS = COLLECTION_FIELDS | SUBCOLLECTIONS | {"forisystemid"}
UNAUTHORIZED = {  # keystonemiddleware's, and keystone's own
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}
KEYSTONE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z$")
WORKER_MAC = "52:54:00:00:aa:01"
NEW_MAC = "52:54:00:00:bb:02"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


def call(
    base: str, path: str, body: Any = None, token: str | None = None, **headers: str
) -> Response:
    """One request to `base` (``http://127.0.0.1:port``): a POST of `body` as JSON, else a
    GET; `token` goes as ``X-Auth-Token``, `headers` with ``_`` for ``-``."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if body is not None:
        sent["Content-Type"] = "application/json"
    if token:
        sent["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request("POST" if body is not None else "GET", path, data, sent)
        reply = conn.getresponse()
        raw = reply.read()
    finally:
        conn.close()
    return Response(reply.status, dict(reply.getheaders()), json.loads(raw) if raw else None)


def password_auth(
    password: str = PASSWORD, user: str = "admin", domain: str = "Default", project: str = "admin"
) -> dict[str, Any]:
    """The body keystoneauth's v3 password plugin sends (cgtsclient's _make_session)."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": domain}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }
    }


def token(keystone: str) -> str:
    """A project-scoped admin token from `keystone`."""
    reply = call(keystone, "/v3/auth/tokens", password_auth())
    assert reply.status == 201, reply.body
    return reply.headers["X-Subject-Token"]


def catalog(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A token body's catalog as service type -> interface -> URL."""
    return {
        service["type"]: {e["interface"]: e["url"] for e in service["endpoints"]}
        for service in body["token"]["catalog"]
    }


@pytest.fixture(scope="module")
def simplex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """A bootstrapped AIO-SX controller-0, shared by the tests that only read from it."""
    node = Controller(
        tmp_path_factory.mktemp("simplex"), "controller-0", f"http://127.0.0.1:{free_port()}"
    )
    assert node.bootstrap().returncode == 0
    yield node
    node.stop()


@pytest.fixture(scope="module")
def standard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """A bootstrapped standard controller-0, worker-0 added by `host-add` and a node listed
    by its firmware's pxeboot lease (hostname None); shared by tests that only read."""
    node = Controller(
        tmp_path_factory.mktemp("standard"), "controller-0", f"http://127.0.0.1:{free_port()}"
    )
    assert node.bootstrap(DUPLEX_YML, subfunction="controller").returncode == 0
    node.ok("host-add", "-n", "worker-0", "-p", "worker", "-m", WORKER_MAC)
    lease = node.run(
        "sysinv-dnsmasq-lease-update", "add", NEW_MAC, "169.254.202.4",
        DNSMASQ_TAGS="pxeboot bios enp2s2",
    )  # fmt: skip
    assert lease.returncode == 0, lease.stderr
    yield node
    node.stop()


@pytest.fixture
def c0(tmp_path: Path) -> Iterator[Controller]:
    """A bootstrapped AIO-SX controller-0 of the test's own."""
    node = Controller(tmp_path, "controller-0", f"http://127.0.0.1:{free_port()}")
    assert node.bootstrap().returncode == 0
    yield node
    node.stop()


def test_keystone_issues_a_v3_token_for_the_admin_password(simplex: Controller) -> None:
    """keystone api/auth.py (201, X-Subject-Token) and render_token.py; until controller-0's
    unlock the catalog is bootstrap's (configure_keystone.py, create_sysinv_endpoints.py)."""
    keystone = simplex.urls["STXSIM_KEYSTONE"]
    reply = call(keystone, "/v3/auth/tokens", password_auth())
    assert reply.status == 201 and reply.headers["Content-Type"] == "application/json"
    issued = reply.headers["X-Subject-Token"]
    body = reply.body["token"]
    assert body["methods"] == ["password"]
    assert body["user"]["name"] == "admin" and body["user"]["domain"] == {
        "id": "default",
        "name": "Default",
    }
    assert body["project"]["name"] == "admin" and body["is_domain"] is False
    assert {role["name"] for role in body["roles"]} == {"admin", "member", "reader"}
    assert KEYSTONE_TIME.match(body["issued_at"]) and KEYSTONE_TIME.match(body["expires_at"])
    lifetime = datetime.datetime.fromisoformat(body["expires_at"]) - (
        datetime.datetime.fromisoformat(body["issued_at"])
    )
    assert lifetime == datetime.timedelta(hours=1)  # stx-puppet token_expiration
    assert catalog(reply.body) == {
        "identity": dict.fromkeys(("public", "internal", "admin"), "http://127.0.0.1:5000"),
        "platform": dict.fromkeys(("public", "internal", "admin"), "http://127.0.0.1:6385/v1/"),
    }
    # keystonemiddleware's validation of that token, and of a token keystone never issued
    validated = call(keystone, "/v3/auth/tokens", token=issued, X_Subject_Token=issued)
    assert validated.status == 200 and validated.headers["X-Subject-Token"] == issued
    assert validated.body["token"]["user"] == body["user"]
    unknown = call(keystone, "/v3/auth/tokens", token=issued, X_Subject_Token="gAAAAAB")
    assert unknown.status == 404
    assert unknown.body["error"]["message"] == "Could not find token: gAAAAAB."
    version = call(keystone, "/v3")
    assert version.status == 200 and version.body["version"]["id"] == "v3.14"


@pytest.mark.parametrize(
    "auth",
    [
        password_auth(password="Wrong*Passw0rd"),
        password_auth(user="sysadmin"),
        password_auth(domain="Other"),
        password_auth(project="services"),
    ],
    ids=["password", "user", "domain", "project"],
)
def test_keystone_refuses_anything_but_the_admin_password(simplex: Controller, auth) -> None:
    """keystone's 401 hides which part was wrong (auth/plugins/password.py, exception.py)."""
    keystone = simplex.urls["STXSIM_KEYSTONE"]
    reply = call(keystone, "/v3/auth/tokens", auth)
    assert (reply.status, reply.body) == (401, UNAUTHORIZED)
    assert reply.headers["WWW-Authenticate"] == f'Keystone uri="{keystone}/v3"'
    assert "X-Subject-Token" not in reply.headers


def test_ihosts_needs_a_valid_token(simplex: Controller) -> None:
    """sysinv's keystonemiddleware (api/acl.py): 401 with its body and challenge, naming the
    keystone sysinv asks; the public route `/` needs none."""
    api, keystone = simplex.urls["STXSIM_API"], simplex.urls["STXSIM_KEYSTONE"]
    forged = token(keystone)[:-4] + "AAAA"
    for path, credential in (("/v1/ihosts/", None), ("/v1/ihosts", forged)):
        reply = call(api, path, token=credential)
        assert (reply.status, reply.body) == (401, UNAUTHORIZED)
        assert reply.headers["WWW-Authenticate"] == f'Keystone uri="{keystone}"'
    assert call(api, "/").status == 200
    assert call(api, "/v1/ihosts/", token=token(keystone)).status == 200


def test_ihosts_lists_the_hosts_with_sysinvs_fields_and_values(standard: Controller) -> None:
    """`GET /v1/ihosts` as cgtsclient's host-list reads it: the field set of host.py's
    collection (checked against that list: the real client is not installable here), the
    values the simulator's own `system host-list`/`host-show` print, the links."""
    c0 = standard
    api = c0.urls["STXSIM_API"]
    credential = token(c0.urls["STXSIM_KEYSTONE"])
    reply = call(api, "/v1/ihosts/", token=credential)
    assert reply.status == 200 and list(reply.body) == ["ihosts"]
    assert call(api, "/v1/ihosts", token=credential).body == reply.body
    hosts = reply.body["ihosts"]
    assert [(h["id"], h["hostname"], h["personality"]) for h in hosts] == [
        (1, "controller-0", "controller"),
        (2, "worker-0", "worker"),
        (3, None, None),
    ]
    for host in hosts:
        assert set(host) == COLLECTION_FIELDS
        assert host["links"] == [
            {"href": f"{api}/v1/ihosts/{host['uuid']}", "rel": "self"},
            {"href": f"{api}/ihosts/{host['uuid']}", "rel": "bookmark"},
        ]
        shown = c0.show("host-show", str(host["id"]))
        assert {k: str(host[k]) for k in shown if k != "uptime"} == {
            k: v for k, v in shown.items() if k != "uptime"
        }
    controller, worker, new = hosts
    assert (controller["mgmt_mac"], controller["mgmt_ip"]) == (c0.macs[1], "192.168.204.3")
    assert controller["subfunctions"] == "controller"
    assert controller["capabilities"]["Personality"] == "Controller-Active"
    assert (worker["mgmt_mac"], worker["mgmt_ip"]) == (WORKER_MAC, "192.168.204.5")
    # an unset column reads as sysinv's database default (db/sqlalchemy/models.py ihost)
    assert (worker["subfunction_oper"], worker["subfunction_avail"]) == (
        "disabled",
        "not-installed",
    )
    assert (new["mgmt_mac"], new["mgmt_ip"], new["subfunctions"]) == (NEW_MAC, None, None)
    for host in hosts:
        assert (host["administrative"], host["operational"]) == ("locked", "disabled")
        assert (host["reserved"], host["reboot_needed"], host["ttys_dcd"]) == (False,) * 3
        assert host["software_load"] == host["target_load"] == host["sw_version"] == "24.09"
    assert [h["availability"] for h in hosts] == ["online", "offline", "offline"]
    workers = call(api, "/v1/ihosts?personality=worker", token=credential).body["ihosts"]
    assert [h["hostname"] for h in workers] == ["worker-0"]
    detail = call(api, "/v1/ihosts/detail", token=credential).body["ihosts"]
    assert [set(h) for h in detail] == [HOST_FIELDS] * 3


def test_one_host_by_uuid_id_or_name_and_404_for_an_unknown_one(standard: Controller) -> None:
    """host.py get_one (every field) through the database's identity filter; an unknown host
    is exception.ServerNotFound as wsme's fault in ParsableErrorMiddleware's error_message."""
    c0 = standard
    api = c0.urls["STXSIM_API"]
    credential = token(c0.urls["STXSIM_KEYSTONE"])
    listed = call(api, "/v1/ihosts", token=credential).body["ihosts"][1]
    one = call(api, f"/v1/ihosts/{listed['uuid']}", token=credential)
    assert one.status == 200 and set(one.body) == HOST_FIELDS
    assert {k: v for k, v in one.body.items() if k in COLLECTION_FIELDS} == listed
    assert one.body["forisystemid"] == 1
    assert one.body["ports"] == [
        {"href": f"{api}/v1/ihosts/{listed['uuid']}/ports", "rel": "self"},
        {"href": f"{api}/ihosts/{listed['uuid']}/ports", "rel": "bookmark"},
    ]
    for ident in ("2", "worker-0"):
        assert call(api, f"/v1/ihosts/{ident}", token=credential).body == one.body
    unknown = "0d4c7bc5-2b8a-4a55-9b62-2c2f5d9e1a77"
    for ident in (unknown, "7", "worker-9"):
        reply = call(api, f"/v1/ihosts/{ident}", token=credential)
        assert reply.status == 404 and list(reply.body) == ["error_message"]
        assert json.loads(reply.body["error_message"]) == {
            "faultcode": "Client",
            "faultstring": f"Server {ident} could not be found.",
            "debuginfo": None,
        }
    assert call(api, f"/v1/ihosts/{unknown}").status == 401  # the token comes first
    reply = call(api, "/v1/nothing", token=credential)
    assert reply.status == 404
    assert json.loads(reply.body["error_message"]) == {
        "faultstring": "The resource could not be found."
    }


def test_the_plugins_host_list_over_the_api_is_what_system_host_list_prints(
    standard: Controller,
) -> None:
    """What the plugin polls while hosts install (``platform_api``): host-list's rows, with
    each host's mgmt MAC, which finds a network-booted host among the unnamed ones."""
    c0 = standard
    urls = (c0.urls["STXSIM_KEYSTONE"], c0.urls["STXSIM_API"])
    rows = PlatformApi(lambda: urls, PASSWORD).hosts()
    printed = parse_host_list(c0.ok("host-list", "--nowrap"))
    assert [{k: v for k, v in row.items() if k != "mgmt_mac"} for row in rows] == printed
    assert [row["hostname"] for row in rows] == ["controller-0", "worker-0", "None"]
    assert [row["mgmt_mac"] for row in rows] == [c0.macs[1], WORKER_MAC, NEW_MAC]


def test_the_plugins_api_client_says_when_it_gets_no_answer(simplex: Controller) -> None:
    """A wrong password or nothing listening: ``ApiUnavailable`` (the plugin then lists the
    hosts on the console, whose CLI says what is wrong)."""
    urls = (simplex.urls["STXSIM_KEYSTONE"], simplex.urls["STXSIM_API"])
    with pytest.raises(ApiUnavailable, match="HTTP 401"):
        PlatformApi(lambda: urls, "not-" + PASSWORD).hosts()
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiUnavailable, match="refused"):
        PlatformApi(lambda: (closed, closed), PASSWORD).hosts()


def test_once_unlocked_the_apis_answer_on_the_oam_floating_address(c0: Controller) -> None:
    """After the unlock's reboot: SM's oam-ipv4 (the OAM floating address on the OAM port) and
    haproxy's frontends, which reach sysinv's REST API only; the catalog is puppet's (public
    on OAM, internal and admin on mgmt); a token from before the reboot still works."""
    before = token(c0.urls["STXSIM_KEYSTONE"])
    c0.ok("host-if-modify", "controller-0", "enp2s1", "-c", "platform")
    c0.ok("interface-network-assign", "controller-0", "enp2s1", "oam")
    c0.ok("host-unlock", "controller-0")
    c0.wait("reboot hook", lambda: "reboot" in c0.hook_calls(), timeout=5)
    assert c0.reboot().returncode == 0
    assert "ip address add 10.10.10.2/24 dev enp2s1" in c0.sysops()
    public_keystone, public_api = c0.urls["STXSIM_PUBLIC_KEYSTONE"], c0.urls["STXSIM_PUBLIC_API"]
    reply = call(public_keystone, "/v3/auth/tokens", password_auth())
    assert reply.status == 201
    internal_keystone = c0.urls["STXSIM_KEYSTONE"]
    assert catalog(reply.body) == {
        "identity": {
            "public": public_keystone,
            "internal": internal_keystone,
            "admin": internal_keystone,
        },
        "platform": {
            "public": f"{public_api}/v1",
            "internal": f"{c0.urls['STXSIM_API']}/v1",
            "admin": f"{c0.urls['STXSIM_API']}/v1",
        },
    }
    credential = reply.headers["X-Subject-Token"]
    hosts = call(public_api, "/v1/ihosts", token=credential).body["ihosts"]
    assert [(h["hostname"], h["administrative"]) for h in hosts] == [("controller-0", "unlocked")]
    assert hosts[0]["links"][0]["href"].startswith(f"{public_api}/v1/ihosts/")
    assert call(public_api, "/v1/ihosts", token=before).status == 200
    command = {"argv": ["host-list"], "username": "admin", "password": PASSWORD}
    assert call(public_api, "/v1/system", command).status == 401
    assert call(public_api, "/v1/system", command, token=credential).status == 404
    assert call(c0.urls["STXSIM_API"], "/v1/system", command).body["status"] == 0


def test_the_guests_listeners_follow_starlingxs_layout(monkeypatch) -> None:
    """On the guest (no host-test URLs): every address until the unlock (bootstrap's
    sysinv.conf and keystone-extra.conf), then the mgmt floating address and haproxy's
    frontends on the OAM floating address (stx-puppet, sysinv puppet/)."""
    monkeypatch.setenv("STXSIM_ROOT", "/")
    for var in ("STXSIM_API", "STXSIM_KEYSTONE", "STXSIM_PUBLIC_API", "STXSIM_PUBLIC_KEYSTONE"):
        monkeypatch.delenv(var, raising=False)
    c0 = {"hostname": "controller-0", "administrative": "locked"}
    data = {
        "system": {
            "mgmt_floating": "192.168.204.2",
            "oam": {
                "external_oam_subnet": "10.10.10.0/24",
                "external_oam_floating_address": "10.10.10.2",
            },
        },
        "hosts": [c0],
    }
    Listener = endpoints.Listener
    assert endpoints.sysinv_listeners(data) == [Listener("0.0.0.0", 6385)]
    assert endpoints.keystone_listeners(data) == [Listener("0.0.0.0", 5000)]
    assert endpoints.keystone_auth_uri(data) == "http://localhost:5000"
    c0["administrative"] = "unlocked"
    assert endpoints.sysinv_listeners(data) == [
        Listener("192.168.204.2", 6385),
        Listener("10.10.10.2", 6385, public=True),
    ]
    assert endpoints.keystone_listeners(data) == [
        Listener("192.168.204.2", 5000),
        Listener("10.10.10.2", 5000, public=True),
    ]
    assert endpoints.keystone_auth_uri(data) == "http://192.168.204.2:5000"
    assert endpoints.oam_floating(data) == "10.10.10.2/24"
    assert endpoints.catalog(data) == {
        "identity": {
            "public": "http://10.10.10.2:5000",
            "internal": "http://192.168.204.2:5000",
            "admin": "http://192.168.204.2:5000",
        },
        "platform": {
            "public": "http://10.10.10.2:6385/v1",
            "internal": "http://192.168.204.2:6385/v1",
            "admin": "http://192.168.204.2:6385/v1",
        },
    }
