"""The YAML subset that `localhost.yml` uses, without PyYAML (the guest has none).

Top-level `key: value` mappings only; values are plain or quoted scalars, flow lists
`[a, b]`, block lists (`- a` lines under an empty `key:`), or flow collections written as
JSON on one line (`{"docker.io": {"url": "..."}}`: JSON is YAML's flow style, and it is how
nested values such as `docker_registries` reach us). Comments and `---` are skipped.
Anything else raises `YamlError` naming the line.
"""

from __future__ import annotations

import json
import re

Value = str | int | bool | None | list["Value"] | dict[str, "Value"]

_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)\s*:(?:\s+(.*))?$")


class YamlError(ValueError):
    """The file uses YAML this parser does not understand, or is not YAML."""


def _strip_comment(text: str) -> str:
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def scalar(text: str, where: str) -> Value:
    """Convert a YAML scalar the way PyYAML's safe loader would for these files."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner.replace('\\"', '"')
    if text[:1] in "'\"":
        raise YamlError(f"{where}: unterminated quoted string")
    if text[:1] in "{&*!|>%@`":
        raise YamlError(f"{where}: unsupported YAML construct {text[:1]!r}")
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE", "yes", "Yes"):
        return True
    if text in ("false", "False", "FALSE", "no", "No"):
        return False
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    return text


def _flow_list(text: str, where: str) -> list[Value]:
    inner = text[1:-1].strip()
    if not inner:
        return []
    if "[" in inner or "{" in inner:
        raise YamlError(f"{where}: nested collections are not supported")
    return [scalar(part, where) for part in inner.split(",")]


def _json(text: str) -> Value | None:
    """A JSON collection (YAML flow style), or None when ``text`` is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def loads(text: str, name: str = "<yaml>") -> dict[str, Value]:
    """Parse the subset; duplicate keys and stray indentation are errors."""
    data: dict[str, Value] = {}
    open_list: list[Value] | None = None
    open_key = ""
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        line = _strip_comment(raw)
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlError(f"{where}: tabs are not allowed for indentation")
        stripped = line.strip()
        if stripped.startswith("- ") or stripped == "-":
            if open_list is None:
                raise YamlError(f"{where}: list item outside a list")
            item = stripped[1:].strip()
            if item.startswith("[") or _KEY.match(item):
                raise YamlError(f"{where}: nested collections are not supported")
            open_list.append(scalar(item, where))
            continue
        if line[0].isspace():
            raise YamlError(f"{where}: nested mappings are not supported")
        match = _KEY.match(line)
        if not match:
            raise YamlError(f"{where}: expected 'key: value', got {stripped!r}")
        key, rest = match.group(1), (match.group(2) or "").strip()
        if key in data:
            raise YamlError(f"{where}: duplicate key {key!r}")
        if open_list is not None and not open_list:
            data[open_key] = None
        open_list = None
        if not rest:
            open_list, open_key = [], key
            data[key] = open_list
        elif rest.startswith(("{", "[")) and (collection := _json(rest)) is not None:
            data[key] = collection
        elif rest.startswith("{"):
            raise YamlError(f"{where}: flow mappings must be written as JSON")
        elif rest.startswith("["):
            if not rest.endswith("]"):
                raise YamlError(f"{where}: unterminated flow list")
            data[key] = _flow_list(rest, where)
        else:
            data[key] = scalar(rest, where)
    if open_list is not None and not open_list:
        data[open_key] = None
    return data
