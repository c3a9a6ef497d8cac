"""prettytable-style output as cgtsclient prints it (left aligned, one space of padding)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as prettytable shows it: str(), so `None`, `600.0`, `['enp2s1']`."""
    return str(value)


def render(labels: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A bordered table; multi-line cells take several lines, an empty list shows the header."""
    grid = [[cell(v).split("\n") for v in row] for row in rows]
    widths = [len(label) for label in labels]
    for row in grid:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(parts: Sequence[str]) -> str:
        return "| " + " | ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)) + " |"

    out = [rule, line(labels), rule]
    for row in grid:
        height = max(len(lines) for lines in row)
        for k in range(height):
            out.append(line([lines[k] if k < len(lines) else "" for lines in row]))
    if grid:
        out.append(rule)
    return "\n".join(out)


def render_dict(pairs: Sequence[tuple[str, Any]], sort: bool = False) -> str:
    """A `Property | Value` table (host-show sorts its keys, other *-show keep their order)."""
    items = sorted(pairs) if sort else list(pairs)
    return render(["Property", "Value"], items)
