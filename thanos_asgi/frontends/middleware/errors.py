"""ErrorMiddleware: the outermost layer. An exception nobody handled becomes a 500 in the
OpenAI error shape (if the response has not started) and is re-raised so the server logs it,
as Starlette's ServerErrorMiddleware does. ThanosErrors that escape get their own status, in
the shape the path's clients expect.

It notes when the request came in (`scope["thanos.started"]`), so every answer's
`x-thanos-overhead-ms` counts the middleware's time too, and it gives its own answers the
`x-request-id` that RequestIdMiddleware, inside it, put into the scope.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.asgi import ASGIApp, Headers, Message, Receive, Scope, Send
from thanos_asgi.frontends.errors import STARTED, send_error

_INTERNAL = "the gateway failed to handle this request; see its log"


class ErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[STARTED] = time.perf_counter()
        started = False

        def send_tracking(message: Message) -> Awaitable[None]:
            # not `async def`: the inner send's awaitable is passed through, which saves a
            # coroutine per message (a stream sends one per upstream read)
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            return send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except ThanosError as exc:
            if started:
                raise
            await send_error(scope, send, exc, _request_id(scope))
        except Exception:
            if not started:
                await send_error(scope, send, ThanosError(_INTERNAL), _request_id(scope))
            raise


def _request_id(scope: Scope) -> Headers:
    request_id: str = scope.get("thanos.request_id", "")
    return [(b"x-request-id", request_id.encode("latin-1"))] if request_id else []
