"""Prometheus metrics of one gateway: plain numbers on the hot path, exposition on scrape.

The hooks below only add to ints, floats and preallocated bucket lists (no locks, no label
dicts per request); `collect()` turns them into metric families when `/metrics` is scraped,
and `render()` writes the text exposition format with prometheus-client, from a
`CollectorRegistry` of this gateway's own (several gateways in one process never collide).
prometheus-client is imported on the first scrape only.

| metric | type | labels |
|---|---|---|
| thanos_requests_total | counter | provider, model, status |
| thanos_request_duration_seconds | histogram | provider, model |
| thanos_time_to_first_token_seconds | histogram | provider, model |
| thanos_gateway_overhead_seconds | histogram | |
| thanos_tokens_total | counter | provider, model, direction (in, out) |
| thanos_cost_usd_total | counter | provider, model |
| thanos_attempt_failures_total | counter | provider, reason |
| thanos_retries_total | counter | provider |
| thanos_fallbacks_total | counter | from_provider, to_provider |
| thanos_circuit_state | gauge | provider (0 closed, 1 half-open, 2 open, 3 disabled) |
| thanos_model_circuit_state | gauge | provider, model (models that failed lately only) |
| thanos_inflight_streams | gauge | provider |

`status` is how a request ended: `ok`, `error` (failed after the answer had started),
`disconnected` (the client left), or the HTTP status class (`4xx`, `5xx`) of a request that
failed before any answer. `model` is the model the gateway resolved, when it is one the config
names or an exact models.dev id of the provider's kind (the `known` predicate); any other name
is counted as `other`, as is every new model beyond `MAX_SERIES` pairs, so clients cannot grow
the label space. A request that failed before routing is counted under `model="none"`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from thanos_asgi.core.dispatch import Reply
    from thanos_asgi.core.resilience import Health

__all__ = ["CONTENT_TYPE", "Histogram", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2, "disabled": 3}
MAX_SERIES = 1000  # distinct (provider, model) pairs before new models count as "other"
_FIXED = frozenset(("none", "other"))


class Histogram:
    """Bucket counts (`le` semantics) and a sum; cumulated only when scraped."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets


class _Series:
    """Everything counted for one (provider, model) pair."""

    __slots__ = ("cost_usd", "duration", "first_token", "requests", "tokens_in", "tokens_out")

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.duration = Histogram(DURATION_BUCKETS)
        self.first_token = Histogram(FIRST_TOKEN_BUCKETS)


class Metrics:
    def __init__(
        self,
        health: Mapping[str, Health],
        known: Callable[[str, str], bool] | None = None,
    ) -> None:
        """`health` is the gateway's per-instance health, read for the circuit gauge;
        `known(provider, model)` says whether a model gets its own label (default: all)."""
        self.health = health
        self.known = known
        self.overhead = Histogram(OVERHEAD_BUCKETS)
        self.streams: dict[str, int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        self.credentials: dict[tuple[str, str, str], int] = {}
        self._series: dict[str, dict[str, _Series]] = {}
        self._count = 0
        self._registry: CollectorRegistry | None = None
        self.sources: list[Callable[[], Iterator[Metric]]] = []  # e.g. the response cache

    # -- hooks: called by Gateway and Dispatcher ------------------------------------------------

    def dispatched(self, reply: Reply) -> None:
        """A provider accepted the request (`reply.started` is when dispatch began)."""
        if len(reply.attempts) == 1 and reply.started:
            spent = time.perf_counter() - reply.started - reply.upstream_ms / 1000
            self.overhead.observe(max(spent, 0.0))
        if _streams(reply):
            self.streams[reply.provider] = self.streams.get(reply.provider, 0) + 1

    def finished(self, reply: Reply, outcome: str) -> None:
        """The request is over: `outcome` is ok, error or disconnected."""
        series = self._series_for(reply.provider, reply.model)
        series.requests[outcome] = series.requests.get(outcome, 0) + 1
        usage = reply.usage
        if usage is not None:
            series.tokens_in += usage.prompt_tokens
            series.tokens_out += usage.output_tokens
        if reply.cost_usd:
            series.cost_usd += reply.cost_usd
        if reply.started:
            series.duration.observe(time.perf_counter() - reply.started)
            if reply.first_byte_at:
                series.first_token.observe(reply.first_byte_at - reply.started)
        if _streams(reply):
            self.streams[reply.provider] = self.streams.get(reply.provider, 1) - 1

    def refused(self, provider: str, status: int) -> None:
        """The request failed before any answer, with this HTTP status."""
        series = self._series_for(provider or "none", "none")
        status_class = f"{status // 100}xx"
        series.requests[status_class] = series.requests.get(status_class, 0) + 1

    def attempt_failed(self, reply: Reply) -> None:
        """One attempt failed; `reply.attempts[-1]` is `"<instance>:<reason>"`."""
        reason = reply.attempts[-1].partition(":")[2] if reply.attempts else "error"
        if len(reason) > 40 or (reason.isdigit() and not 100 <= int(reason) < 600):
            reason = "other"  # a provider's own status in a stream error can be any number
        key = (reply.provider, reason)
        self.failures[key] = self.failures.get(key, 0) + 1

    def next_attempt(self, provider: str, attempts: list[str]) -> None:
        """`provider` is about to be tried after `attempts`: a retry or a fallback."""
        if any(_instance(attempt) == provider for attempt in attempts):
            self.retries[provider] = self.retries.get(provider, 0) + 1
        else:
            key = (_instance(attempts[-1]), provider)
            self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    def credential_attempt(self, provider: str, credential: str, outcome: str) -> None:
        """An attempt with a pooled credential ended (`ok`, a status, a code); the id is a
        configured one, so the labels stay bounded."""
        if len(outcome) > 40 or (outcome.isdigit() and not 100 <= int(outcome) < 600):
            outcome = "other"
        key = (provider, credential, outcome)
        self.credentials[key] = self.credentials.get(key, 0) + 1

    def _series_for(self, provider: str, model: str) -> _Series:
        by_model = self._series.get(provider)
        if by_model is None:
            by_model = self._series[provider] = {}
        series = by_model.get(model)
        if series is None:
            if model not in _FIXED and self.known is not None and not self.known(provider, model):
                return self._series_for(provider, "other")
            if self._count >= MAX_SERIES and model != "other":
                return self._series_for(provider, "other")
            series = by_model[model] = _Series()
            self._count += 1
        return series

    # -- scrape --------------------------------------------------------------------------------

    @property
    def registry(self) -> CollectorRegistry:
        """This gateway's registry (with process metrics); add collectors of your own to it."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry, ProcessCollector

            self._registry = CollectorRegistry()
            self._registry.register(self)
            ProcessCollector(registry=self._registry)
        return self._registry

    def render(self) -> bytes:
        """The text exposition format (version 0.0.4), served with `CONTENT_TYPE`."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        yield from self._request_families()
        yield from self._attempt_families()
        yield from self._gauges()
        for source in self.sources:
            yield from source()

    def _request_families(self) -> Iterator[Metric]:
        families = _RequestFamilies()
        for provider, by_model in self._series.items():
            for model, series in by_model.items():
                families.add([provider, model], series)
        yield from families.all()

    def _attempt_families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        overhead = HistogramMetricFamily(
            "thanos_gateway_overhead_seconds",
            "Time spent in the gateway itself before the provider answered (first attempts).",
            buckets=self.overhead.cumulative(),
            sum_value=self.overhead.total,
        )
        failures = CounterMetricFamily(
            "thanos_attempt_failures", "Failed upstream attempts.", labels=["provider", "reason"]
        )
        for (provider, reason), count in self.failures.items():
            failures.add_metric([provider, reason], count)
        retries = CounterMetricFamily(
            "thanos_retries", "Attempts on a provider already tried.", labels=["provider"]
        )
        for provider, count in self.retries.items():
            retries.add_metric([provider], count)
        fallbacks = CounterMetricFamily(
            "thanos_fallbacks",
            "Moves to another provider after one failed.",
            labels=["from_provider", "to_provider"],
        )
        for (source, target), count in self.fallbacks.items():
            fallbacks.add_metric([source, target], count)
        credentials = CounterMetricFamily(
            "thanos_credential_attempts",
            "Attempts per pooled credential (its id, never its key) and outcome.",
            labels=["provider", "credential", "outcome"],
        )
        for labels, count in self.credentials.items():
            credentials.add_metric(list(labels), count)
        yield from (overhead, failures, retries, fallbacks, credentials)

    def _gauges(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        circuit = GaugeMetricFamily(
            "thanos_circuit_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open, 3 disabled.",
            labels=["provider"],
        )
        streams = GaugeMetricFamily(
            "thanos_inflight_streams", "Streams being sent now.", labels=["provider"]
        )
        models = GaugeMetricFamily(
            "thanos_model_circuit_state",
            "Circuit breaker of one model of an instance (only models that failed lately).",
            labels=["provider", "model"],
        )
        for provider, health in self.health.items():
            circuit.add_metric([provider], CIRCUIT_STATES[health.breaker.state])
            streams.add_metric([provider], self.streams.get(provider, 0))
            for model, breaker in list(health.models.items()):
                models.add_metric([provider, model], CIRCUIT_STATES[breaker.state])
        yield from (circuit, models, streams)


class _RequestFamilies:
    """The per-(provider, model) metric families of one scrape."""

    def __init__(self) -> None:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        pair = ["provider", "model"]
        self.requests = CounterMetricFamily(
            "thanos_requests", "Requests finished, by how they ended.", labels=[*pair, "status"]
        )
        self.duration = HistogramMetricFamily(
            "thanos_request_duration_seconds",
            "From dispatch to the end of the answer (streams: the last event).",
            labels=pair,
        )
        self.first_token = HistogramMetricFamily(
            "thanos_time_to_first_token_seconds",
            "Streams: from dispatch to the first event sent to the client.",
            labels=pair,
        )
        self.tokens = CounterMetricFamily(
            "thanos_tokens", "Tokens in (prompt) and out (completion).", labels=[*pair, "direction"]
        )
        self.cost = CounterMetricFamily("thanos_cost_usd", "Spend in US dollars.", labels=pair)

    def add(self, labels: list[str], series: _Series) -> None:
        for status, count in series.requests.items():
            self.requests.add_metric([*labels, status], count)
        for family, histogram in (
            (self.duration, series.duration),
            (self.first_token, series.first_token),
        ):
            if any(histogram.counts):
                family.add_metric(labels, histogram.cumulative(), histogram.total)
        if series.tokens_in or series.tokens_out:
            self.tokens.add_metric([*labels, "in"], series.tokens_in)
            self.tokens.add_metric([*labels, "out"], series.tokens_out)
        if series.cost_usd:
            self.cost.add_metric(labels, series.cost_usd)

    def all(self) -> tuple[Metric, ...]:
        return (self.requests, self.duration, self.first_token, self.tokens, self.cost)


def _instance(attempt: str) -> str:
    """The instance an `x-thanos-attempts` entry names: `openai#team-a:429` -> `openai`."""
    return attempt.partition(":")[0].partition("#")[0]


def _streams(reply: Reply) -> bool:
    relayed = reply.relayed
    return reply.batches is not None or (relayed is not None and relayed.events is not None)
