"""The load generator: latency at one connection (Python), throughput at many (wrk, else Python).

    python benchmarks/load.py latency --url URL [--stream] [--requests 2000 --warmup 200]
    python benchmarks/load.py throughput --url URL [--stream] [--connections 64 --duration 8]

Each prints one JSON object on stdout. `latency` sends requests one after another on one
keep-alive connection (aiohttp client on uvloop), checks every answer (status 200, a
well-formed completion or SSE stream) and reports percentiles of the whole request time; for
streams also the time to the first body bytes. `throughput` runs wrk (`benchmarks/post.lua`)
when it is installed - it is far cheaper per request than a Python client - and an aiohttp
client with the same number of connections otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dialects

HERE = Path(__file__).resolve().parent
WORD = "tok "  # what upstream.py puts in every content chunk
HEADERS = {"content-type": "application/json", "authorization": "Bearer x"}


def request_body(model: str, stream: bool, dialect: str = "chat") -> bytes:
    """A chat completion request (or one in another client dialect, `dialects.py`)."""
    return dialects.request_body(dialect, model, stream)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- checking answers ------------------------------------------------------------------------


def check_completion(body: bytes) -> str | None:
    """None when `body` is a well-formed chat.completion, else what is wrong with it."""
    try:
        data = json.loads(body)
        if data.get("object") != "chat.completion":
            return f"object is {data.get('object')!r}"
        content = data["choices"][0]["message"]["content"]
        if not isinstance(content, str) or not content:
            return "empty content"
        if not isinstance(data["usage"]["total_tokens"], int):
            return "no usage"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"malformed completion: {exc!r}: {body[:200]!r}"
    return None


def check_stream(body: bytes, chunks: int) -> str | None:
    """None when `body` is the SSE stream upstream.py sends for `chunks` content chunks."""
    events = [block for block in body.replace(b"\r\n", b"\n").split(b"\n\n") if block.strip()]
    if not events or events[-1] != b"data: [DONE]":
        return f"stream does not end with [DONE]: {body[-120:]!r}"
    text, finished, usage = [], False, False
    for event in events[:-1]:
        if not event.startswith(b"data: "):
            if event.startswith(b":"):
                continue  # a comment (keep-alive)
            return f"not a data event: {event[:120]!r}"
        try:
            data = json.loads(event[6:])
        except ValueError:
            return f"bad JSON in event: {event[:120]!r}"
        if data.get("object") != "chat.completion.chunk":
            return f"event object is {data.get('object')!r}: {event[:160]!r}"
        for choice in data.get("choices") or ():
            text.append(choice.get("delta", {}).get("content") or "")
            finished = finished or choice.get("finish_reason") == "stop"
        usage = usage or bool(data.get("usage"))
    if "".join(text) != WORD * chunks:
        return f"content is {''.join(text)[:80]!r}, expected {chunks} x {WORD!r}"
    if not finished:
        return "no finish_reason"
    if not usage:
        return "no usage chunk"
    return None


# -- latency ---------------------------------------------------------------------------------


@dataclass
class Sequential:
    """What `latency` collects: the times of the measured answers, every status, problems."""

    totals: list[float] = field(default_factory=list)  # ms, to the last byte
    firsts: list[float] = field(default_factory=list)  # ms, to the first body bytes (streams)
    overheads: list[float] = field(default_factory=list)  # x-thanos-overhead-ms headers
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def result(self, stream: bool) -> dict[str, Any]:
        totals, statuses = self.totals, self.statuses
        result: dict[str, Any] = {
            "requests": len(totals),
            "statuses": statuses,
            "errors": sum(n for s, n in statuses.items() if s != "200") + len(self.problems),
            "problems": self.problems[:5],
            "p50_ms": percentile(totals, 50),
            "p99_ms": percentile(totals, 99),
            "mean_ms": sum(totals) / len(totals) if totals else float("nan"),
        }
        if stream:
            result["ttfb_p50_ms"] = percentile(self.firsts, 50)
            result["ttfb_p99_ms"] = percentile(self.firsts, 99)
        if self.overheads:
            result["overhead_p50_ms"] = percentile(self.overheads, 50)
            result["overhead_p99_ms"] = percentile(self.overheads, 99)
        return result


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    body = request_body(args.model, args.stream, args.dialect)
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    seen = Sequential()
    deadline = time.perf_counter() + args.max_seconds
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for index in range(args.warmup + args.requests):
            if time.perf_counter() > deadline:
                seen.problems.append(f"stopped after {index} requests: --max-seconds reached")
                break
            await one_request(session, args, body, index, seen)
    return seen.result(args.stream)


async def one_request(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    body: bytes,
    index: int,
    seen: Sequential,
) -> None:
    """Send request `index` and check its answer; record its times unless it is a warm-up."""
    started = time.perf_counter()
    first = None
    try:
        async with session.post(args.url, data=body, headers=HEADERS) as response:
            if args.stream:
                head = await response.content.readany()
                first = time.perf_counter()
                data = head + await response.read()
            else:
                data = await response.read()
            ended = time.perf_counter()
            status = response.status
            overhead = response.headers.get("x-thanos-overhead-ms")
            kind = response.headers.get("content-type", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        seen.statuses["exception"] = seen.statuses.get("exception", 0) + 1
        seen.problems.append(f"request {index}: {exc!r}")
        return
    seen.statuses[str(status)] = seen.statuses.get(str(status), 0) + 1
    if status != 200:
        seen.problems.append(f"request {index}: status {status}: {data[:300]!r}")
        return
    if args.stream and not kind.startswith("text/event-stream"):
        problem: str | None = f"content-type {kind!r}"
    elif args.dialect != "chat" and args.stream:
        problem = dialects.check_events(args.dialect, data, args.chunks)
    elif args.dialect != "chat":
        problem = dialects.check_whole(args.dialect, data)
    else:
        problem = check_stream(data, args.chunks) if args.stream else check_completion(data)
    if problem:
        seen.problems.append(f"request {index}: {problem}")
        return
    if index < args.warmup:
        return
    seen.totals.append((ended - started) * 1000)
    if first is not None:
        seen.firsts.append((first - started) * 1000)
    if overhead is not None:
        seen.overheads.append(float(overhead))


# -- throughput ------------------------------------------------------------------------------


def throughput_wrk(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    body = request_body(args.model, args.stream, args.dialect)
    env = {**os.environ, "BENCH_BODY": body.decode()}
    command = [
        wrk,
        "-t1",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        f"--timeout={max(1, round(args.timeout))}s",
        "-s",
        str(HERE / "post.lua"),
        args.url,
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=args.duration + 30, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "engine": "wrk",
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "errors": raw["status"] + socket_errors,
        "non_2xx": raw["status"],
        "socket_errors": socket_errors,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


async def throughput_python(args: argparse.Namespace) -> dict[str, Any]:
    body = request_body(args.model, args.stream, args.dialect)
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    done = errors = 0
    times: list[float] = []

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(stop: float) -> None:
            nonlocal done, errors
            while (started := time.perf_counter()) < stop:
                try:
                    async with session.post(args.url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                done += 1
                errors += not ok
                times.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        stop = began + args.duration
        await asyncio.gather(*(worker(stop) for _ in range(args.connections)))
        elapsed = time.perf_counter() - began
    return {
        "engine": "python",
        "requests": done,
        "rps": done / elapsed,
        "errors": errors,
        "non_2xx": errors,
        "socket_errors": 0,
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("latency", "throughput"):
        command = commands.add_parser(name)
        command.add_argument("--url", required=True)
        command.add_argument("--model", default="bench-model")
        command.add_argument("--stream", action="store_true")
        command.add_argument(
            "--dialect",
            choices=("chat", "messages", "responses", "responses-unstored"),
            default="chat",
        )
        command.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    lat = commands.choices["latency"]
    lat.add_argument("--requests", type=int, default=2000)
    lat.add_argument("--warmup", type=int, default=200)
    lat.add_argument("--max-seconds", type=float, default=60.0, help="stop early after this")
    lat.add_argument("--chunks", type=int, default=20, help="content chunks upstream sends")
    thr = commands.choices["throughput"]
    thr.add_argument("--connections", type=int, default=64)
    thr.add_argument("--duration", type=int, default=8, help="seconds")
    thr.add_argument("--engine", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()

    import uvloop

    if args.command == "latency":
        result = uvloop.run(latency(args))
    else:
        wrk = shutil.which("wrk") if args.engine != "python" else None
        if args.engine == "wrk" and wrk is None:
            raise SystemExit("wrk is not installed (apt-get install wrk)")
        result = throughput_wrk(args, wrk) if wrk else uvloop.run(throughput_python(args))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
