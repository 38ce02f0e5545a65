"""Reading an OpenAI-compatible stream: which events the relay must look at, and the
translated read that turns the provider's events into canonical chunks (`Read`).

A piece is what the relay hands on for one upstream read: whole events, line ends `\n`. To a
translated read it hands them on as they came (`Relayed.raw`): comments, keep-alives, errors,
usage and `[DONE]` included, for `Read` looks at each of those itself. Byte tests use
`find`/`rfind`, not `in` (see `upstream/framing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.exceptions import UpstreamError, UpstreamProtocolError
from thanos_asgi.sanitize import MAX_DEPTH, Decoder, openers
from thanos_asgi.types import ChatChunk, ToolCallDelta
from thanos_asgi.upstream.framing import typed

if TYPE_CHECKING:
    from thanos_asgi.providers.openai_compat import OpenAICompatible

_chunk = Decoder(ChatChunk)
DONE = b"data: [DONE]\n\n"

LOOK = (b'"usage":{', b'"usage": {', b'"error":', b"data: [DONE]")  # events to take apart


def plain_prefix(complete: bytes) -> int:
    """How many leading bytes of `complete` are whole events that go out untouched: each one
    `data: {...}` line with no usage or error in it (usage and `[DONE]` come last)."""
    cut = first(complete, LOOK)
    if cut < len(complete):
        cut = complete.rfind(b"\n\n", 0, cut) + 2  # back to the start of the marker's event
        complete = complete[:cut] if cut > 1 else b""
    plain = complete.startswith(b"data: {") and complete.count(b"\n") == 2 * (
        complete.count(b"\n\ndata: {") + 1
    )
    return len(complete) if plain else 0


def first(data: bytes, markers: tuple[bytes, ...]) -> int:
    """Where the first of `markers` in `data` starts (`len(data)` when none is in it).
    Searching backwards: usage and `[DONE]` come last, so `rfind` meets them first."""
    cut = len(data)
    for marker in markers:
        at = data.rfind(marker, 0, cut)
        while at >= 0:  # back to its first occurrence
            cut = at
            at = data.rfind(marker, 0, at + len(marker) - 1)
    return cut


USAGE = LOOK[:2]
MARKED = LOOK[:3]  # usage or an error


def has_usage(data: bytes) -> bool:
    return data.rfind(b'"usage":{') >= 0 or data.rfind(b'"usage": {') >= 0


def number_calls(deltas: list[ToolCallDelta], begun: int) -> int:
    """Give index-less tool-call deltas one: a delta naming a function starts the next call,
    a bare arguments fragment continues the last one. Returns the calls begun so far."""
    for delta in deltas:
        if delta.index >= 0:
            begun = max(begun, delta.index + 1)
        elif delta.function is not None and delta.function.name:
            delta.index, begun = begun, begun + 1
        else:
            delta.index = max(begun - 1, 0)
    return begun


class Read:
    """One translated stream: the relayed pieces as canonical chunks."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0  # tool calls begun so far, for providers that send no index

    def piece(
        self, adapter: OpenAICompatible, piece: bytes
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """The chunks of `piece`, then True at `[DONE]`, or the error the provider reported
        or of an unreadable chunk (which ends the stream after what came before it)."""
        if len(piece) >= AT_ONCE and piece.find(JOIN) >= 0:
            return self.at_once(adapter, piece)
        return self._events(adapter, piece, [])

    def at_once(
        self, adapter: OpenAICompatible, piece: bytes
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """`piece` as `piece` reads it, its leading plain events (no usage or error)
        decoded in one call when that call can vouch for them (`plain_chunks`), the rest one
        by one."""
        # (not `[DONE]`: `plain_end` leaves out a last one, and one before the end is not a
        # `data: {` line, so `plain_chunks` refuses the read)
        cut = plain_end(piece, first(piece, MARKED))
        chunks = plain_chunks(piece[:cut])
        if chunks is None and (piece.startswith(b":") or piece.find(b"\n\n:") >= 0):
            # a comment among the events is one reason it refuses (no `JOIN` around it): look
            # for them only then, not over every read
            piece = uncommented(piece)
            cut = plain_end(piece, first(piece, MARKED))
            chunks = plain_chunks(piece[:cut])
        if chunks is None:
            return self._events(adapter, piece, [])
        if piece.rfind(b'"reasoning') >= 0 or piece.rfind(b'"tool_calls"') >= 0:
            for chunk in chunks:
                self._canonical(chunk)
        return self._events(adapter, piece[cut:], chunks) if cut < len(piece) else (chunks, False)

    def _events(
        self, adapter: OpenAICompatible, piece: bytes, chunks: list[ChatChunk]
    ) -> tuple[list[ChatChunk], bool | UpstreamError]:
        """`chunks`, then those of `piece`'s events read one by one, as the relay reads them:
        comments and keep-alives skipped, an error event (`event: error`, or an `"error":`
        that is not null) ends the stream with that error."""
        # Once per piece, not per event: no event nests deeper than the piece has openers,
        # and no event before the piece's first marker has usage or an error in it.
        decode = _chunk.unchecked if openers(piece) <= MAX_DEPTH else _chunk.decode
        look_at, end = first(piece, MARKED), -2
        for raw in piece.split(b"\n\n")[:-1]:  # each relayed event ends in a blank line
            end += len(raw) + 2
            if raw.startswith(b"data: ") and raw.find(b"\n") < 0:
                name, data = b"", raw[6:]
            else:
                name, data = typed(raw)
            if not data:
                continue  # a comment or keep-alive
            if data == b"[DONE]":
                return chunks, True
            if end > look_at or name == b"error":
                error = _reported(adapter, name, data)
                if error is not None:
                    return chunks, error
            try:
                chunk = decode(data)
            except msgspec.DecodeError as exc:
                error = UpstreamProtocolError(f"unreadable chunk: {exc}")
                return chunks, adapter.tag(error)
            self._canonical(chunk)
            if end > look_at and has_usage(data):  # as the relay reads it (with quirks)
                try:
                    chunk.usage = adapter.usage_from(adapter._decode_meta(data))
                except UpstreamError as exc:
                    return chunks, exc
            chunks.append(chunk)
        return chunks, False

    def _canonical(self, chunk: ChatChunk) -> None:
        """`reasoning` as `reasoning_content`; every tool call delta with an index."""
        for choice in chunk.choices:
            delta = choice.delta
            if delta.reasoning and not delta.reasoning_content:
                delta.reasoning_content, delta.reasoning = delta.reasoning, None
            if delta.tool_calls:
                self.calls = number_calls(delta.tool_calls, self.calls)


def uncommented(piece: bytes) -> bytes:
    """`piece` without its one-line comments (keep-alives: OpenRouter sends them between
    events), which the event-by-event read skips."""
    kept = [block for block in piece.split(b"\n\n") if not _comment(block)]
    return b"\n\n".join(kept)


def _comment(block: bytes) -> bool:
    return block.startswith(b":") and block.find(b"\n") < 0


def _reported(adapter: OpenAICompatible, name: bytes, data: bytes) -> UpstreamError | None:
    """The error an event reports, as the relay reads it (None for `"error": null`)."""
    if name == b"error" or data.find(b'"error":') >= 0:
        return adapter._stream_error(data)
    return None


JOIN = b"}\n\ndata: {"  # where one plain event ends and the next begins
# Reads shorter than this go event by event: the one decode's fixed cost (some twenty C calls)
# passes what it saves at five to six chunks of ~250 bytes (callgrind, 1 to 21 chunks a read).
AT_ONCE = 1536


def plain_end(piece: bytes, marker_at: int) -> int:
    """Where the events before the one holding `marker_at` (the first usage or error marker,
    `len(piece)` when none) end; a last `[DONE]` is left out too."""
    if marker_at < len(piece):
        at = piece.rfind(b"\n\n", 0, marker_at)
        return at + 2 if at >= 0 else 0
    return len(piece) - len(DONE) if piece.endswith(DONE) else len(piece)


def plain_chunks(plain: bytes) -> list[ChatChunk] | None:
    """The chunks of `plain`'s events in one decode, or None when one decode cannot vouch
    for them. It can when each event is `data: {...}` on one line: then each event's `}` and
    the next's `{` meet across a line end, which JSON allows only between two values (not
    inside a value or a string), so no decoded value spans two events, and as many values
    as events means one each, as the event-by-event parse reads them."""
    if not plain.startswith(b"data: {") or not plain.endswith(b"}\n\n"):
        return None
    events = plain[6:-2].split(JOIN)
    if len(events) < 2 or b"".join(events).find(b"\n") >= 0:  # (`find`: memchr, one pass)
        return None  # one event, or a line end inside one
    try:
        chunks = _chunk.one_per_line(b"}\n{".join(events))
    except msgspec.DecodeError:
        return None  # event by event, to end the stream at the unreadable one
    return chunks if len(chunks) == len(events) else None
