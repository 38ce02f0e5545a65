"""The differential suite, part one: every recording in ../shared/cassettes served by a real
loopback server, through H1Transport and AiohttpTransport, both alone and under the adapters.

Each engine must give the recorded bytes exactly (transport level) and the same result as the
same adapter over httpx.MockTransport replaying the recording (the reference).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest

from tests.cassettes import Interaction, all_cassettes, load, replay
from tests.rawserver import Server, chunk, serving
from thanos_asgi import AiohttpTransport, H1Transport
from thanos_asgi.config import ProviderConfig
from thanos_asgi.exceptions import UpstreamError
from thanos_asgi.providers import SPECS, load_adapter
from thanos_asgi.types import ChatRequest, Message
from thanos_asgi.upstream import HttpxTransport, Transport

pytestmark = pytest.mark.anyio

ENGINES: dict[str, Callable[[], Transport]] = {"h1": H1Transport, "aiohttp": AiohttpTransport}
CASSETTES = all_cassettes()
STREAMED = ("text/event-stream", "application/x-ndjson")
_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


def wire(ix: Interaction, method: str) -> list[bytes]:
    """The recorded answer as written: a stream in 97-byte chunks (so events and UTF-8
    sequences are split across reads), anything else with a content-length."""
    head = b"HTTP/1.1 %d Recorded\r\n" % ix.status
    for name, value in ix.headers.items():
        if name not in _HOP:
            head += f"{name}: {value}\r\n".encode()
    if ix.content_type in STREAMED and method != "HEAD":
        pieces = [chunk(ix.body[i : i + 97]) for i in range(0, len(ix.body), 97)]
        return [head + b"transfer-encoding: chunked\r\n\r\n", *pieces, b"0\r\n\r\n"]
    body = b"" if method == "HEAD" else ix.body
    return [head + b"content-length: %d\r\n\r\n" % len(ix.body) + body]


@asynccontextmanager
async def recorded(interactions: list[Interaction]) -> AsyncIterator[Server]:
    """A server answering its requests with `interactions`, in order, on any connection."""
    queue = list(interactions)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while queue:
            request = await server.request(reader)
            ix = queue.pop(0)
            for piece in wire(ix, request.split(b" ", 1)[0].decode()):
                writer.write(piece)
                await writer.drain()
        await reader.read()

    async with serving(handler) as server:
        yield server


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", CASSETTES)
async def test_every_recording_arrives_byte_for_byte(engine: str, name: str) -> None:
    interactions = load(name)
    transport = ENGINES[engine]()
    async with recorded(interactions) as server:
        for ix in interactions:
            body = ix.request_body if ix.method != "GET" else None
            response = await transport.send(ix.method, server.url, headers={}, body=body)
            assert response.status == ix.status
            if ix.content_type in STREAMED:
                got = b"".join([data async for data in response.iter_bytes()])
            else:
                got = await response.read()
            assert got == (b"" if ix.method == "HEAD" else ix.body)
        assert server.connections == 1  # one kept-alive connection for the whole recording
    await transport.aclose()


def kind_of(name: str) -> str:
    folder, file = name.split("/", 1)
    if "openai-compat" in file or file.startswith("v1-chat-completions"):
        return "openai-compatible"
    return folder


def adapted(names: list[str]) -> list[str]:
    """The recordings of chat answers: what an adapter can be asked for."""
    out = []
    for name_ in names:
        ix = load(name_)[-1]
        if ix.method == "POST" and kind_of(name_) in SPECS and b"embedding" not in ix.body[:200]:
            out.append(name_)
    return out


async def through_adapter(kind: str, transport: Transport, base: str, ix: Interaction) -> Any:
    """What the adapter makes of the answer: its chat result, stream chunks, relay, or error."""
    config = ProviderConfig(name="p", kind=kind, api_key="k-test-123456", base_url=base)
    provider = load_adapter(kind)(config, spec=SPECS[kind], transport=transport)
    stream = ix.content_type in STREAMED
    request = ChatRequest(model="m", messages=[Message(role="user", content="hi")], stream=stream)
    try:
        if provider.wire and ix.status < 400:
            raw = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            relayed = await provider.relay(raw, "m", stream=stream)
            if relayed.events is None:
                return ["relay", relayed.body, msgspec.to_builtins(relayed.usage)]
            events = b"".join([e async for e in relayed.events])  # (grouped as reads came)
            return ["relay", events, msgspec.to_builtins(relayed.usage)]
        if stream:
            return [_plain(chunk) async for chunk in await provider.open_stream(request, "m")]
        return _plain(await provider.chat(request, "m"))
    except UpstreamError as exc:
        return ["error", type(exc).__name__, exc.status, exc.code, exc.message]


def _plain(value: Any) -> Any:
    """As builtins, minus what is made fresh on every call (ids, timestamps)."""
    data = msgspec.to_builtins(value)
    return _strip(data)


def _strip(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in ("id", "created")}
    if isinstance(data, list):
        return [_strip(v) for v in data]
    return data


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", adapted(CASSETTES))
async def test_every_chat_recording_through_the_adapters(engine: str, name: str) -> None:
    ix = load(name)[-1]
    kind = kind_of(name)
    mock = HttpxTransport(
        httpx.AsyncClient(transport=httpx.MockTransport(replay(ix, strict_path=False)))
    )
    expected = await through_adapter(kind, mock, "http://recorded.test/v1", ix)
    transport = ENGINES[engine]()
    async with recorded([ix]) as server:
        got = await through_adapter(kind, transport, server.url.rsplit("/", 2)[0] + "/v1", ix)
    await transport.aclose()
    assert got == expected
