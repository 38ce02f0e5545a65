"""The gateway against providers that answer big, broken or hostile, all over real sockets:
a raw loopback server as the provider, uvicorn serving the gateway, an HTTP client in front."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.rawserver import Handler, Server, answer, chunk, read_request, serving
from tests.servers import running, thanos_serve
from tests.upstreams import completion
from thanos_asgi import Gateway, build_app
from thanos_asgi.config import parse_config

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024
HI = [{"role": "user", "content": "hi"}]


def provider(name: str, url: str) -> str:
    return (
        f'[providers.{name}]\nkind = "openai-compatible"\nbase_url = "{url}/v1"\n'
        'models = ["m"]\ntimeout_ms = 3000\n'
    )


@asynccontextmanager
async def gateway(
    *servers: tuple[str, Server], routing: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    text = f"[routing]\n{routing}\n" + "".join(
        provider(n, s.url.split("/v1")[0]) for n, s in servers
    )
    gw = Gateway(parse_config(text, source="upstream.toml", env={}))
    try:
        async with (
            running(build_app(gw)) as url,
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            yield client
    finally:
        await gw.aclose()


def each_request(respond: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await handler.server.request(reader)  # type: ignore[attr-defined]
            writer.write(respond)
            await writer.drain()

    return handler


@asynccontextmanager
async def provider_server(handler: Handler) -> AsyncIterator[Server]:
    async with serving(handler) as server:
        handler.server = server  # type: ignore[attr-defined]
        yield server


class PeakRSS:
    """A process's resident memory (this one's by default), sampled every 5 ms from a thread
    (the event loop may be the thing that stalls)."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.start = self.peak = _rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss(self.pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _rss(pid: int | str) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_1_mib_chat_answer_and_3000_embeddings_come_through() -> None:
    big = json.dumps(completion("m", "x" * MiB)).encode()
    vectors = [{"object": "embedding", "index": i, "embedding": [0.125] * 16} for i in range(3000)]
    usage = {"prompt_tokens": 3000, "total_tokens": 3000}
    embeddings = json.dumps({"object": "list", "data": vectors, "model": "m", "usage": usage})

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await server.request(reader)
            writer.write(answer(embeddings.encode() if b"/embeddings" in request[:80] else big))

    async with provider_server(handler) as server, gateway(("p", server)) as client:
        chat = await client.post("/v1/chat/completions", json={"model": "m", "messages": HI})
        assert chat.status_code == 200, chat.text
        assert len(chat.json()["choices"][0]["message"]["content"]) == MiB
        inputs = [f"text {i}" for i in range(3000)]
        embedded = await client.post("/v1/embeddings", json={"model": "m", "input": inputs})
        assert embedded.status_code == 200, embedded.text
        assert len(embedded.json()["data"]) == 3000
    assert len(embeddings) > 256 * 1024


def gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # (level 1: made in about a second)
    zeros = bytes(MiB)
    return b"".join(packer.compress(zeros) for _ in range(size // MiB)) + packer.flush()


async def test_ten_gzip_bombs_cost_no_memory_and_never_stall_the_gateway(tmp_path: Path) -> None:
    """The gateway as its own process (`thanos serve`): its memory and its /health latency."""
    bomb = answer(gzip_bomb(250 * MiB), b"content-encoding: gzip\r\n")
    async with provider_server(each_request(bomb)) as server:
        config = tmp_path / "thanos.toml"
        config.write_text(provider("p", server.url.split("/v1")[0]))
        async with thanos_serve(config) as (port, process, _), client_of(port) as client:
            await _started(client)
            warm = await client.post("/v1/chat/completions", json={"model": "m", "messages": HI})
            assert warm.status_code == 502  # (the first request loads the provider's code)
            with PeakRSS(process.pid) as rss:
                answers, slowest = await _bombs_and_health(client)
    # each refused at its headers (502), or once the circuit opened on them, 503 naming why
    assert all(a.status_code in (502, 503) and "encoded as 'gzip'" in a.text for a in answers)
    assert rss.growth < 100 * MiB and slowest < 0.1, (rss.growth, slowest)


def client_of(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20)


async def _started(client: httpx.AsyncClient) -> None:
    for _ in range(200):
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    raise AssertionError("thanos serve did not start")


async def _bombs_and_health(client: httpx.AsyncClient) -> tuple[list[httpx.Response], float]:
    body = {"model": "m", "messages": HI}
    pending = asyncio.gather(*[client.post("/v1/chat/completions", json=body) for _ in range(10)])
    slowest = 0.0
    while not pending.done():
        started = time.monotonic()
        assert (await client.get("/health")).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.01)
    return await pending, slowest


async def test_an_endless_sse_event_ends_the_stream_with_an_error_after_the_cap() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n" + chunk(b'data: {"x": "'))
        block = chunk(b"x" * 65536)
        for _ in range(3 * 1024 * 16):  # 3 GB, made as it goes; the gateway stops long before
            writer.write(block)
            await writer.drain()

    async with provider_server(handler) as server, gateway(("p", server)) as client:
        body = {"model": "m", "messages": HI, "stream": True}
        with PeakRSS() as rss:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                events = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert "larger than 8 MiB" in events[-1] and '"error"' in events[-1]
    assert rss.growth < 100 * MiB


async def test_a_provider_that_closes_after_reading_a_post_sees_it_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(answer(json.dumps(completion("m", "first")).encode()))
        await server.request(reader)  # read (and acted on), then dropped unanswered

    async with provider_server(handler) as server, gateway(("p", server)) as client:
        body = {"model": "m", "messages": HI}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        second = await client.post("/v1/chat/completions", json=body)
        assert second.status_code == 502 and "not sent again" in second.text
        await asyncio.sleep(0.3)
    assert len(server.requests) == 2  # the second request reached the provider exactly once


async def test_a_redirect_is_an_upstream_error_and_the_backup_answers() -> None:
    moved = b"HTTP/1.1 308 Permanent Redirect\r\nlocation: https://moved.example/v1\r\n"
    ok = answer(json.dumps(completion("m", "from the backup")).encode())
    async with (
        provider_server(each_request(moved + b"content-length: 0\r\n\r\n")) as primary,
        provider_server(each_request(ok)) as backup,
        gateway(("primary", primary), ("backup", backup), routing="max_retries = 0") as client,
    ):
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": HI})
        alone = await client.post(
            "/v1/chat/completions", json={"model": "primary/m", "messages": HI}
        )
    assert response.status_code == 200 and "from the backup" in response.text
    assert alone.status_code == 502
    assert "308" in alone.text and "https://moved.example/v1" in alone.text
