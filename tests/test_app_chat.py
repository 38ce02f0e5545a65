"""The OpenAI-compatible chat API in-process, driven by the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import KEY, app_and_sdk, client_for
from tests.upstreams import FakeOpenAI

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hello there"}]


async def test_nonstream_chat_with_headers() -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    raw = await client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=HI, extra_headers={"x-request-id": "req-123"}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.usage is not None and completion.usage.total_tokens == 12
    assert raw.headers["x-request-id"] == "req-123"
    assert raw.headers["x-thanos-provider"] == "openai"
    assert raw.headers["x-thanos-model"] == "gpt-4o-mini"
    assert raw.headers["x-thanos-attempts"] == "openai:ok"
    assert float(raw.headers["x-thanos-overhead-ms"]) >= 0
    assert upstream.bodies()[0]["model"] == "gpt-4o-mini"
    assert upstream.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_request_id_generated_when_missing() -> None:
    _, client = app_and_sdk(FakeOpenAI())
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert len(raw.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("model", "provider", "upstream_model"),
    [
        ("openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("gpt-4o", "openai", "gpt-4o"),
        ("deepseek/deepseek-chat", "deepseek", "deepseek-chat"),
        ("deepseek-reasoner", "deepseek", "deepseek-reasoner"),
        ("xai/grok-4", "xai", "grok-4"),
        ("grok-3-mini", "xai", "grok-3-mini"),
        ("smart", "openai", "gpt-4o"),
        ("cheap", "deepseek", "deepseek-chat"),
        ("auto", "openai", "gpt-4o-mini"),
    ],
)
async def test_model_names_route(model: str, provider: str, upstream_model: str) -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    raw = await client.chat.completions.with_raw_response.create(model=model, messages=HI)
    assert raw.headers["x-thanos-provider"] == provider
    assert upstream.bodies()[0]["model"] == upstream_model
    assert upstream.requests[0].url.host == f"{provider}.test"


async def test_stream_with_usage_when_asked() -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo:hellothere"  # the fake streams word by word without spaces
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_stream_without_usage_hides_the_injected_usage_chunk() -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert upstream.bodies()[0]["stream_options"] == {"include_usage": True}


async def test_tools_images_and_response_format_reach_upstream_intact() -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    await client.chat.completions.create(
        model="openai/gpt-4o",
        messages=messages,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        response_format=response_format,  # type: ignore[arg-type]
        extra_body={"vendor_extension": {"keep": True}},
    )
    sent = upstream.bodies()[0]
    assert sent["messages"] == messages
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == response_format
    assert sent["vendor_extension"] == {"keep": True}  # pass-through keeps unknown fields


async def test_tool_call_round_trip_from_recording() -> None:
    from tests.cassettes import load, replay

    recs = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    _, client = app_and_sdk(replay(*recs))
    stream = await client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=HI, stream=True
    )
    calls = [call async for chunk in stream for call in (chunk.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "get_capital"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"country": "UK"}


async def test_unknown_model_is_404_in_openai_shape() -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="no-such-model", messages=HI)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
    assert "instance" in body["message"] and upstream.requests == []


async def test_upstream_failures_map_to_statuses() -> None:
    _, client = app_and_sdk(FakeOpenAI())
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="openai/fail-401", messages=HI)
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "upstream_authentication_failed"
    assert KEY not in json.dumps(info.value.body)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="openai/fail-429", messages=HI)
    assert limited.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.InternalServerError) as bad:
        await client.chat.completions.create(model="openai/garbage", messages=HI)
    assert bad.value.status_code == 502


async def test_fallback_to_next_instance_before_first_byte() -> None:
    text = f"""
[providers.primary]
kind = "openai-compatible"
base_url = "http://primary.test/v1"
api_key = "{KEY}"
models = ["fail-503"]
[providers.backup]
kind = "openai-compatible"
base_url = "http://backup.test/v1"
api_key = "{KEY}"
models = ["fail-503"]
"""
    upstream = FakeOpenAI()

    async def handler(request):  # type: ignore[no-untyped-def]
        if request.url.host == "backup.test":
            body = json.loads(request.content)
            body["model"] = "ok"
            request = request.__class__(request.method, request.url, json=body)
        return await upstream(request)

    _, client = app_and_sdk(handler, text)
    raw = await client.chat.completions.with_raw_response.create(model="fail-503", messages=HI)
    assert raw.headers["x-thanos-attempts"] == "primary:503,backup:ok"
    assert raw.headers["x-thanos-provider"] == "backup"


async def test_mid_stream_failures_end_with_an_error_event() -> None:
    _, client = app_and_sdk(FakeOpenAI())
    for model in ("openai/error-event", "openai/cut"):
        stream = await client.chat.completions.create(model=model, messages=HI, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_legacy_completions() -> None:
    upstream = FakeOpenAI()
    _, client = app_and_sdk(upstream)
    completion = await client.completions.create(model="gpt-4o-mini", prompt="say hi")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "echo: say hi"
    assert upstream.bodies()[0]["messages"] == [{"role": "user", "content": "say hi"}]
    stream = await client.completions.create(model="gpt-4o-mini", prompt="a b", stream=True)
    pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(pieces) == "echo:ab"


async def test_embeddings() -> None:
    _, client = app_and_sdk(FakeOpenAI())
    result = await client.embeddings.create(model="openai/text-embedding-3-small", input="hi")
    assert result.data[0].embedding == [0.5, 0.25]
    assert result.usage.prompt_tokens == 2


async def test_models_list_and_lookup() -> None:
    app, client = app_and_sdk(FakeOpenAI())
    ids = {model.id async for model in client.models.list()}
    assert {"openai/gpt-4o-mini", "smart", "cheap", "openai/live-model"} <= ids
    model = await client.models.retrieve("openai/gpt-4o-mini")
    assert model.owned_by == "openai"
    async with client_for(app) as http:
        missing = await http.get("/v1/models/nobody/knows")
    assert missing.status_code == 404
