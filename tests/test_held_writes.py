"""`thanos serve` writes an answer's head and body in one write (`server/held.py`): counted in
TCP segments (Linux's TCP_INFO) on real loopback connections, through the real server and
around the transport wrapper alone."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.servers import Upstream, running, thanos_serve
from thanos_asgi.server.held import JOIN_AT_MOST, HeldWrites

pytestmark = pytest.mark.anyio


def data_segments(sock: socket.socket) -> tuple[int, int]:
    """(segments with data received, sent) on `sock` (struct tcp_info's data_segs_in/out)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    segments: tuple[int, int] = struct.unpack_from("II", raw, 152)
    return segments


def request(text: str) -> bytes:
    body = f'{{"model": "m", "messages": [{{"role": "user", "content": "{text}"}}]}}'.encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One whole answer read off the connection: (head, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[int]:
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(
            f'[providers.local]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
            'models = ["m"]\n'
        )
        async with thanos_serve(config) as (port, _, log):
            for _ in range(200):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError(log.read_text())
            yield port


async def test_each_whole_answer_leaves_in_one_segment(tmp_path: Path) -> None:
    async with gateway(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        writer.write(request("warm"))  # (the first loads the provider's code)
        head, _ = await answer(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
        before, _ = data_segments(sock)
        for index in range(20):
            writer.write(request(f"ask {index}"))
            head, body = await answer(reader)
            assert head.startswith(b"HTTP/1.1 200") and f"ask {index}".encode() in body
        after, _ = data_segments(sock)
        writer.close()
    assert after - before == 20  # uvicorn alone: a head and a body, two segments each


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async with gateway(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(request(word) for word in ("one", "two", "three")))
        bodies = [(await answer(reader))[1] for _ in range(3)]
        writer.close()
    assert [b"one" in bodies[0], b"two" in bodies[1], b"three" in bodies[2]] == [True] * 3


class Peer(asyncio.Protocol):
    """The far end: what it received, and whether the connection ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()


@asynccontextmanager
async def held_pair() -> AsyncIterator[tuple[HeldWrites, Peer, socket.socket]]:
    """A loopback connection whose writing end is wrapped in HeldWrites."""
    loop = asyncio.get_running_loop()
    peer = Peer()
    server = await loop.create_server(lambda: peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    held = HeldWrites(transport, loop)  # type: ignore[arg-type]
    try:
        yield held, peer, transport.get_extra_info("socket")
    finally:
        transport.abort()
        server.close()


async def until(check: object) -> None:
    for _ in range(200):
        if callable(check) and check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_a_turns_first_write_waits_for_its_second_then_writes_go_at_once() -> None:
    async with held_pair() as (held, peer, sock):
        held.write(b"head ")
        held.write(b"")
        assert data_segments(sock)[1] == 0 and held.get_write_buffer_size() == 5
        held.writelines([b"body ", memoryview(b"event")])  # with the head, then at once
        sent = data_segments(sock)[1]  # (2, or 1 where the kernel merged them)
        assert sent >= 1 and held.get_write_buffer_size() == 0
        await until(lambda: peer.data == b"head body event")
        await asyncio.sleep(0)  # the turn ends
        held.write(b"alone")  # a turn's only write goes when the turn ends
        assert data_segments(sock)[1] == sent
        await asyncio.sleep(0)
        assert data_segments(sock)[1] == sent + 1
        await until(lambda: peer.data.endswith(b"alone"))


async def test_a_large_body_goes_after_the_held_head_uncopied() -> None:
    async with held_pair() as (held, peer, _):
        held.write(b"head ")
        held.write(b"x" * (JOIN_AT_MOST + 1))
        await until(lambda: len(peer.data) == JOIN_AT_MOST + 6)
        assert peer.data.startswith(b"head xx")


async def test_close_writes_what_is_held_first_and_abort_drops_it() -> None:
    async with held_pair() as (held, peer, _):
        held.write(b"last words")
        held.close()
        held.write(b"after the close")  # dropped, as the transport's own
        await asyncio.wait_for(peer.ended.wait(), 5)
        assert peer.data == b"last words" and held.is_closing()
    async with held_pair() as (held, peer, _):
        held.write(b"never sent")
        held.abort()
        await asyncio.wait_for(peer.ended.wait(), 5)
        assert peer.data == b""
