"""A stand-in for "Acme", a made-up model API with a wire format of its own, so the example
runs anywhere:

    POST /generate  {"model", "prompt", "max_tokens", "stream"}   (x-acme-key: <key>)
      -> {"text": "...", "tokens_in": 3, "tokens_out": 5}
      -> stream: NDJSON lines {"token": "..."}, then {"done": true, "tokens_in", "tokens_out"}
    errors: {"message": "..."} with the status

    uvicorn examples.custom_provider.acme_server:app --port 9000
"""

from __future__ import annotations

import json
from typing import Any

from thanos_asgi.frontends.asgi import Receive, Scope, Send

KEY = "acme-demo-key"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    if headers.get(b"x-acme-key") != KEY.encode():
        return await _send(send, 401, b'{"message": "bad key"}', "application/json")
    if (scope["method"], scope["path"]) != ("POST", "/generate"):
        return await _send(send, 404, b'{"message": "no such endpoint"}', "application/json")
    request: dict[str, Any] = json.loads(body)
    words = f"Acme says: {request['prompt'].splitlines()[-1]}".split()
    counts = {"tokens_in": len(request["prompt"].split()), "tokens_out": len(words)}
    if not request.get("stream"):
        answer = {"text": " ".join(words), **counts}
        return await _send(send, 200, json.dumps(answer).encode(), "application/json")
    lines: list[dict[str, Any]] = [
        {"token": word + " " * (i < len(words) - 1)} for i, word in enumerate(words)
    ]
    lines.append({"done": True, **counts})
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    await _send(send, 200, ndjson, "application/x-ndjson")


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
