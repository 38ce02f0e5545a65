"""RequestIdMiddleware: one id per request, honoured from the client when it sends a sane one.

The id goes into `scope["thanos.request_id"]` and onto the response as `x-request-id`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable

from thanos_asgi.frontends.asgi import ASGIApp, Message, Receive, Scope, Send

MAX_LENGTH = 128

# Request ids are unique, not secret (a client may send its own), so they come from a
# generator of ours rather than the kernel (a getrandom(2) per request): its own instance, so
# a host app's `random.seed()` cannot make two processes repeat each other, reseeded from the
# kernel in every forked worker.
_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)


def new_id() -> bytes:
    """32 hex digits."""
    return b"%032x" % _ids.getrandbits(128)


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
