"""The floors: pass-throughs that do the least a gateway must, as references for it.

`--framework asgi` (the default, "floor" in the reports) is the least an ASGI pass-through can
do: no framework, no parsing, no routing. The POST body goes to `{upstream}/chat/completions`
through one shared aiohttp ClientSession and the answer comes back as it arrives.
`--framework starlette` ("floor-starlette") is the floor issue 9 measured its targets against:
the same pass-through written as a small Starlette app (one route, `Request.body()`, a
`Response` or a `StreamingResponse`). `--framework constant` ("ceiling") calls no upstream at
all: it reads the body and sends the fake upstream's fixed answer (`formats.py`; a stream's
events in one body message), the most any ASGI app could do under this server, and so what a
response-cache hit can at best approach. All are served by uvicorn with uvloop and httptools,
access log off.

    python benchmarks/floor.py --upstream http://127.0.0.1:9001/v1 --port 9002
    python benchmarks/floor.py --upstream http://127.0.0.1:9001/v1 --port 9003 --framework starlette
    python benchmarks/floor.py --port 9004 --framework constant [--chunks 20]
"""

from __future__ import annotations

import argparse
import gc
import re
from typing import Any

import aiohttp
import uvicorn
from formats import FORMATS

Scope = dict[str, Any]
_STREAM = re.compile(rb'"stream"\s*:\s*true')


async def read_body(receive: Any) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


class Floor:
    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=60)
            self.session = aiohttp.ClientSession(connector=connector, trust_env=False)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await self.session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive)
        assert self.session is not None
        headers = {"content-type": "application/json", "authorization": "Bearer x"}
        async with self.session.post(self.url, data=body, headers=headers) as response:
            out = [(b"content-type", response.headers["content-type"].encode())]
            length = response.headers.get("content-length")
            if length is not None:  # a whole answer: one send, like the gateway's
                data = await response.read()
                out.append((b"content-length", length.encode()))
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": out}
                )
                await send({"type": "http.response.body", "body": data})
                return
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for data in response.content.iter_any():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


class Constant:
    """No upstream: every request gets the fake upstream's answer, built once."""

    def __init__(self, chunks: int) -> None:
        body, events = FORMATS["chat"](chunks)
        length = str(len(body)).encode()
        self.whole = (body, [(b"content-type", b"application/json"), (b"content-length", length)])
        sse = [(b"content-type", b"text/event-stream; charset=utf-8")]
        self.stream = (b"".join(events), sse)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive)
        data, headers = self.stream if _STREAM.search(body) else self.whole
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def starlette_floor(upstream: str) -> Any:
    """The same pass-through as a Starlette app."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    url = upstream.rstrip("/") + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    sessions: list[aiohttp.ClientSession] = []

    async def chat(request: Request) -> Response:
        upstream = await sessions[0].post(url, data=await request.body(), headers=headers)
        kind = upstream.headers["content-type"]
        if upstream.headers.get("content-length") is not None:
            async with upstream:
                body = await upstream.read()
            return Response(body, status_code=upstream.status, media_type=kind)

        async def relay() -> Any:
            async with upstream:
                async for data in upstream.content.iter_any():
                    yield data

        return StreamingResponse(relay(), status_code=upstream.status, media_type=kind)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=60)
        sessions.append(aiohttp.ClientSession(connector=connector, trust_env=False))
        yield
        await sessions[0].close()

    routes = [Route("/v1/chat/completions", chat, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", help="base URL, e.g. http://127.0.0.1:9001/v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--framework", choices=("asgi", "starlette", "constant"), default="asgi")
    parser.add_argument("--chunks", type=int, default=20, help="constant: a stream's chunks")
    parser.add_argument(
        "--gc-like-thanos",
        action="store_true",
        help="the garbage-collector settings `thanos serve` takes: startup objects frozen, "
        "the young generation collected every 100,000 net allocations",
    )
    args = parser.parse_args()
    if args.framework == "constant":
        app: Any = Constant(args.chunks)
    elif args.upstream is None:
        parser.error("--upstream is required unless --framework constant")
    else:
        app = Floor(args.upstream) if args.framework == "asgi" else starlette_floor(args.upstream)
    if args.gc_like_thanos:  # as thanos_asgi/server/serve.py `_tune_gc`
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, *gc.get_threshold()[1:])
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
