"""Ids that must be unique but need not be secret: request ids (a client may send its own),
Responses output items, placeholders until a provider names a message, and the completion,
message and tool-call ids a provider does not send (Ollama, the `claude` command, Gemini
without a `responseId`, an OpenAI-compatible server's empty ones for an Anthropic client).

They come from a generator of the gateway's own, not from the kernel (a getrandom(2) each
cost ~0.3 us here, and was 4% of a stored Responses stream's CPU): its own `random.Random`,
so a host app's `random.seed()` cannot make two processes repeat each other, reseeded from
the kernel in every forked worker. An id that grants access (a stored response's, a client
key) comes from `secrets`, never from here.
"""

from __future__ import annotations

import os
import random

__all__ = ["unique_hex"]

_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)


def unique_hex(bits: int) -> str:
    """`bits` random bits (a multiple of 8) as lowercase hex."""
    return _ids.randbytes(bits >> 3).hex()
