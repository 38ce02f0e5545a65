"""`thanos serve` writes what an answer writes in one turn as one write (`server/held.py`):
counted in TCP segments (Linux's TCP_INFO) on real loopback connections, through the real
server, through uvicorn with the protocol and a scripted app, and around the transport wrapper
alone."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn

from tests.servers import Upstream, running, thanos_serve
from thanos_asgi.frontends.asgi import Receive, Scope, Send
from thanos_asgi.server.held import FLUSH_AT, HeldHttpToolsProtocol, HeldWrites
from thanos_asgi.upstream.base import BEFORE_WAIT

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


async def test_a_turns_writes_leave_as_one_when_it_ends() -> None:
    async with held_pair() as (held, peer, sock):
        held.write(b"head ")
        held.write(b"")
        held.writelines([b"body ", memoryview(b"event ")])
        assert data_segments(sock)[1] == 0 and held.get_write_buffer_size() == 16
        await asyncio.sleep(0)  # the turn ends
        assert data_segments(sock)[1] == 1 and held.get_write_buffer_size() == 0
        held.write(b"alone")
        held.flush()  # (the answer is complete: at once)
        assert data_segments(sock)[1] == 2
        await until(lambda: peer.data == b"head body event alone")


async def test_flush_at_bytes_held_go_at_once() -> None:
    async with held_pair() as (held, peer, sock):
        held.write(b"head ")
        held.write(b"x" * FLUSH_AT)
        assert data_segments(sock)[1] >= 1  # written at once, in this turn
        await until(lambda: len(peer.data) == FLUSH_AT + 5)
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


Script = Callable[[Send], Awaitable[None]]


async def _stream_in_one_turn(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for event in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream_in_two_turns(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await asyncio.sleep(0.05)  # the next event is not there yet
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _answer_then_bookkeeping(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done", "more_body": False})
    time.sleep(0.5)  # noqa: ASYNC251 (on purpose:) work after the last send, in the same turn (the loop is blocked)


async def _event_then_a_busy_turn(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    before = BEFORE_WAIT.get()  # what the upstream engine runs before it waits
    assert before is not None
    before()
    time.sleep(0.5)  # noqa: ASYNC251 (on purpose:) other streams' work in the same turn
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _serve_script(script: Script) -> tuple[int, float]:
    """Serve one answer made by `script` with the protocol; fetch it from a thread: (TCP
    segments it came in, seconds from the request to its first bytes)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await script(send)

    config = uvicorn.Config(
        app, port=0, http=HeldHttpToolsProtocol, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    sock = socket.create_server(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    found: list[tuple[int, float]] = []

    def fetch() -> None:
        with socket.create_connection(("127.0.0.1", port)) as client:
            started = time.monotonic()
            client.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            data = b""
            first = None
            while not (data.endswith(b"0\r\n\r\n") or data.endswith(b"done")):
                data += client.recv(65536)
                first = first or time.monotonic() - started
            found.append((data_segments(client)[0], first or 0.0))

    await asyncio.to_thread(fetch)
    server.should_exit = True
    await task
    return found[0]


async def test_an_answer_made_in_one_turn_is_one_segment() -> None:
    segments, _ = await _serve_script(_stream_in_one_turn)
    assert segments == 1  # uvicorn's own: the head, three events and the end, five


async def test_a_stream_leaves_at_the_end_of_each_turn() -> None:
    segments, _ = await _serve_script(_stream_in_two_turns)
    assert segments == 2


async def test_a_complete_answer_does_not_wait_for_the_apps_bookkeeping() -> None:
    segments, took = await _serve_script(_answer_then_bookkeeping)
    assert segments == 1
    assert took < 0.4  # written when complete, not when the turn ended (0.5 s later)


async def test_a_streams_event_leaves_before_its_task_waits_for_the_provider() -> None:
    segments, took = await _serve_script(_event_then_a_busy_turn)
    assert took < 0.4  # not when the busy turn ended
    assert segments == 2  # the head and event, then the end
