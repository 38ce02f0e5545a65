"""JSON Schema -> Gemini's `Schema`, for function declarations and `responseSchema`.

Gemini's `Schema` is an OpenAPI 3.0 subset; tool and response schemas are cut down to it:
local `$ref`s are inlined (others are refused); `oneOf` -> `anyOf`; `allOf` members are merged;
`const` -> `enum`; `type: [t, "null"]` and `anyOf` with a null member -> `nullable`; `format`s
Gemini refuses are dropped; every other key is dropped, notably `$schema`, `$id`, `$defs`,
`definitions`, `additionalProperties`, `strict`, `default`, `examples`, `not`,
`patternProperties`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`, `uniqueItems`,
`readOnly`. Recursive schemas (and ones nested deeper than 32 levels) are refused: Gemini
accepts none.
"""

from __future__ import annotations

from typing import Any

from thanos_asgi.exceptions import InvalidRequest

_SCHEMA_KEYS = frozenset(
    {"type", "format", "title", "description", "nullable", "enum", "items", "properties"}
    | {"required", "minItems", "maxItems", "minProperties", "maxProperties", "minLength"}
    | {"maxLength", "pattern", "minimum", "maximum", "anyOf", "propertyOrdering"}
)
_FORMATS = {
    "string": frozenset({"enum", "date-time"}),
    "integer": frozenset({"int32", "int64"}),
    "number": frozenset({"float", "double"}),
}
_MAX_SCHEMA_DEPTH = 32


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` cut down to Gemini's Schema subset (module docstring); InvalidRequest on cycles."""
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _SchemaCleaner(definitions).clean(schema, 0)


class _SchemaCleaner:
    def __init__(self, definitions: dict[str, Any]) -> None:
        self.definitions = definitions

    def clean(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        if depth > _MAX_SCHEMA_DEPTH:
            raise InvalidRequest(
                "a tool or response schema nests too deeply or refers to itself; "
                "Gemini accepts no recursive schemas",
                param="tools",
            )
        node = self._resolve(node)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {
                    name: self.clean(sub, depth + 1)
                    for name, sub in value.items()
                    if isinstance(sub, dict)
                }
            elif key == "items" and isinstance(value, dict):
                out[key] = self.clean(value, depth + 1)
            elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
                self._alternatives(out, key, [v for v in value if isinstance(v, dict)], depth)
            elif key == "const":
                out["enum"] = [value]
            elif key == "type" and isinstance(value, list):
                _type_list(out, [str(v) for v in value])
            elif key in _SCHEMA_KEYS:
                out[key] = value
        _drop_format(out)
        return out

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        name = ref.rsplit("/", 1)[-1]
        target = self.definitions.get(name)
        if not ref.startswith(("#/$defs/", "#/definitions/")) or not isinstance(target, dict):
            raise InvalidRequest(f"schema reference {ref!r} cannot be resolved", param="tools")
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}

    def _alternatives(
        self, out: dict[str, Any], key: str, members: list[dict[str, Any]], depth: int
    ) -> None:
        cleaned = [self.clean(member, depth + 1) for member in members]
        if key == "allOf":  # Gemini has no allOf: merge the parts
            for member in cleaned:
                out.update(member)
            return
        kept = [member for member in cleaned if member.get("type") not in ("null", "NULL")]
        if len(kept) < len(cleaned):
            out["nullable"] = True
        if len(kept) == 1:
            out.update(kept[0])
        elif kept:
            out["anyOf"] = kept


def _type_list(out: dict[str, Any], types: list[str]) -> None:
    kept = [t for t in types if t.lower() != "null"]
    if len(kept) < len(types):
        out["nullable"] = True
    if len(kept) == 1:
        out["type"] = kept[0]
    elif kept:
        out["anyOf"] = [{"type": t} for t in kept]


def _drop_format(out: dict[str, Any]) -> None:
    allowed = _FORMATS.get(str(out.get("type", "")).lower(), frozenset())
    if "format" in out and out["format"] not in allowed:
        del out["format"]
