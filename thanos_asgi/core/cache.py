"""The response cache around dispatch: lookup, single-flight, store, replay.

`Gateway._dispatch` asks `lookup` once the request is routed (the key needs the targets):

- `bypass`: `Cache-Control: no-cache` (no lookup; the answer is still stored unless
  `no-store`), `[cache] when = "deterministic"` and a request that is not (neither
  temperature 0 nor a seed: nothing is looked up or stored), or a per-task TTL of 0;
- `hit`: a stored answer (exact key, else the semantic nearest neighbour); the gateway
  serves it as a `Reply` built by `reply_for`, a stream replayed in the client's dialect;
- `miss`: the request goes to a provider. The first of identical requests in flight is the
  leader; the others wait for its answer (a stream: until the leader's stream ended) and
  are served it as hits. `attach` stores the leader's answer when it completed, and never
  an error, a stream that failed or was cut, or one the client left; the waiters of a
  leader that got no answer go to the provider themselves.
The single-flight is per process; processes sharing Redis share stored answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from thanos_asgi.config.schema import TaskTable
from thanos_asgi.core.cache_key import cache_key
from thanos_asgi.core.cache_semantic import SemanticIndex, group_of, prompt_text
from thanos_asgi.core.cache_stream import Collector, replay
from thanos_asgi.core.reply import Reply, close
from thanos_asgi.core.routing import Target
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from thanos_asgi.config import Config
    from thanos_asgi.context import Context
    from thanos_asgi.core.strategy import Planner
    from thanos_asgi.governance.cache import CacheStore
    from thanos_asgi.types import EmbeddingResponse

__all__ = ["Entry", "Lookup", "ResponseCache"]

log = logging.getLogger("thanos_asgi.core.cache")
Embed = Callable[[EmbeddingRequest, "Context"], Awaitable["EmbeddingResponse"]]


class Entry(msgspec.Struct, array_like=True):
    """One stored answer: what the provider said, and which instance and model said it."""

    response: ChatResponse
    provider: str
    model: str
    stored_at: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


@dataclass(slots=True)
class Lookup:
    status: str  # hit | miss | bypass
    key: str = ""
    ttl: float = 0.0
    store: bool = False
    entry: Entry | None = None
    flight: asyncio.Future[Entry | None] | None = None  # set when this request leads
    group: str = ""
    vector: list[float] | None = None


class ResponseCache:
    def __init__(
        self, config: Config, store: CacheStore, planner: Planner, embed: Embed | None = None
    ) -> None:
        self.config = config
        self.settings = config.cache
        self.store = store
        self.planner = planner
        self.embed = embed
        semantic = self.settings.semantic
        self.index = SemanticIndex(semantic.threshold) if semantic is not None else None
        self.flights: dict[str, asyncio.Future[Entry | None]] = {}
        # a stream larger than this is relayed but not collected (an endless one would grow)
        self.max_entry = min(self.settings.max_bytes, config.server.max_response_bytes)
        self.hits = 0
        self.misses = 0
        self.bypasses = 0

    # -- before the provider --------------------------------------------------------------

    async def lookup(self, request: ChatRequest, targets: list[Target], ctx: Context) -> Lookup:
        directives = _directives(ctx.cache_control)
        ttl = self._ttl(ctx)
        if ttl <= 0 or (self.settings.when == "deterministic" and not _deterministic(request)):
            return self._counted(Lookup("bypass"))
        scope = "global" if self.settings.scope == "global" else (ctx.key_id or "-")
        key = cache_key(scope, targets, request)
        lookup = Lookup("miss", key, ttl, store="no-store" not in directives)
        if "no-cache" in directives:
            lookup.status = "bypass"
            return self._counted(lookup)
        entry = await self._get(key)
        flight = self.flights.get(key) if entry is None else None
        if flight is not None:  # an identical request is with a provider: its answer
            entry = await asyncio.shield(flight)
        if entry is None and key not in self.flights:
            lookup.flight = self.flights[key] = asyncio.get_running_loop().create_future()
        if entry is None and self.index is not None:
            try:
                entry = await self._semantic(lookup, scope, targets, request, ctx)
            except BaseException:  # (cancelled while embedding: the waiters go on their own)
                self._land(lookup, None)
                raise
        if entry is not None:
            lookup.status, lookup.entry = "hit", entry
            self._land(lookup, entry)
        return self._counted(lookup)

    async def _semantic(
        self,
        lookup: Lookup,
        scope: str,
        targets: list[Target],
        request: ChatRequest,
        ctx: Context,
    ) -> Entry | None:
        assert self.index is not None and self.settings.semantic is not None
        if self.embed is None:
            return None
        model = self.settings.semantic.embedding_model
        try:
            answer = await self.embed(
                EmbeddingRequest(model=model, input=prompt_text(request.messages)), ctx
            )
        except ThanosError as exc:  # no semantic lookup this time; the request goes on
            log.warning("semantic cache: the embedding failed (%s)", exc.status)
            return None
        vector = answer.data[0].embedding if answer.data else None
        if not isinstance(vector, list) or not vector:
            return None
        lookup.group, lookup.vector = group_of(scope, targets, request), vector
        near = self.index.nearest(lookup.group, vector)
        if near is None:
            return None
        entry = await self._get(near)
        if entry is None:
            self.index.forget(lookup.group, near)
        return entry

    def _ttl(self, ctx: Context) -> float:
        """`[cache] ttl_seconds`, or the active task table's `cache_ttl_hours` for the task."""
        mode = self.planner.active_mode()
        table = self.config.routing.mode_table(mode) if mode else None
        route = (table or {}).get(ctx.task or "chat")
        if isinstance(route, TaskTable) and route.cache_ttl_hours is not None:
            return route.cache_ttl_hours * 3600
        return self.settings.ttl_seconds

    def _counted(self, lookup: Lookup) -> Lookup:
        if lookup.status == "hit":
            self.hits += 1
        elif lookup.status == "miss":
            self.misses += 1
        else:
            self.bypasses += 1
        return lookup

    async def _get(self, key: str) -> Entry | None:
        data = await self.store.get(key)
        if data is None:
            return None
        try:
            return _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not ours, or from an incompatible version: a miss

    # -- serving and storing ------------------------------------------------------------------

    def reply_for(self, lookup: Lookup, request: ChatRequest) -> Reply:
        """A hit as a `Reply`: the stored answer, or its replay for a stream; no cost."""
        entry = lookup.entry
        assert entry is not None
        reply = Reply(Target(entry.provider, entry.model), ["cache:hit"], cost_usd=0.0)
        if request.stream:
            reply.batches = replay(entry.response)
        else:
            reply.response = msgspec.structs.replace(entry.response)
        reply.cache = "hit"
        return reply

    async def attach(self, lookup: Lookup, reply: Reply) -> None:
        """A miss or bypass got `reply` from a provider: store it once complete, hand it to
        the waiters, and release them however it ends."""
        reply.cache = lookup.status
        keep = lookup.store and bool(lookup.key)
        reply.on_finish.append(lambda _: self._land(lookup, None))
        if reply.response is not None:
            entry = Entry(reply.response, reply.provider, reply.model, time.time())
            self._land(lookup, entry)
            if keep:
                await self._put(lookup, entry)
        elif reply.batches is not None and (keep or lookup.flight is not None):
            reply.batches = self._collect(lookup, reply, reply.batches)

    def abandon(self, lookup: Lookup | None) -> None:
        """The request failed or was cancelled before a provider answered."""
        if lookup is not None:
            self._land(lookup, None)

    async def _collect(
        self, lookup: Lookup, reply: Reply, batches: AsyncIterator[list[ChatChunk]]
    ) -> AsyncIterator[list[ChatChunk]]:
        collector: Collector | None = Collector()
        try:
            async for batch in batches:
                if collector is not None:
                    for chunk in batch:
                        collector.add(chunk)
                        if collector.size > self.max_entry:  # too big to keep: relayed only
                            collector = None
                            self._land(lookup, None)
                            break
                yield batch
        finally:
            await close(batches)
        if collector is None or not collector.complete:
            return  # cut short or too big: neither stored nor handed on
        entry = Entry(collector.response(), reply.provider, reply.model, time.time())
        self._land(lookup, entry)
        if lookup.store and lookup.key:
            await self._put(lookup, entry)

    async def _put(self, lookup: Lookup, entry: Entry) -> None:
        await self.store.put(lookup.key, _encode(entry), lookup.ttl)
        if self.index is not None and lookup.vector is not None:
            self.index.add(lookup.group, lookup.key, lookup.vector)

    def _land(self, lookup: Lookup, entry: Entry | None) -> None:
        """End this request's flight (if it leads one) with `entry`; the first call counts."""
        flight = lookup.flight
        if flight is None:
            return
        lookup.flight = None
        if self.flights.get(lookup.key) is flight:
            del self.flights[lookup.key]
        if not flight.done():
            flight.set_result(entry)

    async def aclose(self) -> None:
        await self.store.aclose()

    # -- metrics --------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield CounterMetricFamily("thanos_cache_hits", "Answers served from the cache.", self.hits)
        yield CounterMetricFamily(
            "thanos_cache_misses", "Cacheable requests that went to a provider.", self.misses
        )
        yield CounterMetricFamily(
            "thanos_cache_bypasses", "Requests the cache did not look up.", self.bypasses
        )
        yield GaugeMetricFamily(
            "thanos_cache_bytes",
            "Bytes the cache holds (Redis: stored by this process).",
            self.store.stored_bytes,
        )
        yield CounterMetricFamily(
            "thanos_cache_evictions",
            "Entries dropped to stay within max_bytes.",
            self.store.evictions,
        )


def _directives(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.strip().lower().partition("=")[0] for part in header[:256].split(",")}


def _deterministic(request: ChatRequest) -> bool:
    return request.temperature == 0 or request.seed is not None
