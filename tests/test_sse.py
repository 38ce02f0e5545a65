"""EventSourceResponse on its own: whatever ends a response, the source is closed and reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from thanos_asgi.frontends.sse import EventSourceResponse

pytestmark = pytest.mark.anyio


class Source:
    def __init__(self) -> None:
        self.closed = False

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(3600)
            yield b"data: never\n\n"
        finally:
            self.closed = True


async def never() -> dict[str, Any]:
    await asyncio.sleep(3600)
    raise AssertionError


async def test_a_failure_to_start_the_response_still_closes_and_reports() -> None:
    source, outcomes = Source(), []
    events = source.events()

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the connection is gone")

    response = EventSourceResponse(events, on_close=outcomes.append)
    with pytest.raises(OSError):
        await response({}, never, send)
    assert outcomes == ["disconnected"]
    with pytest.raises(StopAsyncIteration):  # closed: the upstream request would be too
        await anext(events)


async def test_cancelled_while_starting_still_closes_and_reports() -> None:
    source, outcomes = Source(), []
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    response = EventSourceResponse(source.events(), on_close=outcomes.append)
    task = asyncio.ensure_future(response({}, never, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcomes == ["disconnected"]


async def test_the_client_leaving_mid_stream_closes_the_source() -> None:
    source, outcomes, sent = Source(), [], []
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body") == b"data: 1\n\n":
            left.set()

    response = EventSourceResponse(source.events(), on_close=outcomes.append)
    await asyncio.wait_for(response({}, receive, send), 5)
    assert source.closed and outcomes == ["disconnected"]
    assert sent[0]["type"] == "http.response.start"


async def test_a_short_stream_never_waits_for_the_client_a_long_one_does() -> None:
    from thanos_asgi.frontends.sse import WATCH_AFTER

    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        await asyncio.sleep(3600)
        raise AssertionError

    async def quick() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"

    async def send(message: dict[str, Any]) -> None:
        pass

    tasks_before = len(asyncio.all_tasks())
    for _ in range(20):  # over before WATCH_AFTER: no watcher task was ever made
        await EventSourceResponse(quick())({}, receive, send)
    await asyncio.sleep(WATCH_AFTER * 2)
    assert received == 0 and len(asyncio.all_tasks()) == tasks_before

    outcomes: list[str] = []
    source = Source()
    task = asyncio.ensure_future(
        EventSourceResponse(source.events(), on_close=outcomes.append)({}, receive, send)
    )
    await asyncio.sleep(WATCH_AFTER * 3)
    assert received == 1  # still going: now the client is watched
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed and outcomes == ["disconnected"]
    await asyncio.sleep(0)  # a cancelled task leaves the loop at its next turn
    assert len(asyncio.all_tasks()) == tasks_before  # the watcher went with the stream
