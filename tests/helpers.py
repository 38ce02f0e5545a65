"""Building gateways and clients for tests: config text in, app and SDK client out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import httpx2
import openai

from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi.config import Config, parse_config
from thanos_asgi.frontends.asgi import ASGIApp, Message
from thanos_asgi.governance.state import MemoryBackend, StateBackend

KEY = "sk-test-SECRET-0123456789abcdef"

BASIC = f"""
[providers.openai]
api_key = "{KEY}"
model = "gpt-4o-mini"
base_url = "http://openai.test/v1"

[providers.deepseek]
api_key = "{KEY}"
base_url = "http://deepseek.test"

[providers.xai]
api_key = "{KEY}"
base_url = "http://xai.test/v1"

[routing]
max_retries = 0
fallback_chain = ["openai"]
aliases = {{ smart = "openai/gpt-4o", cheap = "deepseek/deepseek-chat" }}
"""

# Client keys: one admin and one not (the `/auth` endpoints and gRPC InitiateOAuth want admin)
ADMIN, USER = "thk_admin-0123456789abcdefghijkl", "thk_user-0123456789abcdefghijklm"
ADMIN_AND_USER = f"""
[[server.keys]]
id = "admin"
key = "{ADMIN}"
admin = true

[[server.keys]]
id = "user"
key = "{USER}"
"""

# A client key, and a chat request made with it as request "req-42": what the gateway logs or
# traces about it must hold neither secret
CLIENT_SECRET = "thk-client-SECRET-9f8e7d6c5b4a"
QUERY_SECRET = "AIzaQUERYSECRET0123456789abcdef"
TEAM_A = f'[[server.keys]]\nid = "team-a"\nkey = "{CLIENT_SECRET}"\n'
BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"authorization": f"Bearer {CLIENT_SECRET}", "x-request-id": "req-42"}


def openai_compatible(name: str, upstream: str, *models: str) -> str:
    """A `[providers.<name>]` section: an OpenAI-compatible API at `<upstream>/v1`."""
    text = f'[providers.{name}]\nkind = "openai-compatible"\nbase_url = "{upstream}/v1"\n'
    if models:
        text += f"models = {json.dumps(list(models))}\n"
    return text


def config(text: str = BASIC, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(text, source="test.toml", env=env or {})


def gateway(
    handler: Callable[..., Any], text: str = BASIC, *, state: StateBackend | None = None
) -> Gateway:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return Gateway(config(text), transport=transport, state=state)


# Rate windows (rpm, tpm) are FIXED minute windows: a test that expects the (N+1)th request
# of a minute refused, or counts what a window holds, fails when a minute boundary falls
# between its requests (the window starts again at 0).


def still_state() -> MemoryBackend:
    """A memory state backend whose clock stands still 30 s into a minute: every request of
    the test falls in one rate window, whenever it runs."""
    return MemoryBackend(clock=lambda: 30.0)


async def clear_of_the_minute(need: float) -> None:
    """Sleep, if need be, until at least `need` seconds are left in the current minute window
    of a local Redis: for windows whose clock a test cannot set (Redis `TIME`, which is this
    machine's `time.time`)."""
    left = 60.0 - time.time() % 60.0
    if left < need:
        await asyncio.sleep(left + 0.05)


def client_for(app: ASGIApp, base: str = "http://gateway.test") -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base)


def sdk(app: ASGIApp) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key="client-key",
        http_client=client_for(app),
        max_retries=0,
    )


async def call(app: ASGIApp, path: str = "/x") -> None:
    """One bare GET of `path` straight to `app`: the client has left, the answer goes nowhere."""

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)


def post_scope(path: str, body: bytes, query: bytes = b"") -> dict[str, Any]:
    """The scope of a JSON POST of `body` to `path`, as uvicorn hands it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    }


def app_and_sdk(
    handler: Callable[..., Any], text: str = BASIC
) -> tuple[ASGIApp, openai.AsyncOpenAI]:
    app = build_app(gateway(handler, text))
    return app, sdk(app)


def self_signed() -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) for `localhost` and 127.0.0.1, and its key (PEM)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
