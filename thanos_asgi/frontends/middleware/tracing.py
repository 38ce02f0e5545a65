"""TracingMiddleware: one OpenTelemetry SERVER span per HTTP request, ended with its response.

The span is named `<method> <route>` (`POST /v1/chat/completions`, `GET /v1/models/{model}`;
only the method for a 404 outside `/v1/models/`, so scanners cannot grow span names). It
continues the caller's trace from W3C `traceparent`/`tracestate` headers and is current
while the app runs, so spans of instrumented libraries (httpx...) nest under it. It ends
when the response has ended (a stream: its last event) or the client has left.

Attributes: `http.request.method`, `url.scheme`, `url.path`, `http.route`,
`http.response.status_code`, `error.type`; from `scope["thanos.reply"]` (set by ThanosApp,
as for the access log) `gen_ai.provider.name` and `gen_ai.system` (the provider instance),
`gen_ai.request.model` (asked of the provider), `gen_ai.response.model`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `thanos.cost_usd`,
`thanos.attempts`, `thanos.outcome`; and `thanos.request_id`, `thanos.key_id`. Status is
ERROR for 5xx, for a stream that failed after it began, and for an exception (its type
only: messages may quote secrets). Never recorded: header values, the query string, bodies.

Spans go to `tracer_provider`, by default the global one: configure exporters with the
OpenTelemetry SDK or `opentelemetry-instrument`. Needs `pip install 'thanos-asgi[otel]'`;
`import thanos_asgi` never imports OpenTelemetry. Place it right inside RequestIdMiddleware.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, StatusCode, TracerProvider

from thanos_asgi.frontends.asgi import ASGIApp, Message, Receive, Scope, Send, route_path

if TYPE_CHECKING:
    from thanos_asgi.core.dispatch import Reply

__all__ = ["TracingMiddleware"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"})
_MODEL = "/v1/models/"  # the one route with an id in its path
RawHeaders = Iterable[tuple[bytes, bytes]]


class _HeaderGetter(Getter[RawHeaders]):
    """Reads propagation headers from ASGI's `scope["headers"]`."""

    def get(self, carrier: RawHeaders, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: RawHeaders) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_GETTER = _HeaderGetter()


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracer_provider: TracerProvider | None = None) -> None:
        self.app = app
        self.tracer = trace.get_tracer("thanos_asgi", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        path = route_path(scope)
        route = _MODEL + "{model}" if path.startswith(_MODEL) else path
        status = 0

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            f"{method} {route}",
            context=extract(scope["headers"], getter=_GETTER),
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, method),
            record_exception=False,  # an exception's message may quote a secret
            set_status_on_exception=False,
        ) as span:
            failure = ""
            try:
                await self.app(scope, receive, watching)
            except Exception as exc:
                failure = type(exc).__qualname__
                raise
            finally:
                if status == 404 and route == path:  # no endpoint here: no route either
                    span.update_name(method)
                else:
                    span.set_attribute("http.route", route)
                _finish(span, scope, status or 500, failure)  # no response: the server sends 500


def _request_attributes(scope: Scope, method: str) -> dict[str, Any]:
    attributes = {"http.request.method": method, "url.path": scope["path"]}
    attributes["url.scheme"] = scope.get("scheme", "http")
    if scope.get("thanos.request_id"):  # set by RequestIdMiddleware, outside
        attributes["thanos.request_id"] = scope["thanos.request_id"]
    return attributes


def _finish(span: Span, scope: Scope, status: int, failure: str) -> None:
    """Everything known once the response is over; `failure`: the type of an exception."""
    span.set_attribute("http.response.status_code", status)
    auth = scope.get("thanos.auth") or {}
    if auth.get("key_id"):
        span.set_attribute("thanos.key_id", auth["key_id"])
    reply: Reply | None = scope.get("thanos.reply")
    if reply is not None:
        span.set_attributes(_reply_attributes(reply))
    if failure or status >= 500:
        span.set_attribute("error.type", failure or str(status))
        span.set_status(StatusCode.ERROR)
    elif reply is not None and reply.outcome == "error":
        span.set_status(StatusCode.ERROR, "the answer failed after it had begun")


def _reply_attributes(reply: Reply) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.provider.name": reply.provider,
        "gen_ai.system": reply.provider,
        "gen_ai.request.model": reply.target.model,
        "gen_ai.response.model": reply.model,
        "thanos.attempts": list(reply.attempts),
    }
    if reply.outcome:
        attributes["thanos.outcome"] = reply.outcome
    usage = reply.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        output = usage.output_tokens
        attributes["gen_ai.usage.output_tokens"] = output
    if reply.cost_usd is not None:
        attributes["thanos.cost_usd"] = reply.cost_usd
    return attributes
