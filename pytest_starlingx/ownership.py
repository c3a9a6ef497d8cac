"""Who owns or holds a lab: a process, named by host, pid and start time.

The start time (from ``/proc/<pid>/stat``) tells a reused pid apart from the process that
created or took a lab. Lab states, the backends' owner records and leases all name their
process this way, and :meth:`Holder.alive` is the one test of whether it still runs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Holder:
    """A process that may hold labs."""

    host: str
    pid: int
    start: int | None  # process start time; None when unknown

    @classmethod
    def me(cls) -> Holder:
        """This process."""
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> Holder:
        """Process ``pid`` of this host."""
        return cls(socket.gethostname(), pid, process_start(pid))

    @property
    def key(self) -> str:
        """A file-name-safe identity."""
        return f"{self.host}-{self.pid}-{self.start or 0}"

    @property
    def local(self) -> bool:
        """Whether the holder runs on this host."""
        return self.host == socket.gethostname()

    def alive(self) -> bool | None:
        """True/False for a holder on this host; None when that cannot be known here."""
        if not self.local:
            return None
        start = process_start(self.pid)
        if start is None:
            return False
        return self.start is None or start == self.start

    def __str__(self) -> str:
        return f"pid {self.pid}" if self.local else f"pid {self.pid} on {self.host}"
