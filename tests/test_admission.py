"""One admission path: every route that reaches a provider x every key policy (model allow-list,
requests per minute, tokens per minute, budget), over HTTP (full middleware stack, and the bare
ThanosApp a host app mounts behind its own auth) and gRPC. A route added to the app without a
row here fails `test_every_route_that_reaches_a_provider_has_a_row`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import client_for, config, still_state
from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.frontends import gemini
from thanos_asgi.frontends.app import ThanosApp
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.governance.keys import KeyRing
from thanos_asgi.governance.ledger import Ledger

pytestmark = pytest.mark.anyio

# $1 per token in and out on "paid": any request's worst case is far above the $1 budget
KEYS = {
    "open": "",
    "allow": 'models = ["paid/*"]',
    "rpm": "rpm = 1",
    "tpm": "tpm = 3",
    "budget": "budget_usd = 1.0",
}
CONFIG = """
[providers.paid]
kind = "openai-compatible"
base_url = "http://paid.test/v1"
models = ["m", "e"]

[cost.providers.paid]
input_cost_per_1m_tokens = 1000000
output_cost_per_1m_tokens = 1000000

[providers.ollama]
base_url = "http://ollama.test"
model = "llama3"

[routing]
max_retries = 0
""" + "".join(
    f'[[server.keys]]\nid = "{k}"\nkey = "thk-{k}-0123456789abcdef"\n{v}\n' for k, v in KEYS.items()
)

CHAT = [{"role": "user", "content": "hello there"}]
TEXT = "x" * 40  # about 10 tokens: more than the tpm key's 3


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": CHAT, "max_tokens": 5}


ALL, SPENDS_NOTHING = frozenset(KEYS), frozenset({"open", "allow", "rpm"})
GEMINI = "/v1beta/models/{model}:"
CONTENT = [{"role": "user", "parts": [{"text": "hello there"}]}]
EMBED = {"content": {"parts": [{"text": TEXT}]}}

# route -> (request body for `model`, the model it names when allowed, policies that apply);
# where no provider is called and nothing is spent, tokens and budget do not apply
ROUTES: dict[str, tuple[Callable[[str], dict[str, Any]], str, frozenset[str]]] = {
    "/v1/chat/completions": (chat, "paid/m", ALL),
    "/v1/chat": (chat, "paid/m", ALL),
    "/v1/completions": (
        lambda m: {"model": m, "prompt": "hello there", "max_tokens": 5},
        "paid/m",
        ALL,
    ),
    "/v1/embeddings": (lambda m: {"model": m, "input": TEXT}, "paid/e", ALL),
    "/v1/messages": (lambda m: {"model": m, "messages": CHAT, "max_tokens": 5}, "paid/m", ALL),
    "/v1/messages/count_tokens": (
        lambda m: {"model": m, "messages": CHAT},
        "paid/m",
        SPENDS_NOTHING,
    ),
    "/v1/responses": (
        lambda m: {"model": m, "input": "hello there", "max_output_tokens": 5},
        "paid/m",
        ALL,
    ),
    "/v1/responses/input_tokens": (
        lambda m: {"model": m, "input": "hello there"},
        "paid/m",
        SPENDS_NOTHING,
    ),
    "/api/chat": (
        lambda m: {"model": m, "messages": CHAT, "stream": False, "options": {"num_predict": 5}},
        "paid/m",
        ALL,
    ),
    "/api/generate": (
        lambda m: {"model": m, "prompt": "hello", "stream": False, "options": {"num_predict": 5}},
        "paid/m",
        ALL,
    ),
    "/api/embed": (lambda m: {"model": m, "input": TEXT}, "paid/e", ALL),
    "/api/embeddings": (lambda m: {"model": m, "prompt": TEXT}, "paid/e", ALL),
    GEMINI + "generateContent": (
        lambda m: {"contents": CONTENT, "generationConfig": {"maxOutputTokens": 5}},
        "paid/m",
        ALL,
    ),
    GEMINI + "streamGenerateContent": (
        lambda m: {"contents": CONTENT, "generationConfig": {"maxOutputTokens": 5}},
        "paid/m",
        ALL,
    ),
    GEMINI + "countTokens": (lambda m: {"contents": CONTENT}, "paid/m", SPENDS_NOTHING),
    GEMINI + "embedContent": (lambda m: EMBED, "paid/e", ALL),
    GEMINI + "batchEmbedContents": (lambda m: {"requests": [EMBED]}, "paid/e", ALL),
}
# routes that never send a client's request to a provider
NO_PROVIDER = {
    "/v1/models",
    "/openapi.json",
    "/v1/usage",
    "/health",
    "/health/ready",
    "/metrics",
    "/auth/github",
    "/auth/anthropic",
    "/auth/status",
    "/api/tags",
    "/api/show",
    "/api/version",
    "/api/ps",
    # the admin API and dashboard (tests/test_admin_api.py): none reaches a provider
    "/admin/session",
    "/admin/keys",
    "/admin/keys/{id}",
    "/admin/providers",
    "/admin/requests",
    "/admin/requests/{request_id}",
    "/admin/stats",
    "/admin/config",
    "/admin/config/validate",
    "/admin/config/reload",
    "/admin/events",
    "/admin/audit",
    "/dashboard",
    "/dashboard/{file}",
}


async def upstream(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path.endswith("/embeddings"):
        usage = {"prompt_tokens": 10, "total_tokens": 10}
        data = [{"object": "embedding", "index": 0, "embedding": [0.5]}]
        answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return httpx.Response(200, json=answer)
    if request.url.host == "ollama.test":  # a key that may not use it must never get here
        if request.url.path == "/api/embed":
            return httpx.Response(200, json={"model": "llama3", "embeddings": [[0.5]]})
        message = {"role": "assistant", "content": "free"}
        return httpx.Response(200, json={"model": "llama3", "message": message, "done": True})
    message = {"role": "assistant", "content": "hi"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        },
    )


def make(tmp_path: Path | None = None) -> Gateway:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(upstream)))
    ledger = Ledger(tmp_path / "usage.db") if tmp_path else None
    # a still clock: the rpm key's two requests always fall in one minute window
    return Gateway(config(CONFIG), transport=transport, ledger=ledger, state=still_state())


class HostAuth:
    """A host app's own auth in front of a bare ThanosApp: no RateLimitMiddleware at all."""

    def __init__(self, app: ASGIApp, keyring: KeyRing) -> None:
        self.app, self.keyring = app, keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            secret = dict(scope["headers"]).get(b"x-api-key", b"").decode()
            policy = self.keyring.lookup(secret)
            assert policy is not None
            scope["thanos.auth"] = {"key_id": policy.key_id, "policy": policy}
        await self.app(scope, receive, send)


def outcome(response: httpx.Response) -> str:
    """ok, denied (403), rate (429 rate limit) or budget (429 budget)."""
    if response.status_code == 200:
        return "ok"
    text = response.text
    if response.status_code == 403:
        return "denied"
    assert response.status_code == 429, text
    return "budget" if "budget" in text else "rate"


# what the second of two requests becomes, by policy, when the policy applies
EXPECTED = {"open": "ok", "allow": "denied", "rpm": "rate", "tpm": "rate", "budget": "budget"}


def test_every_route_that_reaches_a_provider_has_a_row() -> None:
    """The app's fixed routes, and the methods of the prefix-routed Gemini API."""
    app = ThanosApp(make())
    routes = set(app.routes) | {GEMINI + method for method in gemini._ACTIONS}
    assert routes - NO_PROVIDER == set(ROUTES), "a new route needs a row in ROUTES"


@pytest.mark.parametrize("stack", ["middleware", "bare"])
@pytest.mark.parametrize("policy", list(KEYS))
@pytest.mark.parametrize("route", list(ROUTES))
async def test_route_x_policy(route: str, policy: str, stack: str) -> None:
    body, allowed, applies = ROUTES[route]
    gateway = make()
    app: ASGIApp
    if stack == "middleware":
        app = build_app(gateway)
    else:
        app = HostAuth(ThanosApp(gateway), KeyRing(gateway.config.server.keys))
    model = "ollama/llama3" if policy == "allow" else allowed
    headers = {"x-api-key": f"thk-{policy}-0123456789abcdef"}
    async with client_for(app) as http:
        path = route.format(model=model)
        first = await http.post(path, json=body(model), headers=headers)
        second = await http.post(path, json=body(model), headers=headers)
    await gateway.aclose()
    want = EXPECTED[policy] if policy in applies else "ok"
    if policy == "rpm":  # the first request of the minute passes
        assert outcome(first) == "ok", first.text
    else:
        assert outcome(first) == want, first.text
    assert outcome(second) == want, second.text


async def test_embeddings_rows_carry_the_key_and_the_cost(tmp_path: Path) -> None:
    gateway = make(tmp_path)
    headers = {"x-api-key": "thk-open-0123456789abcdef"}
    async with client_for(build_app(gateway)) as http:
        response = await http.post(
            "/v1/embeddings", json={"model": "paid/e", "input": TEXT}, headers=headers
        )
    assert response.status_code == 200
    await gateway.aclose()
    [row] = Ledger(tmp_path / "usage.db").rows()
    assert (row.key_id, row.provider, row.prompt_tokens) == ("open", "paid", 10)
    assert row.cost_usd == pytest.approx(10.0)


async def test_a_spent_key_cannot_embed_and_the_refusal_says_what_is_left() -> None:
    text = CONFIG.replace("budget_usd = 1.0", "budget_usd = 0.001")
    gateway = Gateway(
        config(text),
        transport=HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(upstream))),
    )
    headers = {"x-api-key": "thk-budget-0123456789abcdef"}
    async with client_for(build_app(gateway)) as http:
        response = await http.post(
            "/v1/embeddings", json={"model": "paid/e", "input": TEXT}, headers=headers
        )
    await gateway.aclose()
    assert response.status_code == 429
    message = response.json()["error"]["message"]
    assert "budget of $0.001 this month has $0.001 left" in message
    assert "would cost up to $40.00" in message  # 40 bytes: at most 40 tokens at $1
    assert 0 < int(response.headers["retry-after"]) <= 31 * 24 * 3600


async def test_keys_with_limits_get_ratelimit_headers_on_every_answer() -> None:
    text = CONFIG + '[[server.keys]]\nid = "both"\nkey = "thk-both-0123456789abcdef"\nrpm = 2\n'
    gateway = Gateway(
        config(text + "tpm = 30\n"),
        transport=HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(upstream))),
        state=still_state(),  # the three requests in one minute window
    )
    headers = {"x-api-key": "thk-both-0123456789abcdef"}
    big = {"model": "paid/m", "messages": CHAT, "max_tokens": 100}
    async with client_for(build_app(gateway)) as http:
        ok = await http.post("/v1/chat/completions", json=chat("paid/m"), headers=headers)
        over_tokens = await http.post("/v1/chat/completions", json=big, headers=headers)
        over_requests = await http.post("/v1/chat/completions", json=big, headers=headers)
    await gateway.aclose()
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-requests"] == "2"
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    assert ok.headers["x-ratelimit-limit-tokens"] == "30"
    assert ok.headers["x-ratelimit-remaining-tokens"] == str(30 - 10 - 5)  # estimate: 10 + 5
    for response in (ok, over_tokens, over_requests):
        for name in ("requests", "tokens") if response is not over_requests else ("requests",):
            assert re.fullmatch(r"\d+ms|\d+s|1m0s", response.headers[f"x-ratelimit-reset-{name}"])
    assert over_tokens.status_code == 429 and "tokens per minute" in over_tokens.text
    assert over_tokens.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(over_tokens.headers["x-ratelimit-remaining-tokens"]) < 100
    assert int(over_tokens.headers["retry-after"]) >= 1
    assert over_requests.status_code == 429 and "requests per minute" in over_requests.text
    assert over_requests.headers["x-ratelimit-remaining-requests"] == "0"


GRPC = {"open": None, "allow": "PERMISSION_DENIED", "rpm": "RESOURCE_EXHAUSTED"}


@pytest.mark.parametrize("policy", list(KEYS))
async def test_grpc_chat_x_policy(policy: str) -> None:
    """gRPC's ChatCompletion is a route too: the same policies, as gRPC status codes."""
    grpc = pytest.importorskip("grpc")
    from tests.servers import free_port
    from thanos_asgi.grpc import start_grpc
    from thanos_asgi.grpc import thanos_pb2 as pb
    from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc

    gateway = make()
    address = f"127.0.0.1:{free_port()}"
    server = await start_grpc(gateway, address)
    model = "ollama/llama3" if policy == "allow" else "paid/m"
    request = pb.ChatRequest(
        model=model, messages=[pb.Message(role="user", content="hello there")], max_tokens=5
    )
    metadata = (("x-api-key", f"thk-{policy}-0123456789abcdef"),)
    codes = []
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ThanosServiceStub(channel)
            for _ in range(2):
                try:
                    [_ async for _ in stub.ChatCompletion(request, metadata=metadata)]
                    codes.append(None)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code().name)
    finally:
        await server.stop(None)
        await gateway.aclose()
    want = GRPC.get(policy, "RESOURCE_EXHAUSTED")
    assert codes == ([None, want] if policy == "rpm" else [want, want])
