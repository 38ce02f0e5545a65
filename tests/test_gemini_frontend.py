"""The Gemini-native front-end over loopback, driven by the official `google-genai` SDK, to
OpenAI and Anthropic recordings (and the FakeOpenAI upstream)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.cassettes import load, replay
from tests.dialects import TEXT, Hosts, recorded_text
from tests.helpers import KEY, gateway
from tests.servers import running
from thanos_asgi import build_app

pytestmark = pytest.mark.anyio
CLIENT_KEY = "thk-gemini-client-0123456789ab"
KEYED = TEXT + f'[[server.keys]]\nid = "genai"\nkey = "{CLIENT_KEY}"\n'
CAPITAL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_capital",
            description="The capital of a country",
            parameters_json_schema={
                "type": "object",
                "properties": {"country": {"type": "string"}},
            },
        )
    ]
)


@asynccontextmanager
async def genai_client(hosts: Hosts, text: str = KEYED) -> AsyncIterator[genai.Client]:
    async with running(build_app(gateway(hosts, text))) as url:
        options = types.HttpOptions(base_url=url, api_version="v1beta")
        yield genai.Client(api_key=CLIENT_KEY, http_options=options)


async def test_generate_content_to_an_openai_recording() -> None:
    (rec,) = load("openai/chat-nonstream-text.vercel-ai.json")
    hosts = Hosts(openai=replay(rec, strict_path=False))
    async with genai_client(hosts) as client:
        answer = await client.aio.models.generate_content(
            model="openai/gpt-4.1-nano", contents="Invent a holiday"
        )
    recorded = json.loads(rec.body)
    assert answer.text == recorded["choices"][0]["message"]["content"]
    assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason.STOP
    usage = answer.usage_metadata
    assert usage and usage.prompt_token_count == recorded["usage"]["prompt_tokens"]
    assert hosts.bodies()[0]["messages"] == [{"role": "user", "content": "Invent a holiday"}]


async def test_streaming_to_an_anthropic_recording() -> None:
    name = "anthropic/messages-stream-text.vercel-ai.chunks.txt"
    (rec,) = load(name)
    async with genai_client(Hosts(anthropic=replay(rec, strict_path=False))) as client:
        stream = await client.aio.models.generate_content_stream(
            model="claude-sonnet-4-5", contents="hello"
        )
        answers = [answer async for answer in stream]
    assert "".join(a.text or "" for a in answers) == recorded_text(name)
    last = answers[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata and (last.usage_metadata.candidates_token_count or 0) > 0


async def test_function_calling_round_trip_to_an_openai_recording() -> None:
    first, second = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    hosts = Hosts(openai=replay(first, second))
    config = types.GenerateContentConfig(tools=[CAPITAL])
    async with genai_client(hosts) as client:
        stream = await client.aio.models.generate_content_stream(
            model="openai/gpt-4o", contents="Capital of the UK?", config=config
        )
        answers = [answer async for answer in stream]
        calls = [call for a in answers for call in (a.function_calls or [])]
        assert [(c.name, c.args) for c in calls] == [("get_capital", {"country": "UK"})]
        history = [
            types.Content(role="user", parts=[types.Part(text="Capital of the UK?")]),
            types.Content(role="model", parts=[types.Part(function_call=calls[0])]),
            types.Content(
                role="user",
                parts=[
                    types.Part.from_function_response(
                        name="get_capital", response={"result": "London"}
                    )
                ],
            ),
        ]
        stream = await client.aio.models.generate_content_stream(
            model="openai/gpt-4o", contents=history, config=config
        )
        text = "".join([a.text or "" async for a in stream])
    assert text  # the recording's answer after the tool result
    sent = hosts.bodies()[1]["messages"]
    call_id = sent[1]["tool_calls"][0]["id"]
    assert sent[2] == {"role": "tool", "content": '{"result":"London"}', "tool_call_id": call_id}
    assert hosts.bodies()[0]["tools"][0]["function"]["name"] == "get_capital"


async def test_function_call_from_an_anthropic_recording() -> None:
    rec = load("anthropic/messages-nonstream-parallel-tool-use.pydantic-ai.yaml")[0]
    recorded = json.loads(rec.body)
    uses = [block for block in recorded["content"] if block["type"] == "tool_use"]
    async with genai_client(Hosts(anthropic=replay(rec, strict_path=False))) as client:
        answer = await client.aio.models.generate_content(
            model="claude-sonnet-4-5",
            contents="weather?",
            config=types.GenerateContentConfig(tools=[CAPITAL]),
        )
    assert [(c.name, c.args) for c in answer.function_calls or []] == [
        (u["name"], u["input"]) for u in uses
    ]


async def test_generation_config_becomes_canonical() -> None:
    hosts = Hosts()
    config = types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.3,
        max_output_tokens=50,
        stop_sequences=["END"],
        seed=11,
        response_mime_type="application/json",
        response_json_schema={"type": "object", "properties": {"a": {"type": "string"}}},
        thinking_config=types.ThinkingConfig(thinking_budget=1024),
    )
    async with genai_client(hosts) as client:
        await client.aio.models.generate_content(
            model="openai/gpt-4o", contents="hi", config=config
        )
    sent = hosts.bodies()[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == 0.3 and sent["seed"] == 11 and sent["stop"] == ["END"]
    assert 50 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["reasoning_effort"] == "low"


async def test_count_tokens_embed_and_models() -> None:
    hosts = Hosts()
    async with genai_client(hosts) as client:
        counted = await client.aio.models.count_tokens(model="openai/gpt-4o", contents="hello")
        assert (counted.total_tokens or 0) > 0
        embedded = await client.aio.models.embed_content(
            model="openai/text-embedding-3-small", contents="hello"
        )
        assert embedded.embeddings and embedded.embeddings[0].values == [0.5, 0.25]
        names = [m.name async for m in await client.aio.models.list()]
        assert "models/openai/gpt-4o-mini" in names
        model = await client.aio.models.get(model="openai/gpt-4o-mini")
        assert model.name == "models/openai/gpt-4o-mini"
    paths = [r.url.path for r in hosts.requests]
    assert "/v1/embeddings" in paths and "/v1/chat/completions" not in paths  # counted here


async def test_errors_in_googles_shape() -> None:
    async with genai_client(Hosts()) as client:
        with pytest.raises(errors.ClientError) as info:
            await client.aio.models.generate_content(model="no-such-model", contents="hi")
        assert info.value.code == 404 and info.value.status == "NOT_FOUND"
        search = types.Tool(google_search=types.GoogleSearch())
        with pytest.raises(errors.ClientError) as refused:
            await client.aio.models.generate_content(
                model="openai/gpt-4o",
                contents="hi",
                config=types.GenerateContentConfig(tools=[search]),
            )
        assert refused.value.code == 400 and "googleSearch" in str(refused.value.message)
        with pytest.raises(errors.ServerError) as failed:
            await client.aio.models.generate_content(model="openai/fail-401", contents="hi")
        assert failed.value.code == 502 and KEY not in str(failed.value.message)


async def test_client_key_header_query_and_refusal() -> None:
    async with running(build_app(gateway(Hosts(), KEYED))) as url:
        path = f"{url}/v1beta/models/openai/gpt-4o:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with httpx.AsyncClient() as http:
            missing = await http.post(path, json=body)
            by_query = await http.post(path, params={"key": CLIENT_KEY}, json=body)
            raw_stream = await http.post(
                path.replace(":generateContent", ":streamGenerateContent"),
                headers={"x-goog-api-key": CLIENT_KEY},
                json=body,
            )
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert by_query.status_code == 200
    assert by_query.json()["candidates"][0]["content"]["parts"] == [{"text": "echo: hi"}]
    items = raw_stream.json()  # without ?alt=sse: one JSON array
    assert isinstance(items, list) and items[-1]["candidates"][0]["finishReason"] == "STOP"
    parts = [p for i in items for p in i["candidates"][0]["content"].get("parts", [])]
    assert "".join(p["text"] for p in parts) == "echo:hi"  # FakeOpenAI streams the words
