from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from thanos_asgi.upstream.framing import iter_lines, iter_sse, parse_block

pytestmark = pytest.mark.anyio


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _events(*parts: bytes) -> list[tuple[bytes, bytes]]:
    return [(e.event, e.data) async for e in iter_sse(_chunks(*parts))]


async def test_sse_single_line_events() -> None:
    assert await _events(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [
        (b"", b'{"a":1}'),
        (b"", b"[DONE]"),
    ]


async def test_sse_event_names_and_multiline_data() -> None:
    events = await _events(b"event: error\ndata: one\ndata: two\n\n")
    assert events == [(b"error", b"one\ntwo")]


async def test_sse_crlf_split_across_chunks_is_not_a_boundary() -> None:
    # Gemini frames with \r\n\r\n; a chunk may end between \r and \n
    events = await _events(b"data: first\r", b"\n\r", b"\ndata: second\r\n\r\n")
    assert events == [(b"", b"first"), (b"", b"second")]


async def test_sse_fragmented_byte_by_byte() -> None:
    body = b'event: ping\ndata: {"type": "ping"}\n\ndata: x\n\n'
    events = await _events(*[body[i : i + 1] for i in range(len(body))])
    assert events == [(b"ping", b'{"type": "ping"}'), (b"", b"x")]


async def test_sse_comments_give_empty_data_and_an_unfinished_tail_is_dropped() -> None:
    events = await _events(b': OPENROUTER PROCESSING\n\ndata: {"cut": tr')
    assert events == [(b"", b"")]


def test_parse_block_keeps_raw() -> None:
    block = parse_block(b"event: x\ndata: y")
    assert block.raw == b"event: x\ndata: y"
    assert parse_block(b"data:nospace").data == b"nospace"


async def test_ndjson_lines_across_chunks() -> None:
    lines = [line async for line in iter_lines(_chunks(b'{"a":', b'1}\n\n{"b":2}\n{"c"', b":3}"))]
    assert lines == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


@pytest.mark.parametrize(
    "block",
    [
        b"event: message_stop\ndata: {}",  # the two-line shape read without splitting
        b"event:  spaced \ndata: {}",
        b"event: x\ndata: one\ndata: two",
        b"event: x\ndata:nospace",
        b"event: x\nid: 7\ndata: {}",
        b"event: x",
        b"event: x\n",
        b"event: x\ndata: ",
    ],
)
def test_the_typed_event_shortcut_reads_as_the_general_parser(block: bytes) -> None:
    name, data = b"", []
    for line in block.split(b"\n"):  # the SSE rules, spelled out
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    event = parse_block(block)
    assert (event.event, event.data, event.raw) == (name, b"\n".join(data), block)
