"""Reading boot menus from a VT100 screen model (pyte).

Boot loaders draw menus with cursor addressing: GRUB writes each entry at ``ESC[row;3H`` and the
highlighted one in reverse video (``ESC[7m``) with a ``*`` prefix; syslinux draws a box with the
highlighted row in other colours. Regexes on the raw bytes cannot tell which entry is highlighted
after a few redraws; a screen model can. The reading here is generic: a row is highlighted when its
text is drawn in reverse video, or when it is marked with ``*`` or ``>``, or (last resort) when its
background differs from that of the other entries.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass

import pyte

# Box borders drawn around menus: ASCII (GRUB on a serial line) and Unicode box drawing.
_BORDER = r"|+\-" + "\u2500-\u257f"
_EDGES = re.compile(rf"^[\s{_BORDER}]+|[\s{_BORDER}]+$")
_MARK = re.compile(r"^[*>]\s?")


@dataclass(frozen=True)
class MenuEntry:
    """One menu row: its screen row (0-based), its text, and whether it is highlighted."""

    row: int
    text: str
    highlighted: bool


@dataclass(frozen=True)
class Menu:
    """The entries of the menu currently on screen (top to bottom)."""

    entries: tuple[MenuEntry, ...]

    @property
    def highlighted(self) -> MenuEntry | None:
        """The highlighted entry, or None when there is none or more than one (mid-redraw)."""
        marked = [e for e in self.entries if e.highlighted]
        return marked[0] if len(marked) == 1 else None

    def find(self, text: str | re.Pattern[str]) -> MenuEntry | None:
        """The entry whose whole text equals ``text`` (whitespace-normalized) or matches it."""
        for entry in self.entries:
            if isinstance(text, re.Pattern):
                if text.fullmatch(entry.text):
                    return entry
            elif entry.text == " ".join(text.split()):
                return entry
        return None

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __str__(self) -> str:
        return ", ".join(f"{'*' if e.highlighted else ''}{e.text!r}" for e in self.entries)


class Screen:
    """A thread-safe VT100 screen fed with console bytes."""

    def __init__(self, columns: int = 80, lines: int = 25) -> None:
        self._screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self._screen)
        self._lock = threading.Lock()

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
        with self._lock:
            rows = [self._row(y) for y in range(self._screen.lines)]
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
        return Menu(entries)

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
        words = " ".join(_MARK.sub("", inner).split())
        if not words:
            return None
        backgrounds = Counter(c.bg for c in cells if c.data.strip())
        background = backgrounds.most_common(1)[0][0]
        return MenuEntry(y, words, False), reverse or marked, background


def _odd_background(
    rows: list[tuple[MenuEntry, bool, str] | None],
) -> list[tuple[MenuEntry, bool, str]]:
    """The one row of a block whose background differs from all the others' (syslinux colours)."""
    present = [r for r in rows if r is not None]
    counts = Counter(r[2] for r in present)
    odd = [r for r in present if counts[r[2]] == 1]
    return odd if len(odd) == 1 and len(present) >= 3 else []
