"""Replay recorded provider traffic as a `Transport`: the gateway's adapters, retries and
front-ends run on the recorded bytes, with no network.

    from thanos_asgi.testing import ReplayTransport, load_cassette

    transport = ReplayTransport(*load_cassette("tests/cassettes/openai/chat-stream.yaml"))
    gateway = Gateway(config, transport=transport)   # every provider answers from the file
    ...
    transport.assert_exhausted()
    assert transport.requests[0].url.path == "/v1/chat/completions"

Interactions are served in order, one per request; `replay` gives the bare handler for an
`httpx.MockTransport` of your own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx

from thanos_asgi.testing.cassettes import Interaction
from thanos_asgi.upstream import HttpxTransport

__all__ = [
    "ChunkedStream",
    "Replay",
    "ReplayTransport",
    "endpoint_suffix",
    "replay",
    "sse_data",
    "sse_events",
]

_VERSION_SEGMENT = re.compile(r"v\d+[a-z0-9]*")


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
            await asyncio.sleep(0)
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


class ReplayTransport(HttpxTransport):
    """A `Transport` answering every request with the next recorded interaction.

    `strict_path` and `chunked` as for `replay`; `handler` is the `Replay` serving them, its
    `requests` the requests received (`httpx.Request`s).
    """

    def __init__(
        self, *interactions: Interaction, strict_path: bool = True, chunked: int | None = None
    ) -> None:
        self.handler = replay(*interactions, strict_path=strict_path, chunked=chunked)
        super().__init__(httpx.AsyncClient(transport=httpx.MockTransport(self.handler)))

    @property
    def requests(self) -> list[httpx.Request]:
        return self.handler.requests

    def assert_exhausted(self) -> None:
        """Assert that every recorded interaction was requested."""
        self.handler.assert_exhausted()


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
