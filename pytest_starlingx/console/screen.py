"""Reading boot menus from a VT100 screen model (pyte).

Boot loaders draw menus with cursor addressing: GRUB writes each entry at ``ESC[row;3H`` and the
highlighted one in reverse video (``ESC[7m``) with a ``*`` prefix; syslinux's vesamenu draws a
box in DEC line drawing, its title above a separator row, the highlighted row in reverse video
and a ``>`` at the right edge of rows that open a submenu (shared/real-menus.md). Regexes on the
raw bytes cannot tell which entry is highlighted after a few redraws; a screen model can. The
reading here is generic: a row is highlighted when its text is drawn in reverse video, or when it
is marked with ``*`` or ``>``, or (last resort) when its background differs from that of the
other entries. Entry texts come without the decoration: no marks, no submenu ``>``, one space
between words.
"""

from __future__ import annotations

import codecs
import re
import threading
from collections import Counter
from dataclasses import dataclass

import pyte

# Box borders drawn around menus: ASCII (GRUB on a serial line) and Unicode box drawing.
_BORDER = r"|+\-" + "\u2500-\u257f"
_EDGES = re.compile(rf"^[\s{_BORDER}]+|[\s{_BORDER}]+$")
_MARK = re.compile(r"^[*>]\s?")
_SUBMENU = re.compile(r"\s+>$")  # vesamenu's marker of a row that opens a submenu


def matches(text: str, wanted: str | re.Pattern[str]) -> bool:
    """Whether a menu text is ``wanted``: equal (whitespace-normalized) or a regex full match."""
    if isinstance(wanted, re.Pattern):
        return wanted.fullmatch(text) is not None
    return text == " ".join(wanted.split())


@dataclass(frozen=True)
class MenuEntry:
    """One menu row: its screen row (0-based), its text, and whether it is highlighted."""

    row: int
    text: str
    highlighted: bool


@dataclass(frozen=True)
class Menu:
    """The entries of the menu currently on screen (top to bottom), and its boxed title."""

    entries: tuple[MenuEntry, ...]
    title: str | None = None

    @property
    def highlighted(self) -> MenuEntry | None:
        """The highlighted entry, or None when there is none or more than one (mid-redraw)."""
        marked = [e for e in self.entries if e.highlighted]
        return marked[0] if len(marked) == 1 else None

    def find(self, text: str | re.Pattern[str]) -> MenuEntry | None:
        """The entry whose whole text equals ``text`` (whitespace-normalized) or matches it."""
        return next((entry for entry in self.entries if matches(entry.text, text)), None)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __str__(self) -> str:
        entries = ", ".join(f"{'*' if e.highlighted else ''}{e.text!r}" for e in self.entries)
        return f"[{self.title}] {entries}" if self.title else entries


def _cp437(error: UnicodeError) -> tuple[str, int]:
    """Decode what is not UTF-8 as code page 437: firmware consoles draw in it (OVMF's PC-ANSI
    serial terminal sends GRUB's menu box as CP437 line-drawing bytes)."""
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start : error.end].decode("cp437"), error.end


CP437_FALLBACK = "pytest-starlingx-cp437"
codecs.register_error(CP437_FALLBACK, _cp437)


class Screen:
    """A thread-safe VT100 screen fed with console bytes.

    Large enough for every boot loader's text screen, so that nothing wraps or scrolls out of
    place: vesamenu addresses rows up to 29 on the serial line (its 640x480 text screen), GRUB
    under OVMF writes 100-column rows down to row 31 (OVMF's largest text mode).
    """

    def __init__(self, columns: int = 132, lines: int = 50) -> None:
        self._screen = pyte.Screen(columns, lines)
        # bytes: a console may switch UTF-8 off (vesamenu's ESC % @ for DEC line drawing);
        # while it is on, what is not UTF-8 is read as CP437 rather than replaced
        self._stream = pyte.ByteStream(self._screen)
        self._stream.utf8_decoder = codecs.getincrementaldecoder("utf-8")(CP437_FALLBACK)
        self._lock = threading.Lock()
        # Each row as menu() reads it, redone only for the rows pyte marks dirty (a console
        # polled while a menu draws would otherwise re-read the whole screen per chunk).
        self._rows: list[tuple[MenuEntry, bool, str] | None] = [None] * lines
        self._texts = [""] * lines
        self._screen.dirty.update(range(lines))

    def feed(self, data: bytes) -> None:
        """Apply console output to the screen."""
        with self._lock:
            self._stream.feed(data)

    def reset(self) -> None:
        """Forget what is on screen (before a full redraw is expected)."""
        with self._lock:
            self._screen.reset()

    def lines(self) -> list[str]:
        """The screen's text, one string per row."""
        with self._lock:
            return list(self._screen.display)

    def menu(self) -> Menu:
        """The menu on screen: the block of non-empty rows around the highlighted one."""
        with self._lock:  # one snapshot of the screen for rows and borders alike
            for y in self._screen.dirty:
                if y < len(self._rows):
                    self._rows[y] = self._row(y)
                    self._texts[y] = self._text(y)
            self._screen.dirty.clear()
            rows = list(self._rows)
            texts = list(self._texts)
        marked = [r for r in rows if r is not None and r[1]]
        if not marked:
            marked = _odd_background(rows)
        if not marked:
            return Menu(())
        anchor = marked[0][0].row
        start = anchor
        while start > 0 and rows[start - 1] is not None:
            start -= 1
        end = anchor
        while end + 1 < len(rows) and rows[end + 1] is not None:
            end += 1
        highlighted_rows = {r[0].row for r in marked}
        entries = tuple(
            MenuEntry(r[0].row, r[0].text, r[0].row in highlighted_rows)
            for r in rows[start : end + 1]
            if r is not None
        )
        # A boxed title: the row above the border or separator row above the entries.
        above = rows[start - 2] if start >= 2 and rows[start - 1] is None else None
        title = above[0].text if above is not None and _boxed(texts[start - 1]) else None
        return Menu(entries, title)

    def _text(self, y: int) -> str:
        line = self._screen.buffer[y]
        return "".join(line[x].data for x in range(self._screen.columns))

    def _row(self, y: int) -> tuple[MenuEntry, bool, str] | None:
        """(entry, explicitly highlighted, background) for row ``y``, None for a blank row."""
        line = self._screen.buffer[y]
        chars = [line[x] for x in range(self._screen.columns)]
        text = "".join(c.data for c in chars)
        inner = _EDGES.sub("", text)
        if not inner:
            return None
        first = text.index(inner)
        cells = chars[first : first + len(inner)]
        reverse = all(c.reverse for c in cells if c.data.strip())
        marked = bool(_MARK.match(inner))
        words = " ".join(_SUBMENU.sub("", _MARK.sub("", inner)).split())
        if not words:
            return None
        backgrounds = Counter(c.bg for c in cells if c.data.strip())
        background = backgrounds.most_common(1)[0][0]
        return MenuEntry(y, words, False), reverse or marked, background


def _boxed(text: str) -> bool:
    """Whether a screen row is a box's border or separator (line drawing, no text)."""
    return bool(text.strip()) and not _EDGES.sub("", text)


def _odd_background(
    rows: list[tuple[MenuEntry, bool, str] | None],
) -> list[tuple[MenuEntry, bool, str]]:
    """The one row of a block whose background differs from all the others' (syslinux colours)."""
    present = [r for r in rows if r is not None]
    counts = Counter(r[2] for r in present)
    odd = [r for r in present if counts[r[2]] == 1]
    return odd if len(odd) == 1 and len(present) >= 3 else []
