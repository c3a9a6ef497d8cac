"""A node's serial console: continuous reading, transcript, expect, boot menus, login, commands.

One :class:`Console` per node, over the :class:`~pytest_starlingx.transport.Transport` its backend
hands out. A reader thread per console reads all the time, so no output is delayed or lost while
another node is driven; every byte goes to a ring buffer (:meth:`Console.tail`), to a timestamped
transcript ``<artifacts>/<node>.console.log`` (secrets masked) and to a pexpect object, so waits
use pexpect's matching::

    with Console(transport, "controller-0", lab="simplex", artifacts=run_dir) as con:
        with con.stage("install"):
            menu = t.deadline("menu")
            con.select_menu("Debian All-in-one Install", "Serial Console", deadline=menu)
            con.expect(LOGIN, t.deadline("install"))
            con.login("sysadmin", "sysadmin", t.deadline("login"), new_password=password)
            print(con.run_checked("cat /etc/build.info", t.deadline("command")))

A console is driven by one thread at a time; several consoles are driven from several threads.
"""

from __future__ import annotations

import base64
import codecs
import logging
import queue
import re
import shlex
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO, TypeVar

from pexpect import EOF, TIMEOUT
from pexpect.spawnbase import SpawnBase

from pytest_starlingx.errors import ConsoleError
from pytest_starlingx.screen import Menu, Screen, matches
from pytest_starlingx.transport import Transport
from pytest_starlingx.waits import Deadline, Progress

log = logging.getLogger("pytest_starlingx.console")

TAIL_LINES = 30
#: How long login() lets a quiet console show a prompt by itself before waking it.
PROMPT_GRACE = 30.0
#: Silence after which a console without a prompt counts as idle, unless it is booting.
BOOT_QUIET = 8.0
MASK = "****"
#: How often a lost boot-menu highlight is redrawn before giving up.
MENU_REDRAWS = 5
#: Longest command line :meth:`Console.run` sends; longer input goes through write_file().
MAX_COMMAND = 1000

KEYS: dict[str, bytes] = {
    "up": b"\x1b[A",
    "down": b"\x1b[B",
    "enter": b"\r",
    "esc": b"\x1b",
    "tab": b"\t",
    "ctrl-c": b"\x03",
    "ctrl-d": b"\x04",
}

# Console patterns (starlingx.md 3.3). Not anchored at the end: busybox ash writes ESC[6n after
# its prompt, and more output may follow in the same read.
LOGIN = r"(?<!Last )(?<!last )login: ?"
LOGIN_INCORRECT = r"Login incorrect"
PASSWORD = r"[Pp]assword: ?"
CURRENT_PASSWORD = r"Current password: ?|\(current\) UNIX password: ?"
NEW_PASSWORD = r"New password: ?"
RETYPE_PASSWORD = r"Retype new password: ?"
PASSWORD_REJECTED = (
    r"BAD PASSWORD:[^\r\n]*|Sorry, passwords do not match[^\r\n]*|"
    r"You must choose a longer password[^\r\n]*|Password unchanged[^\r\n]*|"
    r"passwd: (?![^\r\n]*success)[^\r\n]+|Authentication token manipulation error|"
    r"Have exhausted maximum number of retries[^\r\n]*"
)
SUDO_PASSWORD = r"\[sudo\] password for [^\r\n:]+: ?"
#: What bash prints when ``TMOUT`` ends a shell left idle. StarlingX exports TMOUT=900, readonly
#: from 11.0 (config-files ``base-files-config/source/custom.sh``), where no ``export TMOUT=0``
#: turns it off.
AUTO_LOGOUT = re.compile(re.escape("timed out waiting for input: auto-logout"))
#: A login prompt at the start of a line while a command runs: the node rebooted under it.
REBOOTED = r"(?m)^[\w.-]+ login: "
#: ``sysadmin@controller-0:~$ ``, ``[sysadmin@controller-0 ~(keystone_admin)]$ ``,
#: ``controller-0:~$ `` (CentOS era), and their root ``# `` forms.
PROMPT = r"(?:[\w.-]+@[\w.-]+:[^\r\n]*?|\[[\w.-]+@[\w.-]+ [^\r\n]*?\]|[\w.-]+:~)[$#] "

_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_=>78])"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_KERNEL_MESSAGE = re.compile(r"\[ *\d+\.\d+\] [^\n]*\n")
_KERNEL_MESSAGE_TAIL = re.compile(r"\[ *\d+\.\d+\] .*")  # a printk to the end of a line
#: A line printed by a machine on its way up: firmware, network boot, boot loader, kernel, systemd.
#: Four letters in a row each printed twice: a boot menu copied to the serial line by the
#: firmware as well (shared/real-menus.md: ``DDeebbiiaann``).
_DOUBLED = re.compile(r"(?:([A-Za-z])\1){4}")
_BOOT_OUTPUT = re.compile(
    r"^\[ *(?:\d+\.\d+|OK) *\]|^(?:SeaBIOS|iPXE|Booting |Loading |ISOLINUX |PXELINUX )|GRUB"
)


def _secs(seconds: float) -> str:
    """``0.5s``, ``12s``, ``3600s``: durations for messages."""
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (tabs, newlines kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def clean_output(text: str, kernel_messages: bool = False) -> str:
    """Command output as a program would see it: no escapes, ``\\n`` line ends, no printk lines."""
    text = strip_ansi(text.replace("\r\n", "\n"))
    if not kernel_messages:
        text = _KERNEL_MESSAGE.sub("", text)
    return text


# ---------------------------------------------------------------------------------- errors


class NodeConsoleError(ConsoleError):
    """A console problem with its context: lab, node, stage and the console's last lines."""

    def __init__(
        self, summary: str, *, lab: str, node: str, stage: str | None, tail: Sequence[str]
    ) -> None:
        self.summary = summary
        self.lab = lab
        self.node = node
        self.stage = stage
        self.tail = list(tail)
        where = f"lab {lab!r} node {node}" if lab else f"node {node}"
        lines = "\n".join(f"    | {line}" for line in self.tail) or "    (no output)"
        during = f"stage {stage!r}" if stage else "no stage"
        super().__init__(
            f"{where}: {during}: {summary}\n  last {len(self.tail)} console lines:\n{lines}"
        )


class ConsoleTimeout(NodeConsoleError):
    """The awaited output did not come in time."""


class ConsoleClosed(NodeConsoleError):
    """The console closed (EOF) or the VM stopped while output was awaited."""


class MenuError(NodeConsoleError):
    """The boot menu on screen has no entry with the wanted text."""


class LoginError(NodeConsoleError):
    """Login failed: password refused, new password rejected, or no new password given."""


class NodeRebooted(NodeConsoleError):
    """The node's login prompt appeared while a command ran: it rebooted (or lost its shell)."""


class CommandFailed(NodeConsoleError):
    """A command run with :meth:`Console.run_checked` exited non-zero (see ``result``)."""

    result: Result | None = None


E = TypeVar("E", bound=NodeConsoleError)

# ---------------------------------------------------------------------------------- results


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


@dataclass(frozen=True)
class Result:
    """A finished command: what it printed (escapes stripped, ``\\n`` line ends; on a serial
    console stderr arrives in it too) and its exit status, named as subprocess, invoke and
    paramiko name them."""

    command: str
    stdout: str
    exit_status: int

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.exit_status == 0


# ---------------------------------------------------------------------------------- internals


class _Secrets:
    """Strings never to be written to transcripts, logs or error messages."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            if secret and secret not in self._items:
                self._items.append(secret)
                self._items.sort(key=len, reverse=True)

    def mask(self, text: str) -> str:
        with self._lock:
            for secret in self._items:
                text = text.replace(secret, MASK)
        return text

    def contained_in(self, text: str) -> bool:
        with self._lock:
            return any(secret in text for secret in self._items)

    def held_back(self, text: str) -> int:
        """Length of the longest end of ``text`` that may be the start of a secret."""
        with self._lock:
            best = 0
            for secret in self._items:
                for n in range(min(len(secret) - 1, len(text)), best, -1):
                    if secret.startswith(text[-n:]):
                        best = n
                        break
        return best


class _Transcript:
    """The per-node transcript file and the ring buffer of recent lines, both masked."""

    def __init__(self, node: str, path: Path | None, secrets: _Secrets, keep: int) -> None:
        self._node = node
        self._secrets = secrets
        self._ring: deque[str] = deque(maxlen=keep)
        self._partial = ""  # text of the current line not yet written to the file
        self._line = ""  # the whole current line, for tail()
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def output(self, text: str) -> None:
        """Record decoded console output."""
        with self._lock:
            *complete, rest = text.split("\n")
            for piece in complete:
                self._write(self._partial + piece, "|")
                self._ring.append(self._readable(self._line + piece))
                self._partial = self._line = ""
            self._partial += rest
            self._line += rest

    def idle(self) -> None:
        """Nothing came for a while: write the unfinished line (a prompt, say) to the file."""
        with self._lock:
            keep = self._secrets.held_back(self._partial)
            ready = self._partial[: len(self._partial) - keep]
            if ready.strip("\r"):
                self._write(ready, "|")
                self._partial = self._partial[len(ready) :]

    def note(self, text: str) -> None:
        """Record something the console layer did (a stage, a key, a hidden input)."""
        with self._lock:
            self._write(text, ">>")

    def tail(self, n: int) -> list[str]:
        with self._lock:
            lines = list(self._ring)
            current = self._readable(self._line)
        if current.strip():
            lines.append(current)
        return lines[-n:] if n > 0 else []

    def close(self) -> None:
        with self._lock:
            if self._partial.strip("\r"):
                self._write(self._partial, "|")
            self._partial = ""
            if self._file is not None:
                self._file.close()
                self._file = None

    def _readable(self, line: str) -> str:
        # Later redraws of a line win over earlier ones, as on a terminal.
        return self._secrets.mask(strip_ansi(line.rstrip("\r").rsplit("\r", 1)[-1])).rstrip()

    def _write(self, line: str, sep: str) -> None:
        masked = self._secrets.mask(line).replace("\r", "").replace("\x1b", "^[")
        log.debug("%s %s %s", self._node, sep, masked, extra={"node": self._node})
        if self._file is not None:
            stamp = datetime.now().isoformat(sep=" ", timespec="milliseconds")
            self._file.write(f"{stamp} {sep} {masked}\n")


class _QueueSpawn(SpawnBase):  # type: ignore[misc]
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


# ---------------------------------------------------------------------------------- console


class Console:
    """One node's serial console.

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
        prompt: str = PROMPT,
    ) -> None:
        self.node = node
        self.lab = lab
        self.prompt = prompt
        self.poll_every = poll_every
        self.screen = Screen()
        #: The user and password valid after :meth:`login`; the password answers sudo prompts.
        self.user: str | None = None
        self.password: str | None = None
        self._transport = transport
        self._alive = alive
        self._secrets = _Secrets()
        path = artifacts / f"{node}.console.log" if artifacts is not None else None
        self.transcript_path = path
        self._transcript = _Transcript(node, path, self._secrets, ring_lines)
        self._ring_lines = ring_lines
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._child = _QueueSpawn(self._chunks, self._send_bytes)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._closed_reason: str | None = None
        self._last_output = time.monotonic()
        self._reader: threading.Thread | None = None
        self._stages: list[str] = []
        self._extra = {"node": node}
        self._timed_out = False  # bash's TMOUT ended the shell since the last login

    # ---- lifecycle

    def open(self) -> Console:
        """Connect the transport and start reading."""
        self._transport.connect()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"console-{self.node}", daemon=True
        )
        self._reader.start()
        log.debug("%s: console open", self.node, extra=self._extra)
        return self

    def close(self) -> None:
        """Stop reading, close the transport and the transcript; idempotent."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        self._transport.close()
        self._transcript.close()

    def __enter__(self) -> Console:
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
                with self._changed:
                    self._last_output = time.monotonic()
                    self._changed.notify_all()
        finally:
            self._closed_reason = reason
            self._chunks.put(None)
            with self._changed:
                self._changed.notify_all()
            log.debug("%s: console reader stopped: %s", self.node, reason, extra=self._extra)

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

    def _error(self, cls: type[E], summary: str) -> E:
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
        log.debug("%s: sent %s", self.node, MASK, extra=self._extra)
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
        with self._changed:
            while True:
                silent = time.monotonic() - max(self._last_output, since or 0.0)
                if silent >= quiet:
                    return True
                if deadline.expired or self._closed_reason is not None:
                    return False
                self._changed.wait(min(quiet - silent, deadline.remaining))

    # ---- waiting

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
        progress = Progress(what, deadline, log, extra=self._extra)
        while True:
            try:
                index = self._child.expect_list(
                    compiled, timeout=min(deadline.remaining, self.poll_every)
                )
            except TIMEOUT:
                self._check_waiting(what, deadline)
                progress.tick()
                continue
            except EOF:
                raise self._error(
                    ConsoleClosed,
                    f"console closed ({self._closed_reason}) after {_secs(deadline.elapsed)} "
                    f"while waiting for {what}",
                ) from None
            return Match(index, self._child.match, self._child.before)

    def _check_waiting(self, what: str, deadline: Deadline) -> None:
        """Raise when the deadline has expired or the VM has stopped."""
        if deadline.expired:
            raise self._error(
                ConsoleTimeout, f"waited {_secs(deadline.elapsed)} for {what} (timeout reached)"
            )
        if self._alive is not None and not self._alive():
            raise self._error(
                ConsoleClosed,
                f"the VM is not running any more (after {_secs(deadline.elapsed)} waiting for "
                f"{what})",
            )

    def wait_screen(self, predicate: Callable[[Menu], bool], deadline: Deadline, what: str) -> Menu:
        """Wait until the menu read from the screen satisfies ``predicate``; return it.

        The predicate is checked on every bit of output and at least twice a second.
        """
        progress = Progress(what, deadline, log, extra=self._extra)
        next_check = 0.0
        with self._changed:
            while True:
                menu = self.screen.menu()
                if predicate(menu):
                    return menu
                if self._closed_reason is not None:
                    raise self._error(
                        ConsoleClosed,
                        f"console closed ({self._closed_reason}) waiting for {what} "
                        f"(menu on screen: {menu or 'none'})",
                    )
                if deadline.expired or deadline.elapsed >= next_check:
                    self._check_waiting(f"{what} (menu on screen: {menu or 'none'})", deadline)
                    next_check = deadline.elapsed + self.poll_every
                progress.tick()
                self._changed.wait(min(deadline.remaining, 0.5))

    # ---- boot menus

    def select_menu(
        self, *path: str | re.Pattern[str], deadline: Deadline, settle: float = 3.0
    ) -> None:
        """Select a boot-menu entry by its text; several texts walk nested menus.

        Each text is an entry of its level, whatever the menu's decoration: the highlighted entry
        is read from the screen and down/up pressed until the wanted one is highlighted (checking
        the screen after every key and redrawing a highlight the boot loader's output lost), then
        Enter. A menu already inside a wanted submenu (vesamenu opens inside its default one,
        titled with the submenu's text) counts as that level chosen; a titled menu that stays
        without the wanted entry for ``settle`` seconds is left with ESC (one level up), which
        also stops its countdown. Raises :class:`MenuError` when no level has the entry.
        """
        try:
            self._select_path(path, deadline, settle)
        except (ConsoleTimeout, MenuError) as exc:
            if not any(_DOUBLED.search(line) for line in self.tail()):
                raise
            raise self._error(
                MenuError,
                f"{exc.summary}; the console shows every character twice: the firmware copies "
                "the screen to the serial port while the boot loader writes there too (a "
                "serial BIOS console such as libvirt's <bios useserial='yes'/>; give the VM a "
                "video device instead, as StarlingX's own domains have)",
            ) from None

    def _select_path(
        self, path: Sequence[str | re.Pattern[str]], deadline: Deadline, settle: float
    ) -> None:
        """The walk of :meth:`select_menu`. ESC is pressed at most once, before any entry is
        chosen: ESC at vesamenu's top level opens the ``boot:`` prompt, which boots label 1
        after its own timeout."""
        level = 0
        while level < len(path):
            wanted = path[level]
            label = wanted.pattern if isinstance(wanted, re.Pattern) else wanted
            inner = level + 1 < len(path)
            menu = self._await_entry(
                wanted, label, deadline, settle, titled=inner, may_leave=level == 0
            )
            target = menu.find(wanted)
            if target is None:  # the menu on screen is the wanted submenu itself
                log.info("%s: already in menu %r", self.node, label, extra=self._extra)
                level += 1
                continue
            rows = [entry.row for entry in menu.entries]
            highlighted = menu.highlighted
            if highlighted is None:  # cannot happen: checked by the wait
                raise self._error(MenuError, f"lost menu entry {label!r}: {menu}")
            here, there = rows.index(highlighted.row), rows.index(target.row)
            step = 1 if there > here else -1
            while here != there:
                self._move_highlight(rows[here], rows[here + step], label, deadline, settle)
                here += step
            log.info("%s: menu entry %r selected", self.node, label, extra=self._extra)
            if inner:
                self.screen.reset()  # the submenu is drawn on a cleared screen
            self.send_key("enter")
            level += 1

    def _move_highlight(
        self, row: int, to: int, label: str, deadline: Deadline, settle: float
    ) -> None:
        """Press up or down once and wait until the highlight is on screen row ``to``.

        Only the highlight is awaited, not the entry's text: a redrawn row may read 'tall'
        instead of its entry. A lost highlight is redrawn (:meth:`_redraw_highlight`).
        """
        key = "down" if to > row else "up"
        arrived = _highlight_on(to)
        what = f"the highlight to move towards menu entry {label!r}"
        self.send_key(key)
        menu = self._wait_screen_briefly(arrived, deadline, settle, what)
        if not arrived(menu):
            menu = self._redraw_highlight(key, deadline, settle, what)
        if not arrived(menu):
            raise self._error(
                MenuError, f"{what}: the highlight went to another row than {to}: {menu}"
            )

    def _redraw_highlight(self, key: str, deadline: Deadline, settle: float, what: str) -> Menu:
        """Redraw a highlight lost after ``key``: press the opposite key, then ``key`` again.

        GRUB drops serial output when the host is slow: a CI run lost the redraw of the newly
        highlighted row, and no row read highlighted. Keys are not lost, and the two moves
        redraw both rows of the lost one. Each move is awaited on screen before the next key (a
        highlight read in between would be stale). Returns the menu once ``key`` has moved the
        highlight; raises :class:`MenuError` after :data:`MENU_REDRAWS` tries.
        """
        back = "up" if key == "down" else "down"
        menu = self.screen.menu()
        for _ in range(MENU_REDRAWS):
            log.info(
                "%s: waiting for %s after key %s (menu on screen: %s); pressing %s and %s to "
                "redraw it", self.node, what, key, menu or "none", back, key, extra=self._extra,
            )  # fmt: skip
            self.send_key(back)
            menu = self._wait_screen_briefly(_one_highlight, deadline, settle, what)
            start = menu.highlighted
            self.send_key(key)
            if start is None:  # this redraw was lost too: let the second one land, then again
                menu = self._wait_screen_briefly(_one_highlight, deadline, settle, what)
                continue
            moved = _moved_from(start.row)
            menu = self._wait_screen_briefly(moved, deadline, settle, what)
            if moved(menu):
                return menu
        raise self._error(
            MenuError,
            f"{what}: not on screen after {MENU_REDRAWS} redraws "
            f"(menu on screen: {menu or 'none'})",
        )

    def _await_entry(
        self,
        wanted: str | re.Pattern[str],
        label: str,
        deadline: Deadline,
        settle: float,
        *,
        titled: bool = False,
        may_leave: bool = False,
    ) -> Menu:
        """Wait for a menu showing ``wanted`` with a highlight (or, when ``titled``, a menu
        titled ``wanted``); return it.

        A menu that stays the same for ``settle`` seconds without it is, when it has a title
        and ``may_leave``, left with ESC (once) (vesamenu: up from the submenu it opened in, the
        countdown restarting at the top). Otherwise the highlight is
        walked down and then up through the menu: a menu may be drawn incompletely on a serial
        line (GRUB 2.06 under QEMU cut an entry short in its first draw, reproducibly), and
        every move redraws the rows it leaves and enters, which repairs them (and scrolls long
        menus).
        """
        what = f"menu entry {label!r}"

        def found(menu: Menu) -> bool:
            inside = titled and menu.title is not None and matches(menu.title, wanted)
            return menu.highlighted is not None and (menu.find(wanted) is not None or inside)

        escaped = False
        menu = self.screen.menu()
        while True:  # until the menu has stayed the same for `settle` seconds
            shown = menu
            menu = self._wait_screen_briefly(
                lambda m, shown=shown: found(m) or m != shown, deadline, settle, what
            )
            if found(menu):
                return menu
            if menu != shown or menu.highlighted is None:
                continue
            if menu.title is None or escaped or not may_leave:
                break
            log.info(
                "%s: no %s in the menu on screen (%s); ESC to the menu above", self.node, what,
                menu, extra=self._extra,
            )  # fmt: skip
            escaped = True
            self.screen.reset()  # the menu above is drawn on a cleared screen
            self.send_key("esc")
            menu = self.screen.menu()
        log.info(
            "%s: no %s in the menu on screen (%s); walking the menu", self.node, what, menu,
            extra=self._extra,
        )  # fmt: skip
        current = menu.highlighted
        assert current is not None  # the loop above ends on a menu with a highlight
        for key in ("down", "up"):
            for _ in range(64):
                self.send_key(key)
                moved = _moved_from(current.row)
                menu = self._wait_screen_briefly(moved, deadline, settle, "the highlight to move")
                menu = self._wait_screen_briefly(found, deadline, 0.5, what)  # text completes
                if menu.highlighted is None:
                    menu = self._redraw_highlight(key, deadline, settle, what)
                if found(menu):
                    return menu
                here = menu.highlighted
                assert here is not None  # _redraw_highlight returns a menu with a highlight
                at_end = here.row == current.row or (here.row > current.row) != (key == "down")
                current = here
                if at_end:
                    break  # the end of the menu, or it wrapped around
        raise self._error(MenuError, f"no {what} in the menu: {menu}")

    def _wait_screen_briefly(
        self, predicate: Callable[[Menu], bool], deadline: Deadline, seconds: float, what: str
    ) -> Menu:
        """The menu once ``predicate`` holds or ``seconds`` passed (bounded by ``deadline``)."""
        try:
            return self.wait_screen(predicate, deadline.within(seconds), what)
        except ConsoleTimeout:
            menu = self.screen.menu()
            self._check_waiting(f"{what} (menu on screen: {menu or 'none'})", deadline)
            return menu

    # ---- login

    def login(
        self,
        user: str,
        password: str,
        deadline: Deadline,
        new_password: str | None = None,
        *,
        booting: bool = True,
    ) -> str:
        """Log in on the console and return the password that is now valid.

        Handles the forced password change (Debian and CentOS prompts), a console already at a
        shell (as ``user``), logged out, or busy with a command (Ctrl-C). When ``password`` is
        refused and ``new_password`` is given, it tries ``new_password`` (a lab resumed after the
        change). Afterwards ``TMOUT`` is off and sudo prompts are answered with the password.
        ``booting=False`` says the node is known to be up (resumed from a memory snapshot), so
        there is no waiting for a booting node to print its prompt by itself.
        """
        self.user = user
        self._timed_out = False
        for secret in (password, new_password):
            if secret and secret != user:
                self.add_secret(secret)
        candidates = [password] + ([new_password] if new_password else [])
        tried = 0
        current = password
        patterns = {
            "prompt": self.prompt,
            "login": LOGIN,
            "incorrect": LOGIN_INCORRECT,
            "rejected": PASSWORD_REJECTED,
            "retype": RETYPE_PASSWORD,
            "new": NEW_PASSWORD,
            "current": CURRENT_PASSWORD,
            "password": PASSWORD,
        }
        names = list(patterns)
        sent_password = sent_new = False
        if booting:
            self._await_prompt(deadline.within(PROMPT_GRACE))
        self._wake(deadline)
        probes = 0  # wake-ups repeated for a console that stays quiet (a lost Ctrl-C, say)
        for _ in range(40):
            try:
                step = self.expect(
                    list(patterns.values()),
                    deadline.within(5.0) if probes < 3 else deadline,
                    what=f"a login or shell prompt for {user}",
                )
            except ConsoleTimeout:
                if probes >= 3 or deadline.expired:
                    raise
                probes += 1
                self._wake(deadline)
                continue
            probes = 3
            state = names[step.index]
            if state not in ("incorrect", "rejected"):
                self.discard()  # a prompt waits for input: what followed it is stale
            if state == "login":
                sent_password = False
                self.sendline(user)
            elif state == "password":
                if tried >= len(candidates):
                    raise self._error(LoginError, f"no password left to try for {user}")
                current = candidates[tried]
                sent_password = True
                self.send_secret(current)
            elif state == "incorrect" and sent_password:
                tried += 1
                sent_password = False
                if tried >= len(candidates):
                    raise self._error(
                        LoginError, f"login as {user} refused: 'Login incorrect' for every password"
                    )
            elif state == "current":
                self.send_secret(current)
            elif state == "new":
                if new_password is None:
                    raise self._error(
                        LoginError,
                        f"the console demands a new password for {user}; pass new_password",
                    )
                if sent_new:
                    raise self._error(LoginError, "the new password was rejected (asked again)")
                self.send_secret(new_password)
            elif state == "retype":
                assert new_password is not None
                sent_new = True
                self.send_secret(new_password)
                current = new_password
            elif state == "rejected":
                message = self.mask(step.text.strip())
                raise self._error(LoginError, f"the new password was rejected: {message}")
            elif state == "prompt":
                # TMOUT is readonly from 11.0: the shell may time out all the same (logged_out)
                whoami = self.run(
                    "export TMOUT=0 2>/dev/null; stty echo; id -un", deadline
                ).stdout.strip()
                if whoami == user:
                    break
                log.info(
                    "%s: shell belongs to %r, leaving it", self.node, whoami, extra=self._extra
                )
                self.expect(self.prompt, deadline)  # the prompt after the command, then exit
                self.discard()
                self.sendline("exit")
        else:
            raise self._error(LoginError, f"login as {user} did not reach a shell")
        self.password = current
        log.info("%s: logged in as %s", self.node, user, extra=self._extra)
        return current

    def logged_out(self) -> bool:
        """True when bash's ``TMOUT`` ended the shell since the last login (its message came
        while the console was idle); what the caller then does is log in again."""
        if not self._timed_out:
            try:
                self._child.expect_list([AUTO_LOGOUT], timeout=0)
            except (TIMEOUT, EOF):
                return False
            self._timed_out = True
        return True

    def _wake(self, deadline: Deadline) -> None:
        """Ctrl-C, let the output settle, then Enter for one fresh prompt.

        Waiting for silence before Enter matters: answering a prompt that was already under way
        types into the wrong dialog.
        """
        sent = time.monotonic()
        self.interrupt()
        self.settle(0.5, deadline.within(5.0), since=sent)  # the answer to the Ctrl-C included
        if self._at_prompt():
            return  # a prompt already waits (the Ctrl-C gave one): an Enter would add another
        self.discard()
        self.sendline()

    def _await_prompt(self, deadline: Deadline) -> None:
        """Give a node that is still booting the time to print its prompt by itself: keys
        typed before its login program runs are queued and answer the wrong prompt later.

        A console quiet for a while is woken early, unless its last news is a boot: on a slow
        host a boot can fall silent for long after the kernel's last line.
        """
        with self._changed:
            while not (
                self._at_prompt()
                or deadline.expired
                or self._closed_reason is not None
                or (time.monotonic() - self._last_output > BOOT_QUIET and not self._booting())
            ):
                self._changed.wait(min(0.5, deadline.remaining))

    def _booting(self) -> bool:
        """True when the console shows boot output with no prompt printed since."""
        prompt = self._any_prompt()
        for line in reversed(self.tail(self._ring_lines)):
            if re.search(prompt, line):
                return False
            if _BOOT_OUTPUT.search(line):
                return True
        return False

    def _at_prompt(self) -> bool:
        """True when the console's last line is a login or shell prompt waiting for input.

        Kernel messages printed since (on lines of their own, or run onto the prompt's line)
        do not count, however many: the prompt still waits.
        """
        for line in reversed(self.tail(self._ring_lines)):
            line = _KERNEL_MESSAGE_TAIL.sub("", line).rstrip()
            if line:
                return bool(re.search(rf"{self._any_prompt()}$", line))
        return False

    def _any_prompt(self) -> str:
        """A login or shell prompt (its trailing blank optional)."""
        return rf"(?:{LOGIN}|{self.prompt.rstrip()})"

    # ---- commands

    def run(
        self,
        command: str,
        deadline: Deadline,
        *,
        secrets: Sequence[str] = (),
        kernel_messages: bool = False,
    ) -> Result:
        """Run one shell command line at the prompt; return its output and exit status.

        The output is framed by unique markers whose echoed form cannot match, so echoed input
        never counts as output. Escape sequences and (unless ``kernel_messages``) printk lines
        interleaved by the kernel are removed. Commands holding ``secrets`` are sent with the
        terminal's echo off and masked everywhere. Sudo prompts are answered with
        :attr:`password`. ``command`` must be one line (no trailing ``&``, no ``#`` comment);
        longer input goes through :meth:`write_file`.
        """
        command = command.strip().rstrip(";").rstrip()
        if "\n" in command or "\r" in command:
            raise ValueError("run() sends one line; write scripts with write_file()")
        if len(command) > MAX_COMMAND:
            raise ValueError(
                f"command of {len(command)} characters; over {MAX_COMMAND} use write_file()"
            )
        if re.search(r"(?<!&)&$", command):
            raise ValueError("run() waits for the command; do not end it with '&'")
        for secret in secrets:
            self.add_secret(secret)
        hidden = bool(secrets) or self._secrets.contained_in(command)
        if hidden:
            self.run("stty -echo", deadline)
        token = uuid.uuid4().hex[:16]
        begin = f"__STX_{token}_B__"
        line = f"echo __STX_{token}''_B__; {command}; echo __STX_{token}''_E_$?__"
        if hidden:
            line += "; stty echo"
            self._transcript.note(f"run (echo off): {self.mask(command)}")
        log.debug("%s: run %s", self.node, self.mask(command), extra=self._extra)
        self.sendline(line)
        sent = time.monotonic()
        sudo = [SUDO_PASSWORD] + ([PASSWORD] if "sudo" in command else [])
        captured = ""
        asked = 0
        while True:
            step = self.expect(
                [rf"__STX_{token}_E_(\d+)__", REBOOTED, *sudo],
                deadline,
                what=f"the end of command {self.mask(command)!r}",
            )
            before = step.before
            if asked:  # sudo's line end after the hidden password
                before = before.removeprefix("\r\n").removeprefix("\n")
            captured += before
            if step.index == 0:
                break
            if step.index == 1:
                raise self._error(
                    NodeRebooted,
                    f"the node rebooted while running {self.mask(command)!r}: its login prompt "
                    f"appeared {_secs(time.monotonic() - sent)} after it was sent",
                )
            asked += 1
            if self.password is None or asked > 1:
                self.interrupt()
                problem = "no password is known" if self.password is None else "it was refused"
                raise self._error(LoginError, f"sudo asked for a password and {problem}")
            self.send_secret(self.password)
        _, found, output = captured.partition(begin)
        if not found:  # the begin marker was mangled (a printk in the middle): drop the echo
            output = captured.split("\n", 1)[-1]
        output = clean_output(output, kernel_messages)
        output = output.removeprefix("\n").removesuffix("\n")
        return Result(command, output, int(step.match.group(1)))

    def run_checked(self, command: str, deadline: Deadline, *, secrets: Sequence[str] = ()) -> str:
        """Like :meth:`run`; return the output, raise :class:`CommandFailed` unless status 0."""
        result = self.run(command, deadline, secrets=secrets)
        if not result.ok:
            out = "\n".join(result.stdout.splitlines()[-TAIL_LINES:])
            error = self._error(
                CommandFailed,
                f"command {command!r} exited with status {result.exit_status}; output:\n{out}",
            )
            error.result = result
            raise error
        return result.stdout

    def write_file(
        self,
        path: str,
        content: str | bytes,
        deadline: Deadline,
        *,
        mode: str | None = None,
        secret: bool = False,
        chunk: int = 256,
    ) -> None:
        """Write ``content`` to ``path`` on the node, in base64 chunks of one short line each.

        Each chunk waits for its command to finish, so a serial line is never flooded and no
        line reaches the terminal's 4 KiB limit. With ``secret`` (or when the content holds a
        registered secret) the chunks are sent with echo off and masked, and the file is created
        with umask 077.
        """
        data = content.encode("utf-8") if isinstance(content, str) else content
        secret = secret or self._secrets.contained_in(data.decode("utf-8", "replace"))
        encoded = base64.b64encode(data).decode("ascii")
        target, staging = shlex.quote(path), shlex.quote(f"{path}.stx-b64")
        # umask 077 in a subshell only: the login shell's umask (which sudo adds to its own)
        # stays as it was for everything run after.
        umask = "umask 077; " if secret else ""
        self._transcript.note(
            f"write_file {path} ({len(data)} bytes{', secret' if secret else ''})"
        )
        self.run_checked(f"({umask}: > {staging})", deadline)
        for start in range(0, len(encoded), chunk):
            piece = encoded[start : start + chunk]
            self.run_checked(
                f"printf %s {piece} >> {staging}", deadline, secrets=[piece] if secret else ()
            )
        finish = f"({umask}base64 -d {staging} > {target}) && rm -f {staging}"
        if mode:
            finish += f" && chmod {shlex.quote(mode)} {target}"
        self.run_checked(finish, deadline)


def _one_highlight(menu: Menu) -> bool:
    """Predicate: exactly one entry highlighted."""
    return menu.highlighted is not None


def _highlight_on(row: int) -> Callable[[Menu], bool]:
    """Predicate: one entry highlighted, the one on ``row``."""

    def on(menu: Menu) -> bool:
        return menu.highlighted is not None and menu.highlighted.row == row

    return on


def _moved_from(row: int) -> Callable[[Menu], bool]:
    """Predicate: one entry highlighted, and not the one on ``row``."""

    def moved(menu: Menu) -> bool:
        return menu.highlighted is not None and menu.highlighted.row != row

    return moved
