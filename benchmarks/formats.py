"""What the fake upstream (`upstream.py`) answers in each provider's format, built once.

Each format is a whole answer (JSON) and a stream (its SSE events, each a complete block), with
the same text: `WORD` once per content chunk, `chunks` chunks. The shapes are copied from the
recordings in /work/shared/cassettes (OpenAI chat, Anthropic Messages, Gemini generateContent
and streamGenerateContent?alt=sse) and, for the Responses API, from the events the `openai`
SDK parses (as tests/test_responses_wire.py replays them):

- `chat`: `/v1/chat/completions` (and any path no other format claims);
- `anthropic`: `/v1/messages` (`"stream": true` in the body streams);
- `gemini`: `…:generateContent` (JSON) and `…:streamGenerateContent?alt=sse` (the path streams);
- `responses`: `/v1/responses` (`"stream": true` streams typed `event:`/`data:` events).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MODEL = "bench-model"
CREATED = 1_700_000_000
WORD = "tok "  # every content chunk carries this text
PROMPT_TOKENS = 14
TEXT = "Hello! This is a fixed answer from the benchmark upstream."


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _data(data: object) -> bytes:
    return b"data: " + _json(data) + b"\n\n"


def _typed(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\n" + _data(data)


# -- OpenAI Chat Completions -------------------------------------------------------------------


def chat(chunks: int) -> tuple[bytes, list[bytes]]:
    whole = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 12, "total_tokens": 26},
    }
    base = {key: whole[key] for key in ("id", "object", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"

    def event(choices: list[object], usage: object = None) -> bytes:
        return _data({**base, "choices": choices, "usage": usage})

    def choice(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [event([choice({"role": "assistant", "content": WORD})])]
    events += [event([choice({"content": WORD})]) for _ in range(chunks - 1)]
    events.append(event([choice({}, "stop")]))
    total = PROMPT_TOKENS + chunks
    events.append(
        event(
            [], {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks, "total_tokens": total}
        )
    )
    events.append(b"data: [DONE]\n\n")
    return _json(whole), events


# -- Anthropic Messages ------------------------------------------------------------------------


def anthropic(chunks: int) -> tuple[bytes, list[bytes]]:
    usage = {
        "input_tokens": PROMPT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }
    message = {
        "id": "msg_bench0000000000000000000",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 12},
    }
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [
        _typed({"type": "message_start", "message": start}),
        _typed(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        _typed({"type": "ping"}),
    ]
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": WORD},
    }
    events += [_typed(delta) for _ in range(chunks)]
    events += [
        _typed({"type": "content_block_stop", "index": 0}),
        _typed(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {**usage, "output_tokens": chunks},
            }
        ),
        _typed({"type": "message_stop"}),
    ]
    return _json(message), events


# -- Gemini generateContent --------------------------------------------------------------------


def gemini(chunks: int) -> tuple[bytes, list[bytes]]:
    def answer(text: str, finish: bool, output: int | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        usage: dict[str, Any] = {"promptTokenCount": PROMPT_TOKENS}
        if finish:
            candidate |= {"finishReason": "STOP", "index": 0}
        if output is not None:
            usage["candidatesTokenCount"] = output
        usage["totalTokenCount"] = PROMPT_TOKENS + (output or 0)
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}]
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": MODEL,
            "responseId": "bench0000000000000000000",
        }

    events = [_data(answer(WORD, False, None)) for _ in range(chunks - 1)]
    events.append(_data(answer(WORD, True, chunks)))
    return _json(answer(TEXT, True, 12)), events


# -- OpenAI Responses --------------------------------------------------------------------------


def responses(chunks: int) -> tuple[bytes, list[bytes]]:
    def response(text: str, status: str, output_tokens: int) -> dict[str, Any]:
        item = {
            "type": "message",
            "id": "msg_bench0",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        usage = {
            "input_tokens": PROMPT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": PROMPT_TOKENS + output_tokens,
        }
        return {
            "id": "resp_bench0000000000000000",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": MODEL,
            "output": [item] if status == "completed" else [],
            "usage": usage if status == "completed" else None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }

    final = response(WORD * chunks, "completed", chunks)
    item = final["output"][0]
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_bench0", "output_index": 0, "content_index": 0}
    rows: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("", "in_progress", 0)},
        {"type": "response.in_progress", "response": response("", "in_progress", 0)},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": part},
    ]
    rows += [{"type": "response.output_text.delta", **where, "delta": WORD}] * chunks
    rows += [
        {"type": "response.output_text.done", **where, "text": WORD * chunks},
        {
            "type": "response.content_part.done",
            **where,
            "part": {**part, "text": WORD * chunks},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    events = [_typed({**row, "sequence_number": n}) for n, row in enumerate(rows)]
    return _json(response(TEXT, "completed", 12)), events


FORMATS: dict[str, Callable[[int], tuple[bytes, list[bytes]]]] = {
    "chat": chat,
    "anthropic": anthropic,
    "gemini": gemini,
    "responses": responses,
}


def format_of(target: bytes) -> tuple[str, bool | None]:
    """The format a request target (`/v1/messages`, `/v1beta/models/m:generateContent`...)
    asks for, and whether its path alone says it streams (Gemini) or the body decides (None)."""
    if target.endswith(b"/messages"):
        return "anthropic", None
    if b":streamGenerateContent" in target:
        return "gemini", True
    if b":generateContent" in target:
        return "gemini", False
    if target.endswith(b"/responses"):
        return "responses", None
    return "chat", None
