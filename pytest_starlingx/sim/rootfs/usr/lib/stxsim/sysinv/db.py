"""The sysinv database: one JSON document, locked with flock, replaced atomically.

Tables are lists of dicts under top-level keys (`hosts`, `interfaces`, ...). Every change
happens inside `transaction()`, which holds an exclusive lock across load and save, so the
API server's threads and stx-platform-boot never interleave.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import threading
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stxsim import env

DB_PATH = "/var/lib/stx/sysinv.json"

Row = dict[str, Any]
Data = dict[str, Any]

_thread_lock = threading.Lock()


def exists() -> bool:
    """True once bootstrap has created the database (this node is controller-0)."""
    return os.path.exists(env.path(DB_PATH))


@contextmanager
def transaction(write: bool = True) -> Iterator[Data]:
    """Load the database under an exclusive lock; save it back if `write`."""
    file = env.path(DB_PATH)
    os.makedirs(os.path.dirname(file), exist_ok=True)
    with _thread_lock, open(file + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        yield data
        if write:
            tmp = f"{file}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                # dumps, compact: the C encoder (json.dump and indent take the pure-Python one,
                # whose cost every agent heartbeat paid on an emulated controller)
                f.write(json.dumps(data, sort_keys=True, separators=(",", ":")))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, file)


def password_digest(password: str) -> str:
    """How the admin password is stored (never in clear): `system["admin_password_sha256"]`."""
    return hashlib.sha256(password.encode()).hexdigest()


def now_iso() -> str:
    """A timestamp as sysinv prints `created_at` (UTC, microseconds, +00:00)."""
    return datetime.datetime.now(datetime.UTC).isoformat()


def now_fm() -> str:
    """A timestamp as fm prints an alarm's (UTC, microseconds, no zone)."""
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return now.isoformat(timespec="microseconds")


def new_uuid() -> str:
    """A random UUID string."""
    return str(uuidlib.uuid4())


def rows(data: Data, table: str, **match: Any) -> list[Row]:
    """Rows of `table` whose fields equal every `match` value, in insertion order."""
    return [r for r in data.get(table, []) if all(r.get(k) == v for k, v in match.items())]


def first(data: Data, table: str, **match: Any) -> Row | None:
    """The first matching row, or None."""
    found = rows(data, table, **match)
    return found[0] if found else None


def insert(data: Data, table: str, row: Row) -> Row:
    """Add `row` with a fresh `id`, `uuid`, `created_at` and `updated_at`."""
    ids = data.setdefault("next_id", {})
    ids[table] = ids.get(table, 0) + 1
    stamp = now_iso()
    full = {"id": ids[table], "uuid": new_uuid(), "created_at": stamp, "updated_at": None}
    full.update(row)
    data.setdefault(table, []).append(full)
    return full


def delete(data: Data, table: str, row: Row) -> None:
    """Remove `row` from `table`."""
    data[table] = [r for r in data.get(table, []) if r is not row]


def touch(row: Row, **changes: Any) -> Row:
    """Apply `changes` and set `updated_at`."""
    row.update(changes)
    row["updated_at"] = now_iso()
    return row
