"""Composing the stack, and the gateway inside FastAPI, Starlette and Django hosts.

In process over httpx's ASGI transport; the lifespan tests serve with uvicorn over loopback.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import aiohttp
import httpx
import httpx2
import openai
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.helpers import BASIC, KEY, client_for, config, gateway, openai_compatible
from tests.servers import Upstream, running
from tests.upstreams import FakeOpenAI
from thanos_asgi import (
    ChatRequest,
    Gateway,
    HttpxTransport,
    Message,
    RequestIdMiddleware,
    build_app,
)
from thanos_asgi.config import parse_config
from thanos_asgi.frontends.asgi import ASGIApp, Receive, Scope, Send
from thanos_asgi.frontends.asgi import Message as ASGIMessage
from thanos_asgi.frontends.middleware.auth import AuthMiddleware
from thanos_asgi.frontends.stack import default_middleware
from thanos_asgi.governance.keys import KeyRing
from thanos_asgi.integrations import KeyIdMiddleware, lifespan
from thanos_asgi.integrations import django as thanos_django
from thanos_asgi.integrations import fastapi as thanos_fastapi
from thanos_asgi.integrations import starlette as thanos_starlette

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hello mount"}]
KEYED = BASIC + f'\n[server]\nkeys = [{{ id = "ci", key = "{KEY}" }}]\n'


def sdk_at(
    app: ASGIApp, base: str = "http://host.test/ai/v1", key: str = "k"
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base, api_key=key, http_client=client_for(app), max_retries=0
    )


async def chat_and_stream(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert completion.choices[0].message.content == "echo: hello mount"
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo:hellomount"


def test_importing_the_integrations_package_imports_no_framework() -> None:
    code = (
        "import sys, thanos_asgi, thanos_asgi.integrations; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'django', 'starlette'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- build_app: order, replacement, custom layers -------------------------------------------


def tracer(name: str, trace: list[tuple[str, bool]]) -> Callable[[ASGIApp], ASGIApp]:
    """A custom pure-ASGI layer noting when it ran and whether a request id existed by then."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            trace.append((name, "thanos.request_id" in scope))
            await app(scope, receive, with_header(send, b"x-layer", name.encode()))

        return layer

    return wrap


def with_header(send: Send, name: bytes, value: bytes) -> Send:
    """`send`, adding the header `name: value` to the response start."""

    async def send_with_header(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (name, value)]
        await send(message)

    return send_with_header


async def test_middleware_runs_in_list_order_first_outermost() -> None:
    trace: list[tuple[str, bool]] = []
    stack = [tracer("outer", trace), RequestIdMiddleware, tracer("inner", trace)]
    app = build_app(gateway(FakeOpenAI()), middleware=stack)
    async with client_for(app) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert trace == [("outer", False), ("inner", True)]
    layers = [v for k, v in response.headers.raw if k.lower() == b"x-layer"]
    assert layers == [b"inner", b"outer"]  # headers are added innermost first


async def test_reordering_changes_what_a_refusal_carries() -> None:
    keyring = KeyRing(config(KEYED).server.keys)
    auth = partial(AuthMiddleware, keyring=keyring)
    request_id_outside = build_app(
        gateway(FakeOpenAI(), KEYED), middleware=[RequestIdMiddleware, auth]
    )
    auth_outside = build_app(gateway(FakeOpenAI(), KEYED), middleware=[auth, RequestIdMiddleware])
    async with client_for(request_id_outside) as a, client_for(auth_outside) as b:
        first, second = await a.get("/v1/models"), await b.get("/v1/models")
    assert first.status_code == second.status_code == 401
    assert "x-request-id" in first.headers
    assert "x-request-id" not in second.headers


async def test_replacing_auth_with_the_hosts_own() -> None:
    async def host_user(scope: Scope) -> str | None:
        return "host:bob" if (b"x-host-user", b"bob") in scope["headers"] else None

    seen: list[Any] = []

    def spy(app: ASGIApp) -> ASGIApp:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope.get("thanos.auth"))
            await app(scope, receive, send)

        return layer

    gw = gateway(FakeOpenAI(), KEYED)
    keyring = KeyRing(gw.config.server.keys)
    stack = [
        RequestIdMiddleware,
        partial(KeyIdMiddleware, key_id=host_user),
        partial(AuthMiddleware, keyring=keyring),
        spy,
    ]
    async with client_for(build_app(gw, middleware=stack)) as client:
        hosted = await client.get("/v1/models", headers={"x-host-user": "bob"})
        refused = await client.get("/v1/models")  # no host user: the gateway's keys apply
        keyed = await client.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
    assert (hosted.status_code, refused.status_code, keyed.status_code) == (200, 401, 200)
    assert seen[0] == {"key_id": "host:bob", "policy": None}
    assert seen[1]["key_id"] == "ci"


# -- Starlette ----------------------------------------------------------------------------


async def home(request: object) -> PlainTextResponse:
    return PlainTextResponse("host home")


async def test_starlette_mount_serves_below_the_prefix() -> None:
    host = Starlette(
        routes=[Route("/", home), thanos_starlette.mount("/ai", gateway(FakeOpenAI()))]
    )
    async with sdk_at(host) as client:
        await chat_and_stream(client)
    async with client_for(host, "http://host.test") as http:
        assert (await http.get("/")).text == "host home"
        assert (await http.get("/ai/health")).json() == {"status": "ok"}
        missing = await http.get("/ai/v1/nothing")
        models = await http.get("/ai/v1/models")
    assert missing.status_code == 404
    assert "/v1/nothing" in missing.json()["error"]["message"]
    assert "openai/gpt-4o-mini" in {m["id"] for m in models.json()["data"]}
    assert "x-request-id" in models.headers


def test_mount_prefix_must_be_a_path() -> None:
    with pytest.raises(ValueError, match="mount prefix"):
        thanos_starlette.mount("ai", gateway(FakeOpenAI()))


# -- FastAPI ------------------------------------------------------------------------------


async def test_fastapi_mount_and_a_route_calling_the_gateway() -> None:
    gw = gateway(FakeOpenAI())
    app = FastAPI()
    thanos_fastapi.mount(app, gw, path="/ai")
    get_gateway = thanos_fastapi.gateway_dependency(gw)

    @app.get("/ask")
    async def ask(q: str, g: Gateway = Depends(get_gateway)) -> dict[str, str]:  # noqa: B008
        request = ChatRequest(model="gpt-4o-mini", messages=[Message(role="user", content=q)])
        response = await g.chat(request)
        return {"answer": response.choices[0].message.content or ""}

    async with sdk_at(app) as client:
        await chat_and_stream(client)
    async with client_for(app, "http://host.test") as http:
        answer = await http.get("/ask", params={"q": "hi"})
        schema = await http.get("/openapi.json")
    assert answer.json() == {"answer": "echo: hi"}
    assert list(schema.json()["paths"]) == ["/ask"]


def key_echo(app: ASGIApp) -> ASGIApp:
    async def layer(scope: Scope, receive: Receive, send: Send) -> None:
        key_id = (scope.get("thanos.auth") or {}).get("key_id", "none")
        await app(scope, receive, with_header(send, b"x-key-id", key_id.encode()))

    return layer


def guarded_fastapi(gw: Gateway) -> FastAPI:
    async def current_user(request: Request) -> str:
        if request.headers.get("authorization") != "Bearer host-token":
            raise HTTPException(401, "log in first")
        request.scope["thanos.auth"] = {"key_id": "user:alice", "policy": None}
        return "alice"

    app = FastAPI()
    stack = [*default_middleware(gw), key_echo]
    thanos_fastapi.mount(app, gw, middleware=stack, dependencies=[Depends(current_user)])
    return app


async def test_fastapi_mount_guarded_by_the_hosts_dependency() -> None:
    app = guarded_fastapi(gateway(FakeOpenAI(), KEYED))  # the gateway's own keys are bypassed
    async with sdk_at(app, key="host-token") as client:
        await chat_and_stream(client)
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=HI
        )
    assert raw.headers["x-key-id"] == "user:alice"
    async with client_for(app, "http://host.test") as http:
        refused = await http.post("/ai/v1/chat/completions", json={"model": "gpt-4o-mini"})
        wrong = await http.get("/ai/v1/models", headers={"authorization": "Bearer nope"})
        health = await http.get("/ai/health", headers={"authorization": "Bearer host-token"})
    assert refused.status_code == wrong.status_code == 401
    assert refused.json() == {"detail": "log in first"}  # FastAPI's answer, not the gateway's
    assert health.json() == {"status": "ok"}


async def test_fastapi_guarded_mount_streams_and_keeps_the_prefix_root() -> None:
    seen: list[tuple[str, str]] = []

    def spy(app: ASGIApp) -> ASGIApp:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append((scope["path"], scope["root_path"]))
            await app(scope, receive, send)

        return layer

    async def allow() -> None:
        return None

    app = FastAPI()
    thanos_fastapi.mount(
        app, gateway(FakeOpenAI()), path="/ai/", middleware=[spy], dependencies=[Depends(allow)]
    )
    async with client_for(app, "http://host.test") as http:
        assert (await http.get("/ai/health")).status_code == 200
    assert seen == [("/ai/health", "/ai")]


# -- Django --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Django configured in this process (sqlite in a temp dir) and a logged-in session."""
    import django
    from django.conf import settings

    if not settings.configured:
        db = tmp_path_factory.mktemp("django") / "db.sqlite3"
        settings.configure(
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["host.test"],
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
            ],
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
            ],
            ROOT_URLCONF="examples.django_project.urls",
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}},
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            USE_TZ=True,
        )
        django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("alice", password="pw")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    yield session.session_key
    user.delete()


def django_app() -> ASGIApp:
    from django.core.asgi import get_asgi_application

    app: ASGIApp = get_asgi_application()
    return app


async def test_django_dispatcher_splits_by_prefix(django_session: str) -> None:
    gw = gateway(FakeOpenAI())
    app = thanos_django.ai_dispatcher(django_app(), build_app(gw), "/ai")
    async with sdk_at(app) as client:
        await chat_and_stream(client)
    async with client_for(app, "http://host.test") as http:
        home_page = await http.get("/")
        models = await http.get("/ai/v1/models")
        aside = await http.get("/aix/v1/models")
    assert home_page.text.startswith("Hello from Django, anonymous.")
    assert "openai/gpt-4o-mini" in {m["id"] for m in models.json()["data"]}
    assert aside.status_code == 404 and "error" not in aside.text  # Django's 404
    await gw.aclose()


async def test_django_dispatcher_gives_lifespan_to_the_gateway() -> None:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(FakeOpenAI())))
    gw = Gateway(config(), transport=transport)
    app = thanos_django.ai_dispatcher(_refuse_all, build_app(gw))
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert transport.client.is_closed


async def _refuse_all(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("Django must not see this")


async def test_django_session_names_the_client(django_session: str) -> None:
    seen: list[Scope] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = thanos_django.ai_dispatcher(django_app(), recorder, key_id=thanos_django.session_key_id)
    async with client_for(app, "http://host.test") as http:
        await http.get("/ai/v1/models", headers={"cookie": f"sessionid={django_session}"})
        await http.get("/ai/v1/models", headers={"cookie": "sessionid=forged"})
        await http.get("/ai/v1/models")
        page = await http.get("/", headers={"cookie": f"sessionid={django_session}"})
    assert seen[0]["thanos.auth"] == {"key_id": "django:alice", "policy": None}
    assert (seen[0]["path"], seen[0]["root_path"]) == ("/ai/v1/models", "/ai")
    assert "thanos.auth" not in seen[1] and "thanos.auth" not in seen[2]
    assert page.text.startswith("Hello from Django, alice.")


# -- lifespan and lazy start, for real -------------------------------------------------------


def loopback_config(upstream: str) -> str:
    return f"""
{openai_compatible("local", upstream, "m")}
{openai_compatible("watched", upstream, "m")}
[health]
auto_disable_on_failure = true

[health.watched]
expected_models = ["absent"]
"""


async def test_mounted_gateway_starts_lazily_without_lifespan() -> None:
    async with running(Upstream()) as up:
        gw = Gateway(parse_config(loopback_config(up), source="lazy.toml", env={}))
        host = Starlette(routes=[thanos_starlette.mount("/ai", gw)])  # never gets lifespan
        try:
            async with running(host) as url:  # uvicorn with lifespan off
                sdk = openai.AsyncOpenAI(base_url=f"{url}/ai/v1", api_key="k", max_retries=0)
                async with sdk:
                    reply = await sdk.chat.completions.create(model="local/m", messages=HI)
                    assert reply.choices[0].message.content == "echo: hello mount"
                async with httpx2.AsyncClient(base_url=url) as http:
                    state = await _watched_state(http)
            assert state == "disabled"  # the health monitor started with the first request
        finally:
            await gw.aclose()


async def _watched_state(http: httpx2.AsyncClient) -> str:
    state = ""
    for _ in range(200):
        ready = (await http.get("/ai/health/ready")).json()
        state = ready["providers"]["watched"]["state"]
        if state == "disabled":
            break
        await asyncio.sleep(0.01)
    return state


async def _serve_fastapi_host_once(upstream: str) -> None:
    gw = Gateway(parse_config(loopback_config(upstream), source="host.toml", env={}))
    app = FastAPI(lifespan=lifespan(gw))
    thanos_fastapi.mount(app, gw)
    async with running(app, lifespan="on") as url:
        sdk = openai.AsyncOpenAI(base_url=f"{url}/ai/v1", api_key="k", max_retries=0)
        async with sdk:
            await sdk.chat.completions.create(model="local/m", messages=HI)
            stream = await sdk.chat.completions.create(model="local/m", messages=HI, stream=True)
            assert [c async for c in stream]


async def test_host_lifespan_closes_the_gateway_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    before = _open_sessions()
    async with running(Upstream()) as up:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            await _serve_fastapi_host_once(up)
            gc.collect()  # an unclosed aiohttp session warns when it is collected
            await asyncio.sleep(0)
    assert not [s for s in _open_sessions() if all(s is not b for b in before)]
    assert not [t for t in asyncio.all_tasks() if "HealthMonitor" in t.get_coro().__qualname__]
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert "Unclosed" not in caplog.text


def _open_sessions() -> list[aiohttp.ClientSession]:
    # type(), not isinstance(): the latter evaluates lazy proxies (Django's request.user)
    return [o for o in gc.get_objects() if type(o) is aiohttp.ClientSession and not o.closed]


def test_the_gateway_lifespan_works_with_a_plain_starlette_host() -> None:
    from starlette.testclient import TestClient

    gw = gateway(FakeOpenAI())
    host = Starlette(routes=[thanos_starlette.mount("/ai", gw)], lifespan=lifespan(gw))
    with TestClient(host, base_url="http://host.test") as http:
        assert http.get("/ai/health").status_code == 200


async def test_host_routes_answer_gateway_errors_with_their_status() -> None:
    """A host route calling the Gateway: an unknown model is 404, an upstream 429 stays 429
    with Retry-After, in OpenAI's shape with the x-thanos headers; not a 500."""
    gw = gateway(FakeOpenAI())

    async def ask(request: Request) -> PlainTextResponse:
        model = request.query_params["model"]
        asked = ChatRequest(model=model, messages=[Message(role="user", content="hi")])
        answer = await gw.chat(asked)
        return PlainTextResponse(answer.choices[0].message.content or "")

    host = Starlette(
        routes=[Route("/ask", ask)], exception_handlers=thanos_starlette.exception_handlers()
    )
    async with client_for(host) as http:
        unknown = await http.get("/ask", params={"model": "no-such-model"})
        limited = await http.get("/ask", params={"model": "openai/fail-429"})
        fine = await http.get("/ask", params={"model": "gpt-4o-mini"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert unknown.headers["x-thanos-attempts"] == ""
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.headers["x-thanos-attempts"] == "openai:429"
    assert limited.headers["x-thanos-provider"] == "openai"
    assert fine.status_code == 200 and fine.text == "echo: hi"
    await gw.aclose()
