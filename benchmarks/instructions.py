"""Instructions per request through the whole gateway, counted by callgrind.

Instruction counts do not depend on what else the machine is doing, so this compares two
commits (or a change) on a busy machine where req/s would be noise. One process, no HTTP
server in front: the ASGI app (`build_app`, the full middleware stack) is called directly
with a pre-built scope, and it reaches `benchmarks/upstream.py` over loopback through the
production upstream engine. The count is the difference between a run of `--many` and a run
of `--few` requests, divided by the difference, so start-up and warm-up cancel out.

    python benchmarks/instructions.py [--stream] [--source DIR]   # DIR: another checkout

Needs valgrind. The usage ledger is written to a temporary directory, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from processes import free_port  # noqa: E402

BODY = b'{"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}'
STREAM_BODY = BODY[:-1] + b', "stream": true}'
CONFIG = """\
[providers.bench]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "x"
models = ["bench-model"]

[cost]
ledger_path = "{ledger}"
track_usage = {track}
"""


async def _one(app: Any, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
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


async def _inner(port: int, requests: int, stream: bool, ledger: bool = True) -> None:
    from thanos_asgi import Gateway, build_app
    from thanos_asgi.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thanos.toml"
        track = "true" if ledger else "false"
        path.write_text(CONFIG.format(port=port, ledger=Path(tmp) / "usage.db", track=track))
        gateway = Gateway(load_config(path, env={}))
        app = build_app(gateway)
        async with gateway:
            body = STREAM_BODY if stream else BODY
            for _ in range(requests):
                await _one(app, body)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the upstream on port {port} did not start")


def _count(port: int, requests: int, stream: bool, source: Path | None, ledger: bool) -> int:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        argv += [__file__, "--inner", str(requests), "--port", str(port)]
        argv += ["--stream"] if stream else []
        argv += [] if ledger else ["--no-ledger"]
        subprocess.run(argv, check=True, env=env, capture_output=True)
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        assert found, "no totals in the callgrind output"
        return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="streams instead of completions")
    parser.add_argument("--few", type=int, default=200)
    parser.add_argument("--many", type=int, default=1200)
    parser.add_argument("--source", type=Path, help="measure this checkout instead")
    parser.add_argument(
        "--no-ledger",
        action="store_true",
        help="usage tracking off: the ledger's batched SQLite imports (every 20 ms, in rows "
        "per batch that depend on how fast requests go) make counts vary from run to run",
    )
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        asyncio.run(_inner(args.port, args.inner, args.stream, not args.no_ledger))
        return 0
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), "--port", str(port)])
    try:
        _wait_port(port)
        few = _count(port, args.few, args.stream, args.source, not args.no_ledger)
        many = _count(port, args.many, args.stream, args.source, not args.no_ledger)
    finally:
        upstream.terminate()
        upstream.wait()
    per = (many - few) / (args.many - args.few)
    kind = "stream" if args.stream else "completion"
    print(f"{per:,.0f} instructions per {kind} ({args.few} and {args.many} requests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
