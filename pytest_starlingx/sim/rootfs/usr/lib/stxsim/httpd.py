"""Serving one HTTP service on several sockets, and writing its replies."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stxsim.endpoints import Listener

HandlerFor = Callable[[Listener], type[BaseHTTPRequestHandler]]


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: dict[str, Any] | bytes,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send `status` with `body` (a mapping goes as JSON) and `headers`."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    sent = {"Content-Type": "application/json", **(headers or {})}
    for name, value in sent.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request's body (read before replying, so the client never meets a reset)."""
    return handler.rfile.read(int(handler.headers.get("Content-Length", 0)))


def read_json(handler: BaseHTTPRequestHandler) -> Any:
    """The request's JSON body, ``{}`` when empty (ValueError when it is not JSON)."""
    return json.loads(read_body(handler) or b"{}")


def host_url(handler: BaseHTTPRequestHandler) -> str:
    """``http://`` and the address the client asked for (its Host header), as WebOb's and
    Flask's ``host_url`` make the links of sysinv and keystone."""
    host = handler.headers.get("Host")
    if not host:
        address, port = handler.server.server_address[:2]
        host = f"{address}:{port}"
    return f"http://{host}"


def serve(name: str, listeners: list[Listener], handler_for: HandlerFor) -> int:
    """Bind every listener (failing before serving any), then serve them until killed."""
    servers = []
    for listener in listeners:
        server = ThreadingHTTPServer((listener.host, listener.port), handler_for(listener))
        server.daemon_threads = True
        servers.append(server)
        kind = " (haproxy's frontend)" if listener.public else ""
        print(f"{name} listening on {listener.host}:{listener.port}{kind}", file=sys.stderr)
    sys.stderr.flush()
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()
    return 0
