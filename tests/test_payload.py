"""Payload rules over loopback: what the provider received, relayed and translated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pool_upstream import KeyedUpstream
from tests.servers import running
from thanos_asgi import build_app
from thanos_asgi.config import parse_config
from thanos_asgi.core.gateway import Gateway
from thanos_asgi.exceptions import ConfigError

pytestmark = pytest.mark.anyio

RULES = """
[[payload.default]]
models = ["gpt-5*", "o4*"]
params = { reasoning_effort = "low", service_tier = "flex" }
[[payload.override]]
models = ["claude-*"]
params = { max_tokens = 4096 }
[[payload.filter]]
models = ["deepseek-*"]
params = ["logprobs", "top_logprobs"]
[[payload.override]]
models = ["*"]
instances = ["nobody"]
params = { temperature = 0.1 }
[[payload.override]]
models = ["gpt-5*"]
keys = ["team-x"]
params = { seed = 7 }
"""


def providers(openai: str, anthropic: str) -> str:
    return (
        f'[providers.openai]\nkind = "openai-compatible"\nbase_url = "{openai}/v1"\n'
        'models = ["gpt-5-mini", "deepseek-chat"]\napi_key = "sk-openai-0123456789abcdef"\n'
        f'[providers.claude]\nkind = "anthropic"\nbase_url = "{anthropic}"\n'
        'models = ["claude-x"]\napi_key = "sk-ant-0123456789abcdef"\n'
        '[providers.nobody]\nkind = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
        "enabled = false\n"
    )


@asynccontextmanager
async def gateway_with_rules() -> AsyncIterator[
    tuple[httpx.AsyncClient, KeyedUpstream, KeyedUpstream]
]:
    openai, anthropic = KeyedUpstream(), KeyedUpstream()
    async with running(openai) as one, running(anthropic) as two:
        config = parse_config(providers(one, two) + RULES, source="t.toml", env={})
        gateway = Gateway(config)
        async with running(build_app(gateway)) as url, httpx.AsyncClient(base_url=url) as http:
            yield http, openai, anthropic
        await gateway.aclose()


def chat(model: str, **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **params}


async def test_relayed_bodies_get_defaults_and_filters() -> None:
    async with gateway_with_rules() as (http, openai, _):
        plain = await http.post("/v1/chat/completions", json=chat("gpt-5-mini"))
        chosen = await http.post(
            "/v1/chat/completions", json=chat("gpt-5-mini", reasoning_effort="high")
        )
        filtered = await http.post(
            "/v1/chat/completions", json=chat("deepseek-chat", logprobs=True, top_logprobs=3)
        )
    assert plain.status_code == chosen.status_code == filtered.status_code == 200
    first, second, third = openai.bodies
    assert first["reasoning_effort"] == "low" and first["service_tier"] == "flex"
    assert second["reasoning_effort"] == "high"  # a default never overrides the client
    assert "logprobs" not in third and "top_logprobs" not in third
    assert "temperature" not in first  # the rule of another instance
    assert "seed" not in first  # the rule of another client key
    assert "reasoning_effort" not in third


async def test_translated_and_anthropic_relayed_requests_get_overrides() -> None:
    async with gateway_with_rules() as (http, _, anthropic):
        translated = await http.post("/v1/chat/completions", json=chat("claude-x", max_tokens=10))
        relayed = await http.post(
            "/v1/messages",
            json=chat("claude-x", max_tokens=10),
            headers={"anthropic-version": "2023-06-01"},
        )
    assert translated.status_code == 200, translated.text
    assert relayed.status_code == 200, relayed.text
    assert [body["max_tokens"] for body in anthropic.bodies] == [4096, 4096]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('[[payload.override]]\nparams = { model = "x" }\n', "may not set or remove model"),
        ('[[payload.filter]]\nparams = ["messages"]\n', "may not set or remove messages"),
        ("[[payload.default]]\nparams = { stream = true }\n", "may not set or remove stream"),
        ('[[payload.override]]\nparams = { max_tokens = "lots" }\n', "Expected `int"),
        ('[[payload.override]]\ninstances = ["ghost"]\nparams = { seed = 1 }\n', "ghost"),
    ],
)
def test_rules_that_touch_the_request_itself_are_refused_at_load(rule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(providers("http://a", "http://b") + rule, source="t.toml", env={})
    assert info.value.path.startswith("payload.")


@pytest.mark.parametrize(
    "params", ["{ max_tokens = 0 }", "{ max_tokens = -5 }", "{ temperature = 9.0 }"]
)
def test_rules_producing_invalid_values_are_refused(params: str) -> None:
    text = providers("http://a", "http://b") + f"[[payload.override]]\nparams = {params}\n"
    with pytest.raises(ConfigError, match=r"payload\.override"):
        Gateway(parse_config(text, source="t.toml", env={}))


def test_thanos_check_refuses_an_invalid_rule_and_shows_a_pool_without_keys(
    tmp_path: Path,
) -> None:
    from tests.test_cli import clean_env, run

    bad = tmp_path / "bad.toml"
    bad.write_text("[providers.ollama]\n[[payload.override]]\nparams = { max_tokens = 0 }\n")
    refused = run("check", str(bad), env=clean_env(tmp_path))
    assert refused.returncode == 2
    assert "payload.override[0].params" in refused.stderr and "at least 1" in refused.stderr
    good = tmp_path / "pool.toml"
    good.write_text('[providers.openai]\napi_key = ["${K1}", "${K2}"]\n')
    secret = "sk-check-0123456789abcdefSECRET"
    shown = run("check", str(good), env=clean_env(tmp_path, K1=secret, K2=secret + "2"))
    assert shown.returncode == 0, shown.stderr
    assert "pool of 2 (key1, key2; round-robin)" in shown.stdout
    assert "SECRET" not in shown.stdout + shown.stderr
