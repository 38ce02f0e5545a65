"""POST /v1/messages in-process, driven by the official anthropic SDK (and raw httpx2)."""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import anthropic
import httpx
import httpx2
import msgspec
import pytest

from tests.cassettes import load, replay, sse_data, sse_events
from tests.helpers import BASIC, KEY, client_for, gateway
from tests.upstreams import FakeOpenAI
from thanos_asgi import build_app
from thanos_asgi.frontends.anthropic import decode_messages
from thanos_asgi.frontends.asgi import ASGIApp

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]
TEXT = (
    BASIC
    + f"""
[providers.anthropic]
api_key = "{KEY}"
base_url = "http://anthropic.test"
"""
)
HI = [{"role": "user", "content": "hello there"}]
SSE = {"content-type": "text/event-stream"}


class Upstreams:
    """Anthropic at anthropic.test (recordings), everything else FakeOpenAI or a handler."""

    def __init__(self, anthropic: Any = None, other: Any = None) -> None:
        self.anthropic = anthropic or replay()
        self.other = other or FakeOpenAI()
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.anthropic if request.url.host == "anthropic.test" else self.other
        response = handler(request)
        return await response if inspect.isawaitable(response) else response

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]


def setup(
    upstreams: Upstreams | None = None, text: str = TEXT
) -> tuple[ASGIApp, anthropic.AsyncAnthropic, Upstreams]:
    upstreams = upstreams or Upstreams()
    app = build_app(gateway(upstreams, text))
    client = anthropic.AsyncAnthropic(
        base_url="http://gateway.test",
        api_key="client-key",
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
        max_retries=0,
    )
    return app, client, upstreams


def events_of(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event; the name must equal the data's type."""
    out = []
    for block in sse_events(body):
        if block.startswith(b":"):
            continue
        name = block.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
        (data,) = sse_data(block)
        parsed = json.loads(data)
        assert parsed["type"] == name
        out.append((name, parsed))
    return out


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# -- any provider behind the Anthropic API: translated ---------------------------------------------


async def test_nonstream_from_openai_upstream() -> None:
    _, client, upstreams = setup()
    raw = await client.messages.with_raw_response.create(
        model="openai/gpt-4o-mini",
        max_tokens=64,
        system="Be brief.",
        messages=HI,
        stop_sequences=["END"],
        extra_headers={"x-request-id": "req-9"},
        extra_body={"temperature": 0.5},  # this SDK version has no temperature argument
    )
    message = await raw.parse()
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "echo: hello there")
    ]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 7)
    assert raw.headers["x-thanos-provider"] == "openai"
    assert raw.headers["x-thanos-model"] == "gpt-4o-mini"
    assert raw.headers["x-thanos-attempts"] == "openai:ok"
    assert raw.headers["x-request-id"] == "req-9"
    assert float(raw.headers["x-thanos-overhead-ms"]) >= 0
    assert upstreams.bodies() == [
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello there"},
            ],
            "temperature": 0.5,
            "max_completion_tokens": 64,
            "stop": ["END"],
        }
    ]
    assert upstreams.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_stream_event_sequence_from_openai_upstream() -> None:
    app, client, _ = setup()
    async with client_for(app) as http:
        response = await http.post(
            "/v1/messages",
            json={"model": "gpt-4o-mini", "max_tokens": 50, "messages": HI, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-thanos-provider"] == "openai"
    events = events_of(response.content)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (
        start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    )
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [e["delta"] for _, e in events[2:5]] == [
        {"type": "text_delta", "text": word} for word in ("echo:", "hello", "there")
    ]
    assert events[5][1] == {"type": "content_block_stop", "index": 0}
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 7, "input_tokens": 5},
    }

    async with client.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=HI) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "echo:hellothere"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.stop_reason) == (
        5,
        7,
        "end_turn",
    )


TOOL = {
    "name": "get_capital",
    "description": "",
    "input_schema": {
        "additionalProperties": False,
        "properties": {"country": {"type": "string"}},
        "required": ["country"],
        "type": "object",
    },
}


async def test_recorded_openai_tool_loop_streamed_through_the_sdk() -> None:
    first, second = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    _, client, upstreams = setup(Upstreams(other=replay(first, second)))
    question = [
        {"role": "user", "content": "What is the capital of the UK? Use the tool, then answer."}
    ]
    async with client.messages.stream(
        model="openai/gpt-4o-mini",
        max_tokens=100,
        messages=question,  # type: ignore[arg-type]
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "auto"},
    ) as stream:
        final = await stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == (
        "call_ZR5UUuTt3pf61kjwAJIYdVMj",
        "get_capital",
        {"country": "UK"},
    )
    assert final.stop_reason == "tool_use"
    recorded_usage = json.loads(sse_data(first.body)[-2])["usage"]
    assert final.usage.input_tokens == recorded_usage["prompt_tokens"]
    assert final.usage.output_tokens == recorded_usage["completion_tokens"]
    sent = upstreams.bodies()[0]
    recorded = first.request_json
    assert sent["messages"] == recorded["messages"] and sent["tool_choice"] == "auto"
    recorded["tools"][0]["function"].pop("strict")
    assert sent["tools"] == recorded["tools"]

    follow_up = [
        *question,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "London"}],
        },
    ]
    async with client.messages.stream(
        model="openai/gpt-4o-mini",
        max_tokens=100,
        messages=follow_up,  # type: ignore[arg-type]
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "auto"},
    ) as stream:
        answer = await stream.get_final_message()
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or ""
        for d in sse_data(second.body)
        if d != "[DONE]" and json.loads(d)["choices"]
    )
    assert answer.content[0].type == "text" and answer.content[0].text == text
    assert "London" in text and answer.stop_reason == "end_turn"
    assert without_nulls(upstreams.bodies()[1]["messages"]) == without_nulls(
        second.request_json["messages"]
    )


async def test_recorded_parallel_tool_calls_nonstream() -> None:
    recs = load("openai/chat-nonstream-tool-calls-roundtrip.mirascope.yaml")
    _, client, upstreams = setup(Upstreams(other=replay(recs[0], recs[1])))
    tool = {
        "name": "secret_retrieval_tool",
        "description": "A tool that requires a password to retrieve a secret.",
        "input_schema": json.loads(recs[0].request_body or b"")["tools"][0]["function"][
            "parameters"
        ],
    }
    question = [
        {
            "role": "user",
            "content": "Please retrieve the secrets associated with each of these passwords: "
            "mellon,radiance",
        }
    ]
    first = await client.messages.create(
        model="openai/gpt-4o",
        max_tokens=200,
        system="Use parallel tool calling.",
        messages=question,  # type: ignore[arg-type]
        tools=[tool],  # type: ignore[list-item]
    )
    recorded = json.loads(recs[0].body)["choices"][0]["message"]["tool_calls"]
    assert [(b.type, b.id, b.name, b.input) for b in first.content] == [  # type: ignore[union-attr]
        ("tool_use", c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in recorded
    ]
    assert first.stop_reason == "tool_use"
    assert (first.usage.input_tokens, first.usage.output_tokens) == (75, 53)
    secrets = {"mellon": "Welcome to Moria!", "radiance": "Life before Death"}
    results = [
        {"type": "tool_result", "tool_use_id": b.id, "content": secrets[b.input["password"]]}  # type: ignore[union-attr]
        for b in first.content
    ]
    second = await client.messages.create(
        model="openai/gpt-4o",
        max_tokens=200,
        system="Use parallel tool calling.",
        messages=[
            *question,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {"role": "user", "content": results},
        ],  # type: ignore[list-item]
        tools=[tool],  # type: ignore[list-item]
    )
    assert second.content[0].type == "text"
    assert second.content[0].text.startswith("The secrets associated with the passwords")
    sent = upstreams.bodies()[1]["messages"]
    expected = json.loads(recs[1].request_body or b"")["messages"]
    expected[2].pop("annotations")
    for message in (sent[2], expected[2]):
        for call in message["tool_calls"]:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    assert sent == expected


async def test_reasoning_becomes_a_thinking_block_before_the_text() -> None:
    (rec,) = load("deepseek/chat-stream-reasoning-content.pydantic-ai.yaml")
    app, _, _ = setup(Upstreams(other=replay(rec)))
    async with client_for(app) as http:
        response = await http.post(
            "/v1/messages",
            json={
                "model": "deepseek/deepseek-reasoner",
                "max_tokens": 500,
                "messages": HI,
                "stream": True,
            },
        )
    events = events_of(response.content)
    starts = [
        (e["index"], e["content_block"]) for name, e in events if name == "content_block_start"
    ]
    assert starts == [
        (0, {"type": "thinking", "thinking": "", "signature": ""}),
        (1, {"type": "text", "text": ""}),
    ]
    stops = [i for i, (name, _) in enumerate(events) if name == "content_block_stop"]
    text_start = next(
        i for i, (name, e) in enumerate(events) if name == "content_block_start" and e["index"] == 1
    )
    assert stops[0] < text_start  # the thinking block closed before the text block opened
    chunks = [json.loads(d) for d in sse_data(rec.body) if d != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    thinking = "".join(d.get("reasoning_content") or "" for d in deltas)
    text = "".join(d.get("content") or "" for d in deltas)
    got = {
        kind: "".join(
            e["delta"].get(field, "")
            for name, e in events
            if name == "content_block_delta" and e["delta"]["type"] == kind
        )
        for kind, field in (("thinking_delta", "thinking"), ("text_delta", "text"))
    }
    assert got == {"thinking_delta": thinking, "text_delta": text} and thinking and text


def openai_stream(*deltas: dict[str, Any], finish: str = "tool_calls") -> bytes:
    chunks = [{"role": "assistant", "content": None}, *deltas]
    out = b""
    for delta in chunks:
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
    done = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
    }
    usage = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 22,
            "total_tokens": 33,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    return (
        out
        + b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (done, usage))
        + b"data: [DONE]\n\n"
    )


async def test_text_then_parallel_tool_calls_open_and_close_blocks_in_order() -> None:
    body = openai_stream(
        {"content": "Let me check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "g", "arguments": '{"y": 2}'},
                }
            ]
        },
    )
    upstream = Upstreams(other=lambda request: httpx.Response(200, content=body, headers=SSE))
    app, client, _ = setup(upstream)
    request = {"model": "openai/m", "max_tokens": 50, "messages": HI, "stream": True}
    async with client_for(app) as http:
        response = await http.post("/v1/messages", json=request)
    shape = []
    for name, event in events_of(response.content):
        if name == "content_block_start":
            block = event["content_block"]
            shape.append((name, event["index"], block["type"], block.get("id"), block.get("input")))
        elif name == "content_block_delta":
            delta = event["delta"]
            shape.append(
                (
                    name,
                    event["index"],
                    delta["type"],
                    delta.get("text") or delta.get("partial_json"),
                )
            )
        elif name == "content_block_stop":
            shape.append((name, event["index"]))
        elif name == "message_delta":
            shape.append((name, event["delta"]["stop_reason"], event["usage"]))
        else:
            shape.append((name,))
    assert shape == [
        ("message_start",),
        ("content_block_start", 0, "text", None, None),
        ("content_block_delta", 0, "text_delta", "Let me check."),
        ("content_block_stop", 0),
        ("content_block_start", 1, "tool_use", "call_a", {}),
        ("content_block_delta", 1, "input_json_delta", '{"x":'),
        ("content_block_delta", 1, "input_json_delta", " 1}"),
        ("content_block_stop", 1),
        ("content_block_start", 2, "tool_use", "call_b", {}),
        ("content_block_delta", 2, "input_json_delta", '{"y": 2}'),
        ("content_block_stop", 2),
        (
            "message_delta",
            "tool_use",
            {"output_tokens": 22, "input_tokens": 7, "cache_read_input_tokens": 4},
        ),
        ("message_stop",),
    ]
    async with client.messages.stream(model="openai/m", max_tokens=50, messages=HI) as stream:  # type: ignore[arg-type]
        final = await stream.get_final_message()
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_b", "name": "g", "input": {"y": 2}},
    ]
    assert final.usage.cache_read_input_tokens == 4 and final.usage.input_tokens == 7


async def test_claude_code_style_request_translates_for_openai() -> None:
    long_user = "user_" + "ab" * 40 + "_account__session_1234"
    body = {
        "model": "openai/gpt-4o",
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": "You are a coding agent."},
            {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBER",
                        },
                        "title": "spec.pdf",
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Look at both.", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Reading the file."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "read",
                        "input": {"path": "a.py"},
                    },
                    {
                        "type": "server_tool_use",
                        "id": "srvtoolu_1",
                        "name": "web_search",
                        "input": {"q": "x"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "print(1)"},
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x.test/s.png"},
                            },
                        ],
                        "is_error": False,
                    },
                    {"type": "text", "text": "Now fix it."},
                ],
            },
        ],
        "tools": [
            {"name": "read", "description": "Read a file", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "metadata": {"user_id": long_user},
        "top_k": 5,
        "stop_sequences": ["STOP"],
    }
    expected = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a coding agent.\n\nBe careful."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {
                        "type": "file",
                        "file": {
                            "filename": "spec.pdf",
                            "file_data": "data:application/pdf;base64,JVBER",
                        },
                    },
                ],
            },
            {
                "role": "assistant",
                "content": "Reading the file.",
                "tool_calls": [
                    {
                        "type": "function",
                        "id": "toolu_1",
                        "function": {"name": "read", "arguments": '{"path":"a.py"}'},
                    }
                ],
                "reasoning_content": "Look at both.",
                "reasoning_signature": "sig-1",
            },
            {"role": "tool", "content": "print(1)", "tool_call_id": "toolu_1"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://x.test/s.png"}},
                    {"type": "text", "text": "Now fix it."},
                ],
            },
        ],
        "max_completion_tokens": 2048,
        "stop": ["STOP"],
        "user": hashlib.sha256(long_user.encode()).hexdigest(),
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read",
                    "description": "Read a file",
                    "parameters": {"type": "object"},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
    }
    _, request = decode_messages(json.dumps(body).encode())
    assert msgspec.to_builtins(request) == {**expected, "model": "openai/gpt-4o"}
    app, _, upstreams = setup()
    async with client_for(app) as http:
        response = await http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    assistant = expected["messages"][2]  # type: ignore[index]
    del assistant["reasoning_content"], assistant["reasoning_signature"]  # not OpenAI's fields
    assert upstreams.bodies() == [expected]


BUSY = (
    b'data: {"id":"c","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    b'data: {"error":{"message":"busy","code":503}}\n\n'
)


async def busy_or_fake(request: httpx.Request) -> httpx.Response:
    """FakeOpenAI, plus model "busy": one chunk, then an in-stream 503."""
    if json.loads(request.content)["model"] == "busy":
        return httpx.Response(200, content=BUSY, headers=SSE)
    return await FakeOpenAI()(request)


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("openai/error-event", "api_error"),
        ("openai/cut", "api_error"),
        ("openai/busy", "overloaded_error"),
    ],
)
async def test_mid_stream_failures_end_with_an_anthropic_error_event(model: str, kind: str) -> None:
    app, client, _ = setup(Upstreams(other=busy_or_fake))
    async with client_for(app) as http:
        response = await http.post(
            "/v1/messages",
            json={"model": model, "max_tokens": 5, "messages": HI, "stream": True},
        )
    events = events_of(response.content)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == kind and events[-1][1]["error"]["message"]
    assert "message_stop" not in [name for name, _ in events]
    with pytest.raises(anthropic.APIStatusError):
        async with client.messages.stream(model=model, max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
            await stream.get_final_message()


async def test_fallback_from_anthropic_to_openai_translates() -> None:
    text = f"""
[providers.anthropic]
api_key = "{KEY}"
base_url = "http://anthropic.test"
model = "claude-sonnet-4-5"

[providers.openai]
api_key = "{KEY}"
base_url = "http://openai.test/v1"
model = "gpt-4o-mini"

[routing]
fallback_chain = ["anthropic", "openai"]
"""

    def overloaded(request: httpx.Request) -> httpx.Response:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return httpx.Response(529, json=error)

    _, client, upstreams = setup(Upstreams(anthropic=overloaded), text)
    raw = await client.messages.with_raw_response.create(model="auto", max_tokens=20, messages=HI)
    assert raw.headers["x-thanos-attempts"] == "anthropic:529,openai:ok"
    assert (await raw.parse()).content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert upstreams.bodies()[0] == {"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": HI}


# -- an Anthropic upstream: pass-through -----------------------------------------------------------


def recorded_streams() -> list[tuple[str, int]]:
    names = [
        "anthropic/messages-stream-thinking.pydantic-ai.yaml",
        "anthropic/messages-stream-stop-max-tokens.mirascope.yaml",
        "anthropic/messages-stream-tool-use-gzip-body.llm-anthropic.yaml",
        "anthropic/messages-stream-tool-use-roundtrip.mirascope.yaml",
        "anthropic/messages-stream-server-tool-use-advisor.pydantic-ai.yaml",
    ]
    return [(name, i) for name in names for i in range(len(load(name)))]


@pytest.mark.parametrize(("name", "turn"), recorded_streams())
async def test_anthropic_stream_is_relayed_byte_for_byte(name: str, turn: int) -> None:
    recs = load(name)
    rec = recs[turn]
    app, _, upstreams = setup(Upstreams(anthropic=replay(rec, chunked=11)))
    body = rec.request_json
    async with client_for(app) as http:
        response = await http.post(
            "/v1/messages", json={**body, "model": "anthropic/" + body["model"]}
        )
    assert response.status_code == 200
    assert response.content == rec.body.rstrip(b"\n") + b"\n\n"
    assert upstreams.bodies() == [body]  # only `model` changed, and back to the recorded one
    sent = upstreams.requests[0]
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert response.headers["x-thanos-provider"] == "anthropic"
    assert response.headers["x-thanos-model"] == body["model"]


async def test_anthropic_stream_relayed_through_the_sdk() -> None:
    (rec,) = load("anthropic/messages-stream-text.vercel-ai.chunks.txt")
    _, client, upstreams = setup(Upstreams(anthropic=replay(rec)))
    async with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=30, messages=HI
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == (
        "Hello! I'm doing well, thank you for asking. How are you doing today?"
        " Is there anything I can help you with?"
    )
    assert final.id == "msg_01QC4g3HwBThD4BaNtBckFDJ" and final.usage.output_tokens == 30
    assert upstreams.bodies()[0]["model"] == "claude-sonnet-4-5"


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/messages-nonstream-simple-system.pydantic-ai.yaml",
        "anthropic/messages-nonstream-parallel-tool-use.pydantic-ai.yaml",
        "anthropic/messages-nonstream-thinking-tool-use.pydantic-ai.yaml",
    ],
)
async def test_anthropic_answer_is_relayed_byte_for_byte(name: str) -> None:
    rec = load(name)[0]
    app, client, upstreams = setup(Upstreams(anthropic=replay(rec, rec)))
    body = rec.request_json
    async with client_for(app) as http:
        response = await http.post("/v1/messages", json=body)
    assert response.content == rec.body
    assert upstreams.bodies() == [body]
    message = await client.messages.create(**body)
    recorded = json.loads(rec.body)
    assert [b.model_dump(exclude_none=True) for b in message.content] == recorded["content"]
    assert message.usage.input_tokens == recorded["usage"]["input_tokens"]


async def test_anthropic_upstream_errors_in_anthropic_shape() -> None:
    recs = [
        load("anthropic/error-404-not-found-model.pydantic-ai.yaml")[0],
        load("anthropic/error-401-authentication-error.mirascope.yaml")[0],
    ]
    _, client, _ = setup(Upstreams(anthropic=replay(*recs)))
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="claude-sonet-4-5", max_tokens=5, messages=HI)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "anthropic: model: claude-sonet-4-5"},
    }
    with pytest.raises(anthropic.InternalServerError) as denied:  # (a 401 falls back, unless)
        await client.messages.create(
            model="claude-sonnet-4-0",
            max_tokens=5,
            messages=HI,
            extra_headers={"x-thanos-fallback": "off"},
        )
    assert denied.value.status_code == 502 and KEY not in json.dumps(denied.value.body)
    assert isinstance(denied.value.body, dict) and denied.value.body["error"]["type"] == "api_error"


# -- errors and count_tokens ---------------------------------------------------------------------


async def test_unknown_model_is_404_in_anthropic_shape() -> None:
    _, client, upstreams = setup()
    with pytest.raises(anthropic.NotFoundError) as info:
        await client.messages.create(model="no-such-model", max_tokens=5, messages=HI)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert (
        body["error"]["type"] == "not_found_error" and "no-such-model" in body["error"]["message"]
    )
    assert upstreams.requests == []


def malformed(**change: Any) -> bytes:
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    body.update(change)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (malformed(max_tokens=...), "max_tokens"),
        (malformed(max_tokens="5"), "$.max_tokens"),
        (malformed(messages=[]), "at least one"),
        (malformed(messages=[{"role": "user", "content": 5}]), "$.messages[0].content"),
        (malformed(messages=[{"role": "system", "content": "x"}]), "$.messages[0].role"),
        (
            malformed(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0]",
        ),
        (malformed(tools=[{"name": "f"}]), "tools[0]"),
    ],
)
async def test_malformed_requests_are_400_invalid_request_error(body: bytes, fragment: str) -> None:
    app, _, upstreams = setup()
    async with client_for(app) as http:
        response = await http.post("/v1/messages", content=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert fragment in error["error"]["message"]
    assert upstreams.requests == []


async def test_count_tokens_estimates_without_calling_upstream() -> None:
    app, client, upstreams = setup()
    short = await client.messages.count_tokens(model="claude-sonnet-4-5", messages=HI)
    long = await client.messages.count_tokens(
        model="claude-sonnet-4-5",
        system="You are helpful. " * 50,
        messages=[{"role": "user", "content": "word " * 400}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert isinstance(short.input_tokens, int) and 0 < short.input_tokens < 20
    assert long.input_tokens > 600 and long.input_tokens > short.input_tokens
    assert upstreams.requests == []
    async with client_for(app) as http:
        bad = await http.post("/v1/messages/count_tokens", json={"model": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_client_betas_reach_anthropic_merged_with_the_configured_ones() -> None:
    rec = load("anthropic/messages-stream-tool-use-roundtrip.mirascope.yaml")[0]
    text = TEXT + 'headers = { "Anthropic-Beta" = "configured-2025-01-01" }\n'
    body = {**rec.request_json, "model": "anthropic/" + rec.request_json["model"]}
    asked = "interleaved-thinking-2025-05-14, configured-2025-01-01,not a beta!,context-1m"
    sent = []
    for headers in ({"anthropic-beta": asked}, {}):
        app, _, upstreams = setup(Upstreams(anthropic=replay(rec)), text)
        async with client_for(app) as http:
            response = await http.post("/v1/messages", json=body, headers=headers)
        assert response.status_code == 200
        sent.append(upstreams.requests[0].headers.get_list("anthropic-beta"))
    assert sent == [
        ["configured-2025-01-01,interleaved-thinking-2025-05-14,context-1m"],
        ["configured-2025-01-01"],  # a client that asks for none changes nothing
    ]
