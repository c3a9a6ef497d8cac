"""A tiny JSON-over-HTTP/1.0 client for sysinv-api.

Plain sockets rather than http.client: `system` runs under software emulation on the guest
and http.client drags in the email package, which costs more than the whole request.
"""

from __future__ import annotations

import json
import socket
from typing import Any


class ApiError(Exception):
    """sysinv answered with an error (`status` is the HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_url(base_url: str) -> tuple[str, int]:
    """(host, port) of `http://host:port/...` (IPv4 or names; port 80 when absent)."""
    hostport = base_url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return (host, int(port)) if host else (hostport, 80)


def post(
    base_url: str, path: str, payload: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """POST `payload` to `base_url + path`; return the JSON reply or raise ApiError/OSError."""
    host, port = split_url(base_url)
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    chunks = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(head + body)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    header, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(header.split(b" ", 2)[1])
        reply = json.loads(content or b"{}")
    except (IndexError, ValueError) as exc:
        raise OSError(f"malformed reply from {base_url}: {header[:80]!r}") from exc
    if status != 200:
        raise ApiError(status, reply.get("error", f"HTTP {status}"))
    return reply
