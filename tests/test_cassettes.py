"""Checks for tests/cassettes.py against every recording in /work/shared/cassettes."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import re

import httpx
import pytest
import yaml

try:  # tests/ as a package (tests/__init__.py or rootdir on sys.path)
    from tests.cassettes import (
        CASSETTES,
        ChunkedStream,
        Interaction,
        all_cassettes,
        endpoint_suffix,
        load,
        replay,
        sse_data,
        sse_events,
    )
except ModuleNotFoundError:  # pytest's default rootdir-less 'prepend' import of tests/
    from cassettes import (
        CASSETTES,
        ChunkedStream,
        Interaction,
        all_cassettes,
        endpoint_suffix,
        load,
        replay,
        sse_data,
        sse_events,
    )

pytestmark = pytest.mark.skipif(
    not CASSETTES.is_dir(), reason=f"recordings not available at {CASSETTES}"
)

NAMES: list[str] = all_cassettes() if CASSETTES.is_dir() else []
PLACEHOLDER_URL = "https://replay.invalid/v1/chat/completions"
_DATA_LINE = re.compile(rb"^data:", re.MULTILINE)


def _is_json_type(ix: Interaction) -> bool:
    ct = ix.content_type
    return ct == "application/json" or ct.endswith("+json")


def _send_all(name: str, interactions: list[Interaction], client: httpx.Client) -> None:
    for i, ix in enumerate(interactions):
        response = client.request(ix.method, ix.url or PLACEHOLDER_URL, content=ix.request_body)
        assert response.status_code == ix.status, (name, i)
        assert response.content == ix.body, (name, i)
        for key, value in ix.headers.items():
            assert response.headers[key] == value, (name, i, key)


# --------------------------------------------------------------------------------------------
# every recording


def test_all_provider_folders_have_recordings() -> None:
    assert NAMES, "no recordings found"
    assert "SOURCES.md" not in NAMES
    folders = {name.split("/", 1)[0] for name in NAMES}
    assert {"openai", "anthropic", "gemini"} <= folders
    for folder in folders:
        assert any(n.startswith(folder + "/") for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_load_normalises(name: str) -> None:
    interactions = load(name)
    assert len(interactions) >= 1
    for i, ix in enumerate(interactions):
        where = (name, i)
        assert isinstance(ix.status, int), where
        assert 100 <= ix.status < 600, where
        assert ix.method.isupper(), where
        assert ix.url == "" or ix.url.startswith(("http://", "https://")), where
        assert ix.request_body is None or isinstance(ix.request_body, bytes), where
        if ix.request_body is not None:
            assert ix.request_json is not None, where  # every recorded request body is JSON
        else:
            assert ix.request_json is None, where

        assert isinstance(ix.body, bytes), where
        assert not ix.body.startswith(b"\x1f\x8b"), f"{where}: gzip body not decoded"
        assert all(k == k.lower() and isinstance(v, str) for k, v in ix.headers.items()), where
        assert "content-encoding" not in ix.headers, where
        if "content-length" in ix.headers:
            assert int(ix.headers["content-length"]) == len(ix.body), where

        if _is_json_type(ix):
            json.loads(ix.body)
        elif ix.content_type == "application/x-ndjson":
            lines = [line for line in ix.body.splitlines() if line.strip()]
            assert lines, where
            for line in lines:
                json.loads(line)
        elif ix.content_type == "text/event-stream":
            assert _DATA_LINE.search(ix.body), f"{where}: SSE body without a data: line"
            for payload in sse_data(ix.body):
                if payload != "[DONE]":
                    json.loads(payload)


@pytest.mark.parametrize("name", NAMES)
def test_replay_serves_in_order(name: str) -> None:
    interactions = load(name)
    handler = replay(*interactions)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        _send_all(name, interactions, client)
        handler.assert_exhausted()
        with pytest.raises(AssertionError, match="unexpected request"):
            client.post(PLACEHOLDER_URL)
    assert len(handler.requests) == len(interactions) + 1
    for request, ix in zip(handler.requests, interactions, strict=False):
        assert request.method == ix.method
        assert request.content == (ix.request_body or b"")
        if ix.url:
            assert str(request.url) == str(httpx.URL(ix.url))


@pytest.mark.parametrize("name", NAMES)
def test_replay_chunked_async(name: str) -> None:
    interactions = load(name)
    size = 7
    handler = replay(*interactions, chunked=size)

    async def run() -> list[list[bytes]]:
        received: list[list[bytes]] = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            for ix in interactions:
                request = client.build_request(
                    ix.method, ix.url or PLACEHOLDER_URL, content=ix.request_body
                )
                response = await client.send(request, stream=True)
                try:
                    assert response.status_code == ix.status
                    received.append([piece async for piece in response.aiter_raw()])
                finally:
                    await response.aclose()
        return received

    received = asyncio.run(run())
    assert len(received) == len(interactions)
    for ix, pieces in zip(interactions, received, strict=True):
        assert b"".join(pieces) == ix.body
        assert all(0 < len(piece) <= size for piece in pieces)
        assert len(pieces) == math.ceil(len(ix.body) / size)
    handler.assert_exhausted()


# --------------------------------------------------------------------------------------------
# spot checks with concrete values


def test_pydantic_ai_openai_stream_tool_calls() -> None:
    interactions = load("openai/chat-stream-tool-calls-include-usage.pydantic-ai.yaml")
    assert len(interactions) == 2
    first = interactions[0]
    assert first.method == "POST"
    assert first.url == "https://api.openai.com/v1/chat/completions"
    assert first.request_json["model"] == "gpt-4o-mini"
    assert first.request_json["stream_options"] == {"include_usage": True}
    # parsed_body is re-serialised with json.dumps
    assert first.request_body == json.dumps(first.request_json).encode()
    assert first.status == 200
    assert first.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert first.headers["access-control-expose-headers"] == "X-Request-ID"  # first of 3 values
    assert b'"finish_reason":"tool_calls"' in first.body
    assert first.body.endswith(b"data: [DONE]\n\n")
    data = sse_data(first.body)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["choices"] == []  # usage-only chunk
    assert json.loads(data[-2])["usage"]["total_tokens"] == 68
    assert interactions[1].request_json["messages"][-1]["role"] == "tool"


def test_pydantic_ai_parsed_response_body_drops_stale_content_length() -> None:
    (ix,) = load("anthropic/messages-nonstream-simple-system.pydantic-ai.yaml")
    # recorded content-length 433 is the wire size; the re-serialised body is longer
    assert "content-length" not in ix.headers
    assert json.loads(ix.body)["stop_reason"] == "end_turn"
    assert ix.request_json["system"]


def test_anthropic_chunks_get_event_lines() -> None:
    name = "anthropic/messages-stream-text.vercel-ai.chunks.txt"
    (ix,) = load(name)
    types = [json.loads(line)["type"] for line in (CASSETTES / name).read_text().splitlines()]
    assert ix.url == ""
    assert ix.request_body is None
    assert ix.status == 200
    assert ix.headers == {"content-type": "text/event-stream"}
    assert ix.body.startswith(b'event: message_start\ndata: {"type":"message_start"')
    events = sse_events(ix.body)
    assert len(events) == 12  # one per line of the fixture, no [DONE]
    assert [e.split(b"\n", 1)[0] for e in events] == [f"event: {t}".encode() for t in types]
    assert types.count("content_block_delta") == 6
    assert events[-1] == b'event: message_stop\ndata: {"type":"message_stop"}'
    assert b"\r\n" not in ix.body
    assert b"[DONE]" not in ix.body


def test_gemini_chunks_use_crlf_framing() -> None:
    name = "gemini/stream-function-call-thought-signature.vercel-ai.chunks.txt"
    (ix,) = load(name)
    lines = (CASSETTES / name).read_bytes().splitlines()
    assert len(lines) == 2
    assert ix.body == b"".join(b"data: " + line + b"\r\n\r\n" for line in lines)
    assert b"[DONE]" not in ix.body
    assert b"event:" not in ix.body
    first, last = sse_events(ix.body)
    part = json.loads(first.removeprefix(b"data: "))["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"]["name"] == "weather"
    assert "thoughtSignature" in part
    assert json.loads(last.removeprefix(b"data: "))["candidates"][0]["finishReason"] == "STOP"


def test_openai_style_chunks_end_with_done() -> None:
    name = "openai/chat-stream-text-include-usage.vercel-ai.chunks.txt"
    (ix,) = load(name)
    lines = [ln for ln in (CASSETTES / name).read_text().splitlines() if ln.strip()]
    data = sse_data(ix.body)
    assert data == [*lines, "[DONE]"]
    assert ix.body.endswith(b"}\n\ndata: [DONE]\n\n")
    for provider_file in (
        "xai/chat-stream-text.vercel-ai.chunks.txt",
        "deepseek/chat-stream-tool-call.vercel-ai.chunks.txt",
        "groq/chat-stream-tool-call.vercel-ai.chunks.txt",
    ):
        assert load(provider_file)[0].body.endswith(b"data: [DONE]\n\n")


def test_openai_401_mirascope() -> None:
    (ix,) = load("openai/error-401-invalid-api-key.mirascope.yaml")
    assert ix.status == 401
    assert ix.headers["content-type"] == "application/json; charset=utf-8"
    assert ix.headers["content-length"] == "267" == str(len(ix.body))
    assert ix.headers["set-cookie"].startswith("__cf_bm=")  # first of two cookies
    assert json.loads(ix.body)["error"]["code"] == "invalid_api_key"
    assert ix.body.startswith(b'{\n    "error": {')  # OpenAI pretty-prints errors
    assert ix.request_json == {
        "messages": [{"role": "user", "content": "This should fail with AuthenticationError"}],
        "model": "gpt-4o",
    }


def test_gzip_mirascope_body_is_decoded() -> None:
    name = "openai/chat-nonstream-tool-calls-roundtrip.mirascope.yaml"
    raw = yaml.safe_load((CASSETTES / name).read_bytes())
    recorded = raw["interactions"][0]["response"]["body"]["string"]
    assert isinstance(recorded, bytes)
    assert recorded.startswith(b"\x1f\x8b")  # the file really stores gzip

    interactions = load(name)
    assert len(interactions) == 6
    first = interactions[0]
    assert first.body == gzip.decompress(recorded)
    assert "content-encoding" not in first.headers
    assert "content-length" not in first.headers
    completion = json.loads(first.body)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert len(completion["choices"][0]["message"]["tool_calls"]) == 2


def test_gzip_sse_body_is_decoded() -> None:
    (ix,) = load("anthropic/messages-stream-tool-use-gzip-body.llm-anthropic.yaml")
    assert ix.body.startswith(b"event: message_start\ndata: ")
    assert "content-encoding" not in ix.headers
    assert sse_events(ix.body)[-1].startswith(b"event: message_stop\ndata: ")


def test_vercel_json_status() -> None:
    (gemini,) = load("gemini/error-429-resource-exhausted-retry-info.vercel-ai.json")
    assert gemini.status == 429
    assert gemini.headers == {"content-type": "application/json"}
    assert json.loads(gemini.body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    # OpenAI error bodies carry no HTTP status (code is a string): taken from the file name
    (openai,) = load("openai/error-400-unsupported-parameter-body.vercel-ai.json")
    assert openai.status == 400
    assert json.loads(openai.body)["error"]["code"] == "unsupported_parameter"
    (ok,) = load("deepseek/chat-nonstream-reasoning.vercel-ai.json")
    assert ok.status == 200
    assert ok.method == "POST"
    assert ok.url == ""


def test_head_request_in_ollama_cassette() -> None:
    chat, head = load("ollama/api-chat-ndjson-stream-text.magentic.yaml")
    assert chat.content_type == "application/x-ndjson"
    assert json.loads(chat.body.splitlines()[-1])["done"] is True
    assert head.method == "HEAD"
    assert head.status == 401
    assert head.request_body is None
    assert head.body == b""
    assert "content-length" not in head.headers  # recorded 29 for an empty HEAD body


def test_absolute_path_load() -> None:
    name = "groq/chat-stream-tool-call.vercel-ai.chunks.txt"
    assert load(CASSETTES / name) == load(name)


# --------------------------------------------------------------------------------------------
# replay behaviour


@pytest.mark.parametrize(
    ("url", "suffix"),
    [
        ("https://api.openai.com/v1/chat/completions", "/chat/completions"),
        ("https://api.deepseek.com/chat/completions", "/chat/completions"),
        ("https://api.groq.com/openai/v1/chat/completions", "/chat/completions"),
        ("https://api.anthropic.com/v1/messages?beta=true", "/messages"),
        ("http://localhost:11434/api/chat", "/api/chat"),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash"
            ":streamGenerateContent?alt=sse",
            ":streamGenerateContent",
        ),
        ("https://example.com/", "/"),
    ],
)
def test_endpoint_suffix(url: str, suffix: str) -> None:
    assert endpoint_suffix(url) == suffix
    assert endpoint_suffix(httpx.URL(url)) == suffix


def test_strict_path_catches_wrong_endpoint() -> None:
    interactions = load("gemini/streamGenerateContent-sse-text.pydantic-ai.yaml")
    base = "https://generativelanguage.googleapis.com/v1beta/models"

    handler = replay(*interactions)
    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(AssertionError, match=":streamGenerateContent"),
    ):
        client.post(f"{base}/gemini-2.0-flash-exp:generateContent")
    assert len(handler.requests) == 1

    # another model name on the right endpoint is fine
    handler = replay(*interactions)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = client.post(f"{base}/my-alias:streamGenerateContent", params={"alt": "sse"})
    assert response.status_code == 200
    assert handler.requests[0].url.params["alt"] == "sse"

    # wrong method
    handler = replay(*interactions)
    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(AssertionError, match="method GET"),
    ):
        client.get(f"{base}/gemini-2.0-flash-exp:streamGenerateContent")

    # strict_path=False accepts anything
    handler = replay(*interactions, strict_path=False)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert client.get("https://elsewhere.test/x").status_code == 200


def test_replay_remaining_and_exhausted() -> None:
    interactions = load("openai/error-404-model-not-found-stream-request-gzip.mirascope.yaml")
    assert len(interactions) == 2
    handler = replay(*interactions)
    assert handler.remaining == 2
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = client.post("https://api.openai.com/v1/chat/completions", json={"x": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert handler.remaining == 1
    with pytest.raises(AssertionError, match="1 of 2"):
        handler.assert_exhausted()


def test_chunked_stream_fragments_sse_for_sync_clients_too() -> None:
    (ix,) = load("anthropic/messages-stream-tool-use-input-json-delta.vercel-ai.chunks.txt")
    handler = replay(ix, chunked=5)
    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("POST", PLACEHOLDER_URL) as response,
    ):
        pieces = list(response.iter_raw())
    assert b"".join(pieces) == ix.body
    assert {len(p) for p in pieces[:-1]} == {5}
    with pytest.raises(ValueError):
        ChunkedStream(b"x", 0)
    with pytest.raises(ValueError):
        replay(ix, chunked=0)


# --------------------------------------------------------------------------------------------
# SSE helpers


def test_sse_events_handles_lf_crlf_and_comments() -> None:
    assert sse_events(b"data: 1\n\ndata: 2\n\n") == [b"data: 1", b"data: 2"]
    assert sse_events(b"data: 1\r\n\r\ndata: 2\r\n\r\n") == [b"data: 1", b"data: 2"]
    assert sse_events(b"event: a\r\ndata: 1\r\n\r\n\n\ndata: 2") == [
        b"event: a\ndata: 1",
        b"data: 2",
    ]
    assert sse_events(b": keepalive\n\ndata: x\n\n") == [b": keepalive", b"data: x"]
    assert sse_events(b"") == []
    assert sse_data(b": c\n\nevent: e\ndata: a\ndata:b\n\ndata: [DONE]\n\n") == [
        "a\nb",
        "[DONE]",
    ]


def test_sse_events_on_recordings() -> None:
    (ix,) = load("openrouter/chat-stream-processing-comments-reasoning.pydantic-ai.yaml")
    events = sse_events(ix.body)
    assert events[0] == b": OPENROUTER PROCESSING"
    assert events[-1] == b"data: [DONE]"
    error_chunk = [json.loads(d) for d in sse_data(ix.body)[:-1] if '"error"' in d][-1]
    assert error_chunk["error"]["code"] == 400

    stream = load("groq/error-stream-tool-use-failed.pydantic-ai.yaml")[0]
    last = sse_events(stream.body)[-1]
    assert last.startswith(b"event: error\ndata: ")
    assert b"[DONE]" not in stream.body
