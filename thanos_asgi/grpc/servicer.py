"""ThanosServicer: `thanos.ThanosService` (proto/thanos.proto) over the same Gateway as HTTP.

It only translates: proto -> canonical request, `Gateway.dispatch` (routing, fallbacks,
limits and accounting exactly as for HTTP), canonical answer -> proto messages, and
ThanosError -> gRPC status (`_status.py`). The provider, model and attempts that HTTP puts
in `x-thanos-*` headers go into the initial metadata and into the messages themselves.
InitiateOAuth starts a login through `initiate_oauth`, as POST /auth/github and
POST /auth/anthropic do, with the same admin-key rule.

When the client cancels or its deadline passes, grpc.aio cancels the handler: the dispatch
ends there (before or after the provider answered), the upstream request is closed at once,
every hold is released and the request is recorded as "disconnected".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc

from thanos_asgi.context import Quota
from thanos_asgi.core.gateway import Context, Gateway, Reply
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.login_endpoints import initiate_oauth
from thanos_asgi.grpc import _convert as convert
from thanos_asgi.grpc import thanos_pb2 as pb
from thanos_asgi.grpc._access import Access, KeyLookup, metadata
from thanos_asgi.grpc._status import abort
from thanos_asgi.logins import LoginFailed
from thanos_asgi.sanitize import header_value

__all__ = ["KeyLookup", "ThanosServicer"]

MAX_REQUEST_ID = 128


class ThanosServicer:
    """The four RPCs of `thanos.ThanosService`; register with `add_to_server`."""

    def __init__(self, gateway: Gateway, *, keys: KeyLookup | None = None) -> None:
        """`keys` defaults to the config's `[[server.keys]]` and key store, as for HTTP."""
        self.gateway = gateway
        self.access = Access(gateway, keys)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        from thanos_asgi.grpc import thanos_pb2_grpc

        register: Any = thanos_pb2_grpc.add_ThanosServiceServicer_to_server
        register(self, server)

    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatResponse]:
        started = time.perf_counter()
        try:
            ctx = await self._context(request, context)
            canonical = convert.chat_request(request)
        except ThanosError as exc:
            await abort(context, exc)
        dispatch = self.gateway.dispatch(canonical, ctx)
        try:
            reply = await dispatch.__aenter__()
        except ThanosError as exc:
            await abort(context, exc)
        try:  # `async with`, spelled out so that a refusal above becomes a gRPC status
            headers = _headers(ctx, reply, started)
            if reply.response is not None:
                reply.finish()
                await context.send_initial_metadata(headers)
                yield convert.response_message(reply.response, **_final(reply))
                return
            stream = _stream(reply, context, headers)
            try:
                async for message in stream:
                    yield message
            finally:
                await stream.aclose()
        except BaseException as exc:  # also when grpc.aio cancels this handler
            await dispatch.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await dispatch.__aexit__(None, None, None)

    async def ListModels(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.ModelsResponse:
        try:
            await self.access.admit(context)
        except ThanosError as exc:
            await abort(context, exc)
        return convert.models_message(await self.gateway.models())

    async def Health(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.HealthResponse:
        """Open, like GET /health/ready: per-provider details only for an admin key once
        client keys exist."""
        message = convert.health_message(self.gateway.status())
        if not self._admin_or_keyless(context):
            message.providers.clear()
        return message

    def _admin_or_keyless(self, context: grpc.aio.ServicerContext) -> bool:
        try:
            policy = self.access.authenticate(context)
        except ThanosError:
            return False
        return policy is None or policy.admin

    async def InitiateOAuth(
        self, request: pb.OAuthRequest, context: grpc.aio.ServicerContext
    ) -> pb.OAuthResponse:
        try:
            await self.access.admit(context, admin=True)  # like /auth/*: admin once keys exist
            started = await initiate_oauth(self.gateway, convert.oauth_provider(request))
        except LoginFailed as exc:  # the only I/O here: the login server did not start it
            await abort(context, exc, grpc.StatusCode.UNAVAILABLE)
        except ThanosError as exc:
            await abort(context, exc)
        return convert.oauth_message(started)

    # -- per call ------------------------------------------------------------------------------

    async def _context(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> Context:
        quota = Quota()
        policy = await self.access.admit(context, quota=quota)
        return Context(
            request_id=_request_id(request.request_id, context),
            key_id=policy.key_id if policy else None,
            policy=policy,
            task=request.task or None,
            complexity=request.complexity or None,
            quota=quota,
        )


async def _stream(
    reply: Reply, context: grpc.aio.ServicerContext, headers: tuple[tuple[str, str], ...]
) -> AsyncGenerator[pb.ChatResponse, None]:
    """Deltas, then the `done` message; the upstream is closed and the reply finished however
    the stream ends (completed, failed, cancelled)."""
    common = _common(reply)
    outcome, finish_reason = "disconnected", ""
    try:
        await context.send_initial_metadata(headers)
        assert reply.batches is not None
        async for batch in reply.batches:
            for chunk in batch:
                if chunk.usage is not None:
                    reply.usage = chunk.usage
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish_reason = chunk.choices[0].finish_reason
                message = convert.chunk_message(chunk, **common)
                if message is not None:
                    yield message
        outcome = "ok"
    except ThanosError as exc:
        outcome = "error"
        await abort(context, exc)
    finally:  # the upstream is closed when the dispatch ends
        reply.finish(outcome)
    usage = convert.usage_message(reply.usage) if reply.usage is not None else None
    yield pb.ChatResponse(done=True, finish_reason=finish_reason, usage=usage, **_final(reply))


def _common(reply: Reply) -> dict[str, Any]:
    """What every message of a call carries."""
    return {"provider": reply.provider, "model": reply.model, "request_id": reply.request_id}


def _final(reply: Reply) -> dict[str, Any]:
    """What the `done` message carries besides: known only once the reply is finished."""
    return {"attempts": reply.attempts, "cost_usd": reply.cost_usd, **_common(reply)}


def _headers(ctx: Context, reply: Reply, started: float) -> tuple[tuple[str, str], ...]:
    """The HTTP API's response headers, as initial metadata."""
    overhead = (time.perf_counter() - started) * 1000 - reply.upstream_ms
    headers = [
        ("x-request-id", ctx.request_id),
        ("x-thanos-provider", reply.provider),
        ("x-thanos-model", header_value(reply.model).decode()),  # a provider may name it
        ("x-thanos-attempts", ",".join(reply.attempts)),
        ("x-thanos-overhead-ms", f"{max(overhead, 0.0):.3f}"),
    ]
    if reply.budget_warning:
        headers.append(("x-thanos-budget-warning", reply.budget_warning))
    return tuple(headers)


def _request_id(given: str, context: grpc.aio.ServicerContext) -> str:
    """The request's own id, else `x-request-id` metadata, else a new one; printable ASCII."""
    for candidate in (given, metadata(context, "x-request-id")):
        if 0 < len(candidate) <= MAX_REQUEST_ID and all(33 <= ord(c) < 127 for c in candidate):
            return candidate
    return uuid.uuid4().hex
