"""Test helpers for apps that embed the gateway: exercise your `/ai` mount without network.

Two ways to stand in for providers:

- a scripted fake provider, `kind = "fake"` in the config (`FakeProvider`): model names pick
  fixed behaviours (`fake/echo`, `fake/error-429`, `fake/slow-500`, `fake/tool-get_weather`,
  `fake/flaky`), or give it a `Script` of answers, streams, tool calls, errors and delays by
  passing `FakeUpstream(script)` as its transport;
- recorded provider traffic replayed by `ReplayTransport(*load_cassette(path))`, which runs
  the real adapters on real recorded bytes.

    config = parse_config('[providers.ai]\\nkind = "fake"\\n')
    fake = FakeUpstream(Script({"gpt-4o": Answer("Paris")}))
    async with Gateway(config, transports={"ai": fake}) as gateway:
        app = build_app(gateway)          # or your host app, mounting the gateway at /ai
        ...                               # call it with httpx.ASGITransport or over loopback
    assert fake.requests[0].json["messages"][-1]["content"] == "capital of France?"

The README's "Testing your app" section has a complete example.
"""

from __future__ import annotations

from thanos_asgi.testing.cassettes import Interaction, load_cassette
from thanos_asgi.testing.fake import FakeProvider
from thanos_asgi.testing.replay import (
    ChunkedStream,
    Replay,
    ReplayTransport,
    endpoint_suffix,
    replay,
    sse_data,
    sse_events,
)
from thanos_asgi.testing.script import Answer, Behaviour, Call, Echo, Fail, Script
from thanos_asgi.testing.upstream import FakeRequest, FakeUpstream

__all__ = [
    "Answer",
    "Behaviour",
    "Call",
    "ChunkedStream",
    "Echo",
    "Fail",
    "FakeProvider",
    "FakeRequest",
    "FakeUpstream",
    "Interaction",
    "Replay",
    "ReplayTransport",
    "Script",
    "endpoint_suffix",
    "load_cassette",
    "replay",
    "sse_data",
    "sse_events",
]
