"""Stream framing readers: server-sent events and newline-delimited JSON.

Both work on raw byte chunks as they arrive, keep only the unfinished tail between chunks,
and never re-scan what they already handed out. Which framing a provider speaks is the
adapter's business; these are just the tools.

Byte searches here and in the readers use `find`/`rfind`, not `in`: on CPython 3.11 `sub in
data` first tries `sub` as an integer, and the TypeError it raises and clears costs about a
thousand instructions a test (callgrind), more than the search.

A provider's stream is not trusted: one event (or line) larger than `MAX_EVENT` bytes ends the
stream with `UpstreamProtocolError`, which the front-ends send as a final error event.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sized

import msgspec

from thanos_asgi.exceptions import UpstreamProtocolError

MAX_EVENT = 8 * 1024 * 1024  # bytes of one SSE event or NDJSON line, unfinished tail included


class SSEvent(msgspec.Struct, gc=False):  # (a third of a NamedTuple's cost: one per event)
    event: bytes  # b"" when the event had no `event:` line
    data: bytes  # the `data:` lines joined with b"\n"; b"" for comment-only blocks
    raw: bytes  # the block as received, without its terminating blank line


def parse_block(block: bytes) -> SSEvent:
    if block.startswith(b"data: ") and block.find(b"\n") < 0:
        return SSEvent(b"", block[6:], block)  # the common single-line case
    if block.startswith(b"event: "):  # `event: <name>` and one `data: ` line (typed events)
        name, _, rest = block[7:].partition(b"\n")
        if rest.startswith(b"data: ") and rest.find(b"\n") < 0:
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


def typed(block: bytes) -> tuple[bytes, bytes]:
    """`(event, data)` of a block, as `parse_block` gives them; the common typed event
    (`event: <name>` then one `data: ` line) without building an `SSEvent`."""
    at = block.find(b"\ndata: ")
    if at > 0 and block.startswith(b"event: ") and block.find(b"\n", 7, at) < 0:
        data = block[at + 7 :]
        if data.find(b"\n") < 0:
            return block[7:at].strip(), data
    event = parse_block(block)
    return event.event, event.data


def _whole(found: Sized, complete: bytes) -> bool:
    """Whether a regex of whole blocks, anchored at a block's start, `found` one match in every
    block of `complete`: as many as its blank lines (no match spans two), and no stray line
    end after the last (`\\n\\n\\n` at the end leaves a block `\\n`)."""
    return len(found) == complete.count(b"\n\n") and not complete.endswith(b"\n\n\n")


# A block that is exactly an `event:` line and one `data:` line, at the start of a block
_TYPED = re.compile(rb"(?:\A|(?<=\n\n))event: ?(\S*)\ndata: ?([^\n]*)\n\n")


def typed_events(complete: bytes) -> list[tuple[bytes, bytes]]:
    """`(event, data)` of each block of `complete` (events as `SSEBuffer.feed` gives them),
    as `typed` gives them: one regex pass when every block is the common typed event."""
    pairs: list[tuple[bytes, bytes]] = _TYPED.findall(complete)
    if _whole(pairs, complete):
        return pairs
    return [typed(block) for block in complete.split(b"\n\n") if block]


_DATA = re.compile(rb"(?:\A|(?<=\n\n))data: ?([^\n]*)\n\n")  # a block of one `data:` line


def data_lines(complete: bytes) -> list[bytes] | None:
    """The data of each block of `complete` when every block is one `data: ` line (what
    providers send), else None: one split at the blocks' seams (a line end left in a piece
    means some block was not such a line). A third of the regex pass's time, which steps
    through every byte in Python's regex engine (timeit, 20 Gemini events: 7.8 -> 2.7 us)."""
    if not complete.startswith(b"data: ") or not complete.endswith(b"\n\n"):
        return None
    datas = complete[6:-2].split(_SEAM)
    return datas if b"".join(datas).find(b"\n") < 0 else None


_SEAM = b"\n\ndata: "


def data_of(complete: bytes) -> list[bytes]:
    """The data of each block of `complete`, as `parse_block` gives it (b"" for comments):
    one regex pass when every block is a single `data:` line (see `typed_events`). Try
    `data_lines` first: it is cheaper, and it tells when the blocks were all one line."""
    datas: list[bytes] = _DATA.findall(complete)
    if _whole(datas, complete):
        return datas
    return [parse_block(block).data for block in complete.split(b"\n\n") if block]


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEvent]:
    """Yield each complete SSE event (a block ending in a blank line; `\\r\\n`, `\\r` too).
    An event cut off before its blank line is incomplete and is not dispatched (SSE spec)."""
    events = SSEBuffer()
    async for chunk in chunks:
        for block in events.feed(chunk).split(b"\n\n"):
            if block:
                yield parse_block(block)


class SSEBuffer:
    """Raw chunks in, complete events out; keeps only the unfinished tail in between, as the
    pieces it came in: a long event arriving in small reads is joined once, when complete,
    instead of copied (and searched) whole on every read."""

    __slots__ = ("held", "size", "tail")

    def __init__(self) -> None:
        self.tail: list[bytes] = []  # the unfinished event's pieces, line ends made `\n`
        self.size = 0  # their bytes
        self.held = False  # the last chunk ended in `\r`: maybe half of a `\r\n`

    def feed(self, chunk: bytes) -> bytes:
        """The events this chunk completed, as one piece ending in a blank line, line ends
        made `\n` (b"" when it completed none). Relays forward the piece as it is, without
        taking it apart when nothing in it needs a look."""
        if self.held:
            chunk, self.held = b"\r" + chunk, False
        if chunk.find(b"\r") >= 0:
            if chunk.endswith(b"\r"):
                chunk, self.held = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        tail = self.tail
        end = chunk.rfind(b"\n\n") + 2  # (also 1 when the blank line spans the join)
        spans = tail and chunk[:1] == b"\n" and tail[-1].endswith(b"\n")
        if end == 1 and not spans:  # no blank line yet
            if chunk:
                tail.append(chunk)
                self.size += len(chunk)
            if self.size > MAX_EVENT:
                raise _too_large("an event")
            return b""
        rest = chunk[end:]
        if len(rest) > MAX_EVENT:
            raise _too_large("an event")
        events = chunk if end == len(chunk) else chunk[:end]
        if tail:
            tail.append(events)
            events = b"".join(tail)
        self.tail, self.size = ([rest], len(rest)) if rest else ([], 0)
        return events


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each non-empty line of an NDJSON stream (an unfinished line is kept as its
    pieces, joined once its newline came: see `SSEBuffer`)."""
    tail: list[bytes] = []
    size = 0
    async for chunk in chunks:
        end = chunk.rfind(b"\n")
        if end < 0:
            tail.append(chunk)
            size += len(chunk)
            if size > MAX_EVENT:
                raise _too_large("a line")
            continue
        rest = chunk[end + 1 :]
        if len(rest) > MAX_EVENT:
            raise _too_large("a line")
        complete = b"".join([*tail, chunk[:end]]) if tail else chunk[:end]
        tail, size = ([rest], len(rest)) if rest else ([], 0)
        for line in complete.split(b"\n"):
            if line.strip():
                yield line
    if tail and (last := b"".join(tail)).strip():
        yield last


def _too_large(what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"the provider's stream holds {what} larger than {MAX_EVENT // (1024 * 1024)} MiB"
    )
