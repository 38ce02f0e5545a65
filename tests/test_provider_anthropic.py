"""The Anthropic adapter, replayed from every recording in shared/cassettes/anthropic."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.cassettes import CASSETTES, Interaction, load, replay, sse_data
from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers.anthropic import Anthropic
from thanos_asgi.types import (
    AudioPart,
    ChatChunk,
    ChatRequest,
    EmbeddingRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    InputAudio,
    JSONSchemaFormat,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
)
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio
KEY = "sk-ant-test-SECRET-0123456789"
FINISH = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
}
STREAMS = sorted(
    p.relative_to(CASSETTES).as_posix() for p in (CASSETTES / "anthropic").glob("messages-stream-*")
)
NONSTREAMS = sorted(
    p.relative_to(CASSETTES).as_posix()
    for p in (CASSETTES / "anthropic").glob("messages-nonstream-*")
)
SSE = {"content-type": "text/event-stream"}


def make(handler: Any, *, key: str | None = KEY, **config: Any) -> Anthropic:
    provider = ProviderConfig(name="claude", kind="anthropic", api_key=key, **config)
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    adapter: Anthropic = load_adapter("anthropic")(
        provider, spec=SPECS["anthropic"], transport=transport
    )
    return adapter


def ask(stream: bool = False, **extra: Any) -> ChatRequest:
    messages = extra.pop("messages", [Message(role="user", content="hi")])
    return ChatRequest(model="x", messages=messages, stream=stream, **extra)


async def collect(adapter: Anthropic, request: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in await adapter.open_stream(request, "claude-x")]


def sent(handler: Any, index: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(handler.requests[index].content)
    return body


# -- what a recording says, read independently of the adapter -----------------------------------


class Recorded:
    def __init__(self, body: bytes) -> None:
        self.events = [json.loads(data) for data in sse_data(body)]

    def deltas(self, kind: str, field: str, index: int | None = None) -> str:
        return "".join(
            e["delta"][field]
            for e in self.events
            if e["type"] == "content_block_delta"
            and e["delta"]["type"] == kind
            and (index is None or e["index"] == index)
        )

    def tools(self) -> list[tuple[str, str, str]]:
        """(id, name, joined partial_json) of each tool_use block, in order."""
        return [
            (
                e["content_block"]["id"],
                e["content_block"]["name"],
                self.deltas("input_json_delta", "partial_json", e["index"]),
            )
            for e in self.events
            if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"
        ]

    def one(self, kind: str) -> dict[str, Any]:
        (event,) = [e for e in self.events if e["type"] == kind]
        return event


def streamed(chunks: list[ChatChunk], field: str) -> str:
    return "".join(getattr(c.delta, field) or "" for chunk in chunks for c in chunk.choices)


def streamed_calls(chunks: list[ChatChunk]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                seen = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                seen["id"] += call.id or ""
                if call.function is not None:
                    seen["name"] += call.function.name or ""
                    seen["arguments"] += call.function.arguments or ""
    return calls


# -- streams -----------------------------------------------------------------------------------


def stream_cases() -> list[tuple[str, int]]:
    return [(name, i) for name in STREAMS for i in range(len(load(name)))]


@pytest.mark.parametrize("chunked", [None, 7])
@pytest.mark.parametrize(("name", "turn"), stream_cases())
async def test_every_recorded_stream_field_by_field(
    name: str, turn: int, chunked: int | None
) -> None:
    rec = load(name)[turn]
    recorded = Recorded(rec.body)
    chunks = await collect(make(replay(rec, chunked=chunked)), ask(True))

    assert streamed(chunks, "content") == recorded.deltas("text_delta", "text")
    assert streamed(chunks, "reasoning_content") == recorded.deltas("thinking_delta", "thinking")
    assert streamed(chunks, "reasoning_signature") == recorded.deltas(
        "signature_delta", "signature"
    )
    calls = streamed_calls(chunks)
    assert sorted(calls) == list(range(len(recorded.tools())))  # 0, 1, ...: not block indexes
    for index, (tool_id, name_, partial) in enumerate(recorded.tools()):
        assert calls[index]["id"] == tool_id and calls[index]["name"] == name_
        assert calls[index]["arguments"] == (partial or "{}")
        assert isinstance(json.loads(calls[index]["arguments"]), dict)

    start = recorded.one("message_start")["message"]
    final = recorded.one("message_delta")
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == [FINISH[final["delta"]["stop_reason"]]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {chunk.id for chunk in chunks} == {start["id"]}
    assert chunks[0].model == start["model"]

    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert [chunk for chunk in chunks if chunk.usage] == [chunks[-1]]
    counts = {**start["usage"], **{k: v for k, v in final["usage"].items() if v is not None}}
    cache_read, cache_write = (
        counts["cache_read_input_tokens"],
        counts["cache_creation_input_tokens"],
    )
    assert usage.prompt_tokens == counts["input_tokens"] + cache_read + cache_write
    assert usage.completion_tokens == final["usage"]["output_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == cache_read
    assert usage.prompt_tokens_details.cache_creation_tokens == cache_write


async def test_thinking_stream_values() -> None:
    (rec,) = load("anthropic/messages-stream-thinking.pydantic-ai.yaml")
    chunks = await collect(make(replay(rec)), ask(True))
    thinking = streamed(chunks, "reasoning_content")
    assert thinking.startswith("This is a straightforward question about pedestrian safety.")
    assert streamed(chunks, "reasoning_signature").startswith("EvMCCkYICxgCKkCHP2cSuEdc")
    assert streamed(chunks, "content").startswith("Here are the basic steps for safely crossing")
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (43, 282)


async def test_parallel_tool_use_stream_values() -> None:
    first, second = load("anthropic/messages-stream-tool-use-roundtrip.mirascope.yaml")
    calls = streamed_calls(await collect(make(replay(first)), ask(True)))
    assert calls[0] == {
        "id": "toolu_015cUijgET79LXjgeYQerN2h",
        "name": "secret_retrieval_tool",
        "arguments": '{"password": "mellon"}',
    }
    assert calls[1]["id"] == "toolu_01XZTimPexA7h3EVKesnKt5T"
    assert json.loads(calls[1]["arguments"]) == {"password": "radiance"}
    text = streamed(await collect(make(replay(second)), ask(True)), "content")
    assert '"Welcome to Moria!"' in text and '"Life before Death"' in text


async def test_max_tokens_stream_is_length() -> None:
    (rec,) = load("anthropic/messages-stream-stop-max-tokens.mirascope.yaml")
    chunks = await collect(make(replay(rec)), ask(True))
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50


async def test_server_tool_use_and_unknown_blocks_are_skipped() -> None:
    (rec,) = load("anthropic/messages-stream-server-tool-use-advisor.pydantic-ai.yaml")
    chunks = await collect(make(replay(rec)), ask(True))
    assert streamed_calls(chunks) == {}  # server_tool_use is Anthropic's to run, not the client's
    assert streamed(chunks, "content").endswith(
        "ult the advisor as instructed before finalizing.The answer is **4**."
    )
    assert streamed(chunks, "reasoning_content") == ""  # thinking omitted, signature only
    assert streamed(chunks, "reasoning_signature").startswith("EpADCokBCA8Y")
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 2411 and usage.reasoning_tokens == 47


async def test_cache_tokens_count_as_prompt_tokens() -> None:
    (rec,) = load("anthropic/messages-stream-text.vercel-ai.chunks.txt")
    body = rec.body.replace(
        b'"cache_creation_input_tokens":0', b'"cache_creation_input_tokens":100'
    )
    body = body.replace(b'"cache_read_input_tokens":0', b'"cache_read_input_tokens":2000')
    chunks = await collect(make(replay(Interaction(**{**rec.__dict__, "body": body}))), ask(True))
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 12 + 2000 + 100
    assert usage.cached_tokens == 2000 and usage.completion_tokens == 30
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cache_creation_tokens == 100


# -- non-stream --------------------------------------------------------------------------------


def nonstream_cases() -> list[tuple[str, int]]:
    return [(name, i) for name in NONSTREAMS for i in range(len(load(name)))]


@pytest.mark.parametrize(("name", "turn"), nonstream_cases())
async def test_every_recorded_answer_field_by_field(name: str, turn: int) -> None:
    rec = load(name)[turn]
    recorded = json.loads(rec.body)
    response = await make(replay(rec)).chat(ask(), "claude-x")
    message = response.choices[0].message
    blocks = recorded["content"]
    text = "".join(b["text"] for b in blocks if b["type"] == "text")
    assert message.content == text
    assert response.id == recorded["id"] and response.model == recorded["model"]
    uses = [b for b in blocks if b["type"] == "tool_use"]
    assert [(c.id, c.function.name) for c in message.tool_calls or []] == [
        (b["id"], b["name"]) for b in uses
    ]
    assert [json.loads(c.function.arguments) for c in message.tool_calls or []] == [
        b["input"] for b in uses
    ]
    thoughts = [b for b in blocks if b["type"] == "thinking"]
    assert message.reasoning_content == ("".join(b["thinking"] for b in thoughts) or None)
    assert message.reasoning_signature == (thoughts[-1]["signature"] if thoughts else None)
    assert response.choices[0].finish_reason == FINISH[recorded["stop_reason"]]
    usage, counts = response.usage, recorded["usage"]
    assert usage is not None
    assert usage.prompt_tokens == (
        counts["input_tokens"]
        + counts["cache_read_input_tokens"]
        + counts["cache_creation_input_tokens"]
    )
    assert usage.completion_tokens == counts["output_tokens"]
    assert usage.cached_tokens == counts["cache_read_input_tokens"]


async def test_nonstream_request_matches_the_recorded_one() -> None:
    (rec,) = load("anthropic/messages-nonstream-simple-system.pydantic-ai.yaml")
    handler = replay(rec)
    request = ask(
        messages=[
            Message(role="system", content="You are a helpful assistant.\n\n"),
            Message(role="user", content="What is the capital of France?"),
        ]
    )
    response = await make(handler).chat(request, "claude-3-opus-latest")
    assert response.choices[0].message.content == "The capital of France is Paris."
    assert sent(handler) == rec.request_json
    headers = handler.requests[0].headers
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert handler.requests[0].url.path == "/v1/messages"


async def test_tool_loops_replayed_turn_by_turn_send_the_recorded_history() -> None:
    """Answer 1 -> canonical -> request 2 must be what the SDK that recorded it sent."""
    for name, tools, system in [
        ("anthropic/messages-nonstream-parallel-tool-use.pydantic-ai.yaml", "parallel", True),
        ("anthropic/messages-nonstream-thinking-tool-use.pydantic-ai.yaml", "thinking", False),
    ]:
        first, second = load(name)
        handler = replay(first, second)
        adapter = make(handler)
        recorded = first.request_json
        messages = [Message(role="system", content=recorded["system"])] if system else []
        messages.append(Message(role="user", content=recorded["messages"][0]["content"][0]["text"]))
        definition = recorded["tools"][0]
        request = ask(
            messages=messages,
            tools=[
                Tool(
                    function=FunctionDef(
                        name=definition["name"],
                        description=definition["description"],
                        parameters=definition["input_schema"],
                    )
                )
            ],
            tool_choice="auto",
            reasoning_effort="low" if tools == "thinking" else None,
        )
        answer = (await adapter.chat(request, recorded["model"])).choices[0].message
        results = [
            b for b in second.request_json["messages"][2]["content"] if b["type"] == "tool_result"
        ]
        history = [
            Message(
                role="assistant",
                content=answer.content,
                tool_calls=answer.tool_calls,
                reasoning_content=answer.reasoning_content,
                reasoning_signature=answer.reasoning_signature,
            ),
            *[
                Message(role="tool", tool_call_id=r["tool_use_id"], content=r["content"])
                for r in results
            ],
        ]
        request.messages += history
        await adapter.chat(request, recorded["model"])
        expected = second.request_json
        for block in expected["messages"][2]["content"]:
            block.pop("is_error")  # false is the default; canonical has no such field
        actual = sent(handler, 1)
        if tools == "thinking":
            assert actual.pop("thinking") == {"type": "enabled", "budget_tokens": 1024}
            expected.pop("thinking")
            assert actual["max_tokens"] == 4096
        assert actual == expected


async def test_round_trip_exact_request_json() -> None:
    """Parallel calls + thinking + tool results + a user follow-up, OpenAI-shaped in."""
    handler = replay(*load("anthropic/messages-nonstream-simple-system.pydantic-ai.yaml"))
    calls = [
        ToolCall(id="call_1", function=FunctionCall(name="weather", arguments='{"city":"Paris"}')),
        ToolCall(id="call.2", function=FunctionCall(name="weather", arguments='{"city":"Rome"}')),
    ]
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="developer", content=[TextPart(text="Use metric units.")]),
        Message(role="user", content="Weather in Paris and Rome?"),
        Message(
            role="assistant",
            content="Checking both.",
            tool_calls=calls,
            reasoning_content="Two cities: call the tool twice.",
            reasoning_signature="sig-abc",
        ),
        Message(role="tool", tool_call_id="call_1", content="18C"),
        Message(role="tool", tool_call_id="call.2", content=[TextPart(text="24C")]),
        Message(role="user", content="And which is warmer?"),
    ]
    request = ask(
        messages=messages,
        tools=[Tool(function=FunctionDef(name="weather", parameters={"type": "object"}))],
        parallel_tool_calls=False,
        stop=["END"],
        temperature=0.2,
        user="user-7",
        max_completion_tokens=300,
    )
    await make(handler).chat(request, "claude-sonnet-4-5")
    assert sent(handler) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": "Two cities: call the tool twice.",
                        "signature": "sig-abc",
                    },
                    {"type": "text", "text": "Checking both."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "24C"}],
                    },
                    {"type": "text", "text": "And which is warmer?"},
                ],
            },
        ],
        "system": [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Use metric units."},
        ],
        "metadata": {"user_id": "user-7"},
        "stop_sequences": ["END"],
        "stream": False,
        "temperature": 0.2,
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    }


# -- request mapping -----------------------------------------------------------------------------


async def body_for(request: ChatRequest, **config: Any) -> dict[str, Any]:
    handler = replay(*load("anthropic/messages-nonstream-simple-system.pydantic-ai.yaml"))
    await make(handler, **config).chat(request, "claude-x")
    return sent(handler)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (ToolChoice(function=ToolChoiceFunction(name="f")), {"type": "tool", "name": "f"}),
        (None, None),
    ],
)
async def test_tool_choice(choice: Any, expected: dict[str, str] | None) -> None:
    tools = [Tool(function=FunctionDef(name="f"))]
    body = await body_for(ask(tools=tools, tool_choice=choice))
    assert body.get("tool_choice") == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    ("effort", "limit", "budget", "max_tokens"),
    [
        ("low", None, 1024, 4096),
        ("medium", None, 4096, 8192),
        ("high", None, 16384, 16384 + 4096),
        ("high", 32000, 16384, 32000),
        ("minimal", 500, 1024, 1524),
        ("none", None, None, 4096),
        (None, None, None, 4096),
    ],
)
async def test_reasoning_effort_becomes_a_thinking_budget(
    effort: str | None, limit: int | None, budget: int | None, max_tokens: int
) -> None:
    body = await body_for(ask(reasoning_effort=effort, max_tokens=limit, temperature=0.5))
    assert body["max_tokens"] == max_tokens
    if budget is None:
        assert "thinking" not in body and body["temperature"] == 0.5
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert "temperature" not in body  # Anthropic refuses temperature with thinking
        assert body["max_tokens"] > budget


async def test_instance_max_tokens_and_beta_header() -> None:
    handler = replay(*load("anthropic/messages-nonstream-simple-system.pydantic-ai.yaml"))
    adapter = make(handler, max_tokens=1234, headers={"anthropic-beta": "a-2025,b-2025"})
    await adapter.chat(ask(), "claude-x")
    assert sent(handler)["max_tokens"] == 1234
    assert handler.requests[0].headers["anthropic-beta"] == "a-2025,b-2025"


async def test_images_files_and_response_format() -> None:
    content = [
        TextPart(text="look"),
        ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
        ImagePart(image_url=ImageURL(url="https://example.com/cat.jpg")),
    ]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = ResponseFormat(type="json_schema", json_schema=JSONSchemaFormat(schema=schema))
    body = await body_for(
        ask(messages=[Message(role="user", content=content)], response_format=fmt)
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert body["system"].startswith("Respond with one JSON object")
    assert json.dumps(schema, separators=(",", ":")) in body["system"]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            Message(
                role="assistant",
                tool_calls=[ToolCall(id="c", function=FunctionCall(name="f", arguments="{oops"))],
            ),
            "messages[0].tool_calls",
        ),
        (
            Message(role="user", content=[ImagePart(image_url=ImageURL(url="ftp://x/y.png"))]),
            "messages[0].content",
        ),
        (
            Message(
                role="user", content=[AudioPart(input_audio=InputAudio(data="AA", format="wav"))]
            ),
            "messages[0].content",
        ),
    ],
)
async def test_what_cannot_map_is_a_400(message: Message, param: str) -> None:
    handler = replay()
    with pytest.raises(InvalidRequest) as info:
        await make(handler).chat(ask(messages=[message]), "claude-x")
    assert info.value.status == 400 and info.value.param == param
    assert handler.requests == []


async def test_unsigned_reasoning_is_not_sent_and_bad_effort_is_a_400() -> None:
    history = [
        Message(role="user", content="hi"),
        Message(role="assistant", content="hello", reasoning_content="from deepseek"),
        Message(role="user", content="again"),
    ]
    body = await body_for(ask(messages=history))
    assert body["messages"][1]["content"] == [{"type": "text", "text": "hello"}]
    with pytest.raises(InvalidRequest, match="reasoning_effort"):
        await body_for(ask(reasoning_effort="extreme"))
    with pytest.raises(InvalidRequest, match="one choice"):
        await body_for(ask(n=2))


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stream", "status", "code", "fragment"),
    [
        ("error-400-invalid-request.pydantic-ai.yaml", False, 400, None, "effort level 'xhigh'"),
        (
            "error-404-not-found-model.pydantic-ai.yaml",
            False,
            404,
            "model_not_found",
            "model: claude-sonet-4-5",
        ),
        (
            "error-404-not-found-stream-request-gzip.mirascope.yaml",
            True,
            404,
            "model_not_found",
            "this-model-does-not-exist-12345",
        ),
        (
            "error-401-authentication-error.mirascope.yaml",
            False,
            502,
            "upstream_authentication_failed",
            "rejected the gateway's credentials",
        ),
        (
            "error-401-authentication-error-stream-request.mirascope.yaml",
            True,
            502,
            "upstream_authentication_failed",
            "(upstream 401)",
        ),
    ],
)
async def test_recorded_errors(
    name: str, stream: bool, status: int, code: str | None, fragment: str
) -> None:
    rec = load(f"anthropic/{name}")[0]
    adapter = make(replay(rec))
    with pytest.raises(UpstreamStatusError) as info:
        if stream:
            await adapter.open_stream(ask(True), "m")
        else:
            await adapter.chat(ask(), "m")
    exc = info.value
    assert (exc.status, exc.code) == (status, code)
    assert exc.retryable == (rec.status == 401)  # a wrong key: the next candidate may work
    assert exc.upstream_status == rec.status and exc.provider == "claude"
    assert fragment in exc.message and KEY not in exc.message
    if rec.status != 401:
        assert exc.upstream_type == json.loads(rec.body)["error"]["type"]


async def test_overloaded_529_and_rate_limit_429() -> None:
    def overloaded(request: httpx.Request) -> httpx.Response:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return httpx.Response(529, json=error)

    with pytest.raises(UpstreamStatusError) as info:
        await make(overloaded).chat(ask(), "m")
    assert (info.value.status, info.value.retryable) == (503, True)
    assert info.value.upstream_type == "overloaded_error" and "Overloaded" in info.value.message

    def limited(request: httpx.Request) -> httpx.Response:
        error = {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}}
        return httpx.Response(429, json=error, headers={"retry-after": "7"})

    with pytest.raises(UpstreamStatusError) as info:
        await make(limited).open_stream(ask(True), "m")
    assert (info.value.status, info.value.retry_after, info.value.retryable) == (429, 7.0, True)


def cut(name: str, marker: bytes, tail: bytes = b"") -> Interaction:
    rec = load(name)[0]
    body = rec.body[: rec.body.index(marker)] + tail
    return Interaction(**{**rec.__dict__, "body": body})


async def test_mid_stream_overloaded_error_event() -> None:
    error = (
        b"event: error\n"
        b'data: {"type":"error","error":{"details":null,"type":"overloaded_error",'
        b'"message":"Overloaded"} }\n\n'
    )
    rec = cut("anthropic/messages-stream-stop-max-tokens.mirascope.yaml", b"event: ping", error)
    stream = await make(replay(rec)).open_stream(ask(True), "m")
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamStatusError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert streamed(seen, "content") == "Here are all 50 U.S. states in"
    exc = info.value
    assert (exc.status, exc.retryable, exc.upstream_status) == (503, True, 529)
    assert exc.upstream_type == "overloaded_error" and "Overloaded" in exc.message


@pytest.mark.parametrize("marker", [b"event: message_stop", b'partial_json":"rd'])
async def test_truncated_stream_is_a_protocol_error(marker: bytes) -> None:
    rec = cut("anthropic/messages-stream-tool-use-roundtrip.mirascope.yaml", marker)
    with pytest.raises(UpstreamProtocolError, match="message_stop"):
        await collect(make(replay(rec)), ask(True))


async def test_missing_key_sends_nothing_and_no_embeddings() -> None:
    handler = replay()
    with pytest.raises(ProviderUnavailable, match="ANTHROPIC_API_KEY"):
        await make(handler, key=None).chat(ask(), "m")
    assert handler.requests == []
    with pytest.raises(InvalidRequest, match="no embeddings"):
        await make(handler).embed(EmbeddingRequest(model="e", input="hi"), "e")


async def test_list_models_and_base_url_with_v1() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        models = [
            {"type": "model", "id": "claude-sonnet-4-5"},
            {"type": "model", "id": "claude-haiku-4-5"},
        ]
        return httpx.Response(200, json={"data": models, "has_more": False})

    assert await make(handler).list_models() == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    await make(handler, base_url="https://proxy.test/anthropic/v1").list_models()
    assert paths == ["/v1/models", "/anthropic/v1/models"]


# -- pass-through ---------------------------------------------------------------------------------


async def test_relay_nonstream_returns_the_bytes_and_reads_usage() -> None:
    (rec,) = load("anthropic/messages-nonstream-simple-system.pydantic-ai.yaml")
    handler = replay(rec)
    client_body = {"model": "claude", "max_tokens": 9, "messages": [], "top_k": 3}
    relayed = await make(handler).relay(dict(client_body), "claude-3-opus-latest", stream=False)
    assert relayed.body == rec.body and relayed.events is None
    assert sent(handler) == {**client_body, "model": "claude-3-opus-latest"}
    assert relayed.usage is not None and relayed.usage.prompt_tokens == 20
    assert relayed.model == "claude-3-opus-20240229"


@pytest.mark.parametrize("chunked", [None, 5])
@pytest.mark.parametrize("name", STREAMS)
async def test_relay_stream_forwards_every_event_untouched(name: str, chunked: int | None) -> None:
    rec = load(name)[0]
    relayed = await make(replay(rec, chunked=chunked)).relay({"stream": True}, "m", stream=True)
    assert relayed.events is not None
    events = [event async for event in relayed.events]
    assert b"".join(events) == rec.body.rstrip(b"\n") + b"\n\n"
    final = Recorded(rec.body).one("message_delta")["usage"]
    assert relayed.usage is not None
    assert relayed.usage.completion_tokens == final["output_tokens"]


async def test_relay_forwards_an_error_event_and_ends() -> None:
    error = (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    rec = cut(
        "anthropic/messages-stream-text.vercel-ai.chunks.txt",
        b"event: ping",
        error + b"event: ping\n",
    )
    relayed = await make(replay(rec)).relay({}, "m", stream=True)
    assert relayed.events is not None
    sent = b"".join([event async for event in relayed.events])  # batched per upstream read
    assert sent.endswith(error) and sent.count(b"event: ") == 3  # nothing after the error


async def test_relay_unreadable_usage_event_raises_after_what_came_before() -> None:
    garbage = b"event: message_delta\ndata: {not json\n\n"
    rec = cut(
        "anthropic/messages-stream-text.vercel-ai.chunks.txt", b"event: message_delta", garbage
    )
    before = rec.body[: rec.body.index(garbage)]
    relayed = await make(replay(rec)).relay({}, "m", stream=True)
    assert relayed.events is not None
    sent: list[bytes] = []
    with pytest.raises(UpstreamProtocolError):
        async for piece in relayed.events:
            sent.append(piece)
    assert b"".join(sent) == before.rstrip(b"\n") + b"\n\n"  # everything up to the bad event


async def test_relay_truncated_stream_raises() -> None:
    rec = cut("anthropic/messages-stream-thinking.pydantic-ai.yaml", b"event: message_delta")
    relayed = await make(replay(rec)).relay({}, "m", stream=True)
    assert relayed.events is not None
    with pytest.raises(UpstreamProtocolError):
        async for _ in relayed.events:
            pass
    assert relayed.usage is not None and relayed.usage.prompt_tokens == 43
