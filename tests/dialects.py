"""What the dialect front-end tests share: a gateway config with OpenAI, Anthropic and Gemini
instances, an upstream that serves each provider host by its own handler, recorded texts."""

from __future__ import annotations

import inspect
import json
from typing import Any

import httpx

from tests.cassettes import CASSETTES
from tests.helpers import KEY
from tests.upstreams import FakeOpenAI

TEXT = f"""
[providers.openai]
api_key = "{KEY}"
base_url = "http://openai.test/v1"
model = "gpt-4o-mini"

[providers.anthropic]
api_key = "{KEY}"
base_url = "http://anthropic.test"

[providers.gemini]
api_key = "{KEY}"
base_url = "http://gemini.test"

[routing]
max_retries = 0
fallback_chain = ["openai"]
"""
HI = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_capital",
        "description": "The capital of a country",
        "parameters": {"type": "object", "properties": {"country": {"type": "string"}}},
    },
}


class Hosts:
    """Each provider host served by its own handler; every request kept."""

    def __init__(self, **handlers: Any) -> None:
        self.handlers = handlers
        self.fallback = FakeOpenAI()
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.handlers.get(request.url.host.split(".")[0], self.fallback)
        response = handler(request)
        return await response if inspect.isawaitable(response) else response

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]


def recorded_text(name: str) -> str:
    """The text an Anthropic `.chunks.txt` recording streams."""
    deltas = [json.loads(line) for line in (CASSETTES / name).read_text().splitlines() if line]
    return "".join(
        d["delta"]["text"]
        for d in deltas
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )
