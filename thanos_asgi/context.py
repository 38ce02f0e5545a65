"""What the front-end knows about the request being served, for the code that serves it.

`Gateway.dispatch` sets `current_context` for the duration of the provider call, so an
adapter that routes on task or complexity (Omen) can read it without every adapter's
signature carrying it. It is a ContextVar: each request's task sees only its own.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class Context:
    """Per-request facts: who asks, and how they want it routed."""

    request_id: str = ""
    key_id: str | None = None
    task: str | None = None  # x-thanos-task: chat, completion, review, ...
    complexity: str | None = None  # x-thanos-complexity: quick, normal, deep
    fallback: bool = True  # x-thanos-fallback: off disables fallback for this request


EMPTY = Context()
current_context: ContextVar[Context] = ContextVar("thanos_context", default=EMPTY)
