"""A libvirt connection that survives a libvirtd restart.

QEMU guests, their serial sockets and virtlogd's logs outlive libvirtd; only the client
connection dies with it (``Cannot write data: Broken pipe`` on the first call, then
``internal error: client socket is closed``, and ``virConnect.isAlive()`` false), together with
every ``virDomain`` or ``virNetwork`` object taken from it. So :meth:`Connection.run` takes the
whole operation as a function of the connection (look up by name, then act): when it fails on a
dead connection, the connection is reopened (for up to ``reconnect_timeout`` seconds) and the
function runs again. Such functions must be safe to repeat (check the state, then act).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import libvirt

from pytest_starlingx.errors import BackendError
from pytest_starlingx.waits import Deadline, WaitTimeout, poll

logger = logging.getLogger("pytest_starlingx.backend")

T = TypeVar("T")
HOST_SETUP_HINT = "is libvirtd running? start it with `stx-lab host-setup`"
_RETRY_EVERY = 0.5  # seconds between attempts to reopen


def hint(exc: libvirt.libvirtError) -> str:
    """What to do about a libvirt error, or ``""``."""
    code, domain = exc.get_error_code(), exc.get_error_domain()
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR) or (
        domain == libvirt.VIR_FROM_RPC
    ):
        return HOST_SETUP_HINT
    if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_ACCESS_DENIED):
        return "run as root or as a member of group libvirt"
    if "Permission denied" in str(exc):
        return "libvirt's QEMU user must be able to read the file and traverse its directories"
    return ""


def error(what: str, exc: libvirt.libvirtError) -> BackendError:
    """A BackendError saying what was being done, libvirt's message and a hint."""
    advice = hint(exc)
    return BackendError(f"{what}: {exc.get_error_message()}" + (f" ({advice})" if advice else ""))


def _silence_libvirt(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised as exceptions."""


def is_alive(conn: libvirt.virConnect) -> bool:
    """Whether ``conn`` still reaches libvirtd."""
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


class Connection:
    """One libvirt connection, reopened when libvirtd went away (thread-safe)."""

    def __init__(self, uri: str, reconnect_timeout: float) -> None:
        """Open ``uri`` now; a daemon that does not answer is a BackendError at once."""
        self.uri = uri
        self.reconnect_timeout = reconnect_timeout
        self._lock = threading.Lock()
        libvirt.registerErrorHandler(_silence_libvirt, None)
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise error(f"connecting to libvirt at {uri}", exc) from exc

    def run(self, action: Callable[[libvirt.virConnect], T]) -> T:
        """``action(conn)``; run again on a new connection if this one died meanwhile.

        Other libvirt errors propagate unchanged; a libvirtd that stays away longer than
        ``reconnect_timeout`` is a BackendError.
        """
        while True:
            conn = self.conn
            try:
                return action(conn)
            except libvirt.libvirtError as exc:
                if is_alive(conn):
                    raise
                self._reopen(conn, exc)

    def _reopen(self, dead: libvirt.virConnect, exc: libvirt.libvirtError) -> None:
        with self._lock:
            if self.conn is not dead:  # another thread has reopened it
                return
            logger.warning(
                "libvirt connection to %s lost (%s); reconnecting for up to %.0f s",
                self.uri,
                exc.get_error_message(),
                self.reconnect_timeout,
            )
            with contextlib.suppress(libvirt.libvirtError):
                dead.close()
            deadline = Deadline(self.reconnect_timeout, f"libvirtd at {self.uri}")
            failures: list[str] = []

            def reopen() -> libvirt.virConnect | None:
                try:
                    return libvirt.open(self.uri)
                except libvirt.libvirtError as failed:
                    failures.append(failed.get_error_message())
                    return None

            try:
                self.conn = poll(reopen, deadline, f"libvirtd at {self.uri}", _RETRY_EVERY, logger)
            except WaitTimeout:
                raise BackendError(
                    f"libvirtd at {self.uri} is unreachable: the connection was lost and could "
                    f"not be reopened within {self.reconnect_timeout:.0f} s ({failures[-1]}); "
                    + HOST_SETUP_HINT
                ) from exc
            logger.warning("reconnected to libvirt at %s after %.1f s", self.uri, deadline.elapsed)

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()
