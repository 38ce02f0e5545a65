"""What `run.py` measures: its targets, the gateways' generated config, and a check that the
keyed gateway really checks and counts its key.

`gateway` is `thanos serve` with no client keys and no limits: the default stack (request id,
access log - quiet at `--log-level warning` -, metrics, accounting and the usage ledger).
`gateway-keys` is the same plus one client key with requests- and tokens-per-minute limits far
above anything a benchmark reaches: every request is authenticated (`AuthMiddleware`: a SHA-256
of the key and a lookup), counted in the key's requests window (`RateLimitMiddleware`) and in
its tokens window (taken before dispatch, settled after), in the memory state backend.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

TARGETS = ("direct", "floor", "floor-starlette", "gateway", "gateway-keys")
FLOORS = {"floor": "asgi", "floor-starlette": "starlette"}  # target -> floor.py --framework
SERVES = {t: t for t in TARGETS} | {"direct": "upstream"}  # target -> process measured for CPU
GATEWAYS = ("gateway", "gateway-keys")  # `thanos serve` processes, same pinning and options
MEMORY = ("gateway", "gateway-keys", "floor", "floor-starlette")  # peak RSS reported for these
PACED_DELAY_MS = 5.0  # between the events of the paced upstream's streams

BENCH_KEY = "x"  # what load.py and post.lua send (`Authorization: Bearer x`) to every target
KEY_RPM = 1_000_000_000  # ~17M requests/s: never reached, but every request is counted
KEY_TPM = 1_000_000_000_000

GATEWAY_CONFIG = """\
[server]
bind = "127.0.0.1:{port}"

[providers.bench]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{fast}/v1"
api_key = "x"
models = ["bench-model"]

[providers.paced]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{paced}/v1"
api_key = "x"
models = ["paced-model"]
"""

KEYS_CONFIG = f"""
[[server.keys]]
id = "bench"
key = "{BENCH_KEY}"
rpm = {KEY_RPM}
tpm = {KEY_TPM}
"""

CONFIG_EXTRA = {"gateway": "", "gateway-keys": KEYS_CONFIG}  # appended to GATEWAY_CONFIG


def check_keys(url: str, name: str = "gateway-keys") -> None:
    """RuntimeError unless `url` refuses a request without the key (401) and answers one with
    it (200) carrying the key's requests-per-minute limit, i.e. auth and the limiter are on."""
    parts = urlsplit(url)
    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]})
    for auth, want in (("", 401), (f"Bearer {BENCH_KEY}", 200)):
        headers = {"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {})
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            connection.request("POST", parts.path, body, headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeError(f"{name}: {exc!r}") from exc
        finally:
            connection.close()
        limit = response.getheader("x-ratelimit-limit-requests")
        if response.status != want or (auth and limit != str(KEY_RPM)):
            raise RuntimeError(
                f"{name} {'with' if auth else 'without'} the key answered "
                f"{response.status} (expected {want}), x-ratelimit-limit-requests {limit!r}"
            )
