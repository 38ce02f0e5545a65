"""Ollama's native API, replayed from real recordings and from handwritten NDJSON streams."""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.cassettes import load, replay
from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import (
    InvalidRequest,
    ProviderUnavailable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.providers.ollama import Ollama
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from thanos_asgi.upstream import HttpxTransport

pytestmark = pytest.mark.anyio

STREAMS = [
    "ollama/api-chat-ndjson-stream-text.magentic.yaml",
    "ollama/api-chat-ndjson-stream.openllmetry.yaml",
]
CALL_ID = re.compile(r"call_[0-9a-f]{24}")
COMPLETION_ID = re.compile(r"chatcmpl-[0-9a-f]+")
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WEATHER_TOOL = Tool(
    function=FunctionDef(
        name="get_weather",
        description="Current weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
)

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make(handler: Handler, *, name: str = "ollama", key: str | None = None) -> Ollama:
    config = ProviderConfig(name=name, kind="ollama", base_url="http://ollama.test", api_key=key)
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return Ollama(config, spec=SPECS["ollama"], transport=transport)


def ask(*messages: Message, **extra: Any) -> ChatRequest:
    return ChatRequest(model="alias", messages=list(messages), **extra)


def user(text: str = "hi") -> Message:
    return Message(role="user", content=text)


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def line(content: str = "", *, done: bool = False, **extra: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **extra.pop("message", {})}
    head = {"model": "qwen3", "created_at": "2025-01-01T00:00:00Z", "message": message}
    return {**head, "done": done, **extra}


def final(reason: str = "stop", prompt: int = 20, completion: int = 9) -> dict[str, Any]:
    return line(done=True, done_reason=reason, prompt_eval_count=prompt, eval_count=completion)


class Serve:
    """A MockTransport handler answering every request with one body; remembers requests."""

    def __init__(self, body: bytes, status: int = 200, *, stream: bool = False) -> None:
        self.body, self.status, self.stream = body, status, stream
        self.requests: list[httpx.Request] = []
        self.closed = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.stream:
            return httpx.Response(self.status, content=self.body)
        return httpx.Response(self.status, stream=_Tracked(self))

    @property
    def sent(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[-1].content)
        return body


class _Tracked(httpx.AsyncByteStream):
    def __init__(self, owner: Serve) -> None:
        self.owner = owner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.owner.body), 5):
            yield self.owner.body[start : start + 5]

    async def aclose(self) -> None:
        self.owner.closed = True


async def collect(adapter: Ollama, request: ChatRequest, model: str = "m") -> list[ChatChunk]:
    return [chunk async for chunk in await adapter.open_stream(request, model)]


def text_of(chunks: list[ChatChunk], field: str = "content") -> str:
    return "".join(getattr(c.delta, field) or "" for chunk in chunks for c in chunk.choices)


def finishes(chunks: list[ChatChunk]) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


def recorded_lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in body.splitlines() if raw.strip()]


def canonical(recorded: dict[str, Any]) -> ChatRequest:
    messages = [Message(role=m["role"], content=m["content"]) for m in recorded["messages"]]
    return ChatRequest(model="alias", messages=messages, stream=recorded["stream"])


# -- recordings -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [None, 7])
@pytest.mark.parametrize("name", STREAMS)
async def test_stream_recordings(name: str, chunked: int | None) -> None:
    rec = load(name)[0]
    recorded = rec.request_json
    handler = replay(rec, chunked=chunked)
    chunks = await collect(make(handler), canonical(recorded), recorded["model"])

    lines = recorded_lines(rec.body)
    assert text_of(chunks) == "".join(item["message"]["content"] for item in lines)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == len(lines) - 1
    assert finishes(chunks) == [lines[-1]["done_reason"]] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens == lines[-1]["prompt_eval_count"]
    assert usage.completion_tokens == lines[-1]["eval_count"]
    assert usage.total_tokens == lines[-1]["prompt_eval_count"] + lines[-1]["eval_count"]
    assert all(chunk.usage is None for chunk in chunks[:-1])
    roles = [c.delta.role for chunk in chunks for c in chunk.choices]
    assert roles[0] == "assistant" and set(roles[1:]) == {None}
    assert len({chunk.id for chunk in chunks}) == 1 and COMPLETION_ID.fullmatch(chunks[0].id)
    assert {chunk.model for chunk in chunks} == {recorded["model"]}

    sent = handler.requests[0]
    assert (sent.method, sent.url.path) == ("POST", "/api/chat")
    body = json.loads(sent.content)
    assert body == {"model": recorded["model"], "messages": recorded["messages"], "stream": True}


@pytest.mark.parametrize("chunked", [None, 7])
async def test_nonstream_recording(chunked: int | None) -> None:
    (rec,) = load("ollama/api-chat-nonstream.openllmetry.yaml")
    recorded = rec.request_json
    handler = replay(rec, chunked=chunked)
    before = int(time.time())
    response = await make(handler).chat(canonical(recorded), "llama3")

    answer = json.loads(rec.body)
    choice = response.choices[0]
    assert choice.message.content == answer["message"]["content"]
    assert (choice.message.content or "").startswith("A joke about OpenTelemetry!")
    assert choice.message.tool_calls is None and choice.message.reasoning_content is None
    assert choice.finish_reason == "stop"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (17, 66)
    assert response.usage.total_tokens == 83
    assert response.model == "llama3" and COMPLETION_ID.fullmatch(response.id)
    assert before <= response.created <= int(time.time())
    assert handler.requests[0].url.path == "/api/chat"
    body = json.loads(handler.requests[0].content)
    assert body == {"model": "llama3", "messages": recorded["messages"], "stream": False}


async def test_tool_result_request_matches_recording() -> None:
    (rec,) = load("ollama/api-chat-nonstream-tool-result-in-request.openllmetry.yaml")
    recorded = rec.request_json["messages"]
    call = ToolCall(
        id="call_abc",
        function=FunctionCall(name="get_current_weather", arguments='{"location":"San Francisco"}'),
    )
    request = ask(
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="tool", tool_call_id="call_abc", content=recorded[1]["content"]),
    )
    handler = replay(rec)
    response = await make(handler).chat(request, "llama3.1")

    sent = json.loads(handler.requests[0].content)
    assert sent["messages"][0] == recorded[0]
    assert sent["messages"][1] == {**recorded[1], "tool_name": "get_current_weather"}
    assert "tools" not in sent and sent["stream"] is False
    assert response.choices[0].message.content == json.loads(rec.body)["message"]["content"]
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (44, 113)


# -- tool calls, thinking, images -------------------------------------------------------------

TOOL_STREAM = ndjson(
    line(
        message={
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]
        }
    ),
    line(
        message={
            "tool_calls": [
                {
                    "id": "call_up1",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ]
        }
    ),
    final("stop", 31, 12),
)


@pytest.mark.parametrize("fragmented", [False, True])
async def test_tool_call_stream(fragmented: bool) -> None:
    handler = Serve(TOOL_STREAM, stream=fragmented)
    chunks = await collect(make(handler), ask(user("weather?"), tools=[WEATHER_TOOL]))

    deltas = [tc for chunk in chunks for c in chunk.choices for tc in c.delta.tool_calls or []]
    assert [d.index for d in deltas] == [0, 1]
    assert deltas[0].id is not None and CALL_ID.fullmatch(deltas[0].id)
    assert deltas[1].id == "call_up1"
    assert {d.type for d in deltas} == {"function"}
    assert [d.function.name for d in deltas if d.function] == ["get_weather", "get_weather"]
    arguments = [json.loads(d.function.arguments or "") for d in deltas if d.function]
    assert arguments == [{"city": "Tokyo"}, {"city": "Oslo"}]
    assert finishes(chunks) == ["tool_calls"]
    assert text_of(chunks) == ""
    assert handler.sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]


async def test_tool_call_nonstream() -> None:
    body = final("stop", 40, 15)
    body["message"]["tool_calls"] = [
        {"function": {"name": "get_weather", "arguments": {"city": "Lima", "days": 2}}}
    ]
    response = await make(Serve(json.dumps(body).encode())).chat(ask(user()), "m")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert CALL_ID.fullmatch(call.id) and call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Lima","days":2}'
    assert response.model == "qwen3"


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [("length", True, "length"), ("length", False, "length"), ("load", False, "load")],
)
async def test_done_reasons_other_than_stop_pass_through(
    reason: str, calls: bool, expected: str
) -> None:
    lines = [line("partial"), final(reason)]
    if calls:
        lines.insert(
            0, line(message={"tool_calls": [{"function": {"name": "f", "arguments": {}}}]})
        )
    chunks = await collect(make(Serve(ndjson(*lines))), ask(user()))
    assert finishes(chunks) == [expected]


async def test_thinking_becomes_reasoning_content() -> None:
    body = ndjson(
        line(message={"thinking": "The user "}),
        line(message={"thinking": "greets me."}),
        line("Hello"),
        line(" there"),
        final(),
    )
    handler = Serve(body)
    history = [
        user("hi"),
        Message(role="assistant", content="hey", reasoning_content="be kind"),
        user("again"),
    ]
    chunks = await collect(make(handler), ask(*history, reasoning_effort="high"))
    assert text_of(chunks, "reasoning_content") == "The user greets me."
    assert text_of(chunks) == "Hello there"
    assert handler.sent["think"] == "high"
    assert handler.sent["messages"][1] == {
        "role": "assistant",
        "content": "hey",
        "thinking": "be kind",
    }

    whole = final()
    whole["message"] |= {"content": "Hi!", "thinking": "Short answer."}
    response = await make(Serve(json.dumps(whole).encode())).chat(ask(user()), "m")
    message = response.choices[0].message
    assert (message.content, message.reasoning_content) == ("Hi!", "Short answer.")


@pytest.mark.parametrize(
    ("effort", "think"), [("none", False), ("low", "low"), ("medium", "medium")]
)
async def test_reasoning_effort_maps_to_think(effort: str, think: bool | str) -> None:
    handler = Serve(json.dumps(final()).encode())
    await make(handler).chat(ask(user(), reasoning_effort=effort), "m")
    sent = handler.sent["think"]
    assert sent == think and type(sent) is type(think)


async def test_unknown_reasoning_effort_is_refused() -> None:
    handler = Serve(b"")
    with pytest.raises(InvalidRequest, match="reasoning_effort") as info:
        await make(handler).chat(ask(user(), reasoning_effort="extreme"), "m")
    assert info.value.status == 400 and handler.requests == []


async def test_inline_image_goes_to_images() -> None:
    handler = Serve(json.dumps(final()).encode())
    parts: list[ContentPart] = [
        TextPart(text="What is this?"),
        ImagePart(image_url=ImageURL(url=f"data:image/png;base64,{PNG}")),
        TextPart(text="Be brief."),
    ]
    await make(handler).chat(ask(Message(role="user", content=parts)), "llava")
    assert handler.sent["messages"] == [
        {"role": "user", "content": "What is this?\nBe brief.", "images": [PNG]}
    ]


async def test_linked_image_is_refused_before_sending() -> None:
    handler = Serve(b"")
    parts: list[ContentPart] = [ImagePart(image_url=ImageURL(url="https://example.com/cat.png"))]
    with pytest.raises(InvalidRequest, match="inline images only") as info:
        await make(handler).chat(ask(Message(role="user", content=parts)), "llava")
    assert info.value.status == 400 and info.value.param == "messages[0].content"
    assert handler.requests == []


async def test_bad_tool_arguments_are_refused() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="f", arguments="{not json"))
    handler = Serve(b"")
    with pytest.raises(InvalidRequest, match="not a JSON object") as info:
        await make(handler).chat(ask(user(), Message(role="assistant", tool_calls=[call])), "m")
    assert info.value.param == "messages[1].tool_calls" and handler.requests == []


# -- request mapping ------------------------------------------------------------------------------


async def test_options_format_and_roles() -> None:
    handler = Serve(json.dumps(final()).encode())
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = ask(
        Message(role="developer", content="be terse"),
        user(),
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop="END",
        max_tokens=10,
        max_completion_tokens=64,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        response_format=ResponseFormat(
            type="json_schema", json_schema=JSONSchemaFormat(name="r", schema=schema)
        ),
    )
    await make(handler).chat(request, "m")
    sent = handler.sent
    assert sent["messages"][0] == {"role": "system", "content": "be terse"}
    assert sent["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
        "num_predict": 64,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert sent["format"] == schema

    await make(handler).chat(
        ask(user(), max_tokens=10, response_format=ResponseFormat(type="json_object")), "m"
    )
    assert handler.sent["options"] == {"num_predict": 10} and handler.sent["format"] == "json"


async def test_unset_fields_are_omitted() -> None:
    handler = Serve(json.dumps(final()).encode())
    await make(handler).chat(ask(user(), tools=[WEATHER_TOOL], tool_choice="none"), "m")
    assert handler.sent == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


async def test_auth_header_only_with_a_key() -> None:
    handler = Serve(json.dumps(final()).encode())
    await make(handler, key="sk-ollama-cloud-123456").chat(ask(user()), "m")
    await make(handler).chat(ask(user()), "m")
    with_key, without = handler.requests
    assert with_key.headers["authorization"] == "Bearer sk-ollama-cloud-123456"
    assert "authorization" not in without.headers
    assert without.headers["content-type"] == "application/json"


# -- failures --------------------------------------------------------------------------------------


async def test_error_line_mid_stream_names_the_instance() -> None:
    handler = Serve(ndjson(line("Hel"), {"error": "boom"}), stream=True)
    stream = await make(handler, name="gpu-box").open_stream(ask(user()), "m")
    seen = []
    with pytest.raises(UpstreamStatusError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert text_of(seen) == "Hel"
    exc = info.value
    assert exc.provider == "gpu-box" and exc.message == "gpu-box: boom"
    assert (exc.upstream_status, exc.status) == (500, 502)
    assert handler.closed


async def test_stream_without_done_line_is_a_protocol_error() -> None:
    handler = Serve(ndjson(line("Hello"), line(" wor")), stream=True)
    stream = await make(handler, name="gpu-box").open_stream(ask(user()), "m")
    seen = []
    with pytest.raises(UpstreamProtocolError, match="ended before it was complete") as info:
        async for chunk in stream:
            seen.append(chunk)
    assert text_of(seen) == "Hello wor" and info.value.provider == "gpu-box"
    assert handler.closed


async def test_unreadable_line_is_a_protocol_error() -> None:
    handler = Serve(ndjson(line("ok")) + b"<html>bad gateway</html>\n", stream=True)
    with pytest.raises(UpstreamProtocolError, match="unreadable") as info:
        await collect(make(handler), ask(user()))
    assert info.value.status == 502 and handler.closed


async def test_complete_stream_closes_the_response() -> None:
    handler = Serve(ndjson(line("ok"), final()), stream=True)
    chunks = await collect(make(handler), ask(user()))
    assert text_of(chunks) == "ok" and handler.closed


@pytest.mark.parametrize("stream", [False, True])
async def test_model_not_found(stream: bool) -> None:
    handler = Serve(b'{"error":"model \\"x\\" not found, try pulling it first"}', 404)
    adapter = make(handler, name="gpu-box")
    with pytest.raises(UpstreamStatusError) as info:
        if stream:
            await adapter.open_stream(ask(user()), "x")  # raises before any chunk is read
        else:
            await adapter.chat(ask(user()), "x")
    exc = info.value
    assert (exc.status, exc.code, exc.upstream_status) == (404, "model_not_found", 404)
    assert exc.message == 'gpu-box: model "x" not found, try pulling it first'
    assert exc.retryable is False


async def test_connection_refused() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(UpstreamConnectError) as info:
        await make(refuse, name="gpu-box").chat(ask(user()), "m")
    assert info.value.provider == "gpu-box" and info.value.retryable
    assert "Connection refused" in info.value.message


async def test_relay_is_not_offered() -> None:
    adapter = make(Serve(b""))
    assert (adapter.kind, adapter.wire) == ("ollama", "")
    assert load_adapter("ollama") is Ollama
    with pytest.raises(ProviderUnavailable, match="does not relay"):
        await adapter.relay({"model": "m"}, "m", stream=False)


# -- models and embeddings ----------------------------------------------------------------------


async def test_list_models_from_tags() -> None:
    tags = {
        "models": [
            {"name": "llama3.1:latest", "model": "llama3.1:latest", "size": 4920753328},
            {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest"},
        ]
    }
    handler = Serve(json.dumps(tags).encode())
    assert await make(handler).list_models() == ["llama3.1:latest", "nomic-embed-text:latest"]
    assert (handler.requests[0].method, handler.requests[0].url.path) == ("GET", "/api/tags")


async def test_embed() -> None:
    answer = {
        "model": "nomic-embed-text",
        "embeddings": [[0.25, -0.5], [1.0, 0.125]],
        "total_duration": 14143917,
        "prompt_eval_count": 8,
    }
    handler = Serve(json.dumps(answer).encode())
    adapter = make(handler)
    request = EmbeddingRequest(model="e", input=["a", "b"])
    response = await adapter.embed(request, "nomic-embed-text")
    assert handler.requests[0].url.path == "/api/embed"
    assert handler.sent == {"model": "nomic-embed-text", "input": ["a", "b"]}
    assert [item.embedding for item in response.data] == [[0.25, -0.5], [1.0, 0.125]]
    assert [item.index for item in response.data] == [0, 1]
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (8, 8)
    assert response.model == "nomic-embed-text"

    encoded = await adapter.embed(
        EmbeddingRequest(model="e", input="a", encoding_format="base64"), "n"
    )
    assert handler.sent["input"] == ["a"]
    raw = base64.b64decode(str(encoded.data[0].embedding))
    assert struct.unpack("<2f", raw) == (0.25, -0.5)


async def test_embed_refuses_token_arrays() -> None:
    handler = Serve(b"")
    with pytest.raises(InvalidRequest, match="token-array") as info:
        await make(handler).embed(EmbeddingRequest(model="e", input=[[1, 2, 3]]), "n")
    assert info.value.param == "input" and handler.requests == []
