"""JSON nested deeper than 128 levels, from a client or a provider: a 400 naming the limit, or a
502 / final error event; never a 500, a dropped stream or an exception's class name."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import msgspec
import pytest

from tests.helpers import KEY, client_for, gateway
from tests.upstreams import SSE, FakeOpenAI, chunk, completion
from thanos_asgi import build_app
from thanos_asgi.sanitize import MAX_DEPTH, NestingTooDeep, check_depth

pytestmark = pytest.mark.anyio
DEEP = 5000  # far past msgspec's RecursionError (~980 levels)
HI = [{"role": "user", "content": "hi"}]
TEXT = f"""
[providers.openai]
api_key = "{KEY}"
base_url = "http://openai.test/v1"

[providers.anthropic]
api_key = "{KEY}"
base_url = "http://anthropic.test"

[providers.gemini]
api_key = "{KEY}"
base_url = "http://gemini.test/v1beta"

[routing]
max_retries = 0
"""


def nested(depth: int) -> str:
    """JSON text of objects and arrays, alternating, `depth` levels deep."""
    opens = "".join('{"a":' if level % 2 else "[" for level in range(depth))
    closes = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return opens + "1" + closes


DEEP_VALUE = "DEEP-VALUE-HERE"


def with_deep(value: Any, depth: int = DEEP) -> bytes:
    """`value` as JSON, with every string DEEP_VALUE replaced by JSON `depth` levels deep."""
    return json.dumps(value).replace(json.dumps(DEEP_VALUE), nested(depth)).encode()


def deep_text(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


# -- the check itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 127, 128])
def test_nesting_up_to_the_limit_passes(depth: int) -> None:
    check_depth(nested(depth).encode())
    check_depth(deep_text(depth))


@pytest.mark.parametrize("depth", [129, 130, 1000, DEEP])
def test_nesting_past_the_limit_is_refused(depth: int) -> None:
    with pytest.raises(NestingTooDeep, match="deeper than 128 levels"):
        check_depth(nested(depth).encode())
    with pytest.raises(msgspec.DecodeError):  # what every decode site already handles
        check_depth("[" * depth)  # unclosed: msgspec would recurse into it all the same


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    value = {"a": "[" * 1000, "b": '\\"[[[' * 300, "c": ["{" * 500, '"\\\\'], "d": "\\"}
    check_depth(json.dumps(value).encode())
    with pytest.raises(NestingTooDeep):
        check_depth(with_deep({"s": '\\"]]]', "x": DEEP_VALUE}, 200))


def test_random_documents_agree_with_a_reference_depth() -> None:
    rng = random.Random(15)
    leaves = ["x", "[", "]", "{", "}", '"', "\\", 1, None]
    for _ in range(400):
        value: Any = rng.choice(leaves)
        for _ in range(rng.randrange(100, 160)):
            wrap = rng.random()
            value = [value, rng.choice(leaves)] if wrap < 0.5 else {rng.choice("ab"): value}
        text = json.dumps(value)
        if depth_of(value) <= MAX_DEPTH:
            check_depth(text)
        else:
            with pytest.raises(NestingTooDeep):
                check_depth(text)


# -- client bodies ---------------------------------------------------------------------------------


def deep_tool() -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": DEEP_VALUE}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "openai/gpt-4o", "messages": HI, "x": DEEP_VALUE}),
        (
            "/v1/chat/completions",
            {"model": "openai/gpt-4o", "messages": HI, "tools": [deep_tool()]},
        ),
        ("/v1/completions", {"model": "openai/gpt-4o", "prompt": "hi", "x": DEEP_VALUE}),
        ("/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": DEEP_VALUE}),
        (
            "/v1/messages",
            {
                "model": "anthropic/claude-sonnet-4-5",
                "max_tokens": 10,
                "messages": HI,
                "tools": [{"name": "f", "input_schema": DEEP_VALUE}],
            },
        ),
        (
            "/v1/messages/count_tokens",
            {"model": "anthropic/claude-sonnet-4-5", "messages": HI, "system": DEEP_VALUE},
        ),
    ],
)
async def test_a_deeply_nested_client_body_is_400_naming_the_limit(
    path: str, body: dict[str, Any]
) -> None:
    upstream = FakeOpenAI()
    app = build_app(gateway(upstream, TEXT))
    async with client_for(app) as http:
        response = await http.post(path, content=with_deep(body))
    assert response.status_code == 400, response.text[:300]
    assert "128 levels" in response.text and "RecursionError" not in response.text
    assert upstream.requests == []


async def test_deep_tool_call_arguments_for_a_translated_provider_are_400() -> None:
    arguments = nested(1000)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    seen: list[httpx.Request] = []
    app = build_app(gateway(seen.append, TEXT))
    async with client_for(app) as http:
        for model in ("anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash"):
            body = {"model": model, "messages": messages, "max_tokens": 10}
            response = await http.post("/v1/chat/completions", json=body)
            assert response.status_code == 400, response.text[:300]
            assert "128 levels" in response.json()["error"]["message"]
    assert seen == []


# -- provider answers --------------------------------------------------------------------------


def deep_answers(request: httpx.Request) -> httpx.Response:
    """Every provider answers with its own shape, carrying a deeply nested value."""
    body = json.loads(request.content)
    if request.url.host == "anthropic.test":
        answer = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": DEEP_VALUE}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        return httpx.Response(200, content=with_deep(answer))
    if request.url.host == "gemini.test":
        part = {"functionCall": {"name": "f", "args": DEEP_VALUE}}
        answer = {"candidates": [{"content": {"role": "model", "parts": [part]}}]}
        return httpx.Response(200, content=with_deep(answer))
    deep = {**completion(body["model"], "x"), "extra": DEEP_VALUE}
    if not body.get("stream"):
        return httpx.Response(200, content=with_deep(deep))
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    bad = b"data: " + with_deep({"choices": [], "usage": usage, "x": DEEP_VALUE}) + b"\n\n"
    good = chunk(body["model"], {"content": "a"})
    return httpx.Response(200, content=good + bad + b"data: [DONE]\n\n", headers=SSE)


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash"]
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_deeply_nested_provider_answer_is_502(model: str, path: str) -> None:
    app = build_app(gateway(deep_answers, TEXT))
    async with client_for(app) as http:
        body = {"model": model, "messages": HI, "max_tokens": 10}
        response = await http.post(path, json=body)
    assert response.status_code == 502, response.text[:300]
    assert "128 levels" in response.text and "RecursionError" not in response.text


async def test_a_deeply_nested_stream_event_ends_the_stream_with_an_error_event() -> None:
    app = build_app(gateway(deep_answers, TEXT))
    async with client_for(app) as http:
        body = {"model": "openai/gpt-4o", "messages": HI, "stream": True}
        relayed = await http.post("/v1/chat/completions", json=body)
        translated = await http.post(
            "/v1/messages", json={**body, "max_tokens": 10, "model": "openai/gpt-4o"}
        )
    for response in (relayed, translated):
        assert response.status_code == 200
        assert "128 levels" in response.text.rsplit("data:", 1)[-1], response.text[-300:]
        assert "RecursionError" not in response.text


async def test_grpc_json_fields_nested_too_deep_are_invalid_argument() -> None:
    grpc = pytest.importorskip("grpc")
    from tests.test_grpc import serving
    from thanos_asgi.grpc import thanos_pb2 as pb
    from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc

    upstream = FakeOpenAI()
    hi = pb.Message(role="user", content="hi")
    call = pb.ToolCall(id="call_1", name="f", arguments_json=nested(DEEP))
    requests = [
        pb.ChatRequest(
            model="openai/gpt-4o",
            messages=[hi],
            tools=[pb.Tool(name="f", parameters_json=nested(DEEP))],
        ),
        pb.ChatRequest(
            model="anthropic/claude-sonnet-4-5",
            messages=[hi, pb.Message(role="assistant", tool_calls=[call])],
        ),
    ]
    async with serving(gateway(upstream, TEXT)) as channel:
        stub = pb_grpc.ThanosServiceStub(channel)
        for request in requests:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.ChatCompletion(request):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "128 levels" in (info.value.details() or "")
            assert "Error" not in (info.value.details() or "")
    assert upstream.requests == []


def deep_plain_event(request: httpx.Request) -> httpx.Response:
    """A stream whose deep event carries no usage: only the chunk decoder can refuse it."""
    if request.url.host == "anthropic.test":
        return httpx.Response(200, content=deep_anthropic_events(), headers=SSE)
    if request.url.host == "gemini.test":
        answer = {"candidates": [{"content": {"role": "model", "parts": [{"text": "a"}]}}]}
        good = b"data: " + json.dumps(answer).encode() + b"\n\n"
        deep: dict[str, Any] = {"candidates": [], "x": DEEP_VALUE}
    else:
        good = chunk(json.loads(request.content)["model"], {"content": "a"})
        deep = {"choices": [{"index": 0, "delta": {"content": "b"}}], "x": DEEP_VALUE}
    bad = b"data: " + with_deep(deep, depth=MAX_DEPTH + 1) + b"\n\n"
    return httpx.Response(200, content=good + bad + b"data: [DONE]\n\n", headers=SSE)


def deep_anthropic_events() -> bytes:
    """Anthropic's typed events: a text delta "a", then a deep one carrying "b"."""

    def event(data: dict[str, Any], depth: int = 0) -> bytes:
        body = with_deep(data, depth=depth) if depth else json.dumps(data).encode()
        return b"event: " + data["type"].encode() + b"\ndata: " + body + b"\n\n"

    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    usage = {"input_tokens": 1, "output_tokens": 1}
    start = {"type": "message_start", "message": {**message, "usage": usage}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}

    def delta(text: str) -> dict[str, Any]:
        return {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }

    deep = {**delta("b"), "x": DEEP_VALUE}
    return (
        event(start)
        + event(block)
        + event(delta("a"))
        + event(deep, depth=MAX_DEPTH + 1)
        + event({"type": "message_stop"})
    )


@pytest.mark.parametrize(
    ("model", "path", "text"),
    [
        ("openai/gpt-4o", "/v1/messages", '"text":"{}"'),
        ("gemini/gemini-2.5-flash", "/v1/messages", '"text":"{}"'),
        ("anthropic/claude-sonnet-4-5", "/v1/chat/completions", '"content":"{}"'),
    ],
)
async def test_a_deep_event_among_plain_ones_ends_a_translated_stream(
    model: str, path: str, text: str
) -> None:
    """Events read together are depth-checked together only when the read as a whole is too
    shallow to hide a deep one; here it is not, and the deep event ends the stream."""
    app = build_app(gateway(deep_plain_event, TEXT))
    async with client_for(app) as http:
        body = {"model": model, "messages": HI, "stream": True, "max_tokens": 10}
        response = await http.post(path, json=body)
    assert response.status_code == 200
    assert text.format("a") in response.text and text.format("b") not in response.text
    assert "128 levels" in response.text.rsplit("data:", 1)[-1], response.text[-300:]
