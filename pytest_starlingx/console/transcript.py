"""What a console read, recorded: the masked transcript file, the ring buffer of recent lines,
and the secrets kept out of both."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import TextIO

log = logging.getLogger("pytest_starlingx.console")

MASK = "****"

_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_=>78])"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (tabs, newlines kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


class Secrets:
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


class Transcript:
    """The per-node transcript file and the ring buffer of recent lines, both masked."""

    def __init__(self, node: str, path: Path | None, secrets: Secrets, keep: int) -> None:
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
