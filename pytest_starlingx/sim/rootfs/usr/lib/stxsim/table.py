"""prettytable-style output as cgtsclient prints it (left aligned, one space of padding)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as prettytable shows it: str(), so `None`, `600.0`, `['enp2s1']`."""
    return str(value)


def render(labels: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A bordered table as prettytable draws it; multi-line cells take several lines, and an
    empty list is the header and two rules (prettytable 0.7.2, bullseye's, and 3.x alike)."""
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
    out.append(rule)
    return "\n".join(out)


def render_dict(pairs: Sequence[tuple[str, Any]], sort: bool = False) -> str:
    """A `Property | Value` table (host-show sorts its keys, other *-show keep their order)."""
    items = sorted(pairs) if sort else list(pairs)
    return render(["Property", "Value"], items)


# ---- cgtsclient's --format yaml|value (starlingx/config cgtsclient/common/utils.py, r/stx.10.0:
# ``print_list`` and ``print_dict_with_format``: yaml is ``yaml.safe_dump(...,
# default_flow_style=False)`` (keys sorted), value is the values joined by one space)

FORMATS = ("table", "yaml", "value")
_PLAIN = re.compile(r"[A-Za-z_/][\w./@-]*(?: [\w./@-]+)*")
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"}


def yaml_scalar(value: Any) -> str:
    """A scalar as PyYAML's safe_dump writes it (plain where that reads back the same)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return "'" + text.replace("'", "''") + "'"


def _yaml_mapping(mapping: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key in sorted(mapping):
        value = mapping[key]
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += _yaml_mapping(value, indent + "  ")
        else:
            lines.append(f"{indent}{key}: {'{}' if value == {} else yaml_scalar(value)}")
    return lines


def render_records(fields: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str | None) -> str:
    """A list command's output: the table, or its records as yaml or values."""
    if fmt == "yaml":
        lines = []
        for row in rows:
            first, *rest = _yaml_mapping(dict(zip(fields, row, strict=True)), "  ")
            lines += ["- " + first[2:], *rest]
        return "\n".join(lines or ["[]"]) + "\n"
    if fmt == "value":
        return "\n".join(" ".join(cell(v) for v in row) for row in rows)
    return render(fields, rows)


def render_fields(pairs: Sequence[tuple[str, Any]], fmt: str | None) -> str:
    """A show command's output: the sorted ``Property | Value`` table, yaml or values."""
    if fmt == "yaml":
        return "\n".join(_yaml_mapping(dict(pairs), "")) + "\n"
    if fmt == "value":
        return " ".join(cell(v) for _, v in pairs)
    return render_dict(pairs, sort=True)
