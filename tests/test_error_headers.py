"""Every error answer carries the headers a success does: `x-request-id`,
`x-thanos-attempts`, `x-thanos-overhead-ms`, and `x-thanos-provider` / `x-thanos-model` once a
provider was tried, whichever layer refused the request (endpoints, auth, limits, body size,
the outermost error handler). Over real loopback, with uvicorn in front."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN, USER, gateway, still_state
from tests.servers import running
from tests.upstreams import FakeOpenAI
from thanos_asgi import build_app
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.frontends.middleware import RequestIdMiddleware

pytestmark = pytest.mark.anyio

LIMITED = "thk_limited-0123456789abcdefghij"
CONFIG = f"""
[server]
max_body_bytes = 4096

[[server.keys]]
id = "admin"
key = "{ADMIN}"
admin = true

[[server.keys]]
id = "user"
key = "{USER}"
models = ["openai/*", "backup/*", "keyless/*"]

[[server.keys]]
id = "limited"
key = "{LIMITED}"
rpm = 1

[providers.openai]
api_key = "sk-test-SECRET-0123456789abcdef"
base_url = "http://openai.test/v1"
model = "gpt-4o-mini"

[providers.backup]
kind = "openai-compatible"
base_url = "http://backup.test/v1"
model = "fail-502"

[providers.other]
kind = "openai-compatible"
base_url = "http://other.test/v1"

[providers.keyless]
kind = "openai"
base_url = "http://keyless.test/v1"

[routing]
max_retries = 0
fallback_chain = ["openai", "backup"]
"""

AS_USER = {"authorization": f"Bearer {USER}"}


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


# (case, method, path, headers, JSON body or raw bytes, status, attempts, (provider, model))
CASES: list[tuple[str, str, str, dict[str, str], Any, int, str, tuple[str, str] | None]] = [
    ("bad json", "POST", "/v1/chat/completions", AS_USER, b"{not json", 400, "", None),
    (
        "upstream 400",
        "POST", "/v1/chat/completions", AS_USER, chat("openai/fail-400"),
        400, "openai:400", ("openai", "fail-400"),
    ),
    ("no key", "POST", "/v1/chat/completions", {}, chat("openai/gpt-4o-mini"), 401, "", None),
    ("not admin", "GET", "/v1/usage", AS_USER, None, 403, "", None),
    (
        "model not allowed",
        "POST", "/v1/chat/completions", AS_USER, chat("other/some-model"), 403, "", None,
    ),
    ("no endpoint", "GET", "/v1/nothing-here", AS_USER, None, 404, "", None),
    ("no model", "POST", "/v1/chat/completions", AS_USER, chat("no-such-model"), 404, "", None),
    (
        "body too large",
        "POST", "/v1/chat/completions", AS_USER, chat("openai/gpt-4o-mini", user="x" * 5000),
        413, "", None,
    ),
    ("wrong method", "DELETE", "/v1/models", AS_USER, None, 405, "", None),
    (
        "upstream 429",
        "POST", "/v1/chat/completions", {**AS_USER, "x-thanos-fallback": "off"},
        chat("openai/fail-429", stream=True), 429, "openai:429", ("openai", "fail-429"),
    ),
    (
        "upstream 500, then the fallback fails",
        "POST", "/v1/chat/completions", AS_USER, chat("openai/fail-500"),
        502, "openai:500,backup:502", ("backup", "fail-502"),
    ),
    (
        "embeddings from a provider without a key",
        "POST", "/v1/embeddings", AS_USER,
        {"model": "keyless/text-embedding-3-small", "input": "hi"},
        503, "keyless:provider_not_configured", ("keyless", "text-embedding-3-small"),
    ),
    (
        "anthropic dialect",
        "POST", "/v1/messages", AS_USER,
        {**chat("openai/fail-503"), "max_tokens": 5},
        502, "openai:503,backup:502", ("backup", "fail-502"),
    ),
]  # fmt: skip


@pytest.fixture
async def base() -> AsyncIterator[str]:
    # a still clock: the limited key's two requests always fall in one minute window
    async with running(build_app(gateway(FakeOpenAI(), CONFIG, state=still_state()))) as url:
        yield url


def assert_carries(response: httpx.Response, attempts: str, tried: tuple[str, str] | None) -> None:
    headers = response.headers
    assert headers["x-request-id"]
    assert headers["x-thanos-attempts"] == attempts
    assert float(headers["x-thanos-overhead-ms"]) >= 0
    if tried is None:
        assert "x-thanos-provider" not in headers and "x-thanos-model" not in headers
    else:
        assert (headers["x-thanos-provider"], headers["x-thanos-model"]) == tried


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "attempts", "tried"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_error_answers_carry_the_thanos_headers(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    attempts: str,
    tried: tuple[str, str] | None,
) -> None:
    sent = {"content": body} if isinstance(body, bytes) else {"json": body}
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.request(method, path, headers=headers, **sent)
    assert response.status_code == status, response.text
    assert_carries(response, attempts, tried)
    if status == 429:
        assert response.headers["retry-after"] == "3"
    if path == "/v1/messages":
        assert response.json()["type"] == "error"  # the client's own dialect
    else:
        assert set(response.json()) == {"error"}


async def test_a_rate_limited_key_gets_them_too(base: str) -> None:
    limited = {"authorization": f"Bearer {LIMITED}", "x-request-id": "req-limited"}
    async with httpx.AsyncClient(base_url=base) as http:
        first = await http.post("/v1/chat/completions", headers=limited, json=chat("gpt-4o-mini"))
        second = await http.post("/v1/chat/completions", headers=limited, json=chat("gpt-4o-mini"))
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["x-request-id"] == "req-limited"
    assert_carries(second, "", None)


class Broken:
    """Middleware with a bug: the outermost error layer answers 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raise RuntimeError("a bug")
        await self.app(scope, receive, send)


async def test_an_unexpected_failure_is_a_500_with_them() -> None:
    app = build_app(gateway(FakeOpenAI(), CONFIG), middleware=[RequestIdMiddleware, Broken])
    async with running(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/v1/models", headers={"x-request-id": "req-500"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "internal_error"
    assert response.headers["x-request-id"] == "req-500"
    assert_carries(response, "", None)
