"""OpenAI and its compatible presets, replayed from real recordings."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from tests.cassettes import load, replay
from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import (
    ProviderUnavailable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.types import ChatChunk, ChatRequest, EmbeddingRequest, Message
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio
KEY = "sk-test-SECRET-0123456789"


def make(kind: str, handler: Any, *, key: str | None = KEY) -> OpenAICompatible:
    config = ProviderConfig(name=f"my-{kind}", kind=kind, api_key=key)
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    adapter: OpenAICompatible = load_adapter(kind)(config, spec=SPECS[kind], transport=transport)
    return adapter


def request(stream: bool = False, **extra: Any) -> ChatRequest:
    return ChatRequest(
        model="x", messages=[Message(role="user", content="hi")], stream=stream, **extra
    )


async def collect(adapter: OpenAICompatible, req: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in await adapter.open_stream(req, "m")]


def text_of(chunks: list[ChatChunk], field: str = "content") -> str:
    return "".join(getattr(c.delta, field) or "" for chunk in chunks for c in chunk.choices)


def recorded_text(body: bytes, field: str = "content") -> str:
    out = ""
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                out += choice.get("delta", {}).get(field) or ""
    return out


async def test_openai_nonstream_text_and_usage() -> None:
    (rec,) = load("openai/chat-nonstream-simple-max-completion-tokens.pydantic-ai.yaml")
    handler = replay(rec)
    response = await make("openai", handler).chat(request(), "gpt-4o-mini")
    assert response.choices[0].message.content == "Hello! How can I assist you today?"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (8, 9)
    sent = json.loads(handler.requests[0].content)
    assert sent["model"] == "gpt-4o-mini"
    assert "stream_options" not in sent
    assert handler.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_openai_nonstream_tool_calls() -> None:
    recs = load("openai/chat-nonstream-tool-calls-multi-provider.pydantic-ai.yaml")
    openai_recs = [r for r in recs if "openai.com" in r.url]
    response = await make("openai", replay(openai_recs[0])).chat(request(), "gpt-4o-mini")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    recorded = json.loads(openai_recs[0].body)["choices"][0]["message"]["tool_calls"]
    assert [c.id for c in choice.message.tool_calls] == [c["id"] for c in recorded]
    for call in choice.message.tool_calls:
        json.loads(call.function.arguments)


@pytest.mark.parametrize("chunked", [None, 7])
async def test_openai_stream_tool_call_fragments(chunked: int | None) -> None:
    recs = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    chunks = await collect(make("openai", replay(recs[0], chunked=chunked)), request(True))
    calls = [tc for chunk in chunks for c in chunk.choices for tc in c.delta.tool_calls or []]
    assert calls[0].id == "call_ZR5UUuTt3pf61kjwAJIYdVMj"
    assert calls[0].function is not None and calls[0].function.name == "get_capital"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(arguments) == {"country": "UK"}
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["tool_calls"]
    usage = [chunk.usage for chunk in chunks if chunk.usage]
    assert usage and usage[-1].prompt_tokens > 0 and usage[-1].completion_tokens > 0


async def test_openai_stream_text_matches_recording() -> None:
    (rec,) = load("openai/chat-stream-text-include-usage.vercel-ai.chunks.txt")
    chunks = await collect(make("openai", replay(rec)), request(True))
    assert text_of(chunks) == recorded_text(rec.body)
    assert len(text_of(chunks)) > 100


async def test_openai_stream_finish_length() -> None:
    (rec,) = load("openai/chat-stream-finish-length-include-usage.mirascope.yaml")
    chunks = await collect(make("openai", replay(rec)), request(True))
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50


async def test_relay_injects_usage_and_drops_the_usage_chunk_client_did_not_ask_for() -> None:
    (rec,) = load("openai/chat-stream-text-include-usage.vercel-ai.chunks.txt")
    handler = replay(rec)
    adapter = make("openai", handler)
    relayed = await adapter.relay({"model": "x", "messages": [], "stream": True}, "m", stream=True)
    assert relayed.events is not None
    events = [event async for event in relayed.events]
    assert json.loads(handler.requests[0].content)["stream_options"] == {"include_usage": True}
    assert events[-1].endswith(b"\n\ndata: [DONE]\n\n")  # events come batched per read
    assert not any(b'"choices":[]' in event for event in events)
    assert relayed.usage is not None and relayed.usage.total_tokens > 0


async def test_relay_keeps_usage_chunk_when_client_asked() -> None:
    (rec,) = load("openai/chat-stream-text-include-usage.vercel-ai.chunks.txt")
    body = {"model": "x", "stream_options": {"include_usage": True}}
    relayed = await make("openai", replay(rec)).relay(body, "m", stream=True)
    assert relayed.events is not None
    events = [event async for event in relayed.events]
    assert any(b'"choices":[]' in event for event in events)


async def test_relay_nonstream_returns_provider_bytes() -> None:
    (rec,) = load("openai/chat-nonstream-text.vercel-ai.json")
    relayed = await make("openai", replay(rec)).relay({"model": "x"}, "m", stream=False)
    assert relayed.body == rec.body
    assert relayed.usage is not None
    assert relayed.usage.prompt_tokens == json.loads(rec.body)["usage"]["prompt_tokens"]


async def test_xai_reasoning_and_usage() -> None:
    (rec,) = load("xai/chat-stream-tool-call-reasoning-content.vercel-ai.chunks.txt")
    chunks = await collect(make("xai", replay(rec)), request(True))
    assert text_of(chunks, "reasoning_content") == recorded_text(rec.body, "reasoning_content")
    assert text_of(chunks, "reasoning_content").startswith("First")
    usage = chunks[-1].usage
    assert usage is not None and usage.reasoning_tokens == 196 and usage.total_tokens == 513
    (rec,) = load("xai/chat-nonstream-tool-call-reasoning-content.vercel-ai.json")
    response = await make("xai", replay(rec)).chat(request(), "grok-3-mini")
    message = response.choices[0].message
    assert message.reasoning_content and message.reasoning_content.startswith("First, the user")
    assert message.tool_calls and message.tool_calls[0].function.name == "weather"


async def test_deepseek_reasoning_and_cache_tokens() -> None:
    (rec,) = load("deepseek/chat-stream-reasoning-content.pydantic-ai.yaml")
    chunks = await collect(make("deepseek", replay(rec)), request(True))
    assert text_of(chunks, "reasoning_content") == recorded_text(rec.body, "reasoning_content")
    assert text_of(chunks) == recorded_text(rec.body)
    recorded_usage = [
        json.loads(line[6:])["usage"]
        for line in rec.body.split(b"\n")
        if line.startswith(b"data: {") and b'"usage":{' in line
    ][-1]
    usage = [chunk.usage for chunk in chunks if chunk.usage][-1]
    assert usage.cached_tokens == recorded_usage["prompt_cache_hit_tokens"]
    assert usage.reasoning_tokens == recorded_usage["completion_tokens_details"]["reasoning_tokens"]


async def test_deepseek_translated_request_drops_reasoning_content() -> None:
    (rec,) = load("deepseek/chat-nonstream-reasoning-content.pydantic-ai.yaml")
    handler = replay(rec)
    history = [
        Message(role="user", content="hi"),
        Message(role="assistant", content="hello", reasoning_content="thinking..."),
        Message(role="user", content="cross the street?"),
    ]
    req = ChatRequest(model="x", messages=history)
    response = await make("deepseek", handler).chat(req, "deepseek-reasoner")
    assert response.choices[0].message.reasoning_content
    sent = json.loads(handler.requests[0].content)
    assert all("reasoning_content" not in m for m in sent["messages"])


async def test_groq_usage_inside_x_groq() -> None:
    (rec,) = load("groq/chat-stream-tool-call.vercel-ai.chunks.txt")
    top_level_only = rec.body.replace(b'}},"usage":{', b'}},"other":{')
    assert top_level_only.count(b'"usage":{') == 1  # what is left sits inside x_groq
    handler = replay(dataclasses.replace(rec, body=top_level_only))
    chunks = await collect(make("groq", handler), request(True))
    usage = [chunk.usage for chunk in chunks if chunk.usage]
    assert usage and (usage[-1].prompt_tokens, usage[-1].completion_tokens) == (210, 15)


async def test_groq_error_event_after_200() -> None:
    recs = load("groq/error-stream-tool-use-failed.pydantic-ai.yaml")
    stream = await make("groq", replay(recs[0])).open_stream(request(True), "m")
    seen = []
    with pytest.raises(UpstreamStatusError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert seen, "chunks before the error are delivered"
    assert text_of(seen, "reasoning_content")  # Groq's `reasoning` became reasoning_content
    assert info.value.status == 400 and info.value.code == "tool_use_failed"
    assert info.value.provider == "my-groq"


async def test_openrouter_comments_reasoning_and_in_stream_error() -> None:
    (rec,) = load("openrouter/chat-stream-processing-comments-reasoning.pydantic-ai.yaml")
    stream = await make("openrouter", replay(rec)).open_stream(request(True), "m")
    seen = []
    with pytest.raises(UpstreamStatusError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert text_of(seen, "reasoning_content") == recorded_text(rec.body, "reasoning")
    assert "Token limit reached" in info.value.message


async def test_openrouter_reasoning_stream() -> None:
    (rec,) = load("openrouter/chat-stream-reasoning.pydantic-ai.yaml")
    chunks = await collect(make("openrouter", replay(rec)), request(True))
    assert text_of(chunks, "reasoning_content") == recorded_text(rec.body, "reasoning")
    assert text_of(chunks) == recorded_text(rec.body)


async def test_upstream_401_is_a_gateway_credential_failure_without_the_key() -> None:
    (rec,) = load("openai/error-401-invalid-api-key.mirascope.yaml")
    with pytest.raises(UpstreamStatusError) as info:
        await make("openai", replay(rec)).chat(request(), "m")
    exc = info.value
    assert (exc.status, exc.code, exc.retryable) == (502, "upstream_authentication_failed", True)
    assert "my-openai" in exc.message and "2345" not in exc.message and KEY not in exc.message


@pytest.mark.parametrize(
    ("name", "status", "code", "param", "retryable"),
    [
        ("openai/error-404-model-not-found.pydantic-ai.yaml", 404, "model_not_found", None, False),
        (
            "openai/error-400-invalid-request-param.pydantic-ai.yaml",
            400,
            None,
            "web_search_options",
            False,
        ),
        ("openrouter/error-429-upstream-rate-limited.pydantic-ai.yaml", 429, "429", None, True),
        ("groq/error-400-tool-use-failed.pydantic-ai.yaml", 400, "tool_use_failed", None, False),
    ],
)
async def test_upstream_errors_mapped(
    name: str, status: int, code: str | None, param: str | None, retryable: bool
) -> None:
    recs = load(name)
    with pytest.raises(UpstreamStatusError) as info:
        await make("openai", replay(recs[0])).chat(request(), "m")
    exc = info.value
    assert (exc.status, exc.code, exc.param, exc.retryable) == (status, code, param, retryable)
    assert exc.upstream_status == recs[0].status


async def test_retry_after_header_is_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "7"}
        )

    with pytest.raises(UpstreamStatusError) as info:
        await make("openai", handler).chat(request(), "m")
    assert info.value.retry_after == 7.0 and info.value.status == 429


async def test_garbage_and_truncation_are_protocol_errors() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>oops</html>")

    with pytest.raises(UpstreamProtocolError):
        await make("openai", garbage).chat(request(), "m")

    def truncated(request: httpx.Request) -> httpx.Response:
        body = b'data: {"id":"1","object":"chat.completion.chunk","choices":[]}\n\n'
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with pytest.raises(UpstreamProtocolError, match="ended before"):
        await collect(make("openai", truncated), request(True))


async def test_connect_error_names_the_instance() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(UpstreamConnectError) as info:
        await make("openai", refuse).chat(request(), "m")
    assert info.value.provider == "my-openai" and info.value.retryable


async def test_missing_key_sends_nothing() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    with pytest.raises(ProviderUnavailable, match="OPENAI_API_KEY"):
        await make("openai", handler, key=None).chat(request(), "m")
    assert calls == []


async def test_models_and_embeddings() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4o"}]})
        body = json.loads(request.content)
        assert body["model"] == "text-embedding-3-small"
        vectors = [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}]
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return httpx.Response(
            200, json={"object": "list", "data": vectors, "model": "t", "usage": usage}
        )

    adapter = make("openai", handler)
    assert await adapter.list_models() == ["gpt-4o"]
    embedded = await adapter.embed(
        EmbeddingRequest(model="e", input="hi"), "text-embedding-3-small"
    )
    assert embedded.data[0].embedding == [0.25, -0.5] and embedded.usage.prompt_tokens == 3


def chunked(*reads: bytes) -> Any:
    """A streaming upstream whose body arrives in exactly these reads."""

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            for read in reads:
                yield read

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    return handler


def event(content: str, **extra: Any) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    choices = [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    return b"data: " + json.dumps({**chunk, "choices": choices, **extra}).encode() + b"\n\n"


async def test_relay_forwards_each_read_as_one_piece_untouched() -> None:
    first = event("a") + event("b")
    second = event("c", error=None) + b": keep-alive\n\n" + event("d")  # taken apart
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    last = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    adapter = make(
        "openai", chunked(first, second[:-30], second[-30:] + last + b"data: [DONE]\n\n")
    )
    body = {"model": "x", "stream": True, "stream_options": {"include_usage": True}}
    relayed = await adapter.relay(body, "m", stream=True)
    assert relayed.events is not None
    pieces = [piece async for piece in relayed.events]
    assert pieces[0] is first  # plain chunks only: forwarded as read, not taken apart
    assert pieces[1:] == [event("c", error=None), event("d") + last + b"data: [DONE]\n\n"]
    assert relayed.usage is not None and relayed.usage.total_tokens == 7


async def test_relay_error_event_ends_the_stream_after_what_came_before() -> None:
    error = b'data: {"error":{"message":"overloaded","code":503}}\n\n'
    adapter = make("openai", chunked(event("a"), event("b") + error + event("never")))
    relayed = await adapter.relay({"model": "x", "stream": True}, "m", stream=True)
    assert relayed.events is not None
    pieces: list[bytes] = []
    with pytest.raises(UpstreamStatusError) as caught:
        async for piece in relayed.events:
            pieces.append(piece)
    assert pieces == [event("a"), event("b")]
    assert caught.value.upstream_status == 503 and "overloaded" in caught.value.message


def test_plain_prefix_stops_at_the_first_event_that_needs_a_look() -> None:
    from thanos_asgi.providers._openai_stream import plain_prefix as _plain_prefix

    plain, done = event("a"), b"data: [DONE]\n\n"
    usage = b'data: {"choices":[],"usage":{"total_tokens":1}}\n\n'
    assert _plain_prefix(plain + plain) == 2 * len(plain)
    assert _plain_prefix(plain + plain + usage + done) == 2 * len(plain)
    assert _plain_prefix(usage + done) == 0
    assert _plain_prefix(done) == 0
    assert _plain_prefix(b": keep-alive\n\n" + plain) == 0
    assert _plain_prefix(plain + b": keep-alive\n\n" + plain) == 0  # other lines: all taken apart
    assert _plain_prefix(b"event: x\n" + plain + usage) == 0
