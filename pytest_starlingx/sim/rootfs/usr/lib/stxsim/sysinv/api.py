"""sysinv-api: the HTTP server on controller-0 (port 6385) for the CLI and the host agents.

Every request is a JSON POST:
* `/v1/system` `{"argv": [...], "username": ..., "password": ...}` ->
  `{"stdout": ..., "stderr": ..., "status": N}` (one `system` command line); `/v1/fm` the
  same for one `fm` command line;
* `/v1/agent/register|heartbeat|report` -> see `agentops`, `/v1/agent/dhcp-lease` (dnsmasq's
  lease script) -> `pxe.dhcp_lease`; errors are HTTP 400 with `{"error": message}`.
`GET /` answers `{"service": "sysinv"}` so callers can wait for the server.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stxsim import env
from stxsim.sysinv import agentops, commands, db, pxe
from stxsim.sysinv.hosts import CommandError

AGENT_OPS = {
    "/v1/agent/register": agentops.register,
    "/v1/agent/heartbeat": agentops.heartbeat,
    "/v1/agent/report": agentops.report,
    "/v1/agent/dhcp-lease": pxe.dhcp_lease,
}


class Handler(BaseHTTPRequestHandler):
    """Dispatch JSON POSTs to the command runner or the agent operations."""

    server_version = "sysinv-api"

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """Liveness."""
        self._reply(200, {"service": "sysinv"})

    def do_POST(self) -> None:
        """Run a command line or an agent operation."""
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path in ("/v1/system", "/v1/fm"):
            out, err, status = commands.run(
                body["argv"], body.get("username", ""), body.get("password", ""),
                self.path.removeprefix("/v1/"),
            )  # fmt: skip
            self._reply(200, {"stdout": out, "stderr": err, "status": status})
            return
        op = AGENT_OPS.get(self.path)
        if op is None:
            self._reply(404, {"error": f"no such resource: {self.path}"})
            return
        try:
            with db.transaction() as data:
                result = op(data, body)
        except CommandError as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, result)


def bind_address() -> tuple[str, int]:
    """Where to listen: STXSIM_API's host and port, else the mgmt floating address."""
    with db.transaction(write=False) as data:
        floating = data["system"]["mgmt_floating"]
    url = urllib.parse.urlsplit(env.api_url(floating))
    return url.hostname or floating, url.port or env.API_PORT


def main(argv: list[str]) -> int:
    """Serve until killed."""
    host, port = bind_address()
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"sysinv-api listening on {host}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0
