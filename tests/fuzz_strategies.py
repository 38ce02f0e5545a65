"""Hypothesis strategies for the fuzz tests: JSON values, mutations of a JSON document or an
SSE/NDJSON body (recorded provider traffic in ../shared/cassettes as seeds), and client
request bodies in the OpenAI and Anthropic dialects that are valid more often than not.

Nesting stays shallow on purpose: nesting-depth limits are helper "validate"'s part of issue
15, and their tests send the deep documents.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

TEXT = st.text(max_size=24)
ASCII = st.text(st.characters(max_codepoint=0x7F), max_size=16)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ASCII, inner, max_size=4),
    max_leaves=10,
)


# -- mutations ----------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, value: Any, rounds: int = 3) -> Any:
    """`value` with up to `rounds` random changes: a subtree replaced, a key dropped or added,
    a value wrapped in a list or turned into its JSON text."""
    for _ in range(draw(st.integers(0, rounds))):
        value = _mutate_once(draw, value)
    return value


def _mutate_once(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        copy = dict(value)
        action = draw(st.sampled_from(["descend", "descend", "drop", "add"]))
        if action == "drop":
            del copy[key]
        elif action == "add":
            copy[draw(ASCII)] = draw(JSON)
        else:
            copy[key] = _mutate_once(draw, value[key])
        return copy
    if isinstance(value, list) and value and draw(st.integers(0, 3)):
        index = draw(st.integers(0, len(value) - 1))
        copy = list(value)
        if draw(st.booleans()):
            copy[index] = _mutate_once(draw, value[index])
        else:
            del copy[index]
        return copy
    action = draw(st.sampled_from(["json", "json", "wrap", "text"]))
    if action == "wrap":
        return [value]
    if action == "text":
        return json.dumps(value)
    return draw(JSON)


@st.composite
def mutated_json_bytes(draw: st.DrawFn, value: Any) -> bytes:
    """`value` mutated and encoded; sometimes cut short, sometimes replaced by any bytes."""
    raw = json.dumps(draw(mutated(value))).encode()
    damage = draw(st.sampled_from(["none"] * 8 + ["cut", "bytes"]))
    if damage == "cut":
        return raw[: draw(st.integers(0, len(raw)))]
    if damage == "bytes":
        return draw(st.binary(max_size=64))
    return raw


@st.composite
def mutated_lines(draw: st.DrawFn, body: bytes, separator: bytes) -> bytes:
    """A stream body (`separator` between events) with events mutated, dropped, repeated or
    cut; `data: ` JSON payloads (SSE) and bare JSON lines (NDJSON) are mutated as JSON."""
    events = [event for event in body.split(separator) if event.strip()]
    out: list[bytes] = []
    for event in events:
        choice = draw(st.sampled_from(["keep"] * 5 + ["mutate", "mutate", "drop", "twice"]))
        if choice == "drop":
            continue
        if choice == "mutate":
            event = _mutate_event(draw, event)
        out.extend([event] * (2 if choice == "twice" else 1))
    raw = separator.join(out) + (separator if out else b"")
    if draw(st.integers(0, 9)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


def _mutate_event(draw: st.DrawFn, event: bytes) -> bytes:
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        prefix = b"data: " if line.startswith(b"data:") else b""
        payload = line[5:].strip() if prefix else line
        try:
            value = json.loads(payload)
        except ValueError:
            continue
        lines[i] = prefix + json.dumps(draw(mutated(value))).encode()
        return b"\n".join(lines)
    return draw(st.binary(max_size=40))


# -- client requests ----------------------------------------------------------------------------

URLS = (
    st.sampled_from(
        [
            "data:image/png;base64,iVBORw0KGgo=",
            "data:application/pdf;base64,JVBERi0=",
            "data:;base64,",
            "data:image/png,notbase64",
            "data:",
            "https://example.test/cat.png",
            "file:///etc/passwd",
            "",
        ]
    )
    | TEXT
)
OPENAI_PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": URLS})}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("input_audio"),
            "input_audio": st.fixed_dictionaries(
                {"data": TEXT, "format": st.sampled_from(["wav", "mp3", ""])}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("file"),
            "file": st.dictionaries(st.sampled_from(["file_data", "filename", "file_id"]), URLS),
        }
    ),
)
ARGUMENTS = st.one_of(TEXT, JSON.map(json.dumps), st.just("{}"), st.just('{"a": [1, {"b": 2}]}'))
TOOL_CALL = st.fixed_dictionaries(
    {
        "id": TEXT,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": TEXT, "arguments": ARGUMENTS}),
    }
)
SCHEMA = st.one_of(
    st.just({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}),
    st.just({"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2]}}}),
    st.just({"$defs": {"a": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/a"}}}),
    st.just({"anyOf": [{"type": "string"}, {"type": "null"}], "additionalProperties": False}),
    st.dictionaries(ASCII, JSON, max_size=3),
)
OPENAI_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])},
    optional={
        "content": st.one_of(st.none(), TEXT, st.lists(OPENAI_PART, max_size=3)),
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
        "tool_call_id": TEXT,
        "name": TEXT,
        "reasoning_content": TEXT,
        "reasoning_signature": TEXT,
    },
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": TEXT}, optional={"description": TEXT, "parameters": SCHEMA}
        ),
    }
)
CHAT = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(OPENAI_MESSAGE, min_size=1, max_size=4)},
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "max_tokens": st.integers(1, 100_000),
        "max_completion_tokens": st.integers(1, 100_000),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "n": st.just(1),
        "stop": st.one_of(TEXT, st.lists(TEXT, max_size=4)),
        "tools": st.lists(TOOL, max_size=3),
        "tool_choice": st.one_of(
            st.sampled_from(["none", "auto", "required"]),
            st.fixed_dictionaries(
                {"type": st.just("function"), "function": st.fixed_dictionaries({"name": TEXT})}
            ),
        ),
        "parallel_tool_calls": st.booleans(),
        "response_format": st.one_of(
            st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
            st.fixed_dictionaries(
                {
                    "type": st.just("json_schema"),
                    "json_schema": st.fixed_dictionaries(
                        {"name": TEXT}, optional={"schema": SCHEMA, "strict": st.booleans()}
                    ),
                }
            ),
        ),
        "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high", "none", "x"]),
        "seed": st.integers(0, 2**31),
        "user": TEXT,
        "metadata": st.dictionaries(ASCII, TEXT, max_size=2),
        "logit_bias": st.dictionaries(ASCII, st.floats(-100, 100), max_size=2),
    },
)

SOURCE = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("base64"),
            "media_type": st.sampled_from(["image/png", "application/pdf", "text/plain", ""]),
            "data": TEXT,
        }
    ),
    st.fixed_dictionaries({"type": st.just("url"), "url": URLS}),
    st.fixed_dictionaries({"type": st.just("text"), "data": TEXT}),
    st.fixed_dictionaries({"type": st.just("file"), "file_id": TEXT}),
)
ANTHROPIC_BLOCK = st.deferred(
    lambda: st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
        st.fixed_dictionaries({"type": st.just("image"), "source": SOURCE}),
        st.fixed_dictionaries(
            {"type": st.just("document"), "source": SOURCE}, optional={"title": TEXT}
        ),
        st.fixed_dictionaries(
            {"type": st.just("tool_use"), "id": TEXT, "name": TEXT, "input": JSON}
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("tool_result"),
                "tool_use_id": TEXT,
                "content": st.one_of(TEXT, st.lists(ANTHROPIC_BLOCK, max_size=2)),
            },
            optional={"is_error": st.booleans()},
        ),
        st.fixed_dictionaries({"type": st.just("thinking"), "thinking": TEXT, "signature": TEXT}),
        st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": TEXT}),
        st.fixed_dictionaries({"type": ASCII}),
    )
)
MESSAGES = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "max_tokens": st.integers(1, 100_000),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant"]),
                    "content": st.one_of(TEXT, st.lists(ANTHROPIC_BLOCK, max_size=3)),
                }
            ),
            min_size=1,
            max_size=4,
        ),
    },
    optional={
        "system": st.one_of(TEXT, st.lists(ANTHROPIC_BLOCK, max_size=2)),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(1, 500),
        "stop_sequences": st.lists(TEXT, max_size=3),
        "metadata": st.fixed_dictionaries({}, optional={"user_id": st.text(max_size=100)}),
        "tools": st.lists(
            st.fixed_dictionaries(
                {"name": TEXT, "input_schema": SCHEMA},
                optional={"description": TEXT, "type": st.sampled_from(["custom", "bash_x"])},
            ),
            max_size=3,
        ),
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none"])},
            optional={"name": TEXT, "disable_parallel_tool_use": st.booleans()},
        ),
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled", "adaptive"])},
            optional={"budget_tokens": st.integers(0, 40_000)},
        ),
    },
)
