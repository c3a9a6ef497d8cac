"""keystonemiddleware's auth_token in front of sysinv's REST API.

sysinv wraps its API in keystonemiddleware (starlingx/config sysinv ``api/acl.py``,
``api/middleware/auth_token.py``, r/stx.10.0): a request to anything but the public routes
(``api/config.py`` ``acl_public_routes``; of those the simulator serves ``/``) needs an
``X-Auth-Token`` that keystone confirms (``GET /v3/auth/tokens``), else 401 with
keystonemiddleware's body and ``WWW-Authenticate: Keystone uri="<auth_uri>"``, or 503 when
keystone does not answer (keystonemiddleware 10.2 ``auth_token/__init__.py``
``process_request``, ``_do_fetch_token``). keystonemiddleware validates with a token of its
own service user; the simulator has none and lets the token validate itself, which keystone's
policy allows its subject.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping

PUBLIC_ROUTES = ("", "/v1")  # acl_public_routes '/' and '/v1', after rstrip('/')
UNAUTHORIZED = json.dumps(
    {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
).encode()
UNAVAILABLE = b"The Keystone service is temporarily unavailable."

Rejection = tuple[int, dict[str, str], bytes]


def public(path: str) -> bool:
    """True for a route that needs no token."""
    return path.rstrip("/") in PUBLIC_ROUTES


def _confirmed(auth_uri: str, token: str) -> bool:
    """Ask keystone whether `token` is valid (OSError when keystone does not answer)."""
    parts = urllib.parse.urlsplit(auth_uri)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
    try:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token}
        conn.request("GET", "/v3/auth/tokens?nocatalog", headers=headers)
        response = conn.getresponse()
        response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"keystone at {auth_uri}: {exc}") from exc
    finally:
        conn.close()
    return response.status == 200


def reject(headers: Mapping[str, str], auth_uri: str) -> Rejection | None:
    """None when the request's token is valid; else the status, headers and body to send."""
    token = headers.get("X-Auth-Token")
    if token:
        try:
            if _confirmed(auth_uri, token):
                return None
        except OSError:
            return 503, {"Content-Type": "text/plain; charset=UTF-8"}, UNAVAILABLE
    challenge = {
        "Content-Type": "application/json; charset=UTF-8",
        "WWW-Authenticate": f'Keystone uri="{auth_uri}"',
    }
    return 401, challenge, UNAUTHORIZED
