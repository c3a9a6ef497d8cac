"""`sysinv-dnsmasq-lease-update add|old|del MAC IP [HOSTNAME]`: dnsmasq's `dhcp-script` on
controller-0 (starlingx/config r/stx.10.0 sysinv `cmd/dnsmasq_lease_update.py`).

`add` and `old` hand the lease and dnsmasq's tags (`DNSMASQ_TAGS`) to sysinv, which lists a
new pxeboot client as a host; `del` does nothing (hosts are deleted only on request). The MAC
is cut to its last 17 characters, as sysinv's script does.
"""

from __future__ import annotations

import os
import sys

from stxsim import client, env
from stxsim.sysinv import db

USAGE = "usage: sysinv-dnsmasq-lease-update add|old|del MAC IP [HOSTNAME]"


def main(argv: list[str]) -> int:
    """Report one lease event to sysinv; exit status 2 on a usage error."""
    if len(argv) not in (3, 4) or argv[0] not in ("add", "old", "del"):
        print(USAGE, file=sys.stderr)
        return 2
    action, mac, ip = argv[:3]
    tags = os.environ.get("DNSMASQ_TAGS")
    if action == "del" or tags is None:
        return 0
    with db.transaction(write=False) as data:
        floating = data["system"]["mgmt_floating"]
    payload = {"tags": tags, "mac": mac[-17:], "ip": ip}
    client.post(env.api_url(floating), "/v1/agent/dhcp-lease", payload, timeout=10)
    return 0
