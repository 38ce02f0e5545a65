"""Where a config file went wrong, in the file's own terms: msgspec's `$.providers[...]`
paths as TOML key paths, with the closest known field suggested."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import msgspec
import msgspec.inspect as mi

from thanos_asgi.config.schema import Config
from thanos_asgi.exceptions import ConfigError

KeyPath = list[str | int]
Renames = list[tuple[KeyPath, KeyPath]]

_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_SEGMENT = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_FIELD_PROBLEM = re.compile(r"^Object (contains unknown|missing required) field `([^`]*)`$")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PREFERRED = (mi.StructType, mi.LiteralType)


def validation_error(
    message: str, data: dict[str, Any], source: str, renames: Renames
) -> ConfigError:
    """msgspec's `... - at $.providers[...].max_tokens` as `providers.claude.max_tokens: ...`."""
    match = _AT_PATH.match(message)
    assert match is not None  # the pattern matches any text
    reason, path = match["reason"], _locate(data, match["path"] or "", message)
    problem = _FIELD_PROBLEM.match(reason)
    if problem is not None:
        reason = _field_problem(problem[1] == "missing required", problem[2], _schema_at(path))
        path.append(problem[2])
    elif reason.startswith("Invalid enum value"):  # never echo the value: it may be a secret
        allowed = _schema_at(path)
        values = allowed.values if isinstance(allowed, mi.LiteralType) else ()
        reason = f"must be one of: {', '.join(map(repr, values))}" if values else "invalid value"
    for old, new in renames:
        if path[: len(old)] == old:
            path = new + path[len(old) :]
    reason = reason.replace("`", "").replace(" | null", "").replace("object", "table")
    return ConfigError(reason, source=source, path=key_path(path))


def _field_problem(missing: bool, name: str, table: mi.Type | None) -> str:
    if missing:
        return "required key is missing"
    fields = [field.name for field in table.fields] if isinstance(table, mi.StructType) else []
    close = difflib.get_close_matches(name, fields, n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _schema_at(path: KeyPath) -> mi.Type | None:
    """The schema type at `path` (unions resolved to their table or choice member)."""
    node: mi.Type | None = mi.type_info(Config)
    for part in path:
        node = _unwrap(node)
        if isinstance(node, mi.StructType):
            node = next((field.type for field in node.fields if field.name == part), None)
        elif isinstance(node, mi.DictType):
            node = node.value_type
        elif isinstance(node, mi.ListType):
            node = node.item_type
        else:
            return None
    return _unwrap(node)


def _unwrap(node: mi.Type | None) -> mi.Type | None:
    if isinstance(node, mi.Metadata):
        return _unwrap(node.type)
    if isinstance(node, mi.UnionType):
        members = sorted(node.types, key=lambda member: not isinstance(member, _PREFERRED))
        return _unwrap(members[0])
    return node


def _locate(data: dict[str, Any], at: str, message: str) -> KeyPath:
    """Turn msgspec's path into keys, finding each `[...]` dict key by trial."""
    path: KeyPath = []
    node: Any = data
    for field, index in _PATH_SEGMENT.findall(at):
        key: str | int = field or (int(index) if index.isdigit() else _culprit(data, node, message))
        path.append(key)
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return path


def _culprit(data: dict[str, Any], node: Any, message: str) -> str:
    """The key of `node` (a dict inside `data`) whose entry alone reproduces the error."""
    if not isinstance(node, dict):
        return "..."
    entries = dict(node)
    try:
        for key, value in entries.items():
            node.clear()
            node[key] = value
            try:
                msgspec.convert(data, Config)
            except msgspec.ValidationError as error:
                if str(error) == message:
                    return str(key)
    finally:
        node.clear()
        node.update(entries)
    return "..."


def key_path(parts: KeyPath) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            text += f".{key}" if text else key
    return text
