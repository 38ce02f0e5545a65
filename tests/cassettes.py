"""The recorded provider traffic in ``/work/shared/cassettes``, served by the public replay
helpers of ``thanos_asgi.testing`` (this module only knows where the recordings live)::

    handler = replay(*load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml"))
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    ...
    assert handler.requests[0].url.path == "/v1/chat/completions"

See ``/work/shared/cassettes/SOURCES.md`` for where each recording comes from.
"""

from __future__ import annotations

from pathlib import Path

from thanos_asgi.testing import (
    ChunkedStream,
    Interaction,
    Replay,
    endpoint_suffix,
    load_cassette,
    replay,
    sse_data,
    sse_events,
)

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


def all_cassettes() -> list[str]:
    """Names (relative to :data:`CASSETTES`, posix style) of every recording file."""
    return sorted(
        p.relative_to(CASSETTES).as_posix()
        for p in CASSETTES.rglob("*")
        if p.is_file() and p.suffix != ".md"
    )


def load(name: str | Path) -> list[Interaction]:
    """Load a recording, e.g. ``load("openai/error-401-invalid-api-key.mirascope.yaml")``;
    ``name`` is relative to :data:`CASSETTES` (an absolute path is used as is)."""
    path = Path(name)
    return load_cassette(path if path.is_absolute() else CASSETTES / path)
