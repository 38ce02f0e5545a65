"""POST /v1/responses (and GET, DELETE, input_tokens), driven by the official `openai` SDK's
`responses.create` and `responses.stream`, to Anthropic, Gemini, Ollama and OpenAI recordings."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import openai
import pytest
from pydantic import BaseModel

from tests.cassettes import load, replay
from tests.dialects import TEXT, Hosts, recorded_text
from tests.helpers import gateway
from thanos_asgi import build_app
from thanos_asgi.frontends.asgi import ASGIApp

pytestmark = pytest.mark.anyio
OLLAMA = TEXT + '\n[providers.ollama]\nbase_url = "http://ollama.test"\n'
CAPITAL = {
    "type": "function",
    "name": "get_capital",
    "description": "The capital of a country",
    "parameters": {"type": "object", "properties": {"country": {"type": "string"}}},
}
KEYS = '[[server.keys]]\nid = "a"\nkey = "thk-responses-a-0123456789"\n'
KEYS += '[[server.keys]]\nid = "b"\nkey = "thk-responses-b-0123456789"\n'


def sdk(
    hosts: Hosts, text: str = OLLAMA, key: str = "unused"
) -> tuple[ASGIApp, openai.AsyncOpenAI]:
    app = build_app(gateway(hosts, text))
    transport = httpx2.ASGITransport(app=app)
    http = httpx2.AsyncClient(transport=transport)
    client = openai.AsyncOpenAI(
        base_url="http://gateway.test/v1", api_key=key, http_client=http, max_retries=0
    )
    return app, client


def again(app: ASGIApp, key: str) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    return openai.AsyncOpenAI(
        base_url="http://gateway.test/v1", api_key=key, http_client=http, max_retries=0
    )


async def test_create_to_an_openai_recording() -> None:
    (rec,) = load("openai/chat-nonstream-text.vercel-ai.json")
    hosts = Hosts(openai=replay(rec, strict_path=False))
    _, client = sdk(hosts)
    response = await client.responses.create(
        model="openai/gpt-4.1-nano", input="Invent a holiday", instructions="Be creative."
    )
    recorded = json.loads(rec.body)
    assert response.output_text == recorded["choices"][0]["message"]["content"]
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage and response.usage.input_tokens == recorded["usage"]["prompt_tokens"]
    sent = hosts.bodies()[0]["messages"]
    assert sent == [
        {"role": "system", "content": "Be creative."},
        {"role": "user", "content": "Invent a holiday"},
    ]


async def test_stream_to_an_anthropic_recording_in_the_sdks_order() -> None:
    name = "anthropic/messages-stream-text.vercel-ai.chunks.txt"
    (rec,) = load(name)
    _, client = sdk(Hosts(anthropic=replay(rec, strict_path=False)))
    async with client.responses.stream(model="claude-sonnet-4-5", input="hello") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert final.output_text == recorded_text(name)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added"):
        assert kind in kinds
    assert kinds.index("response.output_text.done") < kinds.index("response.output_item.done")
    assert final.usage and final.usage.output_tokens > 0


async def test_function_call_round_trip_to_an_openai_recording() -> None:
    first, second = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    hosts = Hosts(openai=replay(first, second))
    _, client = sdk(hosts)
    async with client.responses.stream(
        model="openai/gpt-4o", input="Capital of the UK?", tools=[CAPITAL]
    ) as stream:
        first_answer = await stream.get_final_response()
    calls = [item for item in first_answer.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_capital", {"country": "UK"})
    ]
    follow = [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "London"}]
    async with client.responses.stream(
        model="openai/gpt-4o",
        input=follow,
        previous_response_id=first_answer.id,
        tools=[CAPITAL],
    ) as stream:
        answer = await stream.get_final_response()
    assert answer.output_text
    sent = hosts.bodies()[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent[2] == {"role": "tool", "content": "London", "tool_call_id": calls[0].call_id}


class Capital(BaseModel):
    city: str


async def test_structured_output_to_an_ollama_recording() -> None:
    rec = load("ollama/v1-chat-completions-local-json-schema.pydantic-ai.yaml")[0]
    hosts = Hosts(ollama=replay(rec, strict_path=False))
    _, client = sdk(hosts)
    await client.responses.parse(model="ollama/qwen3", input="Capital?", text_format=Capital)
    sent = hosts.bodies()[0]
    assert sent["format"]["properties"]["city"]["type"] == "string"


async def test_gemini_recording_and_previous_response_id_through_get() -> None:
    (rec,) = load("gemini/generateContent-nonstream-text.pydantic-ai.yaml")
    hosts = Hosts(gemini=replay(rec, strict_path=False))
    _, client = sdk(hosts)
    response = await client.responses.create(model="gemini/gemini-2.5-flash", input="Capital?")
    parts = json.loads(rec.body)["candidates"][0]["content"]["parts"]
    assert response.output_text == "".join(p["text"] for p in parts if not p.get("thought"))
    fetched = await client.responses.retrieve(response.id)
    assert fetched.output_text == response.output_text
    counted = await client.post(
        "/responses/input_tokens",
        body={"model": "openai/gpt-4o", "input": "again?", "previous_response_id": response.id},
        cast_to=httpx.Response,
    )
    assert counted.json()["input_tokens"] > 0
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_stored_responses_belong_to_their_key() -> None:
    hosts = Hosts()
    app, client_a = sdk(hosts, OLLAMA + KEYS, key="thk-responses-a-0123456789")
    made = await client_a.responses.create(model="openai/gpt-4o", input="secret plans")
    client_b = again(app, "thk-responses-b-0123456789")
    with pytest.raises(openai.NotFoundError):
        await client_b.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        await client_b.responses.create(
            model="openai/gpt-4o", input="more", previous_response_id=made.id
        )
    assert len(hosts.requests) == 1  # the refused continuation reached no provider


async def test_built_in_tools_and_background_are_refused_by_name() -> None:
    hosts = Hosts()
    _, client = sdk(hosts)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(
            model="openai/gpt-4o", input="news?", tools=[{"type": "web_search"}]
        )
    assert "web_search" in str(info.value.message) and info.value.body["param"] == "tools[0]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="openai/gpt-4o", input="x", background=True)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="no-such-model", input="x")
    assert hosts.requests == []


async def test_items_reasoning_and_parameters_become_canonical() -> None:
    hosts = Hosts()
    _, client = sdk(hosts)
    items: list[Any] = [
        {"role": "developer", "content": "Answer tersely."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x.test/a.png"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok"}],
        },
        {"role": "user", "content": "and now?"},
    ]
    await client.responses.create(
        model="openai/gpt-4o",
        input=items,
        max_output_tokens=99,
        temperature=0.5,
        reasoning={"effort": "low"},
        tool_choice={"type": "function", "name": "get_capital"},
        tools=[CAPITAL],
    )
    sent = hosts.bodies()[0]
    assert sent["messages"][0] == {"role": "system", "content": "Answer tersely."}
    assert sent["messages"][1]["content"][1]["image_url"]["url"] == "https://x.test/a.png"
    assert sent["messages"][2]["content"] == "ok"
    assert sent["temperature"] == 0.5 and sent["tool_choice"]["function"]["name"] == "get_capital"
    assert 99 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))


async def test_an_agents_sdk_agent_runs_a_tool_turn_to_an_anthropic_recording() -> None:
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

    first, second = load("anthropic/messages-stream-tool-use-roundtrip.mirascope.yaml")
    hosts = Hosts(anthropic=replay(first, second, strict_path=False))
    _, client = sdk(hosts)
    passwords: list[str] = []

    @function_tool
    def secret_retrieval_tool(password: str) -> str:
        """A tool that requires a password to retrieve a secret."""
        passwords.append(password)
        return f"Welcome! The secret behind {password} is safe."

    agent = Agent(
        name="keeper",
        instructions="Use the tool for each password.",
        tools=[secret_retrieval_tool],
        model=OpenAIResponsesModel(model="claude-sonnet-4-5", openai_client=client),
    )
    config = RunConfig(tracing_disabled=True)
    result = Runner.run_streamed(agent, "Passwords: mellon and radiance", run_config=config)
    kinds = [event.type async for event in result.stream_events()]
    assert "raw_response_event" in kinds  # the recording is a stream, so is the agent's run
    assert passwords == ["mellon", "radiance"]
    assert result.final_output  # the recording's answer after both tool results
    sent = [json.loads(r.content) for r in hosts.requests]
    results = [
        b
        for m in sent[1]["messages"]
        if m["role"] == "user"
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    assert len(results) == 2
