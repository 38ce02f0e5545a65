"""The Ollama-native front-end, driven by the official `ollama` client, to recorded providers."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import ollama
import pytest

from tests.cassettes import load, replay
from tests.dialects import HI, TEXT, WEATHER, Hosts, recorded_text
from tests.helpers import KEY, gateway
from tests.servers import running
from thanos_asgi import build_app
from thanos_asgi.frontends.asgi import ASGIApp

pytestmark = pytest.mark.anyio


def client(hosts: Hosts, text: str = TEXT, **kw: Any) -> tuple[ASGIApp, ollama.AsyncClient]:
    app = build_app(gateway(hosts, text))
    transport = httpx.ASGITransport(app=app)
    return app, ollama.AsyncClient(host="http://gateway.test", transport=transport, **kw)


async def test_chat_to_an_openai_recording() -> None:
    (rec,) = load("openai/chat-nonstream-text.vercel-ai.json")
    _, ol = client(Hosts(openai=replay(rec, strict_path=False)))
    reply = await ol.chat(model="openai/gpt-4.1-nano", messages=HI, stream=False)
    recorded = json.loads(rec.body)
    assert reply.message.content == recorded["choices"][0]["message"]["content"]
    assert reply.message.role == "assistant" and reply.done and reply.done_reason == "stop"
    assert reply.model == "openai/gpt-4.1-nano"  # the name the client asked for
    assert reply.prompt_eval_count == recorded["usage"]["prompt_tokens"]
    assert reply.eval_count == recorded["usage"]["completion_tokens"]


async def test_streaming_chat_to_an_anthropic_recording() -> None:
    name = "anthropic/messages-stream-text.vercel-ai.chunks.txt"
    (rec,) = load(name)
    _, ol = client(Hosts(anthropic=replay(rec, strict_path=False)))
    parts = [
        part async for part in await ol.chat(model="claude-sonnet-4-5", messages=HI, stream=True)
    ]
    assert "".join(p.message.content or "" for p in parts) == recorded_text(name)
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].done_reason == "stop" and (parts[-1].eval_count or 0) > 0


async def test_tool_call_stream_from_an_openai_recording_comes_whole() -> None:
    recs = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    _, ol = client(Hosts(openai=replay(recs[0])))
    stream = await ol.chat(model="openai/gpt-4o", messages=HI, tools=[WEATHER], stream=True)
    calls = [call async for part in stream for call in (part.message.tool_calls or [])]
    assert len(calls) == 1  # in one line, with its arguments parsed, as Ollama sends them
    assert calls[0].function.name == "get_capital"
    assert calls[0].function.arguments == {"country": "UK"}


async def test_function_call_from_a_gemini_recording() -> None:
    recs = load("gemini/generateContent-nonstream-function-call.pydantic-ai.yaml")
    _, ol = client(Hosts(gemini=replay(recs[0], strict_path=False)))
    reply = await ol.chat(
        model="gemini/gemini-2.5-flash", messages=HI, tools=[WEATHER], stream=False
    )
    assert reply.message.tool_calls and reply.message.tool_calls[0].function.name
    recorded = json.loads(recs[0].body)
    call = recorded["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert reply.message.tool_calls[0].function.name == call["name"]
    assert reply.message.tool_calls[0].function.arguments == call.get("args", {})


async def test_generate_streams_text_from_a_gemini_recording() -> None:
    (rec,) = load("gemini/streamGenerateContent-sse-text.pydantic-ai.yaml")
    _, ol = client(Hosts(gemini=replay(rec, strict_path=False)))
    stream = await ol.generate(
        model="gemini/gemini-2.5-flash", prompt="Capital of France?", stream=True
    )
    parts = [part async for part in stream]
    assert "Paris" in "".join(p.response for p in parts) and parts[-1].done


async def test_tool_round_trip_reaches_the_provider_with_linked_ids() -> None:
    hosts = Hosts()
    _, ol = client(hosts)
    messages = [
        *HI,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_capital", "arguments": {"country": "UK"}}}],
        },
        {"role": "tool", "content": "London", "tool_name": "get_capital"},
    ]
    await ol.chat(model="openai/gpt-4o", messages=messages, tools=[WEATHER], stream=False)
    sent = hosts.bodies()[0]["messages"]
    call = sent[1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"country": "UK"}
    assert sent[2] == {"role": "tool", "content": "London", "tool_call_id": call["id"]}


async def test_options_images_and_format_become_canonical() -> None:
    hosts = Hosts()
    _, ol = client(hosts)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n....").decode()
    messages = [{"role": "user", "content": "what is this", "images": [png]}]
    options = {"temperature": 0.2, "num_predict": 64, "seed": 7, "num_ctx": 8192, "top_k": 5}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    await ol.chat(model="openai/gpt-4o", messages=messages, options=options, format=schema)
    sent = hosts.bodies()[0]
    assert sent["temperature"] == 0.2 and sent["seed"] == 7 and "num_ctx" not in sent
    assert sent["max_tokens"] == 64 or sent.get("max_completion_tokens") == 64
    image = sent["messages"][0]["content"][1]["image_url"]["url"]
    assert image == f"data:image/png;base64,{png}"
    assert sent["response_format"]["json_schema"]["schema"] == schema


async def test_a_negative_num_predict_is_refused_in_ollamas_error_shape() -> None:
    hosts = Hosts()
    _, ol = client(hosts)
    with pytest.raises(ollama.ResponseError) as info:
        await ol.chat(model="openai/gpt-4o", messages=HI, options={"num_predict": -5})
    assert info.value.status_code == 400 and "num_predict" in info.value.error
    assert hosts.requests == []  # nothing reached a provider
    await ol.chat(model="openai/gpt-4o", messages=HI, options={"num_predict": -1})
    assert "max_tokens" not in hosts.bodies()[0]  # -1: Ollama's "no limit"


async def test_embed_list_show_version_and_ps() -> None:
    hosts = Hosts()
    _, ol = client(hosts)
    embedded = await ol.embed(model="openai/text-embedding-3-small", input="hello")
    assert embedded.embeddings == [[0.5, 0.25]] and embedded.prompt_eval_count == 2
    legacy = await ol.embeddings(model="openai/text-embedding-3-small", prompt="hello")
    assert list(legacy.embedding) == [0.5, 0.25]
    listed = await ol.list()
    names = [m.model for m in listed.models]
    assert "openai/gpt-4o-mini" in names
    shown = await ol.show("openai/gpt-4o-mini")
    assert shown.capabilities and "tools" in shown.capabilities
    assert (await ol.ps()).models == []
    version = await httpx.AsyncClient(transport=ol._client._transport).get(
        "http://gateway.test/api/version"
    )
    assert version.json()["version"]


async def test_unknown_models_and_upstream_failures_in_ollamas_error_shape() -> None:
    _, ol = client(Hosts())
    with pytest.raises(ollama.ResponseError) as info:
        await ol.chat(model="no-such-model", messages=HI)
    assert info.value.status_code == 404 and "model" in info.value.error
    with pytest.raises(ollama.ResponseError) as failed:
        await ol.chat(model="openai/fail-401", messages=HI, stream=False)
    assert failed.value.status_code == 502 and KEY not in failed.value.error
    with pytest.raises(ollama.ResponseError) as shown:
        await ol.show("no-such-model")
    assert shown.value.status_code == 404


async def test_client_keys_as_bearer_over_loopback() -> None:
    text = TEXT + '[[server.keys]]\nid = "laptop"\nkey = "thk-ollama-client-0123456789"\n'
    app = build_app(gateway(Hosts(), text))
    async with running(app) as url:
        refused = ollama.AsyncClient(host=url)
        with pytest.raises(ollama.ResponseError) as info:
            await refused.chat(model="openai/gpt-4o", messages=HI)
        assert info.value.status_code == 401
        allowed = ollama.AsyncClient(
            host=url, headers={"Authorization": "Bearer thk-ollama-client-0123456789"}
        )
        parts = [
            p async for p in await allowed.chat(model="openai/gpt-4o", messages=HI, stream=True)
        ]
        assert (
            "".join(p.message.content or "" for p in parts) == "echo:hellothere"
        )  # FakeOpenAI streams the words
        assert parts[-1].done and parts[-1].eval_count == 7
