"""Real servers over loopback: uvicorn on a free port, and a scriptable upstream ASGI app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from tests.upstreams import chunk, completion, last_user_text, stream_body
from thanos_asgi._http import ASGIApp, Receive, Scope, Send


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class Upstream:
    """An OpenAI-compatible upstream whose behaviour follows the requested model:

    "delay-<ms>"     waits before answering at all
    "drip-<ms>"      streams 100 chunks, one every <ms>; notes when the client leaves
    "pause-<ms>"     streams one chunk, is silent for <ms>, then finishes
    else             echoes the last user message (see tests.upstreams)
    """

    def __init__(self) -> None:
        self.disconnected = asyncio.Event()
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw)
        self.bodies.append(body)
        model = body["model"]
        kind, _, value = model.partition("-")
        if kind == "delay":
            try:  # returns early when the client leaves
                await asyncio.wait_for(_until_disconnect(receive), int(value) / 1000)
            except TimeoutError:
                pass
            else:
                self.disconnected.set()
                return
        if not body.get("stream"):
            data = json.dumps(completion(model, "echo: " + last_user_text(body))).encode()
            await _start(send, "application/json")
            await send({"type": "http.response.body", "body": data})
            return
        await _start(send, "text/event-stream")
        if kind == "drip":
            await self._drip(model, int(value) / 1000, receive, send)
        elif kind == "pause":
            await _more(send, chunk(model, {"role": "assistant", "content": "before"}))
            await asyncio.sleep(int(value) / 1000)
            await _more(send, chunk(model, {"content": " after"}, "stop") + b"data: [DONE]\n\n")
        else:
            await _more(send, stream_body(model, "echo: " + last_user_text(body), True))
        await send({"type": "http.response.body", "body": b""})

    async def _drip(self, model: str, gap: float, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()

        watcher = asyncio.create_task(watch())
        try:
            for i in range(100):
                if self.disconnected.is_set():
                    return
                await _more(send, chunk(model, {"content": f"{i} "}))
                await asyncio.sleep(gap)
            await _more(send, chunk(model, {}, "stop") + b"data: [DONE]\n\n")
        finally:
            watcher.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _start(send: Send, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _more(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})
