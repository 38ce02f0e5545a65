"""The host app's own tests: its /ai mount and its routes that call the gateway, with the
providers replaced by `thanos_asgi.testing` fakes. No network, no keys, no Ollama.

The config names one provider instance, `ai`, of kind "fake"; `FakeUpstream(script)` decides
what it answers, by model name. Models the script does not name follow their name:
`ai/error-429`, `ai/slow-2000`, `ai/tool-lookup`, `ai/flaky`, anything else echoes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from examples.testing_your_app.app import create_app
from thanos_asgi import Gateway
from thanos_asgi.config import parse_config
from thanos_asgi.testing import Answer, Call, Fail, FakeUpstream, Script

pytestmark = pytest.mark.anyio

CONFIG = """
[providers.ai]
kind = "fake"
timeout_ms = 1000

[routing]
aliases = { smart = "ai/gpt-4o" }
max_retries = 0
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeUpstream:
    return FakeUpstream(
        Script(
            {
                "gpt-4o": Answer("Paris is the capital of France.", usage=(12, 7)),
                "weather": Answer(calls=[Call("get_weather", {"city": "Paris"})]),
                "busy": [Fail(429, "slow down", retry_after=1), Answer("second try")],
            }
        )
    )


@pytest.fixture
async def http(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config(CONFIG, source="test", env={})
    async with Gateway(config, transports={"ai": fake}) as gateway:
        app = create_app(gateway)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            yield client


@pytest.fixture
def ai(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    """The OpenAI SDK, as the app's users call it, pointed at the mount."""
    return openai.AsyncOpenAI(
        base_url="http://host/ai/v1", api_key="unused", http_client=http, max_retries=0
    )


HI = [{"role": "user", "content": "What is the capital of France?"}]


async def test_chat_through_the_mount(ai: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    reply = await ai.chat.completions.create(model="smart", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Paris is the capital of France."
    assert reply.usage is not None and reply.usage.total_tokens == 19
    assert fake.requests[0].json["messages"] == HI  # what the provider was sent


async def test_streamed_answer(ai: openai.AsyncOpenAI) -> None:
    stream = await ai.chat.completions.create(
        model="smart",
        messages=HI,  # type: ignore[arg-type]
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert len(pieces) > 3
    assert "".join(p or "" for p in pieces) == "Paris is the capital of France."


async def test_tool_call(ai: openai.AsyncOpenAI) -> None:
    reply = await ai.chat.completions.create(model="ai/weather", messages=HI)  # type: ignore[arg-type]
    call = (reply.choices[0].message.tool_calls or [])[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


async def test_provider_errors_reach_the_client(ai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        await ai.chat.completions.create(model="ai/busy", messages=HI)  # type: ignore[arg-type]
    again = await ai.chat.completions.create(model="ai/busy", messages=HI)  # type: ignore[arg-type]
    assert again.choices[0].message.content == "second try"
    with pytest.raises(openai.InternalServerError):  # an upstream 500 is a 502 to clients
        await ai.chat.completions.create(model="ai/error-500", messages=HI)  # type: ignore[arg-type]


async def test_a_slow_provider_times_out(ai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:  # timeout_ms = 1000 in CONFIG
        await ai.chat.completions.create(model="ai/slow-5000", messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 504


async def test_the_hosts_own_route(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.script.on("gpt-4o", Answer("France's capital is Paris."))
    response = await http.post("/summary", json={"text": "a long text about Paris"})
    assert response.json() == {"summary": "France's capital is Paris."}
    prompt = fake.requests[-1].json["messages"][0]["content"]
    assert prompt == "Summarise in one line: a long text about Paris"
