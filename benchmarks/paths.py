"""`run.py`'s targets beyond the pass-through (`--targets`): the translated paths, the new
client dialects and governance on Redis, each measured beside `gateway` (the OpenAI-compatible
pass-through) and the floor in the same run.

- `gw-anthropic`: an OpenAI chat client, the gateway translating to Anthropic Messages;
- `gw-gemini`: an OpenAI chat client, the gateway translating to Gemini generateContent;
- `gw-messages`: an Anthropic `/v1/messages` client to the OpenAI-compatible upstream;
- `gw-resp-relay`: `POST /v1/responses` relayed to an OpenAI instance with
  `wire_api = "responses"` (the answer is read for usage and stored for `previous_response_id`);
- `gw-resp-chat`: `POST /v1/responses` translated to the OpenAI-compatible (chat) upstream;
- `gw-resp-relay-unstored`, `gw-resp-chat-unstored`: the same with `"store": false` (the
  Responses API's default is to store every answer: `[responses] store_path`, SQLite);
- `gateway-redis`: the pass-through with one client key with rpm, tpm and `budget_usd`, its
  windows and spend in Redis (`[state] backend = "redis"`), the model priced so every request
  reserves and settles money.

The first seven are served by one gateway process (`gateway-paths`: `gateway`'s config plus an
Anthropic, a Gemini and a Responses-wire instance, all at the same fake upstream, which answers
in the format the path asks for, `formats.py`); `gateway-redis` by its own. Both run with the
same options and pinning as `gateway`.
"""

from __future__ import annotations

from dataclasses import dataclass

from targets import BENCH_KEY, KEY_RPM, KEY_TPM, check_keys

REDIS_URL = "redis://127.0.0.1:6379/12"  # flushed when gateway-redis starts
KEY_BUDGET_USD = 1_000_000_000  # never reached; every request reserves and settles against it


@dataclass(frozen=True)
class Route:
    """How a target is reached: which gateway, at which route, in which client dialect."""

    gateway: str  # the `thanos serve` process (a key of GATEWAY_EXTRA)
    route: str
    dialect: str  # load.py --dialect
    model: str


PATHS = {
    "gw-anthropic": Route("gateway-paths", "/v1/chat/completions", "chat", "anth-model"),
    "gw-gemini": Route("gateway-paths", "/v1/chat/completions", "chat", "gem-model"),
    "gw-messages": Route("gateway-paths", "/v1/messages", "messages", "bench-model"),
    "gw-resp-relay": Route("gateway-paths", "/v1/responses", "responses", "resp-model"),
    "gw-resp-chat": Route("gateway-paths", "/v1/responses", "responses", "bench-model"),
    "gw-resp-relay-unstored": Route(
        "gateway-paths", "/v1/responses", "responses-unstored", "resp-model"
    ),
    "gw-resp-chat-unstored": Route(
        "gateway-paths", "/v1/responses", "responses-unstored", "bench-model"
    ),
    "gateway-redis": Route("gateway-redis", "/v1/chat/completions", "chat", "bench-model"),
}

PATHS_CONFIG = """
[providers.anth]
kind = "anthropic"
base_url = "http://127.0.0.1:{fast}"
api_key = "x"
models = ["anth-model"]

[providers.gem]
kind = "gemini"
base_url = "http://127.0.0.1:{fast}/v1beta"
api_key = "x"
models = ["gem-model"]

[providers.resp]
kind = "openai"
base_url = "http://127.0.0.1:{fast}/v1"
api_key = "x"
wire_api = "responses"
models = ["resp-model"]
"""

REDIS_CONFIG = f"""
[[server.keys]]
id = "bench"
key = "{BENCH_KEY}"
rpm = {KEY_RPM}
tpm = {KEY_TPM}
budget_usd = {KEY_BUDGET_USD}

[state]
backend = "redis"
url = "{{redis}}"

[cost.providers.bench]
input_cost_per_1m_tokens = 1.0
output_cost_per_1m_tokens = 2.0
"""

GATEWAY_EXTRA = {"gateway-paths": PATHS_CONFIG, "gateway-redis": REDIS_CONFIG}


def selected(spec: str) -> list[str]:
    """`--targets`: `base` (none of these), `all`, or names separated by commas."""
    if spec == "base":
        return []
    if spec == "all":
        return list(PATHS)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in PATHS]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; choose from {', '.join(PATHS)}")
    return [name for name in PATHS if name in names]


def flush_redis(url: str) -> None:
    """Empty the benchmark's Redis database (only that one); RuntimeError if unreachable."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        raise RuntimeError(f"gateway-redis: Redis at {url}: {exc}") from exc


def check_redis(url: str, redis_url: str) -> None:
    """RuntimeError unless gateway-redis refuses a request without the key (401), answers one
    with it (200, the key's rpm in its headers), and the key's counters landed in Redis."""
    import redis

    check_keys(url, "gateway-redis")
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        size = client.dbsize()
    finally:
        client.close()
    if not size:
        raise RuntimeError(f"gateway-redis answered, but wrote nothing to {redis_url}")
