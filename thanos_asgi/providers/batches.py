"""Streams in lists of chunks, a list per upstream read (`Provider.open_batches`), and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from thanos_asgi.types import ChatChunk, ChatRequest

__all__ = ["Batching", "batched", "each"]


class Batching:
    """`open_batches` for an adapter (`HTTPProvider` has it): `open_stream`'s chunks in lists,
    each what one upstream read completed (never empty, never waiting for a later read), so
    front-ends write once per read. The gateway calls `open_batches`; this default gives a
    list per chunk. Adapters that decode a read at a time override it, and their
    `open_stream` is `each(await self.open_batches(...))`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class whose `open_stream` is newer than its `open_batches` (built on an adapter
        that batches, overriding `open_stream` only) gets this default, so its own stream is
        the one read."""
        super().__init_subclass__(**kwargs)
        names = ("open_stream", "open_batches")
        owner = next((k for k in cls.__mro__ if any(n in vars(k) for n in names)), None)
        if owner is not None and "open_batches" not in vars(owner):
            cls.open_batches = Batching.open_batches  # type: ignore[method-assign]

    async def open_batches(
        self, request: ChatRequest, model: str
    ) -> AsyncIterator[list[ChatChunk]]:
        opened: AsyncIterator[ChatChunk] = await self.open_stream(request, model)  # type: ignore[attr-defined]
        return batched(opened)


async def batched(chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[list[ChatChunk]]:
    """Each chunk as a list of one (a stream that does not know its reads); closes `chunks`."""
    try:
        async for chunk in chunks:
            yield [chunk]
    finally:
        await close(chunks)


async def each(batches: AsyncIterator[list[ChatChunk]]) -> AsyncIterator[ChatChunk]:
    """The chunks of `batches` one by one (`open_stream` from `open_batches`); closes it."""
    try:
        async for batch in batches:
            for chunk in batch:
                yield chunk
    finally:
        await close(batches)


async def close(iterator: object) -> None:
    """Close an async generator now (its upstream response with it), not when collected:
    one dropped unfinished is closed by a task the event loop starts for it."""
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()
