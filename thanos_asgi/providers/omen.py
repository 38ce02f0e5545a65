"""Omen: an OpenAI-compatible router that chooses the model itself.

`endpoint` is Omen's server root (`http://localhost:3000`); requests go to
`{endpoint}/v1/chat/completions` and `{endpoint}/v1/models` (an endpoint already ending in
`/v1` is taken as it is). The body is relayed as the client sent it, with the model the gateway
asked for. When that model is `auto`, two routing hints go with it, the same in the body and
in headers:

    body:    "metadata": {<the client's own metadata>..., "task": T, "complexity": C}
    headers: x-thanos-task: T
             x-thanos-complexity: C

T and C come from the request's `Context` (`x-thanos-task` / `x-thanos-complexity`, or the
request's own `metadata`); unset, T is "chat" and C is "normal", as in the gateway's task
tables. A concrete model is forwarded without hints.

Which model Omen used is the answer's `model`: `Relayed.model` and `ChatResponse.model` for a
whole answer. For a stream, `relay` reads the first event before it returns, so
`Relayed.model` names Omen's choice before any byte goes to the client (and an error in that
first event can still fall back); the rest of the stream passes through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from thanos_asgi.context import Context, current_context
from thanos_asgi.providers.base import Relayed
from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.sanitize import Decoder
from thanos_asgi.upstream.framing import parse_block

if TYPE_CHECKING:
    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import ProviderSpec
    from thanos_asgi.upstream import Transport

AUTO = "auto"


class _Model(msgspec.Struct):
    model: str = ""


_model = Decoder(_Model)
# The hint headers of the `auto` request being sent: set around `relay`'s send, per task.
_hint_headers: ContextVar[dict[str, str] | None] = ContextVar("thanos_omen_hints", default=None)


def hints(ctx: Context) -> tuple[str, str]:
    """(task, complexity) for Omen, with the gateway's defaults."""
    return ctx.task or "chat", ctx.complexity or "normal"


class Omen(OpenAICompatible):
    kind: ClassVar[str] = "omen"

    def __init__(self, config: ProviderConfig, *, spec: ProviderSpec, transport: Transport) -> None:
        super().__init__(config, spec=spec, transport=transport)
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.default_model = config.model or spec.default_model or AUTO

    @property
    def headers(self) -> dict[str, str]:
        """The instance's headers, plus the routing hints while an `auto` request is sent."""
        extra = _hint_headers.get()
        return {**self._headers, **extra} if extra else self._headers

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._headers = value

    async def relay(self, body: dict[str, Any], model: str, *, stream: bool) -> Relayed:
        token = None
        if model == AUTO:
            task, complexity = hints(current_context.get())
            metadata = body.get("metadata")
            own = metadata if isinstance(metadata, dict) else {}
            body["metadata"] = {**own, "task": task, "complexity": complexity}
            token = _hint_headers.set({"x-thanos-task": task, "x-thanos-complexity": complexity})
        try:
            relayed = await super().relay(body, model, stream=stream)
        finally:
            if token is not None:
                _hint_headers.reset(token)
        if relayed.events is not None:
            await self._read_model(relayed)
        return relayed

    async def _read_model(self, relayed: Relayed) -> None:
        """Take the model from the stream's first event, then put its batch back."""
        assert relayed.events is not None
        first = await anext(relayed.events)  # one or more events, each ending in a blank line
        data = parse_block(first.split(b"\n\n", 1)[0]).data
        # an unreadable chunk is reported by whoever reads it (the translated path does)
        with contextlib.suppress(msgspec.DecodeError):
            relayed.model = _model.decode(data).model or relayed.model
        relayed.events = _Prefixed(first, relayed.events)


class _Prefixed:
    """`rest` with `first` in front of it; after `first`, every step is `rest`'s own."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> _Prefixed:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        first = self._first
        if first is None:
            return self._rest.__anext__()  # no extra frame per event
        self._first = None
        return _ready(first)

    async def aclose(self) -> None:
        closer = getattr(self._rest, "aclose", None)
        if closer is not None:
            await closer()


async def _ready(value: bytes) -> bytes:
    return value
