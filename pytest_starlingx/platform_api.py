"""sysinv's host list over its REST API, from the host through the lab's OAM endpoints.

What ``system host-list`` prints, without running it: cgtsclient's ``host-list``
(starlingx/config ``cgtsclient/v1/ihost_shell.py``) is ``GET /v1/ihosts/`` on sysinv
(``sysinv/api/controllers/v1/host.py``, ``HostController.get_all``) with a keystone token
(``POST /v3/auth/tokens``, password method, the admin user and project of domain Default, as
the platform's ``openrc`` gives the CLI). A host-list on the console starts a Python process on
the controller each time, seconds of its CPU; the API answers from sysinv's running server.

The rows have host-list's columns and values (``None`` where sysinv has no value: a host not
yet given a name), and the ``mgmt_mac`` that ``host-show`` would be asked for.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

#: host-list's columns (cgtsclient ``ihost_shell.do_host_list``) and the MAC that finds a
#: network-booted host among the unnamed ones.
HOST_FIELDS = (
    "id", "hostname", "personality", "administrative", "operational", "availability",
    "mgmt_mac",
)  # fmt: skip
ADMIN_USER = "admin"  # ansible-playbooks bootstrap ``admin_username``
ADMIN_PROJECT = "admin"
DOMAIN = "Default"
REQUEST_TIMEOUT = 30.0  # seconds for one request to a controller under load

#: The endpoints' base URLs (keystone, sysinv): a callable, as opening them may wait for the
#: lab's gateway; :class:`ApiUnavailable` from it means the lab has no way in from the host.
Urls = Callable[[], tuple[str, str]]


class ApiUnavailable(Exception):
    """The API did not answer (not listening yet, a reboot, a timeout, no gateway)."""


class PlatformApi:
    """The admin's view of sysinv's hosts, with one keystone token kept until refused."""

    def __init__(self, urls: Urls, password: str) -> None:
        self._urls = urls
        self._password = password
        self._token: str | None = None
        self._lock = threading.Lock()
        # never through a proxy: the endpoints are this machine's loopback ports
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def hosts(self) -> list[dict[str, str]]:
        """``system host-list`` as rows (plus ``mgmt_mac``); :class:`ApiUnavailable` if the
        API does not answer."""
        keystone, sysinv = self._urls()
        with self._lock:
            status, body = self._get_hosts(keystone, sysinv)
            if status == 401:  # the token expired, or is from before a restart: once more
                self._token = None
                status, body = self._get_hosts(keystone, sysinv)
        if status != 200:
            raise ApiUnavailable(f"GET /v1/ihosts/: HTTP {status}")
        return [_row(host) for host in body.get("ihosts", [])]

    def _get_hosts(self, keystone: str, sysinv: str) -> tuple[int, Any]:
        """``GET /v1/ihosts/`` with the kept token, or a new one (the caller holds the lock)."""
        if self._token is None:
            self._token = self._new_token(keystone)
        status, body, _headers = self._exchange(
            "GET", f"{sysinv}/v1/ihosts/", {"X-Auth-Token": self._token}, None
        )
        return status, body

    def _new_token(self, keystone: str) -> str:
        domain = {"name": DOMAIN}
        user = {"name": ADMIN_USER, "domain": domain, "password": self._password}
        auth = {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": {"name": ADMIN_PROJECT, "domain": domain}},
        }
        status, _body, headers = self._exchange(
            "POST", f"{keystone}/v3/auth/tokens", {"Content-Type": "application/json"},
            json.dumps({"auth": auth}).encode(),
        )  # fmt: skip
        token = headers.get("X-Subject-Token")
        if status != 201 or not token:
            raise ApiUnavailable(f"keystone gave no token (HTTP {status})")
        return token

    def _exchange(
        self, method: str, url: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[int, Any, Any]:
        """(status, JSON body or None, headers); :class:`ApiUnavailable` without an answer."""
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        request.add_header("Accept", "application/json")
        try:
            with self._opener.open(request, timeout=REQUEST_TIMEOUT) as reply:
                status, raw, got = reply.status, reply.read(), reply.headers
        except urllib.error.HTTPError as exc:
            status, raw, got = exc.code, exc.read(), exc.headers
        except (OSError, ValueError) as exc:  # refused, reset, timed out, a half reply
            raise ApiUnavailable(f"{method} {url}: {exc}") from exc
        if status >= 500:
            raise ApiUnavailable(f"{method} {url}: HTTP {status}")
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            raise ApiUnavailable(f"{method} {url}: not JSON (HTTP {status})") from exc
        return status, body, got


def _row(host: dict[str, Any]) -> dict[str, str]:
    """One host as host-list shows it: every value a string, ``None`` for no value."""
    return {name: "None" if host.get(name) is None else str(host[name]) for name in HOST_FIELDS}
