"""sysinv's REST API: the host resources a client reads first.

As sysinv serves them (starlingx/config sysinv ``api/controllers/v1/host.py``, r/stx.10.0;
cgtsclient ``v1/ihost.py`` reads them for ``host-list`` and ``host-show``):

* ``GET /v1/ihosts`` -> ``{"ihosts": [...]}`` (``HostController.get_all``, by id; the
  ``personality`` filter), each host with ``convert_with_links``' reduced field list
  (``minimum_fields``: every field but ``forisystemid`` and the links to sub-collections);
* ``GET /v1/ihosts/detail`` -> the same with every field (``detail``);
* ``GET /v1/ihosts/<id|uuid|hostname>`` -> one host with every field (``get_one``; the
  database's ``add_identity_filter`` takes an integer as id, a uuid as uuid, anything else as
  hostname), or 404 ``Server <x> could not be found.`` (``exception.ServerNotFound``).

Field values are ``hosts.host_fields``. Paging and sorting (``limit``, ``marker``,
``sort_key``, ``sort_dir``) are not modelled. Errors have the body sysinv's
``ParsableErrorMiddleware`` (``api/middleware/parsable_error.py``) makes of wsme's fault
(wsme ``api.py`` ``format_exception``, ``rest/json.py`` ``encode_error``): ``error_message``
holds the JSON text of ``{"faultcode": "Client", "faultstring": ..., "debuginfo": null}``,
or for an unknown path of WebOb's 404 explanation as ``{"faultstring": ...}``.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from typing import Any

from stxsim.sysinv.db import Data, Row
from stxsim.sysinv.hosts import host_fields

#: The host's sub-collections, linked from a host with every field (convert_with_links).
SUBCOLLECTIONS = (
    "iinterfaces", "ports", "ethernet_ports", "inodes", "icpus", "imemorys", "istors",
    "idisks", "partitions", "ceph_mon", "ipvs", "ilvgs", "host_fs", "kube_update_ca",
    "isensors", "isensorgroups", "pci_devices", "lldp_agents", "lldp_neighbours", "labels",
)  # fmt: skip
#: The one field convert_with_links' minimum_fields leaves out of a collection's hosts (its
#: other unlisted fields are not part of the API object or are unset: ``vsc_controllers``).
NOT_IN_COLLECTION = "forisystemid"

Reply = tuple[int, dict[str, Any]]


def links(host_url: str, path: str) -> list[dict[str, str]]:
    """A resource's ``self`` and ``bookmark`` links (``link.Link.make_link``)."""
    return [
        {"href": f"{host_url}/v1/{path}", "rel": "self"},
        {"href": f"{host_url}/{path}", "rel": "bookmark"},
    ]


def host(data: Data, row: Row, now: float, host_url: str, expand: bool) -> dict[str, Any]:
    """One host as ``Host.convert_with_links`` renders it; the links follow ``peers``, where
    Host declares them."""
    out: dict[str, Any] = {}
    for name, value in host_fields(data, row, now).items():
        if name == NOT_IN_COLLECTION and not expand:
            continue
        out[name] = value
        if name == "peers":
            out["links"] = links(host_url, f"ihosts/{row['uuid']}")
            if expand:
                for sub in SUBCOLLECTIONS:
                    out[sub] = links(host_url, f"ihosts/{row['uuid']}/{sub}")
    return out


def _fault(status: int, faultstring: str) -> Reply:
    fault = {"faultcode": "Client", "faultstring": faultstring, "debuginfo": None}
    return status, {"error_message": json.dumps(fault)}


def not_found() -> Reply:
    """A path sysinv does not route: pecan's 404, its explanation picked out by
    ParsableErrorMiddleware."""
    return 404, {"error_message": json.dumps({"faultstring": "The resource could not be found."})}


def _identified(row: Row, ident: str) -> bool:
    """``add_identity_filter``: an integer is an id, a uuid a uuid, anything else a name
    (sysinv ``common/utils.py`` ``is_int_like``, oslo ``uuidutils.is_uuid_like``)."""
    try:
        if str(int(ident)) == ident:
            return row["id"] == int(ident)
    except ValueError:
        pass
    try:
        uuid.UUID(ident)
    except ValueError:
        return row["hostname"] == ident
    return row["uuid"] == ident


def get(data: Data, path: str, query: str, host_url: str, now: float) -> Reply:
    """The status and JSON body of ``GET path?query``."""
    parts = path.rstrip("/").split("/")[1:]
    if parts[:2] != ["v1", "ihosts"] or len(parts) > 3:
        return not_found()
    rows = sorted(data.get("hosts", []), key=lambda r: r["id"])
    if len(parts) == 3 and parts[2] != "detail":
        for row in rows:
            if _identified(row, parts[2]):
                return 200, host(data, row, now, host_url, expand=True)
        return _fault(404, f"Server {parts[2]} could not be found.")
    personality = urllib.parse.parse_qs(query).get("personality")
    if personality:
        rows = [r for r in rows if r["personality"] == personality[0]]
    expand = len(parts) == 3
    return 200, {"ihosts": [host(data, r, now, host_url, expand) for r in rows]}
