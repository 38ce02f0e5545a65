"""The admin API (`/admin/...`): every route with an admin key, refused without one (401),
with a key that is not an admin key (403), and from a dashboard session without its CSRF
token (403); keys made here work at once and stop working when revoked; nothing a route
answers holds a secret."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.helpers import ADMIN, ADMIN_AND_USER, BASIC, KEY, USER, client_for, config, gateway
from tests.postgres import pg_url
from tests.servers import running
from tests.upstreams import FakeOpenAI
from thanos_asgi.frontends.stack import Reloadable, build_app
from thanos_asgi.governance.keys import RELOAD_EVERY

pytestmark = pytest.mark.anyio
__all__ = ["pg_url"]  # the fixture

BEARER = {"authorization": f"Bearer {ADMIN}"}
ROUTES = [
    ("GET", "/admin/session"),
    ("POST", "/admin/session"),
    ("DELETE", "/admin/session"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("PATCH", "/admin/keys/x"),
    ("DELETE", "/admin/keys/x"),
    ("GET", "/admin/providers"),
    ("GET", "/admin/requests"),
    ("GET", "/admin/requests/x"),
    ("GET", "/admin/stats"),
    ("GET", "/admin/config"),
    ("POST", "/admin/config/validate"),
    ("POST", "/admin/config/reload"),
    ("GET", "/admin/events"),
    ("GET", "/admin/audit"),
]


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> str:
    """The request log, stats and providers read either ledger: `[ledger] url` or not."""
    if request.param == "sqlite":
        return ""
    return f'[ledger]\nurl = "{request.getfixturevalue("pg_url")}"\n'


def settings(tmp_path: Path, extra: str = "") -> str:
    data = f'[server]\nkey_store = "{tmp_path / "keys.db"}"\n'
    data += f'[cost]\nledger_path = "{tmp_path / "usage.db"}"\n'
    return BASIC + data + ADMIN_AND_USER + extra


def admin_client(tmp_path: Path, extra: str = "", base: str = "http://gateway.test") -> Any:
    return client_for(build_app(gateway(FakeOpenAI(), settings(tmp_path, extra))), base)


async def chat(http: Any, model: str = "openai/gpt-4o-mini", key: str = ADMIN) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return await http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_without_an_admin_key_every_route_is_refused(
    tmp_path: Path, method: str, path: str
) -> None:
    async with admin_client(tmp_path) as http:
        anonymous = await http.request(method, path)
        user = await http.request(method, path, headers={"authorization": f"Bearer {USER}"})
        wrong = await http.request(method, path, headers={"authorization": "Bearer thk_nope"})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"]["message"]
    assert user.status_code == 403
    assert wrong.status_code == 401


async def test_an_open_gateway_has_no_admin_api(tmp_path: Path) -> None:
    """No keys at all: the gateway is open, but the admin API is not."""
    app = build_app(gateway(FakeOpenAI(), BASIC))
    async with client_for(app) as http:
        assert (await http.get("/admin/keys")).status_code == 401
        assert (await http.post("/admin/session")).status_code == 401
        assert (await http.get("/dashboard")).status_code == 200  # the sign-in page


async def test_keys_are_created_used_changed_and_revoked(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        made = await http.post(
            "/admin/keys", json={"id": "team-b", "models": ["gpt-4o-mini"]}, headers=BEARER
        )
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        assert secret.startswith("thk_")
        await asyncio.sleep(RELOAD_EVERY + 0.1)
        assert (await chat(http, key=secret)).status_code == 200
        listed = (await http.get("/admin/keys", headers=BEARER)).json()["data"]
        ids = {row["id"]: row for row in listed}
        assert ids["admin"]["source"] == "config" and ids["team-b"]["source"] == "store"
        assert ids["team-b"]["models"] == ["gpt-4o-mini"]
        assert (
            secret not in str(listed) and ADMIN not in str(listed) and "sha256" not in str(listed)
        )
        changed = await http.patch("/admin/keys/team-b", json={"rpm": 5}, headers=BEARER)
        assert changed.status_code == 200 and changed.json()["rpm"] == 5
        assert changed.json()["models"] == ["gpt-4o-mini"]  # what was not sent is unchanged
        assert (await http.delete("/admin/keys/team-b", headers=BEARER)).status_code == 200
        await asyncio.sleep(RELOAD_EVERY + 0.1)
        assert (await chat(http, key=secret)).status_code == 401
        assert (await http.delete("/admin/keys/team-b", headers=BEARER)).status_code == 404
        audit = (await http.get("/admin/audit", headers=BEARER)).json()["data"]
    actions = [(row["key_id"], row["action"], row["target"]) for row in reversed(audit)]
    assert actions == [
        ("admin", "key.create", "team-b"),
        ("admin", "key.update", "team-b"),
        ("admin", "key.revoke", "team-b"),
    ]
    assert secret not in str(audit)


@pytest.mark.parametrize(
    "body",
    [
        {"id": ""},
        {"id": "a b"},
        {"id": "x" * 100},
        {"id": "ok", "rpm": -1},
        {"id": "ok", "budget_usd": 1e300},
        {"id": "ok", "models": "gpt"},
        {"id": "ok", "surprise": 1},
        {"id": "admin"},  # a config key's id
        [],
    ],
)
async def test_bad_key_bodies_get_400(tmp_path: Path, body: Any) -> None:
    async with admin_client(tmp_path) as http:
        response = await http.post("/admin/keys", json=body, headers=BEARER)
        assert response.status_code == 400, response.text
        bad = await http.patch("/admin/keys/x", content=b"{", headers=BEARER)
        assert bad.status_code == 400


async def test_a_session_cookie_needs_its_csrf_token_to_change_anything(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        signed = await http.post("/admin/session", headers=BEARER)
        assert signed.status_code == 200
        cookies = signed.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("thanos_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session and "Max-Age=" in session
        assert "Path=/;" in session and "Secure" not in session  # plain HTTP here
        csrf = signed.json()["csrf"]
        assert ADMIN not in str(cookies) and ADMIN not in signed.text
        # the cookie alone reads ...
        assert (await http.get("/admin/keys")).status_code == 200
        assert (await http.get("/admin/session")).json()["csrf"] == csrf
        # ... but changes nothing without the token, or with a wrong one
        body = {"id": "by-session"}
        refused = await http.post("/admin/keys", json=body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        wrong = await http.post("/admin/keys", json=body, headers={"x-csrf-token": "x" + csrf})
        assert wrong.status_code == 403
        assert (await http.delete("/admin/keys/x")).status_code == 403
        assert (await http.post("/admin/config/reload")).status_code == 403
        made = await http.post("/admin/keys", json=body, headers={"x-csrf-token": csrf})
        assert made.status_code == 201
        # a session cannot make another session; signing out clears the cookies
        assert (
            await http.post("/admin/session", headers={"x-csrf-token": csrf})
        ).status_code == 403
        out = await http.delete("/admin/session", headers={"x-csrf-token": csrf})
        assert out.status_code == 200
        assert (await http.get("/admin/keys")).status_code == 401


async def test_a_forged_or_stale_cookie_is_refused(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        token = (await http.post("/admin/session", headers=BEARER)).cookies["thanos_session"]
        payload, _, signature = token.partition(".")
        for forged in (payload + "." + signature[::-1], "x." + signature, "", "." * 600):
            http.cookies.set("thanos_session", forged)
            assert (await http.get("/admin/keys")).status_code == 401
        http.cookies.set("thanos_session", token)
        assert (await http.get("/admin/keys")).status_code == 200


async def test_a_session_ends_when_its_key_is_revoked(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        made = await http.post("/admin/keys", json={"id": "ops", "admin": True}, headers=BEARER)
        ops = {"authorization": f"Bearer {made.json()['secret']}"}
        await asyncio.sleep(RELOAD_EVERY + 0.1)
        assert (await http.post("/admin/session", headers=ops)).status_code == 200
        assert (await http.get("/admin/keys")).status_code == 200  # the ops session
        assert (await http.delete("/admin/keys/ops", headers=BEARER)).status_code == 200
        ended = await http.get("/admin/keys")
        assert ended.status_code == 401 and "revoked" in ended.json()["error"]["message"]


async def test_the_cookie_is_secure_over_tls_and_scoped_to_the_mount(tmp_path: Path) -> None:
    app = build_app(gateway(FakeOpenAI(), settings(tmp_path)))
    transport = httpx2.ASGITransport(app=app, root_path="/ai")
    async with httpx2.AsyncClient(transport=transport, base_url="https://gw.test") as http:
        signed = await http.post("/ai/admin/session", headers=BEARER)
        assert signed.status_code == 200
        session = signed.headers.get_list("set-cookie")[0]
        assert "Secure" in session and "Path=/ai/;" in session
        page = await http.get("/ai/dashboard")
        assert page.status_code == 200 and 'src="dashboard/app.js"' in page.text


async def test_request_log_filters_and_pages(tmp_path: Path, ledger: str) -> None:
    async with admin_client(tmp_path, ledger) as http:
        for model in ("openai/gpt-4o-mini", "openai/gpt-4o", "openai/fail-429"):
            await chat(http, model)
        rows = (await http.get("/admin/requests", headers=BEARER)).json()
        assert [r["model"] for r in rows["data"]] == ["openai/fail-429", "gpt-4o", "gpt-4o-mini"]
        assert rows["next_cursor"] is None
        first = (await http.get("/admin/requests?limit=2", headers=BEARER)).json()
        assert len(first["data"]) == 2 and first["next_cursor"]
        rest = await http.get(
            f"/admin/requests?limit=2&cursor={first['next_cursor']}", headers=BEARER
        )
        assert [r["model"] for r in rest.json()["data"]] == ["gpt-4o-mini"]
        only = await http.get("/admin/requests?model=gpt-4o", headers=BEARER)
        assert [r["model"] for r in only.json()["data"]] == ["gpt-4o"]
        errors = await http.get("/admin/requests?status=error", headers=BEARER)
        assert [r["status"] for r in errors.json()["data"]] == ["error:429"]
        keyed = await http.get("/admin/requests?key=user", headers=BEARER)
        assert keyed.json()["data"] == []
        later = await http.get(f"/admin/requests?since={time.time() + 60}", headers=BEARER)
        assert later.json()["data"] == []
        one_id = rows["data"][1]["request_id"]
        one = await http.get(f"/admin/requests/{one_id}", headers=BEARER)
        assert one.status_code == 200 and one.json()["model"] == "gpt-4o"
        assert (await http.get("/admin/requests/nope", headers=BEARER)).status_code == 404
        for bad in (
            "since=nan",
            "since=-1",
            "limit=0",
            "limit=501",
            "cursor=abc",
            "model=" + "m" * 300,
        ):
            response = await http.get(f"/admin/requests?{bad}", headers=BEARER)
            assert response.status_code == 400, bad


async def test_stats_are_time_series_from_the_ledger(tmp_path: Path, ledger: str) -> None:
    async with admin_client(tmp_path, ledger) as http:
        for model in ("openai/gpt-4o-mini", "openai/gpt-4o-mini", "openai/fail-500"):
            await chat(http, model)
        stats = (await http.get("/admin/stats?window=1h&step=1m&by=model", headers=BEARER)).json()
        assert stats["window"] == 3600 and stats["step"] == 60
        assert 60 <= len(stats["buckets"]) <= 62
        last = stats["buckets"][-1]
        assert last["requests"] == 3 and last["errors"] == 1
        assert last["p50_ms"] is not None and last["p95_ms"] >= last["p50_ms"]
        groups = {g["name"]: g["requests"] for g in stats["groups"]}
        assert groups == {"gpt-4o-mini": 2, "openai/fail-500": 1}
        assert set(stats["spend"]) == {"today_usd", "month_usd", "monthly_budget_usd"}
        for bad in ("window=0", "window=40d", "window=1h&step=1s", "step=x", "by=colour"):
            response = await http.get(f"/admin/stats?{bad}", headers=BEARER)
            assert response.status_code == 400, bad


async def test_providers_show_circuit_latency_errors_models(tmp_path: Path, ledger: str) -> None:
    async with admin_client(tmp_path, ledger) as http:
        await chat(http)
        found = (await http.get("/admin/providers", headers=BEARER)).json()["data"]
    by_name = {p["name"]: p for p in found}
    assert set(by_name) == {"openai", "deepseek", "xai"}
    openai = by_name["openai"]
    assert openai["state"] == "closed" and openai["credentials"] == []
    assert openai["recent_requests"] == 1 and openai["error_rate"] == 0
    assert "gpt-4o-mini" in openai["models"]
    assert KEY not in str(found)


async def test_config_is_masked_validated_and_reloaded(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        shown = await http.get("/admin/config", headers=BEARER)
        assert shown.status_code == 200 and "openai" in shown.json()["providers"]
        assert KEY not in shown.text and ADMIN not in shown.text and USER not in shown.text
        broken = b'[providers.openai]\napi_key = "x"\nmodel = \n'
        checked = await http.post("/admin/config/validate", content=broken, headers=BEARER)
        assert checked.json()["valid"] is False and checked.json()["line"] == 3
        good = await http.post("/admin/config/validate", content=BASIC.encode(), headers=BEARER)
        assert good.json() == {"valid": True, "providers": ["deepseek", "openai", "xai"]}
        schema = await http.post(
            "/admin/config/validate", content=b"[server]\nbind = 5\n", headers=BEARER
        )
        assert schema.json()["valid"] is False and "bind" in schema.json()["error"]
        assert (
            await http.post("/admin/config/validate", content=b"\xff", headers=BEARER)
        ).status_code == 400
        alone = await http.post("/admin/config/reload", headers=BEARER)
        assert alone.status_code == 400  # not under `thanos serve`: nothing to reload from


async def test_reload_under_reloadable_serves_a_fresh_gateway(tmp_path: Path) -> None:
    text = settings(tmp_path)
    reloadable = Reloadable(lambda: config(text))
    async with client_for(reloadable) as http:
        before = reloadable.gateway
        answer = await http.post("/admin/config/reload", headers=BEARER)
        assert answer.status_code == 200 and answer.json() == {"reloaded": True}
        assert reloadable.gateway is not before
        audit = (await http.get("/admin/audit", headers=BEARER)).json()["data"]
        assert audit[0]["action"] == "config.reload" and audit[0]["key_id"] == "admin"
    await reloadable.aclose()


async def test_the_dashboard_pages_carry_a_strict_csp(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        page = await http.get("/dashboard")
        script = await http.get("/dashboard/app.js")
        missing = await http.get("/dashboard/%2E%2E%2Fkeys.db")
        other = await http.get("/dashboard/nope.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "localStorage" not in script.text and "sessionStorage" not in script.text
    assert "<script>" not in page.text and "onclick" not in page.text  # no inline script
    assert missing.status_code == 404 and other.status_code == 404


async def test_dashboard_false_turns_it_all_off(tmp_path: Path) -> None:
    async with admin_client(tmp_path, "") as http:
        assert (await http.get("/dashboard")).status_code == 200
    text = settings(tmp_path).replace("[server]\n", "[server]\ndashboard = false\n")
    async with client_for(build_app(gateway(FakeOpenAI(), text))) as http:
        for path in ("/dashboard", "/dashboard/app.js", "/admin/keys", "/admin/session"):
            assert (await http.get(path, headers=BEARER)).status_code == 404, path
        assert (await http.post("/admin/session", headers=BEARER)).status_code == 404
        doc = (await http.get("/openapi.json", headers=BEARER)).json()
    assert not [p for p in doc["paths"] if p.startswith(("/admin", "/dashboard"))]


async def test_the_event_feed_carries_requests_and_circuit_changes(tmp_path: Path) -> None:
    """Over loopback: `GET /admin/events` sends each finished request as it ends, and the
    provider whose breaker opened."""
    app = build_app(gateway(FakeOpenAI(), settings(tmp_path, "[health]\nfailure_threshold = 1\n")))
    async with (
        running(app) as url,
        httpx2.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("GET", "/admin/events", headers=BEARER) as feed,
    ):
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/event-stream")
        lines = feed.aiter_lines()
        assert await anext(lines) == "event: hello"
        await chat(http, "openai/gpt-4o-mini")
        request = await _next_event(lines, "request")
        assert request["model"] == "gpt-4o-mini" and request["key_id"] == "admin"
        assert (await chat(http, "openai/fail-503")).status_code in (502, 503)
        changed = await _next_event(lines, "provider")
        assert changed == {"name": "openai", "model": "fail-503", "state": "open"}


async def _next_event(lines: Any, kind: str) -> Any:
    async with asyncio.timeout(5):
        async for line in lines:
            if line == f"event: {kind}":
                data = await anext(lines)
                return json.loads(data.removeprefix("data: "))
    raise AssertionError(f"no {kind} event")


async def test_oversized_admin_bodies_get_413(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        big = b'{"id": "x", "models": [' + b'"m",' * 40_000 + b'"m"]}'
        assert (await http.post("/admin/keys", content=big, headers=BEARER)).status_code == 413
        huge = b"# " + b"x" * (1024 * 1024 + 1)
        validate = await http.post("/admin/config/validate", content=huge, headers=BEARER)
        assert validate.status_code == 413


async def test_every_admin_route_is_in_the_openapi_document(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        doc = (await http.get("/openapi.json", headers=BEARER)).json()
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for method, path in ROUTES:
        path = path.replace("/keys/x", "/keys/{id}").replace(
            "/requests/x", "/requests/{request_id}"
        )
        assert (path, method.lower()) in described
    assert ("/dashboard", "get") in described and ("/dashboard/{file}", "get") in described
    assert "201" in doc["paths"]["/admin/keys"]["post"]["responses"]


async def test_a_config_nested_too_deeply_is_invalid_not_a_500(tmp_path: Path) -> None:
    async with admin_client(tmp_path) as http:
        for deep in (
            b"a = " + b"[" * 5000 + b"]" * 5000,
            b"a = " + b"{x=" * 3000 + b"1" + b"}" * 3000,
        ):
            checked = await http.post("/admin/config/validate", content=deep, headers=BEARER)
            assert checked.status_code == 200, checked.text
            assert checked.json()["valid"] is False
            assert "nested too deeply" in checked.json()["error"]
