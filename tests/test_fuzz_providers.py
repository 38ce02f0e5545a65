"""Property tests for the provider codecs: a canonical request (decoded from a generated client
body) goes to each adapter, and the provider answers with its recorded traffic from
../shared/cassettes, mutated (fields replaced, dropped or retyped; events dropped, repeated or
cut; any bytes; any status). The adapter encodes the request and decodes the answer into a
canonical response or stream, or raises one of our ThanosErrors; never anything else. The
network is mocked at the transport only (httpx.MockTransport)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.cassettes import Interaction, all_cassettes, load
from tests.fuzz_strategies import CHAT, mutated_json_bytes, mutated_lines
from tests.fuzzing import TALLY, examples
from tests.helpers import KEY, gateway
from thanos_asgi.exceptions import ThanosError
from thanos_asgi.frontends import openai
from thanos_asgi.providers import _claude_cli_codec as cli
from thanos_asgi.types import ChatRequest

pytestmark = pytest.mark.fuzz

CONFIG = f"""
[providers.openai]
api_key = "{KEY}"
base_url = "http://openai.test/v1"
[providers.anthropic]
api_key = "{KEY}"
base_url = "http://anthropic.test"
[providers.gemini]
api_key = "{KEY}"
base_url = "http://gemini.test/v1beta"
[providers.ollama]
base_url = "http://ollama.test"
[routing]
max_retries = 0
"""


def _seeds(provider: str) -> list[Interaction]:
    found = []
    for name in all_cassettes():
        if name.startswith(provider + "/") and "openai-compat" not in name and "v1-" not in name:
            found += [i for i in load(name) if i.status < 300 and i.body]
    assert found, provider
    return found


SEEDS = {name: _seeds(name) for name in ("openai", "anthropic", "gemini", "ollama")}


@st.composite
def answers(draw: st.DrawFn, provider: str) -> tuple[int, str, bytes]:
    """(status, content type, body): a recorded answer of `provider`, mutated."""
    seed = draw(st.sampled_from(SEEDS[provider]))
    kind = seed.content_type
    if kind == "text/event-stream":
        body = draw(mutated_lines(seed.body, b"\n\n"))
    elif b"\n{" in seed.body.strip():  # NDJSON
        body = draw(mutated_lines(seed.body, b"\n"))
    else:
        body = draw(mutated_json_bytes(httpx.Response(200, content=seed.body).json()))
    status = draw(st.sampled_from([seed.status] * 9 + [400, 429, 500, 503, 302, 204]))
    return status, kind or "application/json", body


def _request(body: bytes) -> ChatRequest | None:
    try:
        return openai.decode_chat(body)[1]
    except ThanosError:
        return None


REQUESTS = CHAT.flatmap(mutated_json_bytes).map(_request).filter(lambda r: r is not None)


async def _exchange(provider: str, request: ChatRequest, answer: tuple[int, str, bytes]) -> None:
    status, kind, body = answer

    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": kind})

    adapter = gateway(handler, CONFIG).providers[provider]
    TALLY.count("providers")
    try:
        if request.stream:
            stream = await adapter.open_stream(request, "m")
            async for _ in stream:
                pass
        else:
            assert (await adapter.chat(request, "m")).choices is not None
    except ThanosError as exc:
        assert exc.status != 500, exc
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("provider", sorted(SEEDS))
def test_provider_codecs_decode_or_raise_our_errors(provider: str) -> None:
    @examples(800)
    @given(request=REQUESTS, answer=answers(provider))
    def check(request: ChatRequest, answer: tuple[int, str, bytes]) -> None:
        asyncio.run(_exchange(provider, request, answer))

    check()


CLI_LINES = [
    b'{"type":"system","subtype":"init","model":"claude-sonnet-4"}',
    b'{"type":"assistant","message":{"model":"claude-sonnet-4","content":'
    b'[{"type":"thinking","thinking":"hm"},{"type":"text","text":"hi \\u001b[1mthere"}]}}',
    b'{"type":"result","subtype":"success","is_error":false,"result":"hi","stop_reason":'
    b'"end_turn","usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":1}}',
]


@examples(800)
@given(
    request=REQUESTS,
    output=mutated_lines(b"\n".join(CLI_LINES), b"\n"),
)
def test_claude_cli_codec_renders_and_reads_or_raises_our_errors(
    request: ChatRequest, output: bytes
) -> None:
    TALLY.count("providers")
    try:
        cli.render(request)
        stream = cli.Stream("m")
        chunks = []
        for line in output.split(b"\n"):
            stream.feed(line)
            chunks += stream.pending
            stream.pending.clear()
        cli.chat_response(stream, chunks)
    except ThanosError as exc:
        assert exc.status != 500, exc
