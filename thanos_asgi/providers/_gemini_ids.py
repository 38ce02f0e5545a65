"""The ids Gemini does not send, made up the same way for whole answers and streams:
tool-call ids `call_<tag>_<n>` (plus `_ts_<thought signature>`) and completion ids. Why the
signature rides in the id: `_gemini_codec`'s docstring."""

from __future__ import annotations

import hashlib
import re

from thanos_asgi.ids import unique_hex

_SIGNED_ID = re.compile(r"call_[0-9a-f]+_\d+_ts_([A-Za-z0-9_-]+)")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def call_tag(seed: str | bytes) -> str:
    """12 hex digits naming one answer's tool calls."""
    data = seed.encode() if isinstance(seed, str) else seed
    return hashlib.sha256(data).hexdigest()[:12]


def call_id(tag: str, number: int, signature: str | None) -> str:
    """`call_<tag>_<n>`, plus `_ts_<signature>` (URL-safe base64, unpadded) when signed."""
    base = f"call_{tag}_{number}"
    if not signature:
        return base
    packed = signature.replace("+", "-").replace("/", "_").rstrip("=")
    return f"{base}_ts_{packed}" if _URLSAFE.fullmatch(packed) else base


def signature_of(tool_call_id: str) -> str | None:
    """The thought signature `call_id` packed into an id, as Gemini sent it; else None."""
    match = _SIGNED_ID.fullmatch(tool_call_id)
    if match is None:
        return None
    packed = match.group(1)
    return packed.replace("-", "+").replace("_", "/") + "=" * (-len(packed) % 4)


def completion_id(response_id: str) -> str:
    return f"chatcmpl-{response_id or unique_hex(96)}"
