"""ErrorMiddleware: the outermost layer. An exception nobody handled becomes a 500 in the
OpenAI error shape (if the response has not started) and is re-raised so the server logs it,
as Starlette's ServerErrorMiddleware does. ThanosErrors that escape get their own status.
"""

from __future__ import annotations

from collections.abc import Awaitable

from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends.asgi import ASGIApp, Message, Receive, Scope, Send, respond
from thanos_asgi.frontends.errors import error_headers, openai_error

_INTERNAL = ThanosError("the gateway failed to handle this request; see its log")


class ErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
            await respond(send, exc.status, openai_error(exc), error_headers(exc))
        except Exception:
            if not started:
                await respond(send, 500, openai_error(_INTERNAL), error_headers(_INTERNAL))
            raise
