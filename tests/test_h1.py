"""H1Transport, the upstream HTTP/1.1 client, against real sockets: framing, keep-alive and
stale connections, timeouts, broken servers, compression, back-pressure, the pool's limit, TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.helpers import self_signed
from tests.rawserver import Handler, answer, answering, chunk, read_request, serving
from thanos_asgi import H1Transport, Timeouts
from thanos_asgi.exceptions import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout

pytestmark = pytest.mark.anyio


def once(data: bytes, *, hold: bool) -> Handler:
    """A server that reads one request head, writes `data`, then holds the connection open
    until the client closes it (`hold`) or closes it itself."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(data)
        await writer.drain()
        if hold:
            await reader.read()

    return handler


def answering_each_after(pause: Callable[[], Awaitable[object]]) -> Handler:
    """A server that answers every request on a connection with `ok`, after `pause()`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await pause()
            writer.write(answer(b"ok"))
            await writer.drain()

    return handler


async def post(transport: H1Transport, url: str) -> bytes:
    response = await transport.send("POST", url, headers={}, body=b"x")
    return await response.read()


async def test_a_whole_answer_and_the_request_as_sent() -> None:
    transport = H1Transport()
    async with answering(answer(b'{"ok":true}', b"Retry-After: 7\r\n")) as server:
        response = await transport.send(
            "POST", server.url + "?x=1", headers={"authorization": "Bearer k"}, body=b"{}"
        )
        assert response.status == 200
        assert response.headers["retry-after"] == "7" and response.headers.get("RETRY-AFTER") == "7"
        assert await response.read() == b'{"ok":true}'
    sent = server.requests[0]
    assert sent.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nauthorization: Bearer k\r\n" in sent and sent.endswith(
        b"content-length: 2\r\n\r\n{}"
    )
    await transport.aclose()


async def test_keep_alive_reuses_one_connection() -> None:
    transport = H1Transport()
    async with answering(answer(b"1")) as server:
        for _ in range(5):
            response = await transport.send("POST", server.url, headers={}, body=b"x")
            assert await response.read() == b"1"
        assert server.connections == 1
    await transport.aclose()


async def test_one_connection_reads_every_framing_in_turn() -> None:
    """The parser of a response that ended cleanly reads the next one on the connection:
    lengths, chunks with trailers, an informational answer, a HEAD's and a 204's (no body)."""
    replies = {
        b"A": answer(b"first"),
        b"B": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunk(b"sec")
        + chunk(b"ond")
        + b"0\r\nx-t: 1\r\n\r\n",
        b"C": b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"third"),
        b"D": b"HTTP/1.1 204 No Content\r\n\r\n",
        b"E": answer(b""),
    }

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if request.startswith(b"HEAD "):  # the length of a body that does not follow
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            else:
                writer.write(replies[request.split(b"\r\n\r\n", 1)[1]])
            await writer.drain()

    transport = H1Transport()
    got = []
    async with serving(handler) as server:
        for _ in range(2):
            for body in (b"A", b"B", b"HEAD", b"C", b"D", b"HEAD", b"E", b"A"):
                method = "HEAD" if body == b"HEAD" else "POST"
                response = await transport.send(method, server.url, headers={}, body=body)
                got.append((response.status, await response.read()))
        assert server.connections == 5  # a HEAD's answer closes its connection (4 of them)
    once_round = [(200, b"first"), (200, b"second"), (200, b""), (200, b"third")]
    once_round += [(204, b""), (200, b""), (200, b""), (200, b"first")]
    assert got == once_round * 2
    await transport.aclose()


async def test_a_refused_responses_connection_is_replaced() -> None:
    """A response the parser refused (two lengths) closes its connection after answers read on
    it by the same parser; the next request gets a new connection and reads its answer."""
    bad = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            await read_request(reader)
            served += 1
            writer.write(bad if served == 2 else answer(b"ok"))
            await writer.drain()

    transport = H1Transport()
    async with serving(handler) as server:
        assert await post(transport, server.url) == b"ok"
        with pytest.raises(UpstreamProtocolError):
            await post(transport, server.url)
        assert await post(transport, server.url) == b"ok"
        assert await post(transport, server.url) == b"ok"
        assert server.connections == 2
    await transport.aclose()


async def test_chunked_stream_arrives_as_it_is_sent() -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()  # keep the connection until the client is done

    transport = H1Transport()
    async with serving(handler) as server:
        response = await transport.send("GET", server.url, headers={})
        chunks = response.iter_bytes()
        assert await anext(chunks) == b"first"  # before the rest was even written
        gate.set()
        assert [chunk async for chunk in chunks] == [b"second"]
    await transport.aclose()


async def test_a_body_that_ends_with_the_connection() -> None:
    transport = H1Transport()
    body_until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    async with serving(once(body_until_close, hold=False)) as server:
        response = await transport.send("GET", server.url, headers={})
        assert await response.read() == b"all of it"
    await transport.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(answer(b"ok"))  # keep-alive promised, then the connection is closed
        await writer.drain()

    transport = H1Transport()
    async with serving(handler) as server:
        for _ in range(3):
            response = await transport.send("POST", server.url, headers={}, body=b"x")
            assert await response.read() == b"ok"
            await asyncio.sleep(0.05)  # idle: the close arrives meanwhile
        assert server.connections == 3 and len(server.requests) == 3
    await transport.aclose()


async def test_a_close_after_the_request_was_read_is_an_error_never_a_resend() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(answer(b"ok"))
        await writer.drain()
        await server.request(reader)  # the next request arrives: acted on, then dropped

    transport = H1Transport()
    async with serving(handler) as server:
        first = await transport.send("POST", server.url, headers={}, body=b"x")
        assert await first.read() == b"ok"
        with pytest.raises(UpstreamProtocolError, match="not sent again") as caught:
            await transport.send("POST", server.url, headers={}, body=b"x")
        assert caught.value.maybe_delivered
        assert len(server.requests) == 2 and server.connections == 1  # sent once, not twice
    await transport.aclose()


async def test_a_new_connection_closed_before_any_answer_is_an_error() -> None:
    transport = H1Transport()
    async with serving(once(b"", hold=False)) as server:
        with pytest.raises(UpstreamProtocolError, match="before answering"):
            await transport.send("POST", server.url, headers={}, body=b"x")
        assert server.connections == 1  # a fresh connection is not tried twice
    await transport.aclose()


async def test_closed_mid_body_and_garbage_are_protocol_errors() -> None:
    cut = once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", hold=False)
    garbage = once(b"SMTP ready\r\n\r\n", hold=True)
    transport = H1Transport()
    async with serving(cut) as server:
        response = await transport.send("GET", server.url, headers={})
        with pytest.raises(UpstreamProtocolError, match="mid-response"):
            await response.read()
    async with serving(garbage) as server:
        with pytest.raises(UpstreamProtocolError, match="bad response"):
            await transport.send("GET", server.url, headers={})
    await transport.aclose()


async def test_timeouts_first_byte_idle_and_total() -> None:
    silent = once(b"", hold=True)
    stalls = once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n", hold=True)
    transport = H1Transport()
    async with serving(silent) as server:
        with pytest.raises(UpstreamTimeout):
            await transport.send("GET", server.url, headers={}, timeouts=Timeouts(first_byte=0.1))
    async with serving(stalls) as server:
        response = await transport.send("GET", server.url, headers={}, timeouts=Timeouts(read=0.1))
        chunks = response.iter_bytes()
        assert await anext(chunks) == b"a"
        with pytest.raises(UpstreamTimeout):
            await anext(chunks)
        response = await transport.send(
            "GET", server.url, headers={}, timeouts=Timeouts(read=10, total=0.2)
        )
        with pytest.raises(UpstreamTimeout):
            await response.read()
    await transport.aclose()


async def test_connect_errors() -> None:
    transport = H1Transport()
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(UpstreamConnectError, match="could not connect"):
        await transport.send("GET", f"http://127.0.0.1:{port}/", headers={})
    with pytest.raises(UpstreamConnectError, match="http"):
        await transport.send("GET", "ftp://example.test/", headers={})
    with pytest.raises(UpstreamConnectError, match="line break"):
        await transport.send("GET", "http://127.0.0.1:1/", headers={"x-a": "1\r\nx-b: 2"})
    with pytest.raises(UpstreamConnectError, match="cannot carry"):
        await transport.send("GET", "http://127.0.0.1:1/", headers={"x-a": "\u2603"})
    await transport.aclose()


async def test_gzip_bodies_are_refused_and_informational_responses_skipped() -> None:
    packed = gzip.compress(b'{"hello":"world"}')
    transport = H1Transport()
    async with answering(
        b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n", answer(b"{}", b"x-a: 1\r\n")
    ) as server:
        response = await transport.send("GET", server.url, headers={})
        assert response.status == 200 and "link" not in response.headers
        assert await response.read() == b"{}"
    assert b"\r\naccept-encoding: identity\r\n" in server.requests[0]
    async with answering(answer(packed, b"content-encoding: gzip\r\n")) as server:
        with pytest.raises(UpstreamProtocolError, match="encoded as 'gzip'"):
            await transport.send("GET", server.url, headers={})
    await transport.aclose()


async def test_a_large_body_is_read_with_back_pressure() -> None:
    block = b"x" * 65536

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (64 * len(block)))
        for _ in range(64):
            writer.write(block)
            await writer.drain()
        await reader.read()

    transport = H1Transport()
    async with serving(handler) as server:
        response = await transport.send("GET", server.url, headers={})
        total = 0
        async for chunk in response.iter_bytes():
            total += len(chunk)
            await asyncio.sleep(0.001)  # a slow reader: the socket is paused meanwhile
        assert total == 64 * len(block)
    await transport.aclose()


async def test_the_pool_never_opens_more_than_its_limit() -> None:
    transport = H1Transport(max_connections=2)
    async with serving(answering_each_after(lambda: asyncio.sleep(0.02))) as server:
        assert await asyncio.gather(*(post(transport, server.url) for _ in range(8))) == [b"ok"] * 8
        assert server.connections == 2
    await transport.aclose()


async def test_a_stream_left_unfinished_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
            await writer.drain()

    transport = H1Transport()
    async with serving(handler) as server:
        for _ in range(2):
            response = await transport.send("GET", server.url, headers={})
            assert await anext(response.iter_bytes()) == b"a"
            await response.aclose()
        assert server.connections == 2  # the half-read one was not reused
    await transport.aclose()


async def test_tls_is_verified(tmp_path: Path) -> None:
    cert, key = self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cadata=cert.decode())

    async with serving(once(answer(b"secret"), hold=True), tls=server_side) as server:
        good = H1Transport(ssl_context=trusting)
        response = await good.send("GET", server.url, headers={})
        assert await response.read() == b"secret"
        await good.aclose()
        default = H1Transport()  # the system's trust store does not know this certificate
        with pytest.raises(UpstreamConnectError, match="TLS"):
            await default.send("GET", server.url, headers={})
        await default.aclose()


def test_routes_name_the_host_as_http_wants_it() -> None:
    from thanos_asgi.upstream.h1._request import parse_url

    (host, port, tls, head), target = parse_url("https://api.example.com/v1/chat?x=1")
    assert (host, port, tls, target) == ("api.example.com", 443, True, b"/v1/chat?x=1")
    assert head == b"host: api.example.com\r\n"
    (host, port, tls, head), target = parse_url("http://[::1]:8080")
    assert (host, port, tls, target) == ("::1", 8080, False, b"/")
    assert head == b"host: [::1]:8080\r\n"
    with pytest.raises(UpstreamConnectError, match="valid URL"):
        parse_url("http://example.com:notaport/")


async def test_a_request_cancelled_while_waiting_for_the_pool_blocks_no_other() -> None:
    release = asyncio.Event()
    transport = H1Transport(max_connections=1)
    async with serving(answering_each_after(release.wait)) as server:
        first = asyncio.ensure_future(post(transport, server.url))
        await asyncio.sleep(0.05)  # the only connection is busy: the next two wait
        leaving = asyncio.ensure_future(post(transport, server.url))
        waiting = asyncio.ensure_future(post(transport, server.url))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.sleep(0)
        leaving.cancel()
        assert await asyncio.wait_for(first, 5) == b"ok"
        assert await asyncio.wait_for(waiting, 5) == b"ok"  # not stuck behind the cancelled one
        with pytest.raises(asyncio.CancelledError):
            await leaving
    await transport.aclose()


async def test_aclose_wakes_the_requests_waiting_for_a_connection() -> None:
    release = asyncio.Event()
    transport = H1Transport(max_connections=1)
    async with serving(answering_each_after(release.wait)) as server:
        first = asyncio.ensure_future(post(transport, server.url))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(post(transport, server.url))
        await asyncio.sleep(0.05)
        await transport.aclose()
        with pytest.raises(UpstreamConnectError, match="closed"):
            await asyncio.wait_for(waiting, 1)
        release.set()
        assert await first == b"ok"


async def test_idle_connections_with_descriptors_above_1024_are_checked() -> None:
    """A busy gateway holds thousands of sockets: the idle check of a pooled connection whose
    descriptor is above FD_SETSIZE (1024) must not fail (it did, with `select.select`: a 500
    for every request that took such a connection, found by benchmarks/streams.py)."""
    import os
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("needs more than 1,200 open files (ulimit -n)")
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1100:  # the next sockets get descriptors above them
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        transport = H1Transport()
        async with answering(answer(b"ok")) as server:
            assert await post(transport, server.url) == b"ok"
            await asyncio.sleep(1.1)  # idle past the check's threshold: the socket is looked at
            assert await post(transport, server.url) == b"ok"
            assert server.connections == 1  # kept: alive, nothing to read
        await transport.aclose()
    finally:
        for fd in fillers:
            os.close(fd)


async def test_the_request_task_hook_runs_before_each_wait_for_the_provider() -> None:
    """`BEFORE_WAIT` (set by `thanos serve` in each request's task) runs before the engine
    waits for the head and for each later piece, not while what arrived is being read."""
    from thanos_asgi.upstream.base import BEFORE_WAIT

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"one", b"two"):
            await asyncio.sleep(0.05)
            writer.write(chunk(piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    waits: list[int] = []
    got: list[bytes] = []

    async def fetch(url: str) -> None:
        BEFORE_WAIT.set(lambda: waits.append(len(got)))
        response = await transport.send("POST", url, headers={}, body=b"x")
        async for piece in response.iter_bytes():
            got.append(piece)

    transport = H1Transport()
    async with serving(handler) as server:
        await asyncio.create_task(fetch(server.url))
    await transport.aclose()
    assert b"".join(got) == b"onetwo"
    assert waits[:2] == [0, 0] and 1 in waits  # the head, the first piece, the second
    assert BEFORE_WAIT.get() is None  # (set in that task's context only)
