"""Putting a large file in place: hard-linked (same filesystem) or copied, then renamed."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


def place(source: Path, dest: Path, mode: int | None = None) -> None:
    """``source`` at ``dest``, replacing what is there, never seen half-written.

    The temporary name is this call's own: several processes may place the same file at once.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
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
