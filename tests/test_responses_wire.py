"""An OpenAI instance reached over the Responses API (`wire_api = "responses"`): Responses
clients relayed untouched, Chat Completions clients translated both ways."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import KEY, client_for, gateway
from thanos_asgi import build_app

pytestmark = pytest.mark.anyio
TEXT = f"""
[providers.openai]
api_key = "{KEY}"
base_url = "http://openai.test/v1"
wire_api = "responses"

[routing]
max_retries = 0
"""
USAGE = {
    "input_tokens": 11,
    "input_tokens_details": {"cached_tokens": 2},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 18,
}


def answer(status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_upstream1",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": "gpt-5-2025",
        "output": [
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hi there", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_9",
                "name": "lookup",
                "arguments": '{"q":1}',
                "status": "completed",
            },
        ],
        "usage": USAGE,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def events() -> bytes:
    final = answer()
    rows = [
        ("response.created", {"response": {**final, "status": "in_progress", "output": []}}),
        ("response.output_item.added", {"output_index": 0, "item": final["output"][1]}),
        ("response.output_text.delta", {"item_id": "msg_1", "delta": "Hi "}),
        ("response.output_text.delta", {"item_id": "msg_1", "delta": "there"}),
        (
            "response.output_item.added",
            {"output_index": 1, "item": {**final["output"][2], "arguments": ""}},
        ),
        ("response.function_call_arguments.delta", {"item_id": "fc_1", "delta": '{"q":'}),
        ("response.function_call_arguments.delta", {"item_id": "fc_1", "delta": "1}"}),
        ("response.completed", {"response": final}),
    ]
    out = b""
    for n, (kind, data) in enumerate(rows):
        body = json.dumps({"type": kind, "sequence_number": n, **data})
        out += f"event: {kind}\ndata: {body}\n\n".encode()
    return out


class Upstream:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/v1/responses"
        if json.loads(request.content).get("stream"):
            return httpx.Response(
                200, content=events(), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=answer())

    def body(self, n: int = 0) -> dict[str, Any]:
        return dict(json.loads(self.requests[n].content))


async def test_responses_clients_are_relayed_untouched() -> None:
    upstream = Upstream()
    client = client_for(build_app(gateway(upstream, TEXT)))
    sent = {
        "model": "openai/gpt-5",
        "input": "hi",
        "tools": [{"type": "web_search"}],
        "x_vendor": 1,
    }
    whole = await client.post("/v1/responses", json=sent)
    assert whole.status_code == 200 and whole.json() == answer()
    assert upstream.body() == {**sent, "model": "gpt-5"}  # only the model changed
    streamed = await client.post("/v1/responses", json={**sent, "stream": True})
    assert streamed.content.replace(b"\r\n", b"\n").endswith(
        events().split(b"event: response.completed")[1]
    )
    assert b"response.output_text.delta" in streamed.content
    again = await client.post(
        "/v1/responses",
        json={"model": "openai/gpt-5", "input": "more", "previous_response_id": "resp_upstream1"},
    )
    assert again.status_code == 200  # the relayed answer was stored, so it can be continued
    assert upstream.body(2)["previous_response_id"] == "resp_upstream1"


async def test_chat_clients_are_translated_to_the_responses_wire() -> None:
    upstream = Upstream()
    client = client_for(build_app(gateway(upstream, TEXT)))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    whole = await client.post(
        "/v1/chat/completions",
        json={"model": "openai/gpt-5", "messages": messages, "tools": tools, "max_tokens": 50},
    )
    data = whole.json()
    message = data["choices"][0]["message"]
    assert message["content"] == "Hi there" and data["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["id"] == "call_9"
    assert data["usage"]["prompt_tokens"] == 11 and data["usage"]["completion_tokens"] == 7
    body = upstream.body()
    assert body["input"][0] == {"type": "message", "role": "system", "content": "Be brief."}
    assert body["tools"] == [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    ]
    assert body["max_output_tokens"] == 50 and body["store"] is False
    streamed = await client.post(
        "/v1/chat/completions",
        json={"model": "openai/gpt-5", "messages": messages, "stream": True},
    )
    chunks = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    arguments = "".join(
        call["function"].get("arguments") or ""
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls") or []
    )
    assert text == "Hi there" and json.loads(arguments) == {"q": 1}
    refused = await client.post(
        "/v1/chat/completions", json={"model": "openai/gpt-5", "messages": messages, "stop": ["x"]}
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stop"


async def test_wire_api_responses_is_for_openai_kinds_only() -> None:
    from thanos_asgi.config import parse_config
    from thanos_asgi.exceptions import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(
            '[providers.anthropic]\napi_key = "k"\nwire_api = "responses"\n', source="t", env={}
        )
    assert "wire_api" in str(info.value)
