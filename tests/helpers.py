"""Building gateways and clients for tests: config text in, app and SDK client out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
import httpx2
import openai

from thanos_asgi import Gateway, HttpxTransport, build_app
from thanos_asgi._http import ASGIApp
from thanos_asgi.config import Config, parse_config

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


def config(text: str = BASIC, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(text, source="test.toml", env=env or {})


def gateway(handler: Callable[..., Any], text: str = BASIC) -> Gateway:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return Gateway(config(text), transport=transport)


def client_for(app: ASGIApp, base: str = "http://gateway.test") -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base)


def sdk(app: ASGIApp) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key="client-key",
        http_client=client_for(app),
        max_retries=0,
    )


def app_and_sdk(
    handler: Callable[..., Any], text: str = BASIC
) -> tuple[ASGIApp, openai.AsyncOpenAI]:
    app = build_app(gateway(handler, text))
    return app, sdk(app)
