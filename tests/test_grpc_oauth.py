"""gRPC InitiateOAuth for real: a grpcio aio client over loopback, a gateway whose logins talk
to the fake GitHub and Anthropic servers of `tests/fake_oauth.py`; no secret in any answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

grpc = pytest.importorskip("grpc")

from tests.fake_oauth import ANTHROPIC_API_KEY, FakeOAuth, login_gateway  # noqa: E402
from tests.helpers import ADMIN, ADMIN_AND_USER, USER, client_for  # noqa: E402
from tests.servers import free_port  # noqa: E402
from thanos_asgi import Gateway, build_app  # noqa: E402
from thanos_asgi.grpc import start_grpc  # noqa: E402
from thanos_asgi.grpc import thanos_pb2 as pb  # noqa: E402
from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc  # noqa: E402
from thanos_asgi.logins import CopilotSettings, FileStore  # noqa: E402

pytestmark = pytest.mark.anyio
Stub = pb_grpc.ThanosServiceStub
API_KEYS = (ANTHROPIC_API_KEY, "sk-openai-APIKEY-0123456789")


def gateway(fake: FakeOAuth, tmp_path: Path, extra: str = "", github_url: str = "") -> Gateway:
    """Copilot and Claude Pro/Max logins against `fake`, plus two API-key instances."""
    openai = f'[providers.openai]\napi_key = "{API_KEYS[1]}"\nbase_url = "{fake.base}"\n'
    github = CopilotSettings(github_url=github_url, api_url=fake.base) if github_url else None
    return login_gateway(fake, FileStore(tmp_path), extra + openai, copilot=github)


@asynccontextmanager
async def grpc_stub(gw: Gateway) -> AsyncIterator[Stub]:
    """`gw` behind a started gRPC server on a free port; yields a stub on a connected channel."""
    address = f"127.0.0.1:{free_port()}"
    server = await start_grpc(gw, address)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield Stub(channel)
    finally:
        await server.stop(None)
        await gw.aclose()


async def refused(stub: Stub, provider: str, **kw: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.InitiateOAuth(pb.OAuthRequest(provider=provider), **kw)
    return info.value


def shown(*answers: pb.OAuthResponse | grpc.aio.AioRpcError) -> str:
    """Everything a client sees of these answers and failures."""
    parts = []
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            parts += [answer.details() or "", str(answer.trailing_metadata())]
        else:
            parts.append(str(answer))
    return "\n".join(parts)


def no_secrets(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, "a secret was shown to the client"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def test_copilot_device_flow_starts_and_completes_in_the_background(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    fake.poll_script = ["authorization_pending"]  # the user approves on the second poll
    async with grpc_stub(gateway(fake, tmp_path)) as stub:
        answer = await stub.InitiateOAuth(pb.OAuthRequest(provider="github_copilot"))
        assert answer.user_code == "ABCD-1234"
        assert answer.auth_url == f"{fake.base}/login/device"
        assert answer.state == "" and answer.expires_in == 5
        for _ in range(200):
            health = await stub.Health(pb.Empty())
            if health.providers["copilot"].configured:
                break
            await asyncio.sleep(0.02)
        assert health.providers["copilot"].configured  # the gateway kept the login
    device_code = fake.bodies["/login/oauth/access_token"][0]["device_code"]  # never shown
    assert device_code.startswith("dev-")
    no_secrets(shown(answer) + str(health), device_code, *fake.secrets(), *API_KEYS)


async def test_anthropic_start_is_an_authorize_url_with_pkce_and_state(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    gw = gateway(fake, tmp_path)
    async with grpc_stub(gw) as stub, client_for(build_app(gw)) as http:
        answer = await stub.InitiateOAuth(pb.OAuthRequest(provider="anthropic_max"))
        by_login_name = await stub.InitiateOAuth(pb.OAuthRequest(provider="claude"))
        pending = dict(gw.providers["anthropic_max"].session.pending)  # type: ignore[attr-defined]
        async with httpx.AsyncClient() as browser:  # the user approves: `code#state` is shown
            pasted = (await browser.get(answer.auth_url)).text
        done = await http.post("/auth/anthropic", json={"code": pasted})  # finished over HTTP
    url = urlsplit(answer.auth_url)
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{fake.base}/oauth/authorize"
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["state"] == answer.state and answer.state
    verifier = pending[answer.state].verifier
    assert query["code_challenge"] == s256(verifier)
    assert answer.user_code == "" and 500 < answer.expires_in <= 600
    assert by_login_name.state not in ("", answer.state)  # a second, separate attempt
    assert pasted.endswith("#" + answer.state)
    assert done.status_code == 200 and done.json()["logged_in"] is True
    no_secrets(shown(answer, by_login_name), verifier, *fake.secrets(), *API_KEYS)


async def test_unknown_or_api_key_providers_are_not_found(fake: FakeOAuth, tmp_path: Path) -> None:
    async with grpc_stub(gateway(fake, tmp_path)) as stub:
        unknown = await refused(stub, "nope")
        api_key = await refused(stub, "openai")  # an instance, but it logs in with an API key
        empty = await refused(stub, " ")
    assert unknown.code() == api_key.code() == grpc.StatusCode.NOT_FOUND
    assert "no provider in this gateway logs in as 'nope'" in (unknown.details() or "")
    assert "'openai'" in (api_key.details() or "")
    assert dict(unknown.trailing_metadata())["thanos-error-code"] == "not_found"
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`provider`" in (empty.details() or "")
    assert dict(empty.trailing_metadata())["thanos-error-code"] == "invalid_request"
    no_secrets(shown(unknown, api_key, empty), *API_KEYS)


async def test_a_login_server_that_cannot_be_reached_is_unavailable(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with grpc_stub(gateway(fake, tmp_path, github_url=closed)) as stub:
        failed = await refused(stub, "copilot")
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert "GitHub did not start the login: could not reach" in (failed.details() or "")
    trailers = dict(failed.trailing_metadata())
    assert (trailers["thanos-error-type"], trailers["thanos-error-code"]) == (
        "login_error",
        "login_failed",
    )
    no_secrets(shown(failed), *API_KEYS)


async def test_with_client_keys_only_an_admin_key_starts_a_login_as_over_http(
    fake: FakeOAuth, tmp_path: Path
) -> None:
    gw = gateway(fake, tmp_path, ADMIN_AND_USER)
    user, admin = (("authorization", f"Bearer {USER}"),), (("x-api-key", ADMIN),)
    async with grpc_stub(gw) as stub, client_for(build_app(gw)) as http:
        missing = await refused(stub, "anthropic")
        not_admin = await refused(stub, "anthropic", metadata=user)
        unknown_as_user = await refused(stub, "nope", metadata=user)  # refused before lookup
        models = await stub.ListModels(pb.Empty(), metadata=user)  # the key itself is good
        answer = await stub.InitiateOAuth(pb.OAuthRequest(provider="anthropic"), metadata=admin)
        over_http = [
            (await http.post("/auth/anthropic", json={}, headers=headers)).status_code
            for headers in ({}, {"authorization": f"Bearer {USER}"}, {"x-api-key": ADMIN})
        ]
    assert over_http == [401, 403, 200]
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not_admin.code() == unknown_as_user.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not_admin.details() == "the key 'user' is not an admin key"  # HTTP's words
    assert dict(not_admin.trailing_metadata())["thanos-error-code"] == "permission_denied"
    assert models.models
    assert answer.auth_url.startswith(f"{fake.base}/oauth/authorize?") and answer.state
    no_secrets(shown(missing, not_admin, unknown_as_user, answer), ADMIN, USER, *API_KEYS)
