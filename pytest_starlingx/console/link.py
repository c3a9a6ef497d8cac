"""The byte side of a node's serial console: reading, transcript, sending, waiting.

A reader thread per console reads all the time, so no output is delayed or lost while another
node is driven; every byte goes to a ring buffer (:meth:`ConsoleLink.tail`), to a timestamped
transcript ``<artifacts>/<node>.console.log`` (secrets masked), to the screen model and to a
pexpect object, so waits use pexpect's matching. What is typed on top (boot menus, a shell)
lives in :mod:`~pytest_starlingx.console.menus` and :mod:`~pytest_starlingx.console.shell`.
"""

from __future__ import annotations

import codecs
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pexpect import EOF, TIMEOUT
from pexpect.spawnbase import SpawnBase

from pytest_starlingx.console.errors import ConsoleClosed, ConsoleTimeout, E, KernelPanic, secs
from pytest_starlingx.console.screen import Screen
from pytest_starlingx.console.transcript import MASK, Secrets, Transcript
from pytest_starlingx.transport import Transport
from pytest_starlingx.waits import Deadline, Progress

log = logging.getLogger("pytest_starlingx.console")

TAIL_LINES = 30
#: The last line Linux prints on a panic (torvalds/linux kernel/panic.c); the node then stays
#: halted unless its kernel was booted with panic=N.
PANIC_END = re.compile(r"---\[ end Kernel panic - not syncing")

KEYS: dict[str, bytes] = {
    "up": b"\x1b[A",
    "down": b"\x1b[B",
    "enter": b"\r",
    "esc": b"\x1b",
    "tab": b"\t",
    "ctrl-c": b"\x03",
    "ctrl-d": b"\x04",
}


@dataclass(frozen=True)
class Match:
    """What :meth:`Console.expect` found: which pattern, the match, and the text before it."""

    index: int
    match: re.Match[str]
    before: str

    @property
    def text(self) -> str:
        """The matched text."""
        return self.match.group(0)


class _QueueSpawn(SpawnBase):
    """A pexpect object reading what the console's reader thread queued (labgrid-style)."""

    def __init__(self, chunks: queue.Queue[bytes | None], write: Callable[[bytes], None]) -> None:
        super().__init__(
            timeout=None, maxread=65536, searchwindowsize=None,
            encoding="utf-8", codec_errors="replace",
        )  # fmt: skip
        self.delayafterread = None
        self._chunks = chunks
        self._write = write
        self._pending = b""

    def read_nonblocking(self, size: int = 1, timeout: float | None = None) -> str:
        if not self._pending:
            try:
                if timeout is None:
                    item = self._chunks.get()
                elif timeout > 0:
                    item = self._chunks.get(timeout=timeout)
                else:
                    item = self._chunks.get_nowait()
            except queue.Empty:
                raise TIMEOUT("no console output within the timeout") from None
            if item is None:
                self._chunks.put(None)  # stay at EOF for later reads
                self.flag_eof = True
                raise EOF("console closed")
            self._pending = item
            while len(self._pending) < size:
                try:
                    more = self._chunks.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._chunks.put(None)
                    break
                self._pending += more
        data, self._pending = self._pending[:size], self._pending[size:]
        text: str = self._decoder.decode(data, final=False)
        return text

    def send(self, s: str | bytes) -> int:
        data = s.encode("utf-8") if isinstance(s, str) else s
        self._write(data)
        return len(data)

    def discard(self) -> None:
        """Drop everything received but not yet matched."""
        self._pending = b""
        while True:
            try:
                item = self._chunks.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._chunks.put(None)
                break
        self.buffer = ""
        self._before = self.buffer_type()  # pexpect searches this too when it is longer


class ConsoleLink:
    """One node's serial console as bytes in and text out.

    ``alive`` (e.g. the backend's ``is_running`` for this node) is polled every ``poll_every``
    seconds during waits, so a dead VM fails a wait at once instead of at its deadline.
    """

    def __init__(
        self,
        transport: Transport,
        node: str,
        *,
        lab: str = "",
        artifacts: Path | None = None,
        alive: Callable[[], bool] | None = None,
        poll_every: float = 5.0,
        ring_lines: int = 2000,
    ) -> None:
        self.node = node
        self.lab = lab
        self.poll_every = poll_every
        self.screen = Screen()
        #: The user logged in (set by the shell): a password equal to the name is no secret.
        self.user: str | None = None
        self._transport = transport
        self._alive = alive
        self._secrets = Secrets()
        path = artifacts / f"{node}.console.log" if artifacts is not None else None
        self.transcript_path = path
        self._transcript = Transcript(node, path, self._secrets, ring_lines)
        self.ring_lines = ring_lines
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._child = _QueueSpawn(self._chunks, self._send_bytes)
        #: Notified on every output and when reading stops; hold it to wait for either.
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._closed_reason: str | None = None
        self._last_output = time.monotonic()
        self._reader: threading.Thread | None = None
        self._stages: list[str] = []
        self.log_extra = {"node": node}

    # ---- lifecycle

    def open(self) -> Self:
        """Connect the transport and start reading."""
        self._transport.connect()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"console-{self.node}", daemon=True
        )
        self._reader.start()
        log.debug("%s: console open", self.node, extra=self.log_extra)
        return self

    def close(self) -> None:
        """Stop reading, close the transport and the transcript; idempotent."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        self._transport.close()
        self._transcript.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        reason = "closed by the console layer"
        try:
            while not self._stop.is_set():
                try:
                    data = self._transport.read(4096, 0.2)
                except EOFError:
                    reason = "the other end closed the console"
                    break
                except OSError as exc:
                    reason = f"reading the console failed: {exc}"
                    break
                if not data:
                    self._transcript.idle()
                    continue
                self._transcript.output(decoder.decode(data))
                self.screen.feed(data)
                self._chunks.put(data)
                with self.changed:
                    self._last_output = time.monotonic()
                    self.changed.notify_all()
        finally:
            self._closed_reason = reason
            self._chunks.put(None)
            with self.changed:
                self.changed.notify_all()
            log.debug("%s: console reader stopped: %s", self.node, reason, extra=self.log_extra)

    # ---- context for errors and logs

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Name what the console is used for; errors and the transcript mention it."""
        self._stages.append(name)
        self._transcript.note(f"stage {name} begins")
        try:
            yield
        finally:
            self._transcript.note(f"stage {name} ends")
            self._stages.pop()

    @property
    def current_stage(self) -> str | None:
        """The innermost stage set with :meth:`stage`, if any."""
        return self._stages[-1] if self._stages else None

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` console lines, escapes stripped, secrets masked."""
        return self._transcript.tail(n)

    def add_secret(self, secret: str) -> None:
        """Mask ``secret`` wherever it would be written: transcript, logs, errors."""
        self._secrets.add(secret)

    def mask(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``****``."""
        return self._secrets.mask(text)

    def holds_secret(self, text: str) -> bool:
        """True when ``text`` contains a registered secret."""
        return self._secrets.contained_in(text)

    def note(self, text: str) -> None:
        """Write what the caller did to the transcript (masking is the caller's part)."""
        self._transcript.note(text)

    def error(self, cls: type[E], summary: str) -> E:
        """An error of type ``cls`` saying ``summary`` (masked) with lab, node, stage, tail."""
        return cls(
            self.mask(summary), lab=self.lab, node=self.node, stage=self.current_stage,
            tail=self.tail(TAIL_LINES),
        )  # fmt: skip

    # ---- sending

    def _send_bytes(self, data: bytes) -> None:
        self._transport.write(data)

    def send(self, text: str) -> None:
        """Send ``text`` as is (no newline)."""
        self._child.send(text)

    def sendline(self, line: str = "") -> None:
        """Send ``line`` and Enter (CR, as a terminal does)."""
        self._child.send(line + "\r")

    def send_key(self, key: str) -> None:
        """Send a named key: up, down, enter, esc, tab, ctrl-c, ctrl-d."""
        self._transcript.note(f"key {key}")
        self._send_bytes(KEYS[key])

    def send_secret(self, secret: str, enter: bool = True) -> None:
        """Send a password; it is masked from now on and the transcript says ``****``.

        A password equal to the user name (StarlingX's well-known first ``sysadmin`` password) is
        no secret and is not masked, which would blank the user name everywhere.
        """
        if secret != self.user:
            self.add_secret(secret)
        self._transcript.note(f"sent {MASK}")
        log.debug("%s: sent %s", self.node, MASK, extra=self.log_extra)
        self._send_bytes(secret.encode("utf-8") + (b"\r" if enter else b""))

    def interrupt(self) -> None:
        """Ctrl-C: stop the command running in the foreground."""
        self.send_key("ctrl-c")

    def discard(self) -> None:
        """Forget output received but not matched yet (it stays in the transcript)."""
        self._child.discard()

    def settle(self, quiet: float, deadline: Deadline, since: float | None = None) -> bool:
        """Wait until the console has been silent for ``quiet`` seconds (counted from ``since``
        at the earliest, a ``time.monotonic()`` value); False if it never was."""
        with self.changed:
            while True:
                silent = time.monotonic() - max(self._last_output, since or 0.0)
                if silent >= quiet:
                    return True
                if deadline.expired or self._closed_reason is not None:
                    return False
                self.changed.wait(min(quiet - silent, deadline.remaining))

    # ---- waiting

    @property
    def closed_reason(self) -> str | None:
        """Why reading stopped, once it has."""
        return self._closed_reason

    @property
    def last_output(self) -> float:
        """When output last came (``time.monotonic()``)."""
        return self._last_output

    def _panicked(self) -> bool:
        """During a stage, the last line is the end of a kernel panic and nothing came for
        ``poll_every`` s. Outside the stages a test may panic a node on purpose (a crash dump
        test, say) and wait for what follows, so there a panic is waited through."""
        if self.current_stage is None:
            return False
        silent = time.monotonic() - self._last_output >= self.poll_every
        return silent and any(PANIC_END.search(line) for line in self.tail(1))

    def found_now(self, pattern: re.Pattern[str]) -> bool:
        """True when output not matched yet holds ``pattern`` (matched up to it); no waiting."""
        try:
            self._child.expect_list([pattern], timeout=0)
        except (TIMEOUT, EOF):
            return False
        return True

    def expect(
        self,
        patterns: str | re.Pattern[str] | Sequence[str | re.Pattern[str]],
        deadline: Deadline,
        what: str | None = None,
    ) -> Match:
        """Wait for the first of ``patterns`` (regexes) to appear in the output.

        Raises :class:`ConsoleTimeout` when ``deadline`` expires and :class:`ConsoleClosed` on
        EOF or when the VM is found stopped; both name lab, node, stage, ``what`` (default: the
        patterns) and show the last 30 console lines.
        """
        if isinstance(patterns, str | re.Pattern):
            patterns = [patterns]
        compiled = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        what = what or " or ".join(repr(p.pattern) for p in compiled)
        progress = Progress(what, deadline, log, extra=self.log_extra)
        while True:
            try:
                index = self._child.expect_list(
                    compiled, timeout=min(deadline.remaining, self.poll_every)
                )
            except TIMEOUT:
                self.check_waiting(what, deadline)
                progress.tick()
                continue
            except EOF:
                raise self.error(
                    ConsoleClosed,
                    f"console closed ({self._closed_reason}) after {secs(deadline.elapsed)} "
                    f"while waiting for {what}",
                ) from None
            return Match(index, self._child.match, self._child.before)

    def check_waiting(self, what: str, deadline: Deadline) -> None:
        """Raise when the deadline has expired, the VM has stopped or its kernel panicked."""
        if deadline.expired:
            raise self.error(
                ConsoleTimeout, f"waited {secs(deadline.elapsed)} for {what} (timeout reached)"
            )
        if self._panicked():
            raise self.error(
                KernelPanic,
                f"the kernel panicked (after {secs(deadline.elapsed)} waiting for {what})",
            )
        if self._alive is not None and not self._alive():
            raise self.error(
                ConsoleClosed,
                f"the VM is not running any more (after {secs(deadline.elapsed)} waiting for "
                f"{what})",
            )
