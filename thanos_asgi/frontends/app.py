"""ThanosApp: the HTTP endpoints as one plain ASGI app, mountable anywhere.

It routes by path below its mount point (`root_path`), turns every ThanosError into the
OpenAI error shape with the right status, and answers lifespan events by closing the
gateway on shutdown. Middleware (request id, errors, auth, limits) wraps it from outside.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any
from urllib.parse import parse_qs

import msgspec

from thanos_asgi.context import Quota
from thanos_asgi.core.gateway import Context, Gateway, Reply
from thanos_asgi.core.metrics import CONTENT_TYPE as METRICS_TYPE
from thanos_asgi.core.readiness import serving
from thanos_asgi.exceptions import InvalidRequest, MethodNotAllowed, NotFound, ThanosError
from thanos_asgi.frontends import admin as _admin
from thanos_asgi.frontends import anthropic as _messages
from thanos_asgi.frontends import gemini as _gemini
from thanos_asgi.frontends import login_endpoints as _auth_endpoints
from thanos_asgi.frontends import ollama as _ollama
from thanos_asgi.frontends import openai as codec
from thanos_asgi.frontends import openapi as _openapi
from thanos_asgi.frontends import responses as _responses
from thanos_asgi.frontends._watch import ClientLeft, WatchedDispatch
from thanos_asgi.frontends.asgi import (
    JSON,
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    route_path,
)
from thanos_asgi.frontends.errors import STARTED, send_error
from thanos_asgi.frontends.sse import EventSourceResponse
from thanos_asgi.governance.response_store import ResponseStore
from thanos_asgi.sanitize import header_value
from thanos_asgi.types import (
    ChatChunk,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelList,
)

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Exchange:
    """One request: the ASGI triple plus when it started."""

    scope: Scope
    receive: Receive
    send: Send
    started: float

    def context(self) -> Context:
        found: dict[bytes, str] = {}
        for name, value in self.scope["headers"]:  # one pass for the three routing headers
            if name in _ROUTING_HEADERS:
                found.setdefault(name, bytes(value).decode("latin-1"))
        auth = self.scope.get("thanos.auth") or {}
        quota = self.scope.get("thanos.quota")
        return Context(
            request_id=self.scope.get("thanos.request_id", ""),
            key_id=auth.get("key_id"),
            policy=auth.get("policy"),
            task=found.get(b"x-thanos-task") or None,
            complexity=found.get(b"x-thanos-complexity") or None,
            fallback=found.get(b"x-thanos-fallback", "on").lower() not in ("off", "false", "0"),
            quota=quota if quota is not None else Quota(),
            cache_control=found.get(b"cache-control"),
        )


_ROUTING_HEADERS = frozenset(
    (b"x-thanos-task", b"x-thanos-complexity", b"x-thanos-fallback", b"cache-control")
)


Handler = Callable[[Exchange], Awaitable[None]]


class ThanosApp:
    def __init__(
        self,
        gateway: Gateway,
        *,
        max_body_bytes: int | None = None,
        keepalive_seconds: float | None = None,
    ) -> None:
        server = gateway.config.server
        self.gateway = gateway
        self.response_store: ResponseStore | None = None  # opened on first use
        self.limit = max_body_bytes or server.max_body_bytes
        self.keepalive = (
            keepalive_seconds if keepalive_seconds is not None else server.keepalive_seconds
        )
        chat: dict[str, Handler] = {"POST": self.chat}
        self.routes: dict[str, dict[str, Handler]] = {
            "/v1/chat/completions": chat,
            "/v1/chat": chat,
            "/v1/completions": {"POST": self.completions},
            "/v1/embeddings": {"POST": self.embeddings},
            "/v1/models": {"GET": self.models},
            "/v1/messages": {"POST": partial(_messages.create, self)},
            "/v1/messages/count_tokens": {"POST": partial(_messages.count_tokens, self)},
            "/v1/responses": {"POST": partial(_responses.create, self)},
            "/v1/responses/input_tokens": {"POST": partial(_responses.input_tokens, self)},
            "/v1/usage": {"GET": self.usage},
            "/health": {"GET": self.health},
            "/health/ready": {"GET": self.ready},
            "/auth/github": {"POST": partial(_auth_endpoints.github, self)},
            "/auth/anthropic": {"POST": partial(_auth_endpoints.anthropic, self)},
            "/auth/status": {"GET": partial(_auth_endpoints.auth_status, self)},
            **_ollama_routes(self),
            _openapi.PATH: {"GET": self.openapi},
        }
        if server.metrics:  # `[server] metrics = false` turns it off
            self.routes["/metrics"] = {"GET": self.scrape}
        self.admin: _admin.AdminApi | None = None
        if server.dashboard:  # `[server] dashboard = false`: no admin API, no dashboard
            self.admin = _admin.AdminApi(gateway)
            self.routes.update(self.admin.routes())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            started = scope.get(STARTED) or time.perf_counter()  # ErrorMiddleware's, if any
            await self.handle(Exchange(scope, receive, send, started))
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def handle(self, ex: Exchange) -> None:
        path = route_path(ex.scope)
        try:
            methods = self.routes.get(path)
            if methods is None and path.startswith("/v1/models/"):
                methods = {"GET": self.model}
            elif methods is None and path.startswith(_responses.PREFIX + "/"):
                one = partial(_responses.one, self)
                methods = {"GET": one, "DELETE": one}
            elif methods is None and path.startswith(_gemini.PREFIX):
                methods = {ex.scope["method"]: partial(_gemini.handle, self)}
            elif methods is None and self.admin is not None:
                methods = self.routes.get(_admin.template(path) or "")
            if methods is None:
                raise NotFound(f"there is no endpoint at {path}")
            handler = methods.get(ex.scope["method"])
            if handler is None:
                raise MethodNotAllowed(f"{path} does not accept {ex.scope['method']}")
            await handler(ex)
        except ClientLeft:
            return  # nobody is left to answer
        except ThanosError as exc:
            await send_error(ex.scope, ex.send, exc)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.aclose()
                if self.admin is not None:
                    self.admin.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- chat --------------------------------------------------------------------------------

    def dispatch(
        self,
        ex: Exchange,
        request: ChatRequest,
        ctx: Context | None = None,
        *,
        raw: dict[str, Any] | None = None,
        wire: str = "",
    ) -> WatchedDispatch:
        """`async with app.dispatch(ex, request) as reply:` - `Gateway.dispatch`, given up
        (`ClientLeft`) when the client leaves before a provider accepted the request."""
        dispatch = self.gateway.dispatch(request, ctx or ex.context(), raw=raw, wire=wire)
        return WatchedDispatch(dispatch, ex.receive)

    async def chat(self, ex: Exchange) -> None:
        raw, request = codec.decode_chat(await read_body(ex.scope, ex.receive, self.limit))
        async with self.dispatch(ex, request, raw=raw, wire="openai") as reply:
            if reply.relayed is not None and reply.relayed.events is None:
                reply.finish()  # (the ledger row is written before the answer goes out)
                body = reply.relayed.body
                await respond(ex.send, 200, body, [*JSON, *self._headers(ex, reply)])
            elif reply.response is not None:
                reply.finish()
                body = _encode(reply.response)
                await respond(ex.send, 200, body, [*JSON, *self._headers(ex, reply)])
            else:
                events = reply.relayed.events if reply.relayed else None
                events = events or self._chunk_events(reply, codec.wants_usage(request))
                await self._stream(ex, reply, events)

    async def _chunk_events(
        self,
        reply: Reply,
        include_usage: bool,
        shape: Callable[[ChatChunk], Any] | None = None,
    ) -> AsyncIterator[bytes]:
        """Canonical chunks (or what `shape` makes of each) as SSE events, those of one
        upstream read as one piece in one encode; the usage-only chunk only when the client
        asked."""
        assert reply.batches is not None
        async for batch in reply.batches:  # (closed when the dispatch ends, however it ends)
            out = []
            for chunk in batch:
                if chunk.usage is not None:
                    reply.usage = chunk.usage
                    if not include_usage:
                        if not chunk.choices:
                            continue
                        chunk.usage = None
                out.append(chunk)
            if out:
                yield codec.chunk_events(out if shape is None else [shape(c) for c in out])
        yield codec.DONE

    async def _stream(
        self,
        ex: Exchange,
        reply: Reply,
        events: AsyncIterator[bytes],
        on_error: Callable[[ThanosError], bytes] = codec.error_event,
    ) -> None:
        response = EventSourceResponse(
            events,
            headers=self._headers(ex, reply),
            keepalive=self.keepalive or None,
            on_error=on_error,
            on_close=reply.finish,
            on_first_event=reply.first_event_sent,
        )
        await response(ex.scope, ex.receive, ex.send)

    def _headers(self, ex: Exchange, reply: Reply) -> Headers:
        ex.scope["thanos.reply"] = reply  # for the access log
        overhead = (time.perf_counter() - ex.started) * 1000 - reply.upstream_ms
        attempts = reply.attempts
        headers = [
            *_named(reply.provider, reply.model, attempts[0] if len(attempts) == 1 else attempts),
            (b"x-thanos-overhead-ms", f"{max(overhead, 0.0):.3f}".encode()),
        ]
        if reply.cost_usd is not None:
            headers.append((b"x-thanos-cost-usd", f"{reply.cost_usd:.8f}".encode()))
        if reply.budget_warning:
            headers.append((b"x-thanos-budget-warning", reply.budget_warning.encode()))
        if reply.cache:
            headers.append((b"x-thanos-cache", reply.cache.encode()))
        return headers

    # -- legacy completions and embeddings ------------------------------------------------------

    async def completions(self, ex: Exchange) -> None:
        data = codec.decode_json(await read_body(ex.scope, ex.receive, self.limit))
        legacy = codec.convert(data, CompletionRequest)
        async with self.dispatch(ex, codec.completion_to_chat(legacy)) as reply:
            if reply.response is not None:
                reply.finish()
                body = _encode(codec.chat_to_completion(reply.response))
                await respond(ex.send, 200, body, [*JSON, *self._headers(ex, reply)])
                return
            events = self._chunk_events(reply, codec.wants_usage(legacy), codec.completion_chunk)
            await self._stream(ex, reply, events)

    async def embeddings(self, ex: Exchange) -> None:
        data = codec.decode_json(await read_body(ex.scope, ex.receive, self.limit))
        request = codec.convert(data, EmbeddingRequest)
        if request.input in ("", []):
            raise InvalidRequest("`input` must not be empty", param="input")
        response = await self.gateway.embed(request, ex.context())
        await respond(ex.send, 200, _encode(response))

    # -- models and health -------------------------------------------------------------------

    async def models(self, ex: Exchange) -> None:
        models = await self.gateway.models()
        await respond(ex.send, 200, _encode(ModelList(data=models)))

    async def model(self, ex: Exchange) -> None:
        model_id = route_path(ex.scope)[len("/v1/models/") :]
        await respond(ex.send, 200, _encode(self.gateway.model_info(model_id)))

    async def usage(self, ex: Exchange) -> None:
        """Spend report from the ledger: `?group_by=day|provider|model|key&since=<unix>`."""
        query = parse_qs(ex.scope.get("query_string", b"").decode("latin-1"))
        group_by = (query.get("group_by") or ["day"])[0]
        if group_by not in ("day", "provider", "model", "key"):
            raise InvalidRequest("group_by must be day, provider, model or key", param="group_by")
        since = (query.get("since") or [None])[0]
        try:
            start = float(since) if since else None
        except ValueError:
            raise InvalidRequest("since must be a unix time", param="since") from None
        ledger = self.gateway.ledger
        if ledger is None:
            raise NotFound("usage tracking is off ([cost] track_usage or no ledger_path)")
        rows = await asyncio.to_thread(ledger.report, group_by=group_by, since=start)
        await respond(ex.send, 200, _encode({"group_by": group_by, "data": rows}))

    async def health(self, ex: Exchange) -> None:
        await respond(ex.send, 200, b'{"status":"ok"}')

    async def openapi(self, ex: Exchange) -> None:
        """`GET /openapi.json`: the endpoints served here, described (see `openapi.py`)."""
        body = _openapi.document_bytes([*self.routes, "/v1/models/{id}"])
        await respond(ex.send, 200, body)

    async def scrape(self, ex: Exchange) -> None:
        """`GET /metrics`: Prometheus text exposition (see `metrics.py`)."""
        body = self.gateway.metrics.render()
        await respond(ex.send, 200, body, [(b"content-type", METRICS_TYPE.encode())])

    async def ready(self, ex: Exchange) -> None:
        """Overall status; per-provider details (base URLs, last errors) only for an admin
        key once client keys exist."""
        providers = self.gateway.status()
        can_serve = await serving(self.gateway.providers)
        for name, state in providers.items():
            state["serving"] = can_serve.get(name, False)
        ready = any(can_serve.values())
        body: dict[str, object] = {"status": "ready" if ready else "unavailable"}
        if self._shows_details(ex.scope):
            body["providers"] = providers
        await respond(ex.send, 200 if ready else 503, _encode(body))

    def _shows_details(self, scope: Scope) -> bool:
        server = self.gateway.config.server
        if not scope.get("thanos.keys_active", bool(server.keys or server.key_store)):
            return True
        policy = (scope.get("thanos.auth") or {}).get("policy")
        return bool(policy is not None and policy.admin)


def _named(provider: str, model: str, attempts: str | list[str]) -> Headers:
    """The `x-thanos-provider`, `-model` (as a provider's answer names it) and `-attempts`
    headers; those of one-attempt answers are remembered (a bounded cache)."""
    if isinstance(attempts, str):
        return _named_once(provider, model, attempts)
    return _named_headers(provider, model, ",".join(attempts))


def _named_headers(provider: str, model: str, attempts: str) -> Headers:
    return [
        (b"x-thanos-provider", header_value(provider)),
        (b"x-thanos-model", header_value(model)),
        (b"x-thanos-attempts", header_value(attempts, 1024)),
    ]


_named_once = lru_cache(maxsize=256)(_named_headers)  # (callers copy the list, never change it)


def _ollama_routes(app: ThanosApp) -> dict[str, dict[str, Handler]]:
    """Ollama's native API (`frontends/ollama.py`)."""
    return {
        "/api/chat": {"POST": partial(_ollama.chat, app)},
        "/api/generate": {"POST": partial(_ollama.generate, app)},
        "/api/embed": {"POST": partial(_ollama.embed, app)},
        "/api/embeddings": {"POST": partial(_ollama.embeddings, app)},
        "/api/tags": {"GET": partial(_ollama.tags, app)},
        "/api/show": {"POST": partial(_ollama.show, app)},
        "/api/version": {"GET": partial(_ollama.version, app)},
        "/api/ps": {"GET": partial(_ollama.running, app)},
    }
