"""sysinv-api: the HTTP server on controller-0 (port 6385): sysinv's REST API for clients,
JSON POSTs for the simulator's own CLI and host agents.

* ``GET /v1/ihosts[/...]``: sysinv's REST API (see ``rest``), behind keystonemiddleware (see
  ``authtoken``): without a valid ``X-Auth-Token`` 401;
* ``GET /`` (a public route) answers ``{"service": "sysinv"}`` so callers can wait for the
  server;
* JSON POSTs, the simulator's stand-ins for cgtsclient's and the agents' traffic (no token):
  ``/v1/system`` ``{"argv": [...], "username": ..., "password": ...}`` ->
  ``{"stdout": ..., "stderr": ..., "status": N}`` (one `system` command line); ``/v1/fm`` the
  same for one `fm` command line; ``/v1/agent/register|heartbeat|report`` -> see
  ``agentops``, ``/v1/agent/dhcp-lease`` (dnsmasq's lease script) -> ``pxe.dhcp_lease``;
  errors are HTTP 400 with ``{"error": message}``.

It listens where ``endpoints.sysinv_listeners`` says; haproxy's frontend on the OAM floating
address (once controller-0 is unlocked) reaches the REST API only.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

from stxsim import endpoints, httpd
from stxsim.sysinv import agentops, authtoken, commands, db, pxe, rest
from stxsim.sysinv.hosts import CommandError

AGENT_OPS = {
    "/v1/agent/register": agentops.register,
    "/v1/agent/heartbeat": agentops.heartbeat,
    "/v1/agent/report": agentops.report,
    "/v1/agent/dhcp-lease": pxe.dhcp_lease,
}


class Handler(BaseHTTPRequestHandler):
    """sysinv-api on its own socket: the REST API and the simulator's POSTs."""

    server_version = "sysinv-api"
    auth_uri: ClassVar[str] = ""  # keystone, for keystonemiddleware: set by main

    def _authenticated(self) -> bool:
        """keystonemiddleware: True, or the rejection has been sent."""
        rejection = authtoken.reject(self.headers, self.auth_uri)
        if rejection:
            status, headers, body = rejection
            httpd.reply(self, status, body, headers)
        return rejection is None

    def do_GET(self) -> None:
        """Liveness, or a REST resource."""
        path, _, query = self.path.partition("?")
        if path == "/":
            httpd.reply(self, 200, {"service": "sysinv"})
            return
        if not authtoken.public(path) and not self._authenticated():
            return
        with db.transaction(write=False) as data:
            status, body = rest.get(data, path, query, httpd.host_url(self), time.time())
        httpd.reply(self, status, body)

    def do_POST(self) -> None:
        """Run a command line or an agent operation."""
        body = httpd.read_json(self)
        if self.path in ("/v1/system", "/v1/fm"):
            out, err, status = commands.run(
                body["argv"], body.get("username", ""), body.get("password", ""),
                self.path.removeprefix("/v1/"),
            )  # fmt: skip
            httpd.reply(self, 200, {"stdout": out, "stderr": err, "status": status})
            return
        op = AGENT_OPS.get(self.path)
        if op is None:
            httpd.reply(self, 404, {"error": f"no such resource: {self.path}"})
            return
        try:
            with db.transaction() as data:
                result = op(data, body)
        except CommandError as exc:
            httpd.reply(self, 400, {"error": str(exc)})
            return
        httpd.reply(self, 200, result)


class PublicHandler(Handler):
    """haproxy's ``sysinv-restapi`` frontend: sysinv's REST API only (the simulator's POSTs are
    no part of sysinv's API)."""

    def do_POST(self) -> None:
        """No REST resource here takes a POST."""
        httpd.read_body(self)
        if self._authenticated():
            httpd.reply(self, *rest.not_found())


def main(argv: list[str]) -> int:
    """Serve until killed, laid out as controller-0's state says now."""
    with db.transaction(write=False) as data:
        listeners = endpoints.sysinv_listeners(data)
        Handler.auth_uri = endpoints.keystone_auth_uri(data)
    return httpd.serve(
        "sysinv-api", listeners, lambda listener: PublicHandler if listener.public else Handler
    )
