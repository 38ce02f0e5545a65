"""Stream framing whatever the reads: the same events however a stream is cut, and a long
event arriving in small reads costs linear time (a provider dripping one 8 MiB event in tiny
reads made every read copy and search the whole unfinished event: quadratic, seconds of a
blocked event loop per stream).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import examples
from thanos_asgi.upstream.framing import SSEBuffer, iter_lines

EVENTS = st.lists(
    st.builds(
        lambda name, data: (
            (b"event: %s\n" % name if name else b"")
            + b"".join(b"data: %s\n" % line for line in data)
            + b"\n"
        ),
        st.sampled_from([b"", b"delta", b"done"]),
        st.lists(st.sampled_from([b"{}", b'{"a":1}', b"x" * 40, b""]), min_size=1, max_size=3),
    ),
    max_size=12,
)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _whole(pieces: list[bytes]) -> tuple[bytes, SSEBuffer]:
    buffer = SSEBuffer()
    return b"".join(buffer.feed(piece) for piece in pieces), buffer


@examples(full=2000, quick=200)
@given(events=EVENTS, cuts=st.lists(st.integers(0, 2000), max_size=30), crlf=st.booleans())
def test_any_reads_give_the_same_events(events: list[bytes], cuts: list[int], crlf: bool) -> None:
    stream = b"".join(events) + b"data: unfinished"
    wire = stream.replace(b"\n", b"\r\n") if crlf else stream
    expected, _ = _whole([wire])
    got, buffer = _whole(_cut(wire, cuts))
    assert got == expected == b"".join(events)
    assert buffer.feed(b"\n\n") == b"data: unfinished\n\n"  # the tail was kept whole


@examples(full=2000, quick=200)
@given(text=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=30))
def test_any_reads_give_the_same_lines(text: bytes, cuts: list[int]) -> None:
    async def lines(pieces: list[bytes]) -> list[bytes]:
        async def source() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return [line async for line in iter_lines(source())]

    expected = [line for line in text.split(b"\n") if line.strip()]
    assert asyncio.run(lines(_cut(text, cuts))) == expected


def test_one_long_event_in_small_reads_costs_linear_time() -> None:
    buffer, piece, count, window = SSEBuffer(), b"x" * 64, 98_304, 8_192  # a 6 MiB event
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(window):
            buffer.feed(piece)
        first = time.perf_counter() - started
        for _ in range(count - 2 * window):
            buffer.feed(piece)
        started = time.perf_counter()
        for _ in range(window):
            buffer.feed(piece)
        last = time.perf_counter() - started
    finally:
        gc.enable()
    assert last < 4 * first + 0.05, f"the last reads took {last / first:.1f}x the first ones"
    assert buffer.feed(b"\n\n") == piece * count + b"\n\n"
