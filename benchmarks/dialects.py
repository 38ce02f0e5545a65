"""What `load.py` sends in each client dialect, and how it checks the answers.

- `chat`: OpenAI Chat Completions (`/v1/chat/completions`), checked by `load.py`'s
  `check_completion` and `check_stream`;
- `messages`: Anthropic Messages (`/v1/messages`): a `message` with text and usage; a stream
  of `message_start`, the text in `content_block_delta`s, `message_delta` with usage,
  `message_stop`;
- `responses`: OpenAI Responses (`/v1/responses`; `responses-unstored` sends `"store": false`,
  so the gateway keeps nothing for `previous_response_id`): a completed `response` with output
  text and usage; a stream of typed events from `response.created` to `response.completed`, the
  text in `response.output_text.delta`s, `sequence_number`s counting up from 0.

A stream's text must be `WORD` once per content chunk the upstream sent, whatever the
provider's format behind the gateway.
"""

from __future__ import annotations

import json
from typing import Any

WORD = "tok "  # what upstream.py puts in every content chunk
PROMPT = "Say hello in one short sentence."


def request_body(dialect: str, model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 32}
    if dialect.startswith("responses"):
        body = {"model": model, "input": PROMPT, "max_output_tokens": 32}  # stored: the default
        if dialect == "responses-unstored":
            body["store"] = False
    else:
        body["messages"] = [{"role": "user", "content": PROMPT}]
    if stream:
        body["stream"] = True
        if dialect == "chat":
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def events(body: bytes) -> list[tuple[str, Any]] | str:
    """The (event name, parsed data) of each SSE event, or what is wrong."""
    out: list[tuple[str, Any]] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", None
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                try:
                    data = json.loads(line[5:])
                except ValueError:
                    return f"bad JSON in event: {block[:120]!r}"
            elif line and not line.startswith(b":"):
                return f"not an SSE line: {line[:120]!r}"
        if data is not None:
            out.append((name, data))
    return out


def check_whole(dialect: str, body: bytes) -> str | None:
    """None when `body` is a well-formed whole answer in `dialect` (not chat), else why not."""
    try:
        data = json.loads(body)
        if dialect == "messages":
            if data.get("type") != "message":
                return f"type is {data.get('type')!r}"
            text = data["content"][0]["text"]
            tokens = data["usage"]["output_tokens"]
        else:
            if data.get("object") != "response" or data.get("status") != "completed":
                return f"object {data.get('object')!r}, status {data.get('status')!r}"
            message = next(i for i in data["output"] if i["type"] == "message")
            text = message["content"][0]["text"]
            tokens = data["usage"]["output_tokens"]
        if not isinstance(text, str) or not text:
            return "empty text"
        if not isinstance(tokens, int):
            return "no usage"
    except (ValueError, KeyError, IndexError, TypeError, StopIteration) as exc:
        return f"malformed answer: {exc!r}: {body[:200]!r}"
    return None


def check_events(dialect: str, body: bytes, chunks: int) -> str | None:
    """None when `body` is a well-formed stream in `dialect` (not chat) carrying `chunks`
    content chunks' text, else what is wrong with it."""
    parsed = events(body)
    if isinstance(parsed, str):
        return parsed
    if not parsed:
        return "no events"
    try:
        if dialect == "messages":
            return _check_messages(parsed, chunks)
        return _check_responses(parsed, chunks)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        return f"malformed event: {exc!r}"


def _check_messages(parsed: list[tuple[str, Any]], chunks: int) -> str | None:
    kinds = [data.get("type") for _, data in parsed]
    if kinds[0] != "message_start" or kinds[-1] != "message_stop":
        return f"events run {kinds[0]!r} .. {kinds[-1]!r}"
    if any(name and name != data.get("type") for name, data in parsed):
        return "an event's name is not its type"
    text = "".join(
        data["delta"].get("text", "") for _, data in parsed if data["type"] == "content_block_delta"
    )
    if text != WORD * chunks:
        return f"text is {text[:80]!r}, expected {chunks} x {WORD!r}"
    delta = next((data for _, data in parsed if data["type"] == "message_delta"), None)
    if delta is None or not isinstance(delta["usage"].get("output_tokens"), int):
        return "no message_delta with usage"
    return None


def _check_responses(parsed: list[tuple[str, Any]], chunks: int) -> str | None:
    kinds = [data.get("type") for _, data in parsed]
    if kinds[0] != "response.created" or kinds[-1] != "response.completed":
        return f"events run {kinds[0]!r} .. {kinds[-1]!r}"
    if [data.get("sequence_number") for _, data in parsed] != list(range(len(parsed))):
        return "sequence_numbers do not count up from 0"
    text = "".join(data["delta"] for _, data in parsed if data["type"].endswith("text.delta"))
    if text != WORD * chunks:
        return f"text is {text[:80]!r}, expected {chunks} x {WORD!r}"
    if not isinstance(parsed[-1][1]["response"]["usage"]["output_tokens"], int):
        return "no usage in response.completed"
    return None
