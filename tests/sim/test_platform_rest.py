"""The simulator's keystone on the host: tokens, the catalog, where it listens.

Real processes against temporary STXSIM_ROOTs, as in test_platform.py; every listener on
127.0.0.1 (the controller's `urls`). The replies are checked against what keystone's sources
say.
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
from test_platform_support import PASSWORD, ROOTFS, Controller, free_port

sys.path.insert(0, str(ROOTFS / "usr" / "lib"))
from stxsim import endpoints

pytestmark = pytest.mark.fast  # needs no VM: host processes only

UNAUTHORIZED = {  # keystone's (exception.Unauthorized)
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}
KEYSTONE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z$")


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


def test_once_unlocked_keystone_answers_on_the_oam_floating_address(c0: Controller) -> None:
    """After the unlock's reboot: SM's oam-ipv4 (the OAM floating address on the OAM port) and
    haproxy's keystone frontend; the catalog is puppet's (public on OAM, internal and admin
    on mgmt); a token from before the reboot still validates."""
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
    validated = call(public_keystone, "/v3/auth/tokens", token=before, X_Subject_Token=before)
    assert validated.status == 200


def test_the_guests_keystone_follows_starlingxs_layout(monkeypatch) -> None:
    """On the guest (no host-test URLs): every address until the unlock (bootstrap's
    keystone-extra.conf), then the mgmt floating address and haproxy's frontend on the OAM
    floating address (stx-puppet, sysinv puppet/)."""
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
    assert endpoints.keystone_listeners(data) == [Listener("0.0.0.0", 5000)]
    c0["administrative"] = "unlocked"
    assert endpoints.keystone_listeners(data) == [
        Listener("192.168.204.2", 5000),
        Listener("10.10.10.2", 5000, public=True),
    ]
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
