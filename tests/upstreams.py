"""A scriptable OpenAI-compatible upstream for tests, as an httpx.MockTransport handler.

Behaviour is keyed by the model name the gateway sends upstream:
  "fail-<status>"  answers that status with an OpenAI error body (429 adds retry-after: 3)
  "garbage"        answers 200 with HTML
  "slow"           waits 5 s before answering
  "cut"            streams two chunks, then ends without [DONE]
  "error-event"    streams one chunk, then an SSE `event: error`
  anything else    echoes the last user message ("echo: <text>") with usage 5/7
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

SSE = {"content-type": "text/event-stream"}


def completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def stream_body(model: str, text: str, usage: bool) -> bytes:
    parts = [chunk(model, {"role": "assistant", "content": ""})]
    parts += [chunk(model, {"content": word}) for word in text.split(" ")]
    parts.append(chunk(model, {}, "stop"))
    if usage:
        data = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
        parts.append(b"data: " + json.dumps(data).encode() + b"\n\n")
    return b"".join(parts) + b"data: [DONE]\n\n"


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return str(content)
    return ""


class FakeOpenAI:
    """Handler for httpx.MockTransport; keeps every request it saw in `requests`."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "live-model"}]})
        body = json.loads(request.content)
        if path.endswith("/embeddings"):
            data = [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]
            usage = {"prompt_tokens": 2, "total_tokens": 2}
            return httpx.Response(
                200, json={"object": "list", "data": data, "model": body["model"], "usage": usage}
            )
        return await self.chat(body)

    async def chat(self, body: dict[str, Any]) -> httpx.Response:
        model = body["model"]
        if model.startswith("fail-"):
            status = int(model[5:])
            headers = {"retry-after": "3"} if status == 429 else {}
            error = {"message": f"failing with {status}", "type": "server_error", "code": None}
            return httpx.Response(status, json={"error": error}, headers=headers)
        if model == "garbage":
            return httpx.Response(200, content=b"<html>502 Bad Gateway</html>")
        if model == "slow":
            await asyncio.sleep(5)
        text = "echo: " + last_user_text(body)
        if not body.get("stream"):
            return httpx.Response(200, json=completion(model, text))
        if model == "cut":
            return httpx.Response(200, content=stream_body(model, text, False)[:300], headers=SSE)
        if model == "error-event":
            error = (
                b'event: error\ndata: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
            )
            return httpx.Response(200, content=chunk(model, {"content": "a"}) + error, headers=SSE)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return httpx.Response(200, content=stream_body(model, text, usage), headers=SSE)
