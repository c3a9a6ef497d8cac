"""keystone-api: controller-0's identity service, as much of it as a client needs to log in.

StarlingX runs OpenStack's keystone (r/stx.10.0: ansible-playbooks ``roles/bootstrap/
apply-manifest/tasks/keystone_bootstrap.yml``, stx-puppet ``openstack/manifests/
keystone.pp``); this one answers, on the sockets of ``endpoints.keystone_listeners``
(keystone 23.0 ``keystone/api/auth.py``, ``common/render_token.py``, ``api/discovery.py``):

* ``POST /v3/auth/tokens``, password method, for the admin user of domain Default with the
  name and password bootstrap stored -> 201, the token in ``X-Subject-Token`` and the v3
  token body: project-scoped to ``admin`` (roles and catalog) when the request asks for it,
  else unscoped; anything else -> 401 with keystone's generic message (``auth/plugins/
  password.py`` hides which part was wrong), a malformed request -> 400 (keystone's
  ValidationError wording; its schema checks word some cases differently);
* ``GET /v3/auth/tokens`` (how keystonemiddleware validates): a valid ``X-Auth-Token`` and
  ``X-Subject-Token`` -> 200 and the subject token's body, an invalid subject -> 404;
* ``GET /v3`` and ``GET /``: the version documents.

Tokens last TOKEN_LIFETIME and carry their own content, signed with a key kept where keystone
keeps its fernet keys, so they survive a restart as fernet tokens do (these are signed, not
encrypted). What keystone-manage bootstrap creates (user, project, roles, services,
endpoints) has ids derived from the system's uuid: keystone's own are random.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from stxsim import endpoints, env, httpd
from stxsim.sysinv import db
from stxsim.sysinv.db import Data

TOKEN_LIFETIME = 3600  # stx-puppet openstack::keystone::params token_expiration
#: keystone_bootstrap.yml's "Create fernet-keys directory" under the platform filesystem.
KEY_FILE = "/opt/platform/keystone/fernet-keys/0"
DOMAIN = {"id": "default", "name": "Default"}
PROJECT = "admin"  # keystone-manage bootstrap --bootstrap-project-name=admin
#: keystone-manage bootstrap's roles: admin implies member implies reader, and a token lists
#: the implied roles too.
ROLES = ("admin", "member", "reader")
#: The catalog's services: keystone's own (configure_keystone.py) and sysinv's (starlingx/
#: config sysinv puppet/inventory.py SERVICE_NAME; service type ``platform``, cgtsclient
#: client.py SERVICE_TYPE).
SERVICES = {"identity": "keystone", "platform": "sysinv"}
UNAUTHORIZED = "The request you have made requires authentication."  # exception.Unauthorized


class KeystoneError(Exception):
    """A refused request: keystone's error body ``{"error": {code, title, message}}``."""

    def __init__(self, code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.code, self.title, self.message = code, title, message


def _unauthorized() -> KeystoneError:
    return KeystoneError(401, "Unauthorized", UNAUTHORIZED)


def _member(obj: Any, key: str, target: str) -> Any:
    """``obj[key]``, or keystone's ValidationError naming what is missing."""
    if not isinstance(obj, dict) or key not in obj:
        raise KeystoneError(
            400,
            "Bad Request",
            f"Expecting to find {key} in {target}. The server could not comply with the "
            "request since it is either malformed or otherwise incorrect. The client is "
            "assumed to be in error.",
        )
    return obj[key]


def object_id(data: Data, kind: str, name: str) -> str:
    """The id of one of bootstrap's keystone objects (uuid hex, like keystone's)."""
    return uuid.uuid5(uuid.UUID(data["system"]["uuid"]), f"{kind}:{name}").hex


def _default_domain(ref: Any) -> bool:
    return isinstance(ref, dict) and (
        ref.get("id") == DOMAIN["id"] or ref.get("name") == DOMAIN["name"]
    )


def authenticate(data: Data, auth: Any, now: float) -> dict[str, Any]:
    """The claims of a new token for the ``auth`` of a ``POST /v3/auth/tokens``."""
    identity = _member(auth, "identity", "auth")
    if _member(identity, "methods", "identity") != ["password"]:
        raise _unauthorized()
    user = _member(_member(identity, "password", "identity"), "user", "password")
    if not isinstance(user, dict):
        raise _unauthorized()
    admin = data["system"]
    user_id = object_id(data, "user", admin["admin_username"])
    named = user.get("name") == admin["admin_username"] and _default_domain(user.get("domain"))
    password = user.get("password")
    if not (user.get("id") == user_id or named) or not isinstance(password, str):
        raise _unauthorized()
    if db.password_digest(password) != admin["admin_password_sha256"]:
        raise _unauthorized()
    project_id = None
    scope = auth.get("scope")
    if scope is not None:
        project = scope.get("project") if isinstance(scope, dict) else None
        project_id = object_id(data, "project", PROJECT)
        if not isinstance(project, dict) or not (
            project.get("id") == project_id
            or (project.get("name") == PROJECT and _default_domain(project.get("domain")))
        ):
            raise _unauthorized()
    issued = int(now)
    return {
        "audit": _b64(secrets.token_bytes(16)),
        "expires": issued + TOKEN_LIFETIME,
        "issued": issued,
        "methods": ["password"],
        "project": project_id,
        "user": user_id,
    }


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(key: bytes, claims: dict[str, Any]) -> str:
    """The token carrying `claims`."""
    payload = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload)}"


def verify(key: bytes, data: Data, token: str, now: float) -> dict[str, Any] | None:
    """The claims of `token` if it is ours, unexpired and the admin user's; else None."""
    payload, _, mac = token.partition(".")
    if not hmac.compare_digest(mac.encode("latin-1"), _mac(key, payload).encode()):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if claims["expires"] <= now:
        return None
    if claims["user"] != object_id(data, "user", data["system"]["admin_username"]):
        return None
    return claims


def _isotime(epoch: float) -> str:
    """keystone's token times: UTC, whole seconds, six zero decimals, ``Z``."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def _catalog(data: Data, urls: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The v3 catalog (keystone catalog ``get_v3_catalog``): each service and its endpoints."""
    return [
        {
            "endpoints": [
                {
                    "id": object_id(data, "endpoint", f"{name}/{interface}"),
                    "interface": interface,
                    "region_id": endpoints.REGION,
                    "url": url,
                    "region": endpoints.REGION,
                }
                for interface, url in urls[kind].items()
            ],
            "id": object_id(data, "service", name),
            "type": kind,
            "name": name,
        }
        for kind, name in SERVICES.items()
    ]


def render(
    data: Data, claims: dict[str, Any], urls: dict[str, dict[str, str]] | None
) -> dict[str, Any]:
    """The token body (``render_token_response_from_model``); the catalog when `urls`."""
    token: dict[str, Any] = {
        "methods": claims["methods"],
        "user": {
            "domain": DOMAIN,
            "id": claims["user"],
            "name": data["system"]["admin_username"],
            "password_expires_at": None,
        },
        "audit_ids": [claims["audit"]],
        "expires_at": _isotime(claims["expires"]),
        "issued_at": _isotime(claims["issued"]),
    }
    if claims["project"]:
        token["project"] = {"domain": DOMAIN, "id": claims["project"], "name": PROJECT}
        token["is_domain"] = False
        token["roles"] = [{"id": object_id(data, "role", r), "name": r} for r in ROLES]
        if urls is not None:
            token["catalog"] = _catalog(data, urls)
    return {"token": token}


def version(base: str) -> dict[str, Any]:
    """The identity v3 version document (``api/discovery.py`` ``_get_versions_list``)."""
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


def signing_key() -> bytes:
    """The token key; made on first start, as bootstrap's ``keystone-manage fernet_setup``."""
    path = env.path(KEY_FILE)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32))
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key)
    return key


class Handler(BaseHTTPRequestHandler):
    """keystone's API on one socket."""

    server_version = "keystone"
    key: ClassVar[bytes] = b""  # set by main
    urls: ClassVar[dict[str, dict[str, str]]] = {}  # the catalog's endpoints, set by main

    def _error(self, error: KeystoneError) -> None:
        headers = {}
        if error.code == 401:  # keystone server/flask/application.py
            headers["WWW-Authenticate"] = f'Keystone uri="{httpd.host_url(self)}/v3"'
        body = {"error": {"code": error.code, "title": error.title, "message": error.message}}
        httpd.reply(self, error.code, body, headers)

    def _claims(self, data: Data, header: str) -> dict[str, Any] | None:
        return verify(self.key, data, self.headers.get(header, ""), time.time())

    def do_GET(self) -> None:
        """Version discovery, or validate the ``X-Subject-Token``."""
        path, _, query = self.path.partition("?")
        base = httpd.host_url(self)
        if path.rstrip("/") == "":
            versions = {"versions": {"values": [version(base)]}}
            httpd.reply(self, 300, versions, {"Location": f"{base}/v3/"})
        elif path.rstrip("/") == "/v3":
            httpd.reply(self, 200, {"version": version(base)})
        elif path == "/v3/auth/tokens":
            self._validate("nocatalog" not in query.split("&"))
        else:
            self._error(KeystoneError(404, "Not Found", "The resource could not be found."))

    def _validate(self, with_catalog: bool) -> None:
        subject = self.headers.get("X-Subject-Token", "")
        with db.transaction(write=False) as data:
            caller = self._claims(data, "X-Auth-Token")
            claims = self._claims(data, "X-Subject-Token")
            body = render(data, claims, self.urls if with_catalog else None) if claims else None
        if caller is None:
            self._error(_unauthorized())
        elif body is None:
            self._error(KeystoneError(404, "Not Found", f"Could not find token: {subject}."))
        else:
            httpd.reply(self, 200, body, {"X-Subject-Token": subject})

    def do_POST(self) -> None:
        """Issue a token."""
        path, _, query = self.path.partition("?")
        try:
            request = httpd.read_json(self)
        except ValueError:
            request = {}  # flask get_json(silent=True) or {}
        if path != "/v3/auth/tokens":
            self._error(KeystoneError(404, "Not Found", "The resource could not be found."))
            return
        try:
            with db.transaction(write=False) as data:
                claims = authenticate(data, _member(request, "auth", "request body"), time.time())
                urls = None if "nocatalog" in query.split("&") else self.urls
                body = render(data, claims, urls)
        except KeystoneError as exc:
            self._error(exc)
            return
        httpd.reply(self, 201, body, {"X-Subject-Token": sign(self.key, claims)})


def main(argv: list[str]) -> int:
    """Serve until killed, laid out as controller-0's state says now."""
    with db.transaction(write=False) as data:
        listeners = endpoints.keystone_listeners(data)
        Handler.urls = endpoints.catalog(data)
    Handler.key = signing_key()
    return httpd.serve("keystone-api", listeners, lambda listener: Handler)
