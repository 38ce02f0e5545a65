"""`thanos_asgi.testing`: the scripted fake provider and cassette replay, driven as a host
app's test suite would, over real loopback HTTP with the official SDKs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import httpx
import openai
import pytest

from tests.cassettes import CASSETTES
from tests.servers import running
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import parse_config
from thanos_asgi.testing import (
    Answer,
    Echo,
    Fail,
    FakeProvider,
    FakeUpstream,
    ReplayTransport,
    Script,
    load_cassette,
    sse_data,
)
from thanos_asgi.upstream import Transport

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hello fake"}]
FAKE = '[providers.fake]\nkind = "fake"\n'


@asynccontextmanager
async def serving(
    text: str, **transports: Transport
) -> AsyncIterator[tuple[Gateway, openai.AsyncOpenAI]]:
    config = parse_config(text, source="test", env={})
    async with (
        Gateway(config, transports=transports) as gateway,
        running(build_app(gateway)) as url,
    ):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        async with client:
            yield gateway, client


async def test_model_names_pick_the_behaviour_with_no_script() -> None:
    async with serving(FAKE + "[routing]\nmax_retries = 1\n") as (gateway, client):
        assert isinstance(gateway.providers["fake"], FakeProvider)
        echo = await client.chat.completions.create(model="fake/echo", messages=HI)  # type: ignore[arg-type]
        tool = await client.chat.completions.create(model="fake/tool-lookup", messages=HI)  # type: ignore[arg-type]
        flaky = await client.chat.completions.with_raw_response.create(
            model="fake/flaky",
            messages=HI,  # type: ignore[arg-type]
        )
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="fake/error-429", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="fake/error-400", messages=HI)  # type: ignore[arg-type]
        models = {model.id async for model in client.models.list()}
        embedded = await client.embeddings.create(model="fake/e", input=["a b", "a b", "c"])
    assert echo.choices[0].message.content == "echo: hello fake"
    assert echo.usage is not None and echo.usage.total_tokens == 2 + 3
    call = (tool.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "lookup" and call.function.arguments == "{}"
    assert flaky.headers["x-thanos-attempts"] == "fake:503,fake:ok"  # retried, then answered
    assert flaky.parse().choices[0].message.content == "echo: hello fake"
    assert "fake/echo" in models
    vectors = [item.embedding for item in embedded.data]
    assert len(vectors[0]) == 8 and vectors[0] == vectors[1] != vectors[2]


async def test_a_script_answers_in_turn_and_streams_in_its_chunks() -> None:
    script = Script(
        {
            "m": [Fail(503), Answer("one two", chunks=["one", " two"], usage=(4, 2))],
            "later": Echo(prefix="> ", delay=0.05, chunk_delay=0.01),
        }
    )
    fake = FakeUpstream(script)
    async with serving(FAKE, fake=fake) as (_, client):
        stream = await client.chat.completions.create(
            model="fake/m",
            messages=HI,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        later = await client.chat.completions.create(model="fake/later", messages=HI)  # type: ignore[arg-type]
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert deltas == ["one", " two"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    assert later.choices[0].message.content == "> hello fake"
    assert [r.json["model"] for r in fake.requests] == ["m", "m", "later"]  # one retry of 503
    assert fake.requests[1].json["stream"] is True


async def test_the_fake_falls_back_like_a_real_provider() -> None:
    text = FAKE + 'model = "error-503"\n[providers.backup]\nkind = "fake"\n[routing]\n'
    text += 'max_retries = 0\nfallback_chain = ["fake", "backup"]\naliases = { smart = "auto" }\n'
    async with serving(text) as (_, client):
        reply = await client.chat.completions.with_raw_response.create(
            model="smart",
            messages=HI,  # type: ignore[arg-type]
        )
    assert reply.headers["x-thanos-provider"] == "backup"
    assert reply.parse().choices[0].message.content == "echo: hello fake"


async def test_replayed_recordings_answer_through_the_gateway() -> None:
    recording = load_cassette(
        CASSETTES / "openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml"
    )
    transport = ReplayTransport(recording[0])  # the first turn of a recorded conversation
    text = '[providers.openai]\napi_key = "sk-test"\n'
    async with serving(text, openai=transport) as (_, client):
        stream = await client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=HI,  # type: ignore[arg-type]
            stream=True,
        )
        calls = [c async for chunk in stream for c in (chunk.choices[0].delta.tool_calls or [])]
    transport.assert_exhausted()
    assert transport.requests[0].url.path == "/v1/chat/completions"
    assert calls[0].function is not None and calls[0].function.name == "get_capital"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"country": "UK"}


async def test_replay_of_an_anthropic_stream_to_the_anthropic_sdk() -> None:
    transport = ReplayTransport(
        *load_cassette(CASSETTES / "anthropic/messages-stream-thinking.pydantic-ai.yaml")
    )
    config = parse_config('[providers.anthropic]\napi_key = "sk-ant-test"\n', source="t", env={})
    async with Gateway(config, transport=transport) as gateway, running(build_app(gateway)) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
        async with (
            client,
            client.messages.stream(
                model="anthropic/claude-sonnet-4-5",
                max_tokens=100,
                messages=HI,  # type: ignore[arg-type]
            ) as stream,
        ):
            message = await stream.get_final_message()
    transport.assert_exhausted()
    assert message.content[0].type == "thinking"


async def test_a_stream_cut_after_its_first_bytes_ends_in_an_error_event() -> None:
    cut = Answer("partial answer", cut=Fail(500, "upstream broke mid-stream"))
    fake = FakeUpstream(Script({"m": cut}))
    config = parse_config(FAKE + "[routing]\nmax_retries = 0\n", source="test", env={})
    async with (
        Gateway(config, transports={"fake": fake}) as gateway,
        running(build_app(gateway)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        body = {"model": "fake/m", "messages": HI, "stream": True}
        streamed = await http.post("/v1/chat/completions", json=body)
        whole = await http.post("/v1/chat/completions", json={**body, "stream": False})
    events = [json.loads(data) for data in sse_data(streamed.content) if data != "[DONE]"]
    text = "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))
    assert streamed.status_code == 200 and text == "partial answer"
    assert "upstream broke mid-stream" in events[-1]["error"]["message"]
    assert whole.status_code == 502  # not streamed: the error answer
    assert len(fake.requests) == 2  # no retry once the stream had started
