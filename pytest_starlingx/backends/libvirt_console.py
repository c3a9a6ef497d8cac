"""A node's serial console through libvirt's console stream, for libvirt hosts elsewhere.

A console socket on another host cannot be opened here; libvirt's remote API can reach it
instead: the first serial port is a ``<serial type='pty'>`` and ``virDomainOpenConsole`` joins
a ``virStream`` to it (what ``virsh console`` does). The stream is non-blocking and read from
libvirt's event loop (:func:`start_event_loop`, one thread per process, as in libvirt-python's
``examples/consolecallback.py``): its callback appends what arrives to a buffer that
:meth:`ConsoleStreamTransport.read` waits on, after writing it to a local log file (so that
whatever a reader has seen is in the log), which stands in for virtlogd's log (on the libvirt
host, out of reach).

The transport keeps the socket transport's behaviour (``transport.UnixSocketTransport``):

* a guest reset keeps the QEMU process, its pty and the stream;
* a new QEMU process (power-on, a snapshot revert) ends the stream; ``connect()`` opens the new
  one, from a ``before_resume`` callback so that nothing is missed, and ``read``/``write``
  reopen it by themselves while ``alive()`` says the machine runs, ``EOFError`` once not;
* a libvirtd restart ends the stream with the connection it ran on: the next open goes
  through a reopened connection (``libvirt_conn.Connection``). Unlike a socket, a pty with no
  reader drops what the guest prints, so output during the restart is lost (seconds).

libvirt allows one console stream per serial port: a second opener gets ``Active console
session exists``, retried until ``connect_timeout`` (a closing stream frees the port) and
then reported.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from pytest_starlingx.backends.libvirt_conn import is_alive
from pytest_starlingx.errors import BackendError

logger = logging.getLogger("pytest_starlingx.backend")

_RETRY_INTERVAL = 0.2  # seconds between attempts to open a console stream
_WRITE_WAIT = 0.05  # seconds to wait when a non-blocking send would block
_CHUNK = 65536
_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE
    | libvirt.VIR_STREAM_EVENT_ERROR
    | libvirt.VIR_STREAM_EVENT_HANGUP
)

_loop_lock = threading.Lock()
_loop_started = False

#: Opens a console: (the connection it is on, a non-blocking stream joined to the console).
OpenConsole = Callable[[], tuple[libvirt.virConnect, libvirt.virStream]]


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process).

    Only connections opened afterwards deliver stream events, so call this before opening the
    connection that consoles use. Such a connection also answers libvirtd's keepalive probes
    from this thread, so the loop never stops.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _run_event_loop() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            logger.warning("libvirt event loop: an iteration failed; going on")


class ConsoleStreamTransport:
    """A serial console reached through libvirt's console stream (``transport.Transport``)."""

    def __init__(
        self,
        open_console: OpenConsole,
        *,
        name: str,
        alive: Callable[[], bool],
        log: Path | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self._open_console = open_console
        self._alive = alive
        self._log = log
        self._connect_timeout = connect_timeout
        self._io = threading.RLock()  # connect, close and reconnect, one at a time
        self._cond = threading.Condition()  # guards the fields below; notified on news
        self._conn: libvirt.virConnect | None = None
        self._stream: libvirt.virStream | None = None
        self._ended = False  # the current stream ended (EOF, error, hangup)
        self._buffer = bytearray()

    # ---------------------------------------------------------------- Transport

    def connect(self) -> None:
        """(Re)open the stream; ``BackendError`` if it cannot be opened in time."""
        with self._io:
            self._drop()
            deadline = time.monotonic() + self._connect_timeout
            while True:
                try:
                    self._open()
                except BackendError as exc:
                    if time.monotonic() >= deadline:
                        raise BackendError(
                            f"console of {self.name}: cannot open libvirt's console stream "
                            f"within {self._connect_timeout:.0f}s ({exc}); is the machine "
                            "powered on?"
                        ) from exc
                    time.sleep(_RETRY_INTERVAL)
                else:
                    logger.debug("console of %s: console stream open", self.name)
                    return

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes; ``b""`` after ``timeout`` s; ``EOFError`` once the VM is gone."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._buffer or self._ended or self._stream is None,
                    max(0.0, deadline - time.monotonic()),
                )
                if self._buffer:
                    data = bytes(self._buffer[:size])
                    del self._buffer[:size]
                    return data
                usable = self._stream is not None and not self._ended
                conn = self._conn
            if usable and conn is not None and not is_alive(conn):
                usable = False  # libvirtd went away: the stream is dead, whatever it says
                self._end(self._stream)
            if not usable and not self._reconnect(deadline):
                return b""
            if usable and time.monotonic() >= deadline:
                return b""

    def write(self, data: bytes) -> None:
        """Send ``data``; reopens the stream once if it ended meanwhile."""
        for attempt in (1, 2):
            deadline = time.monotonic() + self._connect_timeout
            try:
                opened = self._reconnect(deadline) if self._stale() else True
            except EOFError as exc:
                raise BackendError(f"console of {self.name}: the machine is not running") from exc
            if not opened:
                raise BackendError(
                    f"console of {self.name}: the console stream did not come back within "
                    f"{self._connect_timeout:.0f}s"
                )
            try:
                self._send(data, deadline)
            except (libvirt.libvirtError, BackendError) as exc:
                with self._cond:
                    stream = self._stream
                self._end(stream)
                if attempt == 2:
                    raise BackendError(f"console of {self.name}: write failed: {exc}") from exc
            else:
                return

    def close(self) -> None:
        """Close the stream; idempotent. ``connect`` (or a read) opens it again."""
        with self._io:
            self._drop()

    # ---------------------------------------------------------------- the stream

    def _open(self) -> None:
        """Open a stream and watch it (the caller holds ``_io`` and dropped the old one)."""
        try:
            conn, stream = self._open_console()
        except libvirt.libvirtError as exc:
            raise BackendError(exc.get_error_message() or str(exc)) from exc
        with self._cond:
            self._conn, self._stream, self._ended = conn, stream, False
        try:
            stream.eventAddCallback(_EVENTS, self._on_event, None)
        except libvirt.libvirtError as exc:
            self._drop()
            raise BackendError(exc.get_error_message() or str(exc)) from exc

    def _stale(self) -> bool:
        with self._cond:
            return self._stream is None or self._ended

    def _reconnect(self, deadline: float) -> bool:
        """Reopen the stream while the machine is alive; whether it is open (False at the
        deadline); ``EOFError`` once the machine is not alive."""
        while True:
            with self._io:
                if not self._stale():
                    return True
                self._drop()
                try:
                    self._open()
                except BackendError as exc:
                    failure: BackendError | None = exc
                else:
                    logger.debug("console of %s: console stream reopened", self.name)
                    return True
            if not self._alive():
                raise EOFError(f"console of {self.name}: the machine is not running")
            if time.monotonic() >= deadline:
                logger.debug("console of %s: reopening the stream failed: %s", self.name, failure)
                return False
            time.sleep(_RETRY_INTERVAL)

    def _send(self, data: bytes, deadline: float) -> None:
        with self._cond:
            stream = self._stream
        if stream is None:
            raise BackendError("no console stream")
        view = memoryview(data)
        while view:
            sent = stream.send(bytes(view))
            if sent == -2:  # would block: the event loop drains it meanwhile
                if time.monotonic() >= deadline:
                    raise BackendError("the console stream takes no more data")
                with self._cond:
                    self._cond.wait(_WRITE_WAIT)
                continue
            view = view[sent:]

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        """libvirt's event loop: take what arrived; end the stream at EOF, error or hangup."""
        ended = bool(events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP))
        chunks = []
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(_CHUNK)
                except libvirt.libvirtError:
                    ended = True
                    break
                if data == -2:
                    break
                if not data:
                    ended = True
                    break
                chunks.append(data)
        received = b"".join(chunks)
        with self._cond:
            if stream is not self._stream:
                return  # an old stream's last words
        if received and self._log is not None:  # before readers see it: they read it logged
            self._append_log(self._log, received)
        with self._cond:
            if stream is not self._stream:
                return
            self._buffer += received
            self._cond.notify_all()
        if ended:
            logger.debug("console of %s: the console stream ended", self.name)
            self._end(stream)

    def _append_log(self, path: Path, data: bytes) -> None:
        """Append to the local log (libvirt's event thread alone writes it: in order)."""
        try:
            with path.open("ab") as log:
                log.write(data)
        except OSError as exc:
            logger.warning("console of %s: cannot write %s: %s", self.name, path, exc)

    def _end(self, stream: libvirt.virStream | None) -> None:
        """Mark ``stream`` ended if it is the current one and let go of it."""
        with self._cond:
            if stream is None or stream is not self._stream:
                return
            self._ended = True
            self._cond.notify_all()
        _release(stream)

    def _drop(self) -> None:
        """Let go of the current stream (the caller holds ``_io``)."""
        with self._cond:
            stream, self._stream, self._conn = self._stream, None, None
            self._ended = False
            self._cond.notify_all()
        if stream is not None:
            _release(stream)


def _release(stream: libvirt.virStream) -> None:
    """Stop watching ``stream`` and abort it; a stream ended or released already is fine."""
    with contextlib.suppress(libvirt.libvirtError):
        stream.eventRemoveCallback()
    with contextlib.suppress(libvirt.libvirtError):
        stream.abort()
