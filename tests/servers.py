"""Real servers over loopback: uvicorn on a free port, a scriptable upstream ASGI app, and
`thanos serve` as a process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import uvicorn
from anyio.abc import Process

from tests.upstreams import chunk, completion, last_user_text, stream_body
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running(app: ASGIApp, lifespan: Literal["on", "off"] = "off") -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def serve_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "thanos_asgi", "serve", "--config", str(config)]


def home_env(home: Path) -> dict[str, str]:
    """HOME and the XDG base directories under `home` (a test's temporary folder): what a
    spawned process keeps (usage ledger, key store, logins, caches) stays there."""
    return {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }


def serve_env(home: Path) -> dict[str, str]:
    """A bare environment for `thanos serve`: no provider keys, HOME and data under `home`."""
    return {"PATH": os.environ["PATH"], **home_env(home)}


@asynccontextmanager
async def thanos_serve(config: Path, *flags: str) -> AsyncIterator[tuple[int, Process, Path]]:
    """`thanos serve --config <config> --port <free port> <flags>`, its output in a log file
    beside the config; yields the port, the process and the log, without waiting for it to
    start. Terminated on the way out if it still runs."""
    port = free_port()
    log = config.parent / f"serve-{port}.log"
    command = [*serve_command(config), "--port", str(port), *flags]
    with log.open("wb") as out:
        process = await anyio.open_process(
            command, stdout=out, stderr=subprocess.STDOUT, env=serve_env(config.parent)
        )
    try:
        yield port, process, log
    finally:
        if process.returncode is None:
            process.terminate()
        with anyio.fail_after(20):
            await process.wait()


class Upstream:
    """An OpenAI-compatible upstream whose behaviour follows the requested model:

    "delay-<ms>"     waits before answering at all
    "drip-<ms>"      streams 100 chunks, one every <ms>; notes when the client leaves
    "pause-<ms>"     streams one chunk, is silent for <ms>, then finishes
    "status-<code>"  answers that status with an OpenAI error body
    "flaky-<n>"      answers 503 to its first n requests, then works
    "ratelimit-<s>"  answers 429 with `retry-after: <s>` to its first request, then works
    "garbage"        answers 200 with HTML
    "cut"            streams half an answer and stops without [DONE]
    else             echoes the last user message (see tests.upstreams)

    `force` makes every request behave as that model name, whatever was asked.
    """

    def __init__(self, force: str | None = None) -> None:
        self.force = force
        self.disconnected = asyncio.Event()
        self.bodies: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["method"] == "GET":  # health pings and model lists: the path names a fault
            kind, _, value = scope["path"].rsplit("/", 1)[-1].partition("-")
            if not await _fault(send, kind, value, 1):
                await _start(send, "application/json")
                await send({"type": "http.response.body", "body": b'{"object":"list","data":[]}'})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw)
        self.bodies.append(body)
        model = self.force or body["model"]
        self.seen[model] = count = self.seen.get(model, 0) + 1
        kind, _, value = model.partition("-")
        if await _fault(send, kind, value, count):
            return
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
        elif kind == "cut":
            await _more(send, stream_body(model, "echo: cut short", True)[:200])
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


async def _fault(send: Send, kind: str, value: str, count: int) -> bool:
    """Answer with a failure if this model asks for one now; True if it did."""
    status, headers = 0, [(b"content-type", b"application/json")]
    if kind == "status":
        status = int(value)
    elif kind == "flaky" and count <= int(value):
        status = 503
    elif kind == "ratelimit" and count == 1:
        status, headers = 429, [*headers, (b"retry-after", value.encode())]
    elif kind == "garbage":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<html>oops</html>"})
        return True
    if not status:
        return False
    error = {"error": {"message": f"injected {status}", "type": "test_error", "code": None}}
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(error).encode()})
    return True


@asynccontextmanager
async def resetting() -> AsyncIterator[str]:
    """A server that reads a request and resets the connection (RST) without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _start(send: Send, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _more(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})
