"""A provider's key never reaches a client in any form, and `/health/ready` (and gRPC Health)
shows provider details only to admin keys once client keys exist."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from tests.helpers import ADMIN, ADMIN_AND_USER, BASIC, KEY, USER, client_for, gateway
from thanos_asgi import build_app
from thanos_asgi.sanitize import scrub

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]

FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda key: key,
    "lower": str.lower,
    "upper": str.upper,
    "base64": lambda key: base64.b64encode(key.encode()).decode(),
    "basic-auth": lambda key: base64.b64encode(b"user:" + key.encode()).decode(),
    "urlsafe-base64": lambda key: base64.urlsafe_b64encode(b"\xfb" + key.encode()).decode(),
    "split-newline": lambda key: key[:12] + "\n" + key[12:],
    "split-quoted": lambda key: f"{key[:10]}' + '{key[10:]}",
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_scrub_removes_every_form(form: str) -> None:
    text = f"bad key: {FORMS[form](KEY)} (see docs)"
    scrubbed = scrub(text, [KEY])
    assert "****" in scrubbed and scrubbed.startswith("bad key: ")
    for piece in (KEY, KEY.lower(), KEY[:16], KEY[-16:], base64.b64encode(KEY.encode()).decode()):
        assert piece.lower() not in scrubbed.lower()


def echoing(form: str) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        message = f"Incorrect API key provided: {FORMS[form](KEY)}. Find yours at example.test"
        body = {"error": {"message": message, "type": "invalid_request_error", "code": "bad"}}
        return httpx.Response(400, json=body)

    return answer


@pytest.mark.parametrize("form", sorted(FORMS))
async def test_a_provider_echoing_its_key_in_any_form_never_shows_it(form: str) -> None:
    app = build_app(gateway(echoing(form), BASIC))
    async with client_for(app) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": HI}
        )
        ready = await http.get("/health/ready")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "Incorrect API key provided: " in message and "****" in message
    for text in (response.text, ready.text):
        assert FORMS[form](KEY) not in text
        assert KEY.lower() not in text.lower()
        assert base64.b64encode(KEY.encode()).decode()[4:-4] not in text


# -- /health/ready -----------------------------------------------------------------------------


def failing(request: httpx.Request) -> httpx.Response:
    body = {"error": {"message": "model other-clients-secret-model not found", "type": "x"}}
    return httpx.Response(404, json=body)


@pytest.mark.parametrize(
    ("headers", "details"),
    [
        ({}, False),
        ({"authorization": f"Bearer {USER}"}, False),
        ({"authorization": "Bearer thk_wrong-key"}, False),
        ({"authorization": f"Bearer {ADMIN}"}, True),
        ({"x-api-key": ADMIN}, True),
    ],
)
async def test_ready_shows_details_only_to_admin_keys(
    headers: dict[str, str], details: bool
) -> None:
    app = build_app(gateway(failing, BASIC + ADMIN_AND_USER))
    async with client_for(app) as http:
        call = await http.post(
            "/v1/chat/completions",
            json={"model": "openai/other-clients-secret-model", "messages": HI},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert call.status_code == 404
        ready = await http.get("/health/ready", headers=headers)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    if details:
        assert "openai.test" in ready.text and "other-clients-secret-model" in ready.text
    else:
        assert ready.json() == {"status": "ready"}


async def test_ready_keeps_details_when_no_client_keys_exist() -> None:
    async with client_for(build_app(gateway(failing, BASIC))) as http:
        ready = await http.get("/health/ready")
    assert set(ready.json()) == {"status", "providers"}


async def test_grpc_health_shows_details_only_to_admin_keys() -> None:
    grpc = pytest.importorskip("grpc")
    from tests.test_grpc import serving
    from thanos_asgi.grpc import thanos_pb2 as pb
    from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc

    async with serving(gateway(failing, BASIC + ADMIN_AND_USER)) as channel:
        stub = pb_grpc.ThanosServiceStub(channel)
        anonymous = await stub.Health(pb.Empty())
        user = await stub.Health(pb.Empty(), metadata=(("authorization", f"Bearer {USER}"),))
        admin = await stub.Health(pb.Empty(), metadata=(("authorization", f"Bearer {ADMIN}"),))
    assert anonymous.status == user.status == admin.status == "ready"
    assert len(anonymous.providers) == len(user.providers) == 0
    assert set(admin.providers) == {"openai", "deepseek", "xai"}
    assert grpc is not None
