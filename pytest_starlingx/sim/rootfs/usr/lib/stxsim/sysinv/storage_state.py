"""States that settle by themselves after a while, derived at read time (no timers).

A row carries `ready_at` (epoch seconds): before it the object is still being configured.
"""

from __future__ import annotations

from stxsim import env
from stxsim.sysinv.db import Row


def ready_at(now: float) -> float:
    """When something started now settles (the CONFIGURE duration, times `slow`)."""
    return now + env.scaled(env.CONFIGURE)


def settled(row: Row, now: float) -> bool:
    """True once the row's `ready_at` has passed."""
    return now >= row.get("ready_at", 0)


def partition_status(part: Row, now: float) -> str:
    """`Creating` until settled, then `Ready`, or `In-Use` once its PV is provisioned."""
    if part.get("in_use"):
        return "In-Use"
    return "Ready" if settled(part, now) else "Creating"


def backend_state(backend: Row, now: float) -> str:
    """A storage backend is `configuring`, then `configured`."""
    return "configured" if settled(backend, now) else "configuring"


def mon_state(mon: Row, now: float) -> str:
    """A Ceph monitor is `configuring`, then `configured`."""
    return "configured" if settled(mon, now) else "configuring"


def stor_state(stor: Row, host: Row, now: float) -> str:
    """An OSD added to a locked host waits for the unlock; on an unlocked one it settles."""
    if stor.get("configured"):
        return "configured"
    if host["administrative"] == "locked":
        return "configuring-on-unlock"
    return "configured" if settled(stor, now) else "configuring"
