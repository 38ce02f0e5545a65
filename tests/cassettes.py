"""Load the recorded provider traffic in ``/work/shared/cassettes`` and replay it through httpx.

Every recording format found there (pydantic-ai VCR yaml, stock VCR yaml, vercel/ai
``*.chunks.txt`` SSE payload lists and ``*.json`` response bodies) is turned into a list of
:class:`Interaction`. :func:`replay` builds an ``httpx.MockTransport`` handler that serves them
in order::

    handler = replay(*load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    ...
    assert handler.requests[0].url.path == "/v1/chat/completions"

See ``/work/shared/cassettes/SOURCES.md`` for where each recording comes from.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.lowlevel
import httpx
import yaml

__all__ = [
    "CASSETTES",
    "ChunkedStream",
    "Interaction",
    "Replay",
    "all_cassettes",
    "endpoint_suffix",
    "load",
    "replay",
    "sse_data",
    "sse_events",
]

CASSETTES: Path = Path(__file__).resolve().parents[2] / "shared" / "cassettes"

_GZIP_MAGIC = b"\x1f\x8b"
# Providers whose chunk fixtures are OpenAI-style SSE streams terminated by ``data: [DONE]``.
_OPENAI_STYLE = frozenset({"openai", "xai", "deepseek", "groq", "openrouter"})
_VERSION_SEGMENT = re.compile(r"v\d+[a-z0-9]*")
_ERROR_STATUS_IN_NAME = re.compile(r"(?:^|[-_/])error-(\d{3})-")
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def all_cassettes() -> list[str]:
    """Names (relative to :data:`CASSETTES`, posix style) of every recording file."""
    return sorted(
        p.relative_to(CASSETTES).as_posix()
        for p in CASSETTES.rglob("*")
        if p.is_file() and p.suffix != ".md"
    )


def load(name: str | Path) -> list[Interaction]:
    """Load a recording, e.g. ``load("openai/error-401-invalid-api-key.mirascope.yaml")``.

    ``name`` is relative to :data:`CASSETTES` (an absolute path is used as is).
    """
    path = Path(name)
    if not path.is_absolute():
        path = CASSETTES / path
    try:
        rel = path.resolve().relative_to(CASSETTES).as_posix()
    except ValueError:  # outside CASSETTES: the parent folder still names the provider
        rel = f"{path.parent.name}/{path.name}"
    filename = path.name
    if filename.endswith((".yaml", ".yml")):
        return _load_vcr(path)
    if filename.endswith(".chunks.txt"):
        return [_load_chunks(path, rel)]
    if filename.endswith(".json"):
        return [_load_json_body(path, rel)]
    raise ValueError(f"unknown recording format: {path}")


def _load_vcr(path: Path) -> list[Interaction]:
    with path.open("rb") as f:
        data = yaml.load(f, Loader=_SafeLoader)
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


# --------------------------------------------------------------------------------------------
# replay


def endpoint_suffix(url: str | httpx.URL) -> str:
    """The part of a URL path that identifies the API endpoint, used by ``strict_path``.

    * Google ``.../models/<model>:<method>`` -> ``":<method>"`` (``":streamGenerateContent"``),
      so a different model name still matches.
    * otherwise the last path segment, together with the one before it unless that one is a
      version (``v1``, ``v1beta``): ``/v1/chat/completions`` -> ``"/chat/completions"``,
      ``/v1/messages`` -> ``"/messages"``, ``/api/chat`` -> ``"/api/chat"``.
    """
    path = url.path if isinstance(url, httpx.URL) else urlsplit(url).path
    segments = [s for s in path.split("/") if s]
    if not segments:
        return "/"
    last = segments[-1]
    if ":" in last:
        return ":" + last.rsplit(":", 1)[1]
    if len(segments) >= 2 and not _VERSION_SEGMENT.fullmatch(segments[-2]):
        return f"/{segments[-2]}/{last}"
    return f"/{last}"


class ChunkedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body delivered in pieces of ``size`` bytes (usable by sync and async clients).

    The async iterator yields to the event loop between pieces, so consumers really see
    fragmented input (SSE events and UTF-8 sequences split across reads).
    """

    def __init__(self, body: bytes, size: int) -> None:
        if size < 1:
            raise ValueError("chunk size must be >= 1")
        self._body = body
        self._size = size

    def pieces(self) -> list[bytes]:
        return [self._body[i : i + self._size] for i in range(0, len(self._body), self._size)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces():
            await anyio.lowlevel.checkpoint()
            yield piece


class Replay:
    """An ``httpx.MockTransport`` handler serving recorded interactions in order."""

    def __init__(
        self,
        interactions: tuple[Interaction, ...],
        *,
        strict_path: bool = True,
        chunked: int | None = None,
    ) -> None:
        if chunked is not None and chunked < 1:
            raise ValueError("chunked must be None or >= 1")
        self.interactions = interactions
        self.strict_path = strict_path
        self.chunked = chunked
        self.requests: list[httpx.Request] = []

    @property
    def remaining(self) -> int:
        """How many recorded interactions have not been served yet."""
        return len(self.interactions) - len(self.requests)

    def assert_exhausted(self) -> None:
        """Assert that every recorded interaction was requested."""
        assert self.remaining == 0, (
            f"{self.remaining} of {len(self.interactions)} recorded interactions were not requested"
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        index = len(self.requests)
        self.requests.append(request)
        if index >= len(self.interactions):
            raise AssertionError(
                f"unexpected request #{index + 1} {request.method} {request.url}: "
                f"only {len(self.interactions)} interaction(s) recorded"
            )
        ix = self.interactions[index]
        if self.strict_path and ix.url:
            expected = endpoint_suffix(ix.url)
            assert request.url.path.endswith(expected), (
                f"request #{index + 1}: {request.method} {request.url} does not match recorded "
                f"{ix.method} {ix.url} (path should end with {expected!r})"
            )
            assert request.method == ix.method, (
                f"request #{index + 1}: method {request.method} != recorded {ix.method}"
            )
        if self.chunked is None:
            return httpx.Response(ix.status, headers=ix.headers, content=ix.body)
        return httpx.Response(
            ix.status, headers=ix.headers, stream=ChunkedStream(ix.body, self.chunked)
        )


def replay(
    *interactions: Interaction, strict_path: bool = True, chunked: int | None = None
) -> Replay:
    """A handler for ``httpx.MockTransport`` returning ``interactions`` one per request.

    * More requests than recorded interactions -> ``AssertionError``.
    * ``strict_path``: for interactions with a recorded URL, assert the request's path ends
      with :func:`endpoint_suffix` of the recorded URL and the method matches.
    * ``chunked=N``: deliver the body in N-byte pieces (see :class:`ChunkedStream`) instead of
      one piece.
    * Every request received is appended to ``handler.requests``.
    """
    return Replay(interactions, strict_path=strict_path, chunked=chunked)


# --------------------------------------------------------------------------------------------
# SSE helpers


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def sse_events(body: bytes) -> list[bytes]:
    """Split an SSE body into event blocks (separated by a blank line: ``\\n\\n``,
    ``\\r\\n\\r\\n`` or ``\\r\\r``).

    Line endings inside a block are normalised to ``\\n``, e.g.
    ``b'event: message_start\\ndata: {...}'``. Comment-only blocks (``: OPENROUTER PROCESSING``)
    are kept; empty blocks are dropped.
    """
    events: list[bytes] = []
    block: list[bytes] = []
    for line in _LINE_BREAK.split(body):
        if line:
            block.append(line)
        elif block:
            events.append(b"\n".join(block))
            block = []
    if block:
        events.append(b"\n".join(block))
    return events


def sse_data(body: bytes) -> list[str]:
    """The ``data`` payload of every event that has one (multi-line data joined by ``\\n``),
    e.g. ``['{"id": ...}', '[DONE]']``."""
    out: list[str] = []
    for event in sse_events(body):
        data = [
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        ]
        if data:
            out.append(b"\n".join(data).decode("utf-8"))
    return out
