"""A fake LLM upstream (OpenAI, Anthropic, Gemini, Responses), cheap enough not to be the
bottleneck.

A raw asyncio Protocol speaking just enough HTTP/1.1 (keep-alive, Content-Length bodies,
pipelined requests answered in order) on uvloop. The request's path picks the format
(`formats.py`: `/v1/messages` Anthropic, `:generateContent`/`:streamGenerateContent` Gemini,
`/v1/responses` Responses, any other path OpenAI chat); the answer is fixed: a whole JSON, or -
when the body has `"stream": true` (Gemini: the stream path) - an SSE stream in chunked
transfer encoding with N content chunks and the format's closing events (chat: a finish chunk,
a usage chunk and `data: [DONE]`), each event in its own HTTP chunk, `--delay-ms` apart;
with a delay, a whole answer is sent when its stream would have ended (chunks x delay).

    python benchmarks/upstream.py --port 9001 [--chunks 20 --delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from collections import deque
from typing import cast

from formats import FORMATS, format_of

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
MAX_HEAD = 64 * 1024
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answers:
    """Every byte string the server sends in one format (`formats.py`), built once."""

    def __init__(self, chunks: int, kind: str = "chat") -> None:
        body, events = FORMATS[kind](chunks)
        self.completion = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.stream_chunks = [http_chunk(event) for event in events]
        self.stream_end = b"0\r\n\r\n"
        self.stream_whole = self.stream_head + b"".join(self.stream_chunks) + self.stream_end


class Upstream(asyncio.Protocol):
    def __init__(self, answers: dict[str, Answers], delay: float) -> None:
        self.answers = answers
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[Answers, bool]] = deque()  # paced, waiting for their turn
        self.pacing: asyncio.Task[None] | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.pacing is not None:
            self.pacing.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail()
                return
            head = self.buffer[: end + 2]
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.closing = self.closing or _CLOSE.search(head) is not None
            line = head[: head.find(b"\r\n")].split(b" ")
            kind, streams = format_of(line[1].partition(b"?")[0] if len(line) > 1 else b"")
            stream = streams if streams is not None else _STREAM_TRUE.search(body) is not None
            self._answer(self.answers[kind], stream)

    def _answer(self, answers: Answers, stream: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.pacing is not None or self.delay > 0:
            self.pending.append((answers, stream))  # keep answers in request order
            if self.pacing is None:
                self.pacing = asyncio.get_running_loop().create_task(self._paced())
            return
        transport.write(answers.stream_whole if stream else answers.completion)
        if self.closing:
            transport.close()

    async def _paced(self) -> None:
        while self.pending and self.transport is not None:
            answers, stream = self.pending.popleft()
            if not stream:  # the whole answer once its stream would have ended
                await asyncio.sleep(self.delay * len(answers.stream_chunks))
                if self.transport is None:
                    return
                self.transport.write(answers.completion)
                continue
            self.transport.write(answers.stream_head + answers.stream_chunks[0])
            for chunk in answers.stream_chunks[1:]:
                await asyncio.sleep(self.delay)
                if self.transport is None:
                    return
                self.transport.write(chunk)
            self.transport.write(answers.stream_end)
        self.pacing = None
        if self.closing and self.transport is not None:
            self.transport.close()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD_REQUEST)
            self.transport.close()


async def serve(host: str, port: int, chunks: int, delay_ms: float) -> None:
    answers = {kind: Answers(chunks, kind) for kind in FORMATS}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(answers, delay_ms / 1000), host, port, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="pause between chunks")
    args = parser.parse_args()
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.chunks, args.delay_ms))
    else:
        uvloop.run(serve(args.host, args.port, args.chunks, args.delay_ms))


if __name__ == "__main__":
    main()
