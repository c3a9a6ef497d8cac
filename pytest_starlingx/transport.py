"""The byte channel between a node's serial console and the console layer.

A backend hands out a :class:`Transport` per node; it knows nothing of prompts or StarlingX.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pytest_starlingx.errors import BackendError

logger = logging.getLogger("pytest_starlingx.backend")

_RETRY_INTERVAL = 0.1  # seconds between attempts to reach a console socket


class Transport(Protocol):
    """Raw bytes to and from one serial console."""

    def connect(self) -> None:
        """Open the channel; raises ``BackendError`` when it cannot be opened."""

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes; ``b""`` when nothing came within ``timeout`` seconds.

        Raises ``EOFError`` when the other end has closed the channel for good.
        """

    def write(self, data: bytes) -> None:
        """Send ``data`` to the console."""

    def close(self) -> None:
        """Close the channel; idempotent."""


class UnixSocketTransport:
    """A serial console exposed by the hypervisor as a listening unix socket.

    ``connect`` retries until ``connect_timeout`` (the socket appears when the VM process
    starts). When the socket goes away (the VM process stopped or was replaced, e.g. by a
    snapshot revert), ``read`` and ``write`` reconnect on their own as long as ``alive()``
    says the machine is still there; once it says otherwise, ``read`` raises ``EOFError``.
    ``connect`` may be called again at any time to reopen the channel (e.g. from a backend's
    ``before_resume`` callback, so that no output of a restarted VM is missed).
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str = "",
        alive: Callable[[], bool] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self._alive = alive or (lambda: True)
        self._connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._lock = threading.RLock()

    def connect(self) -> None:
        """(Re)open the channel; ``BackendError`` if the socket does not answer in time."""
        with self._lock:
            self._drop()
            deadline = time.monotonic() + self._connect_timeout
            while True:
                try:
                    self._sock = self._open()
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        raise BackendError(
                            f"console of {self.name}: cannot connect to {self.path} within "
                            f"{self._connect_timeout:.0f}s ({exc}); is the machine powered on?"
                        ) from exc
                    time.sleep(_RETRY_INTERVAL)
                else:
                    logger.debug("console of %s: connected to %s", self.name, self.path)
                    return

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes; ``b""`` after ``timeout`` s; ``EOFError`` once the VM is gone."""
        deadline = time.monotonic() + timeout
        while True:
            sock = self._sock or self._reconnect(deadline)
            if sock is not None:
                try:
                    wait = max(0.0, deadline - time.monotonic())
                    ready, _, _ = select.select([sock], [], [], wait)
                    data = sock.recv(size) if ready else None
                except (OSError, ValueError):  # ValueError: closed meanwhile by connect()
                    data = b""
                if data is None:
                    return b""
                if data:
                    return data
                with self._lock:
                    if self._sock is sock:
                        logger.debug("console of %s: socket closed by the VM", self.name)
                        self._drop()
            if time.monotonic() >= deadline:
                return b""

    def write(self, data: bytes) -> None:
        """Send ``data``; reconnects once if the VM process was replaced meanwhile."""
        for attempt in (1, 2):
            try:
                sock = self._sock or self._reconnect(time.monotonic() + self._connect_timeout)
            except EOFError as exc:
                raise BackendError(f"console of {self.name}: the machine is not running") from exc
            if sock is None:
                raise BackendError(
                    f"console of {self.name}: {self.path} did not come back within "
                    f"{self._connect_timeout:.0f}s"
                )
            try:
                sock.sendall(data)
            except OSError as exc:
                with self._lock:
                    if self._sock is sock:
                        self._drop()
                if attempt == 2:
                    raise BackendError(f"console of {self.name}: write failed: {exc}") from exc
            else:
                return

    def close(self) -> None:
        """Close the channel; idempotent. ``connect`` (or a read) opens it again."""
        with self._lock:
            self._drop()

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _reconnect(self, deadline: float) -> socket.socket | None:
        """Reconnect while the machine is alive; ``EOFError`` once it is not."""
        while True:
            with self._lock:
                if self._sock is not None:
                    return self._sock
                try:
                    self._sock = self._open()
                except OSError:
                    pass
                else:
                    logger.debug("console of %s: reconnected to %s", self.name, self.path)
                    return self._sock
            if not self._alive():
                raise EOFError(f"console of {self.name}: the machine is not running")
            if time.monotonic() >= deadline:
                return None
            time.sleep(_RETRY_INTERVAL)
