"""A fake provider that records which credential (API key) carried each request, and
answers per key: OpenAI-shaped at /v1/chat/completions, Anthropic-shaped at /v1/messages."""

from __future__ import annotations

import json
from typing import Any

from tests.upstreams import completion, last_user_text
from thanos_asgi.frontends.asgi import Receive, Scope, Send

Answer = tuple[int, dict[str, str]]  # status, extra headers


class KeyedUpstream:
    """`answers[key]`: what requests carrying that key get (200 and an echo by default);
    `seen`: the key of each request in order; `bodies`: their JSON bodies."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.seen: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        data = b""
        while True:
            message = await receive()
            data += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(data) if data else {}
        self.seen.append(key)
        self.bodies.append(body)
        status, extra = self.answers.get(key, (200, {}))
        if status != 200:
            error = {"error": {"message": f"status {status}", "type": "rate_limit_error"}}
            if scope["path"].endswith("/messages"):
                error["type"] = "error"
            await _send(send, status, json.dumps(error).encode(), extra)
        elif scope["path"].endswith("/messages"):
            await _send(send, 200, json.dumps(_anthropic(body)).encode(), {})
        else:
            answer = completion(body.get("model", ""), "echo: " + last_user_text(body))
            await _send(send, 200, json.dumps(answer).encode(), {})


def _anthropic(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }


async def _send(send: Send, status: int, body: bytes, extra: dict[str, str]) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
