"""A tiny JSON-over-HTTP client for sysinv-api (http.client only: cheap to import)."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any


class ApiError(Exception):
    """sysinv answered with an error (`status` is the HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def post(
    base_url: str, path: str, payload: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """POST `payload` to `base_url + path`; return the JSON reply or raise ApiError/OSError."""
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(payload), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
    finally:
        conn.close()
    if resp.status != 200:
        raise ApiError(resp.status, body.get("error", resp.reason))
    return body
