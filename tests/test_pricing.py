"""Prices: the bundled models.dev snapshot, lookups, config overrides, cost math, refreshes."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from thanos_asgi.config import Config, load_config, parse_config
from thanos_asgi.governance.pricing import (
    FREE,
    MODELS_DEV_KINDS,
    Price,
    PriceBook,
    PriceTable,
    Pricing,
    cost_of,
    estimate_prompt_tokens,
    refresh,
    snapshot_from_models_dev,
)
from thanos_asgi.types import (
    ChatRequest,
    CompletionTokensDetails,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    PromptTokensDetails,
    TextPart,
    Tool,
    Usage,
)
from thanos_asgi.upstream import HttpxTransport

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
API_JSON = SHARED / "models.dev" / "api.json"
needs_shared = pytest.mark.skipif(not API_JSON.exists(), reason="needs ../shared/models.dev")


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load_bundled()


@pytest.fixture(scope="module")
def api() -> dict[str, Any]:
    if not API_JSON.exists():
        pytest.skip("needs ../shared/models.dev")
    data: dict[str, Any] = json.loads(API_JSON.read_text(encoding="utf-8"))
    return data


def expected(api: dict[str, Any], provider: str, model: str) -> Price:
    cost = api[provider]["models"][model]["cost"]
    return Price(cost["input"], cost["output"], cost.get("cache_read"), cost.get("cache_write"))


def seed(name: str) -> Config:
    path = SHARED / "seed-configs" / name
    if not path.exists():
        pytest.skip("needs ../shared/seed-configs")
    return load_config(path, env={})


# -- the table ----------------------------------------------------------------------------------


def test_bundled_table_loads_every_kind_we_route_to(table: PriceTable) -> None:
    assert len(table) > 300
    assert table.as_of is not None and table.as_of.startswith("20")
    for kind in MODELS_DEV_KINDS.values():
        assert table.lookup(kind, "no-such-model") is None
    assert {kind for kind in MODELS_DEV_KINDS.values() if table.models(kind)} == set(
        MODELS_DEV_KINDS.values()
    )


@pytest.mark.parametrize(
    ("kind", "provider", "model"),
    [
        ("openai", "openai", "gpt-4o-mini"),
        ("anthropic", "anthropic", "claude-3-5-sonnet-20241022"),
        ("gemini", "google", "gemini-2.0-flash"),
        ("vertex", "google-vertex", "gemini-2.0-flash"),
        ("xai", "xai", "grok-3-mini"),
        ("deepseek", "deepseek", "deepseek-chat"),
        ("groq", "groq", "llama-3.3-70b-versatile"),
        ("openrouter", "openrouter", "anthropic/claude-sonnet-4.5"),
        ("copilot", "github-copilot", "gpt-4o"),
    ],
)
def test_real_models_have_the_models_dev_prices(
    table: PriceTable, api: dict[str, Any], kind: str, provider: str, model: str
) -> None:
    assert table.lookup(kind, model) == expected(api, provider, model)


@pytest.mark.parametrize(
    ("kind", "asked", "known"),
    [
        ("anthropic", "claude-sonnet-4-5-20991231", "claude-sonnet-4-5"),  # date stripped
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # dashed date stripped
        ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # its own price, not gpt-4o's
        ("openai", "gpt-4o-mini-search-preview", "gpt-4o-mini"),  # longest prefix
        ("openai", "o3-mini-high", "o3-mini"),
        ("gemini", "gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("openai", "GPT-4o", "gpt-4o"),
    ],
)
def test_lookup_is_lenient_about_versions(
    table: PriceTable, api: dict[str, Any], kind: str, asked: str, known: str
) -> None:
    provider = {"gemini": "google"}.get(kind, kind)
    assert table.lookup(kind, asked) == expected(api, provider, known)


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("openai", "gpt-4.5-preview"),  # a prefix must end at -, : or @: not gpt-4
        ("openai", "no-such-model"),
        ("ollama", "llama3:8b"),
        ("openai-compatible", "gpt-4o"),
    ],
)
def test_unknown_models_have_no_price(table: PriceTable, kind: str, model: str) -> None:
    assert table.lookup(kind, model) is None


def test_trimming_keeps_our_providers_and_four_prices_and_skips_junk() -> None:
    data = {
        "openai": {
            "models": {
                "a": {"cost": {"input": 1, "output": 2, "reasoning": 9, "cache_read": 0.5}},
                "no-cost": {"id": "no-cost"},
                "bool": {"cost": {"input": True, "output": 2}},
                "negative": {"cost": {"input": -1, "output": 2}},
                "bad-cache": {"cost": {"input": 1, "output": 2, "cache_write": "x"}},
            }
        },
        "google": {"models": {"g": {"cost": {"input": 3, "output": 4}, "last_updated": "2025-01"}}},
        "somebody-else": {"models": {"z": {"cost": {"input": 1, "output": 1}}}},
        "broken": "not a provider",
    }
    snapshot = snapshot_from_models_dev(data)
    assert snapshot["as_of"] == "2025-01"
    assert snapshot["prices"] == {
        "openai": {
            "a": {"input": 1, "output": 2, "cache_read": 0.5},
            "bad-cache": {"input": 1, "output": 2},
        },
        "gemini": {"g": {"input": 3, "output": 4}},
    }
    assert list(snapshot) == sorted(snapshot)
    assert PriceTable.from_models_dev(data).lookup("openai", "a") == Price(1.0, 2.0, 0.5, None)


@needs_shared
def test_checked_in_snapshot_equals_a_fresh_generation() -> None:
    spec = importlib.util.spec_from_file_location("make_prices", ROOT / "scripts/make_prices.py")
    assert spec is not None and spec.loader is not None
    make_prices = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_prices)
    checked_in = (ROOT / "thanos_asgi" / "governance" / "data" / "prices.json").read_text(
        encoding="utf-8"
    )
    assert make_prices.generate(API_JSON) == checked_in, "run scripts/make_prices.py"
    assert len(checked_in.encode()) < 64 * 1024


# -- per instance: the config first -----------------------------------------------------------


def test_seed_cost_toml_overrides(table: PriceTable, api: dict[str, Any]) -> None:
    pricing = Pricing(seed("cost.toml"), table)
    sonnet = expected(api, "anthropic", "claude-3-5-sonnet-20241022")
    claude = pricing.price("claude", "claude-3-5-sonnet-20241022")
    # the config's input/output win; the cache prices the config leaves out come from the table
    assert claude == Price(3.0, 15.0, sonnet.cache_read, sonnet.cache_write)
    gpt4 = pricing.price("gpt4", "gpt-4o")
    assert gpt4 is not None and (gpt4.input, gpt4.output) == (10.0, 30.0)
    assert pricing.price("gpt4", "a-model-nobody-knows") == Price(10.0, 30.0)
    assert pricing.price("copilot", "gpt-4o") == FREE
    assert pricing.price("ollama", "llama3:8b") == FREE
    assert pricing.monthly_fixed() == {"copilot": 10.0}
    assert pricing.is_free("ollama") and pricing.is_free("copilot")
    assert not pricing.is_free("claude") and not pricing.is_free("gpt4")
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)
    assert pricing.cost("claude", "claude-3-5-sonnet-20241022", usage) == pytest.approx(18.0)
    assert pricing.cost("gpt4", "gpt-4", usage) == pytest.approx(40.0)
    assert pricing.cost("copilot", "gpt-4o", usage) == 0.0
    assert pricing.cost("ollama", "llama3:8b", usage) == 0.0


def test_seed_complete_hybrid(table: PriceTable, api: dict[str, Any]) -> None:
    pricing = Pricing(seed("complete-hybrid.toml"), table)
    # `monthly_cost = 10.00` without a pricing_model is a subscription
    assert pricing.price("copilot", "gpt-4o") == FREE
    assert pricing.monthly_fixed() == {"copilot": 10.0}
    claude = pricing.price("claude", "claude-3-5-sonnet-20241022")
    assert claude is not None and (claude.input, claude.output) == (3.0, 15.0)
    assert pricing.price("grok", "grok-3-mini") == expected(api, "xai", "grok-3-mini")
    assert pricing.price("gpt4", "gpt-4o-mini") == expected(api, "openai", "gpt-4o-mini")
    assert pricing.is_free("ollama") and not pricing.is_free("grok")


def config(text: str) -> Config:
    return parse_config(text, source="test.toml", env={})


def test_kinds_and_free_flags(table: PriceTable) -> None:
    pricing = Pricing(
        config(
            """
            [providers.local]
            kind = "ollama"
            [providers.box]
            kind = "openai-compatible"
            base_url = "http://box.test/v1"
            [providers.deepseek]
            kind = "openai-compatible"
            base_url = "https://api.deepseek.com"
            [providers.paid_local]
            kind = "ollama"
            [cost.providers.paid_local]
            input_cost_per_1m_tokens = 1.0
            output_cost_per_1m_tokens = 2.0
            [cost.providers.half]
            cache_read_cost_per_1m_tokens = 0.1
            """
        ),
        table,
    )
    assert pricing.price("local", "llama3:8b") == FREE and pricing.is_free("local")
    assert pricing.price("box", "gpt-4o") is None  # an unknown server: no guess
    assert pricing.price("deepseek", "deepseek-chat") == table.lookup("deepseek", "deepseek-chat")
    assert pricing.price("paid_local", "llama3:8b") == Price(1.0, 2.0)
    assert not pricing.is_free("paid_local")
    assert pricing.price("half", "x") is None  # a cache price alone prices nothing
    assert pricing.price("openai", "gpt-4o") == table.lookup("openai", "gpt-4o")  # unconfigured
    assert pricing.cost("box", "gpt-4o", Usage(prompt_tokens=5)) is None
    assert pricing.worst_case("box", "gpt-4o", 10, 10) is None


# -- the math ---------------------------------------------------------------------------------

MILLION = 1_000_000


def test_cached_prompt_tokens_bill_at_the_cache_read_price() -> None:
    price = Price(input=0.15, output=0.6, cache_read=0.08)
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=200,
        total_tokens=1200,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=400),
    )
    assert cost_of(price, usage) == pytest.approx((600 * 0.15 + 400 * 0.08 + 200 * 0.6) / MILLION)


def test_anthropic_cache_writes_bill_at_the_cache_write_price() -> None:
    price = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    details = PromptTokensDetails(cached_tokens=600, cache_creation_tokens=300)
    usage = Usage(prompt_tokens=1000, completion_tokens=50, prompt_tokens_details=details)
    total = 100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 50 * 15.0
    assert cost_of(price, usage) == pytest.approx(total / MILLION)


def test_cache_tokens_without_a_cache_price_bill_at_input() -> None:
    price = Price(input=1.0, output=2.0)
    details = PromptTokensDetails(cached_tokens=600, cache_creation_tokens=300)
    usage = Usage(prompt_tokens=1000, completion_tokens=10, prompt_tokens_details=details)
    assert cost_of(price, usage) == pytest.approx((1000 * 1.0 + 10 * 2.0) / MILLION)


def test_xai_reasoning_outside_completion_tokens_is_still_billed() -> None:
    price = Price(input=0.3, output=0.5)
    reasoning = CompletionTokensDetails(reasoning_tokens=50)
    xai = Usage(
        prompt_tokens=100,
        completion_tokens=10,
        total_tokens=160,
        completion_tokens_details=reasoning,
    )
    openai = Usage(
        prompt_tokens=100,
        completion_tokens=60,
        total_tokens=160,
        completion_tokens_details=reasoning,
    )
    expected_cost = (100 * 0.3 + 60 * 0.5) / MILLION
    assert cost_of(price, xai) == pytest.approx(expected_cost)
    assert cost_of(price, openai) == pytest.approx(expected_cost)
    no_total = Usage(prompt_tokens=100, completion_tokens=60)
    assert cost_of(price, no_total) == pytest.approx(expected_cost)


def test_worst_case(table: PriceTable) -> None:
    pricing = Pricing(config("[providers.openai]\n[providers.ollama]\n"), table)
    mini = table.lookup("openai", "gpt-4o-mini")
    assert mini is not None
    worst = pricing.worst_case("openai", "gpt-4o-mini", 1000, 500)
    assert worst == pytest.approx((1000 * mini.input + 500 * mini.output) / MILLION)
    assert pricing.worst_case("ollama", "llama3:8b", 1000, 500) == 0.0
    assert pricing.worst_case("openai", "no-such-model", 1000, 500) is None


def test_estimate_prompt_tokens() -> None:
    def request(*messages: Message, **extra: Any) -> ChatRequest:
        return ChatRequest(model="m", messages=list(messages), **extra)

    text = Message(role="user", content="x" * 400)
    assert estimate_prompt_tokens(request(text)) == 100 + 4 + 3
    assert estimate_prompt_tokens(request(text, text)) == 200 + 8 + 3
    image = ImagePart(image_url=ImageURL(url="https://example.test/a.png"))
    parts = Message(role="user", content=[TextPart(text="y" * 40), image])
    assert estimate_prompt_tokens(request(parts)) == 10 + 4 + 3 + 1000
    tool = Tool(function=FunctionDef(name="f", parameters={"type": "object"}))
    assert estimate_prompt_tokens(request(text, tools=[tool])) > 107
    cjk = Message(role="user", content="漢" * 100)  # 3 UTF-8 bytes each: ~75 tokens, not 25
    assert estimate_prompt_tokens(request(cjk)) == 75 + 4 + 3


# -- refreshing from models.dev ---------------------------------------------------------------

URL = "https://models.dev/api.json"
FRESH = {"openai": {"models": {"gpt-new": {"cost": {"input": 7, "output": 8}}}}}


def transport(handler: Callable[[httpx.Request], httpx.Response]) -> HttpxTransport:
    return HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def broken(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("offline", request=request)


@pytest.mark.anyio
async def test_refresh_fetches_and_trims_models_dev() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=FRESH)

    client = transport(handler)
    fresh = await refresh(URL, client)
    await client.aclose()
    assert seen == [URL]
    assert fresh is not None and fresh.lookup("openai", "gpt-new") == Price(7.0, 8.0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "handler",
    [
        broken,
        lambda request: httpx.Response(503, text="down"),
        lambda request: httpx.Response(200, content=b"{not json"),
        lambda request: httpx.Response(200, json=[1, 2]),
        lambda request: httpx.Response(200, json={"other": {"models": {}}}),  # nothing of ours
    ],
)
async def test_refresh_failures_return_none(
    handler: Callable[[httpx.Request], httpx.Response],
) -> None:
    client = transport(handler)
    assert await refresh(URL, client) is None
    await client.aclose()


@pytest.mark.anyio
async def test_price_book_refreshes_when_due_and_keeps_its_table_on_failure(
    table: PriceTable,
) -> None:
    now = [1000.0]
    book = PriceBook(table, url=URL, cache_ttl=3600, clock=lambda: now[0])
    pricing = Pricing(config("[providers.openai]\n"), book)
    offline = transport(broken)
    assert book.refresh_due()
    assert not await book.maybe_refresh(offline)
    assert book.table is table  # offline: the bundled table stays
    assert not book.refresh_due()  # and the next try waits a full cache_ttl
    assert pricing.price("openai", "gpt-new") is None
    now[0] += 3600
    online = transport(lambda request: httpx.Response(200, json=FRESH))
    assert await book.maybe_refresh(online)
    assert pricing.price("openai", "gpt-new") == Price(7.0, 8.0)
    assert not await book.maybe_refresh(online)  # fresh for another hour
    for client in (offline, online):
        await client.aclose()


def test_price_book_from_config_is_off_unless_enabled() -> None:
    book = PriceBook.from_config(config("").models_dev)
    assert not book.refresh_due()
    assert book.lookup("openai", "gpt-4o-mini") is not None
    on = PriceBook.from_config(config("[models_dev]\nenabled = true\n").models_dev)
    assert on.refresh_due()


def test_lenient_lookups_are_remembered_within_a_bound() -> None:
    """Each (kind, model) answer is kept (the prefix search scans every id of a kind), at most
    MEMO of them: a client naming a new model on every request cannot grow it without end."""
    from thanos_asgi.governance.catalogue import MEMO, Lookups

    table = Lookups({"k": {"gpt-4o": 1, "gpt-4o-mini": 2}})
    for _ in range(2):
        assert table.get("k", "gpt-4o-mini-search") == 2  # the longest prefix
        assert table.get("k", "gpt-4o-2024-08-06") == 1  # the date suffix dropped
        assert table.get("k", "gpt-4.5") is None
        assert table.get("other", "gpt-4o") is None
    for n in range(MEMO * 2 + 7):
        assert table.get("k", f"client-named-{n}") is None
        assert len(table._memo) <= MEMO
    assert table.get("k", "gpt-4o-mini") == 2
