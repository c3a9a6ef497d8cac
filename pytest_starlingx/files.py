"""Files written whole or not at all: a temporary file of the writer's own, then renamed."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any


def _tmp(dest: Path) -> Path:
    """A temporary name beside ``dest`` that is this call's own (several processes may write
    the same file at once)."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def place(source: Path, dest: Path, mode: int | None = None) -> None:
    """``source`` at ``dest`` (hard-linked on the same filesystem, else copied), replacing what
    is there, never seen half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(dest)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """``data`` at ``path``, replacing what is there, never seen half-written.

    ``mode`` (e.g. ``0o600`` for a file holding a password) is set when the temporary file is
    created, before any byte is in it; without it the file gets the umask's default.
    """
    tmp = _tmp(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(
    path: Path, value: Any, indent: int | None = 1, mode: int | None = None
) -> None:
    """``value`` as JSON at ``path``, written as :func:`write_atomic` does."""
    write_atomic(path, json.dumps(value, indent=indent), mode)
