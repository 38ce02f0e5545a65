"""A fake OpenAI upstream, cheap enough not to be the bottleneck.

A raw asyncio Protocol speaking just enough HTTP/1.1 (keep-alive, Content-Length bodies,
pipelined requests answered in order) on uvloop. Every request, whatever its path, gets a
chat completion: a fixed `chat.completion` JSON, or - when the body has `"stream": true` -
an SSE stream in chunked transfer encoding: N content chunks, a finish chunk, a usage chunk
and `data: [DONE]`, each event in its own HTTP chunk, `--delay-ms` apart.

    python benchmarks/upstream.py --port 9001 [--chunks 20 --delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from collections import deque
from typing import cast

MODEL = "bench-model"
CREATED = 1_700_000_000
WORD = "tok "  # every content chunk carries this text
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
MAX_HEAD = 64 * 1024


def completion_body() -> bytes:
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! This is a fixed answer from the benchmark upstream.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": 12, "total_tokens": 26},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def stream_events(chunks: int) -> list[bytes]:
    """The SSE events of one stream, each a complete `data: ...\\n\\n` block."""
    base = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
    }

    def event(choices: list[object], usage: object = None) -> bytes:
        data = {**base, "choices": choices, "usage": usage}
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    def choice(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [event([choice({"role": "assistant", "content": WORD})])]
    events += [event([choice({"content": WORD})]) for _ in range(chunks - 1)]
    events.append(event([choice({}, "stop")]))
    usage = {"prompt_tokens": 14, "completion_tokens": chunks, "total_tokens": 14 + chunks}
    events.append(event([], usage))
    events.append(b"data: [DONE]\n\n")
    return events


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answers:
    """Every byte string the server sends, built once."""

    def __init__(self, chunks: int) -> None:
        body = completion_body()
        self.completion = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.stream_chunks = [http_chunk(event) for event in stream_events(chunks)]
        self.stream_end = b"0\r\n\r\n"
        self.stream_whole = self.stream_head + b"".join(self.stream_chunks) + self.stream_end
        self.bad_request = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )


class Upstream(asyncio.Protocol):
    def __init__(self, answers: Answers, delay: float) -> None:
        self.answers = answers
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending: deque[bool] = deque()  # paced streams waiting for their turn
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
            self._answer(_STREAM_TRUE.search(body) is not None)

    def _answer(self, stream: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.pacing is not None or (stream and self.delay > 0):
            self.pending.append(stream)  # keep answers in request order
            if self.pacing is None:
                self.pacing = asyncio.get_running_loop().create_task(self._paced())
            return
        transport.write(self.answers.stream_whole if stream else self.answers.completion)
        if self.closing:
            transport.close()

    async def _paced(self) -> None:
        answers = self.answers
        while self.pending and self.transport is not None:
            if not self.pending.popleft():
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
            self.transport.write(self.answers.bad_request)
            self.transport.close()


async def serve(host: str, port: int, chunks: int, delay_ms: float) -> None:
    answers = Answers(chunks)
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
