"""Stream framing readers: server-sent events and newline-delimited JSON.

Both work on raw byte chunks as they arrive, keep only the unfinished tail between chunks,
and never re-scan what they already handed out. Which framing a provider speaks is the
adapter's business; these are just the tools.

A provider's stream is not trusted: one event (or line) larger than `MAX_EVENT` bytes ends the
stream with `UpstreamProtocolError`, which the front-ends send as a final error event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

from thanos_asgi.exceptions import UpstreamProtocolError

MAX_EVENT = 8 * 1024 * 1024  # bytes of one SSE event or NDJSON line, unfinished tail included


class SSEvent(NamedTuple):
    event: bytes  # b"" when the event had no `event:` line
    data: bytes  # the `data:` lines joined with b"\n"; b"" for comment-only blocks
    raw: bytes  # the block as received, without its terminating blank line


def parse_block(block: bytes) -> SSEvent:
    if block.startswith(b"data: ") and b"\n" not in block:
        return SSEvent(b"", block[6:], block)  # the common single-line case
    if block.startswith(b"event: "):  # `event: <name>` and one `data: ` line (typed events)
        name, _, rest = block[7:].partition(b"\n")
        if rest.startswith(b"data: ") and b"\n" not in rest:
            return SSEvent(name.strip(), rest[6:], block)
    event = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip()
    return SSEvent(event, b"\n".join(data), block)


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEvent]:
    """Yield each complete SSE event (a block ending in a blank line; `\\r\\n`, `\\r` too).
    An event cut off before its blank line is incomplete and is not dispatched (SSE spec)."""
    events = SSEBuffer()
    async for chunk in chunks:
        for block in events.feed(chunk).split(b"\n\n"):
            if block:
                yield parse_block(block)


class SSEBuffer:
    """Raw chunks in, complete events out; keeps only the unfinished tail in between."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The events this chunk completed, as one piece ending in a blank line, line ends
        made `\\n` (b"" when it completed none). Relays forward the piece as it is, without
        taking it apart when nothing in it needs a look."""
        buffer = self.tail + chunk if self.tail else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # may be the first half of a \r\n split across chunks
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n\n") + 2
        if end == 1:  # no blank line yet
            if len(buffer) > MAX_EVENT:
                raise _too_large("an event")
            self.tail = buffer + held
            return b""
        self.tail = buffer[end:] + held
        if len(self.tail) > MAX_EVENT:
            raise _too_large("an event")
        return buffer if end == len(buffer) else buffer[:end]


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each non-empty line of an NDJSON stream."""
    buffer = b""
    async for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        if b"\n" not in buffer:
            if len(buffer) > MAX_EVENT:
                raise _too_large("a line")
            continue
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > MAX_EVENT:
            raise _too_large("a line")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def _too_large(what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"the provider's stream holds {what} larger than {MAX_EVENT // (1024 * 1024)} MiB"
    )
