"""RequestIdMiddleware: one id per request, honoured from the client when it sends a sane one.

The id goes into `scope["thanos.request_id"]` and onto the response as `x-request-id`.
"""

from __future__ import annotations

from collections.abc import Awaitable

from thanos_asgi.frontends.asgi import ASGIApp, Message, Receive, Scope, Send
from thanos_asgi.ids import unique_hex

MAX_LENGTH = 128


def new_id() -> bytes:
    """32 hex digits, unique, not secret (`thanos_asgi.ids`)."""
    return unique_hex(128).encode()


def _acceptable(value: bytes) -> bool:
    return 0 < len(value) <= MAX_LENGTH and all(33 <= byte < 127 for byte in value)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, *, header: str = "x-request-id") -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope["headers"]:
            if key == self.header:
                incoming = value
                break
        request_id = incoming if incoming and _acceptable(incoming) else new_id()
        scope["thanos.request_id"] = request_id.decode("latin-1")
        name = self.header

        def send_with_id(message: Message) -> Awaitable[None]:  # see ErrorMiddleware
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (name, request_id)]
            return send(message)

        await self.app(scope, receive, send_with_id)
