"""The access log: one JSON line per request, what it holds, and what it never holds."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    AUTH,
    BASIC,
    BODY,
    CLIENT_SECRET,
    KEY,
    QUERY_SECRET,
    TEAM_A,
    call,
    client_for,
    gateway,
)
from tests.upstreams import FakeOpenAI
from thanos_asgi import build_app
from thanos_asgi.frontends.asgi import Receive, Scope, Send
from thanos_asgi.frontends.middleware.access_log import AccessLogMiddleware, AccessRecord
from thanos_asgi.server.logs import configure_logging, redact

pytestmark = pytest.mark.anyio


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "thanos_asgi.access"]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """All the gateway side logged (the test's own client, httpx2, logs its URLs)."""
    records = [r for r in caplog.records if not r.name.startswith("httpx2")]
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # everything any logger says, not only the access log
    return caplog


async def test_one_line_per_request_with_what_was_answered(
    access: pytest.LogCaptureFixture,
) -> None:
    http = client_for(build_app(gateway(FakeOpenAI(), BASIC + TEAM_A)))
    url = f"/v1/chat/completions?key={QUERY_SECRET}&api_key={QUERY_SECRET}"
    response = await http.post(url, json=BODY, headers=AUTH)
    assert response.status_code == 200
    [line] = lines(access)
    assert line["request_id"] == "req-42" and line["key_id"] == "team-a"
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["status"] == 200 and line["outcome"] == "ok"
    assert line["provider"] == "openai" and line["model"] == "gpt-4o-mini"
    assert line["attempts"] == ["openai:ok"]
    assert line["prompt_tokens"] == 5 and line["completion_tokens"] == 7
    assert line["cost_usd"] == pytest.approx((5 * 0.15 + 7 * 0.6) / 1e6)
    assert line["latency_ms"] > 0 and line["overhead_ms"] >= 0
    assert line["ts"] > 1.7e9
    logged = everything_logged(access)
    assert CLIENT_SECRET not in logged and QUERY_SECRET not in logged and KEY not in logged


async def test_a_stream_is_logged_when_it_ends_with_its_usage(
    access: pytest.LogCaptureFixture,
) -> None:
    http = client_for(build_app(gateway(FakeOpenAI(), BASIC + TEAM_A)))
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.text.endswith("data: [DONE]\n\n")
    [line] = lines(access)
    assert line["status"] == 200 and line["outcome"] == "ok"
    assert line["completion_tokens"] == 7 and line["cost_usd"] > 0
    assert line["ttft_ms"] > 0 and line["latency_ms"] >= line["ttft_ms"]
    assert CLIENT_SECRET not in everything_logged(access)


async def test_refused_requests_are_logged_without_the_key(
    access: pytest.LogCaptureFixture,
) -> None:
    http = client_for(build_app(gateway(FakeOpenAI(), BASIC + TEAM_A)))
    wrong = "thk-wrong-SECRET-0000000000"
    response = await http.post("/v1/chat/completions", json=BODY, headers={"x-api-key": wrong})
    assert response.status_code == 401
    [line] = lines(access)
    assert line["status"] == 401 and line["outcome"] == "error" and line["key_id"] is None
    assert "provider" not in line
    assert wrong not in everything_logged(access)


async def test_upstream_failure_is_logged_with_its_status(
    access: pytest.LogCaptureFixture,
) -> None:
    http = client_for(build_app(gateway(FakeOpenAI())))
    response = await http.post("/v1/chat/completions", json={**BODY, "model": "openai/fail-500"})
    assert response.status_code == 502
    [line] = lines(access)
    assert line["status"] == 502 and line["outcome"] == "error" and line["key_id"] is None


async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


async def half_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """A response the client walked away from: the last body message never went out."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})


async def test_crash_and_disconnect_outcomes(access: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError):
        await call(AccessLogMiddleware(crashing))
    await call(AccessLogMiddleware(half_answer))
    crashed, left = lines(access)
    assert crashed["status"] == 500 and crashed["outcome"] == "error"
    assert left["status"] == 200 and left["outcome"] == "disconnected"


async def test_nothing_is_done_when_the_access_log_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="thanos_asgi.access")
    await call(AccessLogMiddleware(half_answer))
    assert lines(caplog) == []


# -- formatting ------------------------------------------------------------------------------


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_format_puts_access_fields_at_the_top(output: io.StringIO) -> None:
    configure_logging("info", "json", stream=output)
    logging.getLogger("thanos_asgi.access").info(AccessRecord(status=200, path="/v1/models"))
    logging.getLogger("thanos_asgi").debug("not at info")
    logging.getLogger("thanos_asgi").warning("upstream said %s", "no")
    access, warning = (json.loads(line) for line in output.getvalue().splitlines())
    assert access["logger"] == "thanos_asgi.access" and access["level"] == "info"
    assert access["status"] == 200 and access["path"] == "/v1/models"
    assert warning["message"] == "upstream said no" and warning["level"] == "warning"


def test_text_format_and_replacing_the_handler(output: io.StringIO) -> None:
    configure_logging("debug", "text", stream=io.StringIO())
    configure_logging("debug", "text", stream=output)  # replaces, does not add
    logging.getLogger("thanos_asgi").debug("hello")
    assert output.getvalue().rstrip().endswith("DEBUG thanos_asgi: hello")
    assert len([h for h in logging.getLogger().handlers if h.get_name() == "thanos"]) == 1
    with pytest.raises(ValueError, match="json or text"):
        configure_logging("info", "yaml")


def test_secrets_are_masked_in_every_line_written(output: io.StringIO) -> None:
    configure_logging("info", "json", stream=output)
    log = logging.getLogger("thanos_asgi")
    log.info("calling https://x.test/v1/models?key=%s&alt=sse", QUERY_SECRET)
    log.info("headers: {'authorization': 'Bearer %s'}", CLIENT_SECRET)
    log.info("config api_key = %s", KEY)
    try:
        raise RuntimeError(f"upstream refused {KEY}")
    except RuntimeError:
        log.exception("failed")
    written = output.getvalue()
    assert CLIENT_SECRET not in written and QUERY_SECRET not in written and KEY not in written
    assert written.count("***") >= 4 and "alt=sse" in written


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer abcdefgh12345678", "Authorization: Bearer ***"),
        ('{"x-api-key": "sk-ant-api03-abcdefghij"}', '{"x-api-key": "***"}'),
        ("GET /v1/x?key=AIza0123456789abcdefghij&alt=sse", "GET /v1/x?key=***&alt=sse"),
        ("token=ya29.a0AfH6SMBxyz", "token=***"),
        ("gho_0123456789abcdefghij in a message", "*** in a message"),
        ("key_id=team-a prompt_tokens=12", "key_id=team-a prompt_tokens=12"),
    ],
)
def test_redact(text: str, masked: str) -> None:
    assert redact(text) == masked
