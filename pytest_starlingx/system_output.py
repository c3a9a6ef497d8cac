"""Parsers for what StarlingX's ``system`` CLI prints: tables (prettytable borders) and yaml.

``system host-list`` prints rows under a header; ``system host-show`` prints a
``Property | Value`` table. ``--nowrap`` exists on list commands only (cgtsclient
``common/utils.py`` ``_does_command_need_no_wrap``): without it, long cells are wrapped onto
continuation lines, which this parser joins back together. Show commands that take ``--format
yaml`` (host-show, application-show) are better read that way (:func:`parse_yaml_properties`).
"""

from __future__ import annotations

import yaml

from pytest_starlingx.errors import StxError


class TableError(StxError):
    """The text holds no ``system`` table, or a malformed one; the message quotes it."""


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of the first table in ``text``, each a mapping of column header to cell.

    Lines outside the table (the echoed command, warnings, the next prompt) are ignored. An
    empty table (header only) gives ``[]``.
    """
    lines = _table_lines(text)
    borders = [i for i, line in enumerate(lines) if line.startswith("+")]
    if len(borders) < 2 or borders[0] != 0:
        raise TableError(f"no table header in:\n{text}")
    header_lines = lines[borders[0] + 1 : borders[1]]
    headers = _merge([_cells(line) for line in header_lines])[0] if header_lines else []
    if not headers:
        raise TableError(f"no column headers in:\n{text}")
    body = lines[borders[1] + 1 : borders[2]] if len(borders) > 2 else []
    rows: list[list[str]] = []
    for line in body:
        cells = _cells(line)
        if len(cells) != len(headers):
            raise TableError(f"a row has {len(cells)} cells for {len(headers)} columns: {line!r}")
        if rows and cells[0] == "" and any(cells):
            rows[-1] = [f"{a}{b}" for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return [dict(zip(headers, row, strict=True)) for row in rows]


def parse_properties(text: str) -> dict[str, str]:
    """A ``Property | Value`` table (``host-show``, ``storage-backend-add``) as a mapping."""
    rows = parse_table(text)
    if rows and set(rows[0]) != {"Property", "Value"}:
        raise TableError(f"not a Property | Value table: columns {list(rows[0])}")
    return {row["Property"]: row["Value"] for row in rows}


def parse_yaml_properties(text: str) -> dict[str, str]:
    """``system <x>-show --format yaml`` as a mapping of each property to its value as text
    (``None`` for a null, nested mappings as their yaml)."""
    try:
        data = yaml.safe_load(text.replace("\r", ""))
    except yaml.YAMLError as exc:
        raise TableError(f"not yaml ({exc}):\n{text}") from None
    if not isinstance(data, dict):
        raise TableError(f"not a yaml mapping:\n{text}")
    return {str(key): _text(value) for key, value in data.items()}


def _text(value: object) -> str:
    if value is None or isinstance(value, str):
        return str(value)
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def _table_lines(text: str) -> list[str]:
    """The lines from the first border to the last border, stripped of CR and indentation."""
    lines = [line.strip() for line in text.replace("\r", "").splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("+-")), None)
    if start is None:
        raise TableError(f"no table in:\n{text}")
    end = start
    for i in range(start, len(lines)):
        if lines[i].startswith("+-"):
            end = i
        elif not lines[i].startswith("|"):
            break
    return lines[start : end + 1]


def _cells(line: str) -> list[str]:
    if not (line.startswith("|") and line.endswith("|")):
        raise TableError(f"not a table row: {line!r}")
    return [cell.strip() for cell in line[1:-1].split("|")]


def _merge(lines: list[list[str]]) -> list[list[str]]:
    """Header cells wrapped onto several lines, joined with a space."""
    merged = lines[0]
    for cells in lines[1:]:
        merged = [f"{a} {b}".strip() for a, b in zip(merged, cells, strict=True)]
    return [merged]
