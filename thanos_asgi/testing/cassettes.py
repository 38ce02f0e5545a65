"""Recorded provider traffic, read into `Interaction`s (`replay.py` serves them).

Formats read: VCR.py YAML (stock, and pydantic-ai's with `parsed_body`; needs PyYAML, the
`thanos-asgi[testing]` extra), vercel/ai `*.chunks.txt` SSE payload lists and `*.json`
response bodies (for these two the cassette's folder names the provider: `openai/...`).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Interaction", "load_cassette"]

_GZIP_MAGIC = b"\x1f\x8b"
# Providers whose chunk fixtures are OpenAI-style SSE streams terminated by ``data: [DONE]``.
_OPENAI_STYLE = frozenset({"openai", "xai", "deepseek", "groq", "openrouter"})
_ERROR_STATUS_IN_NAME = re.compile(r"(?:^|[-_/])error-(\d{3})-")


@dataclass(frozen=True)
class Interaction:
    """One recorded request/response pair, normalised across recording formats."""

    method: str
    """HTTP method, e.g. ``"POST"`` (``"POST"`` for ``.chunks.txt``/``.json`` fixtures)."""
    url: str
    """Full URL as recorded; ``""`` for ``.chunks.txt``/``.json`` fixtures (no request recorded)."""
    request_body: bytes | None
    """Request body bytes (pydantic-ai ``parsed_body`` re-serialised with ``json.dumps``)."""
    status: int
    headers: dict[str, str]
    """Response headers: lower-cased names, first value only. ``content-encoding`` is always
    dropped (bodies are stored decoded) and ``content-length`` is dropped unless it equals
    ``len(body)``."""
    body: bytes
    """Decoded response body."""

    @property
    def request_json(self) -> Any:
        """The request body parsed as JSON, or ``None`` if no body was recorded."""
        if self.request_body is None:
            return None
        return json.loads(self.request_body)

    @property
    def content_type(self) -> str:
        """The response media type without parameters, e.g. ``"text/event-stream"``."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# --------------------------------------------------------------------------------------------
# loading


def load_cassette(path: str | Path, *, provider: str | None = None) -> list[Interaction]:
    """The interactions of one recording file.

    `provider` says how to frame a `*.chunks.txt` SSE payload list and defaults to the name
    of the file's folder (`anthropic/...`, `gemini/...`, `openai/...`).
    """
    path = Path(path)
    rel = f"{provider or path.parent.name}/{path.name}"
    if path.name.endswith((".yaml", ".yml")):
        return _load_vcr(path)
    if path.name.endswith(".chunks.txt"):
        return [_load_chunks(path, rel)]
    if path.name.endswith(".json"):
        return [_load_json_body(path, rel)]
    raise ValueError(f"unknown recording format: {path}")


def _load_vcr(path: Path) -> list[Interaction]:
    try:
        import yaml
    except ImportError:
        raise ImportError(
            "reading VCR cassettes needs PyYAML: pip install 'thanos-asgi[testing]'"
        ) from None
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as f:
        data = yaml.load(f, Loader=loader)
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        raise ValueError(f"{path}: not a VCR cassette (no 'interactions' list)")
    return [_vcr_interaction(path, i, item) for i, item in enumerate(data["interactions"])]


def _vcr_interaction(path: Path, index: int, item: Mapping[str, Any]) -> Interaction:
    request: Mapping[str, Any] = item["request"]
    response: Mapping[str, Any] = item["response"]
    raw_headers = _first_values(response.get("headers") or {})

    # Request body: pydantic-ai stores JSON parsed, stock VCR stores the raw string.
    if "parsed_body" in request:
        request_body: bytes | None = json.dumps(request["parsed_body"]).encode()
    else:
        request_body = _body_bytes(request.get("body"))

    # Response body.
    if "parsed_body" in response:
        body = json.dumps(response["parsed_body"]).encode()
    else:
        body = _body_bytes(response.get("body")) or b""
    encoding = raw_headers.get("content-encoding", "").strip().lower()
    if body.startswith(_GZIP_MAGIC) or encoding in ("gzip", "x-gzip"):
        if body.startswith(_GZIP_MAGIC):
            body = gzip.decompress(body)
        # else: the recorder already decoded it and left the header behind.
    elif encoding not in ("", "identity"):
        raise ValueError(f"{path} #{index}: cannot decode content-encoding {encoding!r}")

    status = response["status"]
    status_code = int(status["code"] if isinstance(status, Mapping) else status)
    return Interaction(
        method=str(request.get("method", "GET")).upper(),
        url=str(request.get("uri", "")),
        request_body=request_body,
        status=status_code,
        headers=_normalise_headers(raw_headers, body),
        body=body,
    )


def _body_bytes(body: Any) -> bytes | None:
    """A VCR body: ``None``, a str/bytes, or ``{"string": str|bytes}``."""
    if isinstance(body, Mapping):
        body = body.get("string")
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    raise TypeError(f"unexpected body type {type(body).__name__}")


def _first_values(headers: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = str(name).lower()
        if key in out:  # same header under two spellings: keep the first
            continue
        if isinstance(value, list):
            if not value:
                continue
            value = value[0]
        out[key] = str(value)
    return out


def _normalise_headers(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    """Drop headers that would lie about the (decoded, maybe re-serialised) body we return."""
    out = {k: v for k, v in headers.items() if k != "content-encoding"}
    length = out.get("content-length")
    if length is not None and (not length.strip().isdigit() or int(length) != len(body)):
        del out["content-length"]
    return out


def _provider(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else ""


def _load_chunks(path: Path, rel: str) -> Interaction:
    provider = _provider(rel)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if provider == "gemini":
        sep = b"\r\n\r\n"
        trailer = b""
    elif provider == "anthropic":
        sep = b"\n\n"
        trailer = b""
    elif provider in _OPENAI_STYLE:
        sep = b"\n\n"
        trailer = b"data: [DONE]" + sep
    else:
        raise ValueError(f"{rel}: don't know the SSE framing for provider {provider!r}")
    parts: list[bytes] = []
    for line in lines:
        event = b""
        if provider == "anthropic":
            event = b"event: " + str(json.loads(line)["type"]).encode() + b"\n"
        parts.append(event + b"data: " + line.encode() + sep)
    parts.append(trailer)
    return Interaction(
        method="POST",
        url="",
        request_body=None,
        status=200,
        headers={"content-type": "text/event-stream"},
        body=b"".join(parts),
    )


def _load_json_body(path: Path, rel: str) -> Interaction:
    body = path.read_bytes()
    data = json.loads(body)
    status = 200
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            status = code  # Gemini error shape carries the HTTP status
        elif match := _ERROR_STATUS_IN_NAME.search(rel):
            # OpenAI error shape has no HTTP status (code is a string); the fixture's
            # descriptive file name ("error-400-...") records it.
            status = int(match.group(1))
    return Interaction(
        method="POST",
        url="",
        request_body=None,
        status=status,
        headers={"content-type": "application/json"},
        body=body,
    )
