"""Instructions per request through the whole gateway, counted by callgrind.

Instruction counts do not depend on what else the machine is doing, so this compares two
commits (or a change) on a busy machine where req/s would be noise. One process, no HTTP
server in front: the ASGI app (`build_app`, the full middleware stack) is called directly
with a pre-built scope, and it reaches `benchmarks/upstream.py` over loopback through the
production upstream engine. The count is the difference between a run of `--many` and a run
of `--few` requests, divided by the difference, so start-up and warm-up cancel out.

    python benchmarks/instructions.py [--stream] [--source DIR]   # DIR: another checkout
    python benchmarks/instructions.py --target gw-anthropic --stream   # a path of paths.py
    python benchmarks/instructions.py --target gw-anthropic --profile  # cProfile, no valgrind
    python benchmarks/instructions.py --stream --keep DIR   # also keep both callgrind outputs
    python benchmarks/instructions.py --cache [--stream]   # response-cache hits (memory)

`--target` sends the path's client dialect to its route and model (`paths.py`; the config
also has its Anthropic, Gemini and Responses-wire instances, all at the same fake upstream);
`--target gateway-redis` adds that path's client key (rpm, tpm, budget) and `[state]` on Redis
at `--redis-url` (default `$THANOS_BENCH_REDIS_URL`, else paths.py's), which is flushed before
each run: give it a database nothing else uses.
`--profile` runs `--many` requests under cProfile in this process and prints the functions
that cost most (own time, then cumulative). Needs valgrind unless `--profile`.
The usage ledger is written to a temporary directory, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dialects import request_body  # noqa: E402
from paths import PATHS, PATHS_CONFIG, REDIS_CONFIG, REDIS_URL, Route, flush_redis  # noqa: E402
from processes import free_port  # noqa: E402
from targets import BENCH_KEY  # noqa: E402

BODY = b'{"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}'
STREAM_BODY = BODY[:-1] + b', "stream": true}'
PASS_THROUGH = Route("gateway", "/v1/chat/completions", "chat", "bench-model")
TARGETS = {"gateway": PASS_THROUGH} | PATHS
CONFIG = """\
[providers.bench]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "x"
models = ["bench-model"]

[cost]
ledger_path = "{ledger}"
track_usage = {track}

[responses]
store_path = "{store}"
""" + PATHS_CONFIG.replace("{fast}", "{port}")
CACHE = "\n[cache]\nenabled = true\n"


async def _one(
    app: Any, body: bytes, path: str = "/v1/chat/completions", keyed: bool = False
) -> int:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if keyed:
        headers.append((b"authorization", b"Bearer " + BENCH_KEY.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[bytes] = []
    status = 0
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            sent.append(message.get("body", b""))

    await app(scope, receive, send)
    if status != 200 or not sent:
        raise SystemExit(f"request failed: {status} {b''.join(sent)[:200]!r}")
    return status


async def _inner(
    port: int,
    requests: int,
    stream: bool,
    target: str = "gateway",
    ledger: bool = True,
    cache: bool = False,
    redis_url: str = REDIS_URL,
) -> None:
    from thanos_asgi import Gateway, build_app
    from thanos_asgi.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thanos.toml"
        store = Path(tmp) / "responses.db"  # as `thanos serve` defaults it
        track = "true" if ledger else "false"
        usage = Path(tmp) / "usage.db"
        config = CONFIG.format(port=port, ledger=usage, store=store, track=track)
        keyed = TARGETS[target].gateway == "gateway-redis"
        if keyed:
            config += REDIS_CONFIG.replace("{redis}", redis_url)
        path.write_text(config + (CACHE if cache else ""))
        gateway = Gateway(load_config(path, env={}))
        app = build_app(gateway)
        async with gateway:
            route = TARGETS[target]
            body = STREAM_BODY if stream else BODY
            if target != "gateway":
                body = request_body(route.dialect, route.model, stream)
            for _ in range(requests):
                await _one(app, body, route.route, keyed)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the upstream on port {port} did not start")


def _count(port: int, requests: int, args: argparse.Namespace) -> int:
    stream, source = args.stream, args.source
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        argv += [__file__, "--inner", str(requests), "--port", str(port)]
        argv += ["--stream"] if stream else []
        argv += ["--target", args.target]
        argv += ["--no-ledger"] if args.no_ledger else []
        argv += ["--cache"] if args.cache else []
        argv += ["--redis-url", args.redis_url]
        _flush(args)
        subprocess.run(argv, check=True, env=env, capture_output=True)
        if args.keep is not None:  # for callgrind_annotate: which C functions cost
            kind = "stream" if stream else "completion"
            shutil.copy(out, args.keep / f"{args.target}-{kind}-{requests}.callgrind")
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        assert found, "no totals in the callgrind output"
        return int(found.group(1))


def _profile(port: int, args: argparse.Namespace) -> None:
    """`--many` requests under cProfile (after `--few` unprofiled), the top functions printed."""
    import cProfile
    import pstats

    _flush(args)
    options = {"ledger": not args.no_ledger, "cache": args.cache, "redis_url": args.redis_url}
    asyncio.run(_inner(port, args.few, args.stream, args.target, **options))
    profiler = cProfile.Profile()  # (the first run did the imports and first calls)
    profiler.enable()
    asyncio.run(_inner(port, args.many, args.stream, args.target, **options))
    profiler.disable()
    if args.profile_out:
        profiler.dump_stats(args.profile_out)
    stats = pstats.Stats(profiler).strip_dirs()
    print(f"{args.target}, {'stream' if args.stream else 'completion'}, {args.many} requests")
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


def _flush(args: argparse.Namespace) -> None:
    """Start `gateway-redis` on an empty database (its windows and budget from zero)."""
    if TARGETS[args.target].gateway == "gateway-redis":
        flush_redis(args.redis_url)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="streams instead of completions")
    parser.add_argument("--few", type=int, default=200)
    parser.add_argument("--many", type=int, default=1200)
    parser.add_argument("--source", type=Path, help="measure this checkout instead")
    parser.add_argument("--target", choices=list(TARGETS), default="gateway")
    parser.add_argument("--profile", action="store_true", help="cProfile --many requests")
    parser.add_argument("--keep", type=Path, help="keep the two callgrind outputs in this folder")
    parser.add_argument("--profile-out", help="with --profile: also save the stats to this file")
    parser.add_argument(
        "--no-ledger",
        action="store_true",
        help="usage tracking off: the ledger's batched SQLite imports (every 20 ms, in rows "
        "per batch that depend on how fast requests go) make counts vary from run to run",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="[cache] on (memory): the first request is a miss, every other one a hit",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("THANOS_BENCH_REDIS_URL", REDIS_URL),
        help="gateway-redis's state (flushed before each run; default $THANOS_BENCH_REDIS_URL, "
        "else %(default)s)",
    )
    parser.add_argument(
        "--chunks", type=int, default=20, help="content chunks per stream (default %(default)s)"
    )
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    if args.inner is not None:
        ledger = not args.no_ledger
        run = _inner(
            args.port, args.inner, args.stream, args.target, ledger, args.cache, args.redis_url
        )
        asyncio.run(run)
        return 0
    port = free_port()
    command = [sys.executable, str(HERE / "upstream.py"), "--port", str(port)]
    upstream = subprocess.Popen([*command, "--chunks", str(args.chunks)])
    try:
        _wait_port(port)
        if args.profile:
            _profile(port, args)
            return 0
        few = _count(port, args.few, args)
        many = _count(port, args.many, args)
    finally:
        upstream.terminate()
        upstream.wait()
    per = (many - few) / (args.many - args.few)
    kind = ("stream" if args.stream else "completion") + (" (cache hit)" if args.cache else "")
    print(
        f"{per:,.0f} instructions per {kind} ({args.few} and {args.many} requests, "
        f"{args.target}: {TARGETS[args.target].route}, {TARGETS[args.target].dialect} client"
        + (f", {args.chunks} chunks)" if args.stream else ")")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
