"""Many streams at once through the gateway, beside direct and the floor, in one run.

    python benchmarks/streams.py              # both parts, about 1 minute
    python benchmarks/streams.py --smoke      # 50 + 8 streams, every one checked, < 20 s

Part 1, concurrency: `--concurrent` (1,000) streams opened at once on as many connections,
against an upstream that sends its 23 events `--delay-ms` (10) apart; every stream is read to
the end and checked. Reported per target: answers that were not a 200 (errors), 200s whose
stream was cut or wrong (incomplete), time to the first token and to the last byte, the
serving process's CPU time and peak RSS.

Part 2, added latency under load: `--slow` (32) connections, each streaming from the same
paced upstream `--slow-rounds` times in a row, per target, `--repeat` times interleaved.
Reported: time to the first token (the first event with content) p50/p99, what the floor and
the gateway add to direct's, and gateway-added over floor-added.

Processes as in `run.py` (started with `processes.py`): the upstream and this load generator
on core 0, the floor and the gateway (one worker) on core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from load import check_stream, percentile, request_body
from machine import OtherLoad, cpu_seconds, peak_rss_mib
from processes import Bench, run_on_targets
from report import conclude, fmt, table

TARGETS = ("direct", "floor", "gateway")
SERVES = {"direct": "upstream", "floor": "floor-upstream", "gateway": "gateway"}
HEADERS = {"content-type": "application/json", "authorization": "Bearer x"}
FIRST_TOKEN = re.compile(rb'"content":\s*"[^"]')  # an event whose delta carries text


# -- one stream --------------------------------------------------------------------------------


@dataclass
class Stream:
    status: int = 0  # 0: no answer
    ttfb_ms: float = float("nan")  # to the first body bytes
    ttft_ms: float = float("nan")  # to the first event with content
    total_ms: float = float("nan")  # to the last byte
    problem: str | None = None


async def stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    chunks: int,
    on_first_token: Callable[[], Any] | None = None,
) -> Stream:
    """POST one streaming request and read it to the end; `on_first_token` is awaited (if it
    returns an awaitable) when the first content arrives, before reading on."""
    result = Stream()
    data = bytearray()
    began = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=HEADERS) as response:
            result.status = response.status
            async for piece in response.content.iter_any():
                now = time.perf_counter()
                if not data:
                    result.ttfb_ms = (now - began) * 1000
                data += piece
                if result.ttft_ms != result.ttft_ms and FIRST_TOKEN.search(data):
                    result.ttft_ms = (now - began) * 1000
                    if on_first_token is not None:
                        waiting = on_first_token()
                        if waiting is not None:
                            await waiting
            result.total_ms = (time.perf_counter() - began) * 1000
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.problem = f"{type(exc).__name__}: {exc}"
        return result
    if result.status != 200:
        result.problem = f"status {result.status}: {bytes(data[:200])!r}"
    else:
        result.problem = check_stream(bytes(data), chunks)
    return result


def session(connections: int, timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


def tally(streams: list[Stream]) -> dict[str, Any]:
    """Counts, percentiles and the first few problems of a batch of streams."""
    good = [s for s in streams if s.problem is None]
    return {
        "streams": len(streams),
        "complete": len(good),
        "errors": sum(1 for s in streams if s.status != 200),
        "incomplete": sum(1 for s in streams if s.status == 200 and s.problem is not None),
        "problems": sorted({s.problem for s in streams if s.problem})[:5],
        "ttfb_p50_ms": percentile([s.ttfb_ms for s in good], 50),
        "ttft_p50_ms": percentile([s.ttft_ms for s in good], 50),
        "ttft_p99_ms": percentile([s.ttft_ms for s in good], 99),
        "total_p50_ms": percentile([s.total_ms for s in good], 50),
        "total_p99_ms": percentile([s.total_ms for s in good], 99),
    }


# -- part 1: many at once ----------------------------------------------------------------------


async def concurrent(url: str, count: int, chunks: int, seconds: float) -> dict[str, Any]:
    """`count` streams opened at once, each on its own connection, all read to the end."""
    body = request_body("bench-model", True)
    async with session(count, seconds) as client:
        began = time.perf_counter()
        streams = await asyncio.gather(*(stream(client, url, body, chunks) for _ in range(count)))
        wall = time.perf_counter() - began
    return {**tally(list(streams)), "wall_s": wall}


# -- part 2: slow streams, added latency -------------------------------------------------------


async def slow(
    url: str, connections: int, rounds: int, chunks: int, seconds: float
) -> list[Stream]:
    """`connections` clients, each streaming `rounds` times in a row on its keep-alive
    connection; one warm-up round first, not counted."""
    body = request_body("bench-model", True)
    async with session(connections, seconds) as client:

        async def one_client() -> list[Stream]:
            await stream(client, url, body, chunks)  # warm-up: connections, code paths
            return [await stream(client, url, body, chunks) for _ in range(rounds)]

        batches = await asyncio.gather(*(one_client() for _ in range(connections)))
    return [s for batch in batches for s in batch]


# -- running -----------------------------------------------------------------------------------


async def measure(bench: Bench, urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"concurrent": {}, "slow": {}}
    targets = {
        "direct": urls["upstream"],
        "floor": urls["floor-upstream"],
        "gateway": urls["gateway"],
    }
    for target, url in targets.items():
        print(f"  {args.concurrent} concurrent streams: {target}", file=sys.stderr, flush=True)
        await concurrent(url, min(100, args.concurrent), args.chunks, args.timeout)  # warm-up
        pid = bench.pid(SERVES[target])
        before = cpu_seconds(pid)
        row = await concurrent(url, args.concurrent, args.chunks, args.timeout)
        row["cpu_s"] = cpu_seconds(pid) - before
        row["peak_rss_mib"] = peak_rss_mib(pid) if target != "direct" else None
        results["concurrent"][target] = row
    pooled: dict[str, list[Stream]] = {target: [] for target in TARGETS}
    for repetition in range(args.repeat):
        for target, url in targets.items():
            print(
                f"  {args.slow} slow streams x {args.slow_rounds}: {target} "
                f"({repetition + 1}/{args.repeat})",
                file=sys.stderr,
                flush=True,
            )
            pooled[target] += await slow(
                url, args.slow, args.slow_rounds, args.chunks, args.timeout
            )
    results["slow"] = {target: tally(streams) for target, streams in pooled.items()}
    results["slow_raw_ttft_ms"] = {t: [s.ttft_ms for s in pooled[t]] for t in TARGETS}
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    added = _added(results["slow"])
    return "\n".join(
        [
            _concurrent_table(results["concurrent"], args),
            _slow_table(results["slow"], added, args),
            f"gateway-added / floor-added TTFT: p50 {added_ratio(added, 0)}, "
            f"p99 {added_ratio(added, 1)} (issue 9's target: p99 <= 2x)",
        ]
    )


def _concurrent_table(measured: dict[str, Any], args: argparse.Namespace) -> str:
    rows = []
    for target in TARGETS:
        r = measured[target]
        rows.append(
            [
                target,
                str(r["streams"]),
                str(r["complete"]),
                str(r["errors"]),
                str(r["incomplete"]),
                fmt(r["ttft_p50_ms"], 1),
                fmt(r["ttft_p99_ms"], 1),
                fmt(r["total_p50_ms"], 1),
                fmt(r["total_p99_ms"], 1),
                fmt(r["wall_s"], 2),
                fmt(r["cpu_s"], 2),
                fmt(r["peak_rss_mib"], 1),
            ]
        )
    ideal = (args.chunks + 2) * args.delay_ms
    title = (
        f"{args.concurrent} streams at once, one connection each; upstream: {args.chunks + 3} "
        f"events {args.delay_ms:g} ms apart (~{ideal:g} ms a stream); CPU s and peak RSS of "
        "the serving process (the upstream for direct)"
    )
    header = ["target", "streams", "complete", "errors", "incomplete", "TTFT p50 ms",
              "TTFT p99 ms", "total p50 ms", "total p99 ms", "wall s", "CPU s",
              "peak RSS MiB"]  # fmt: skip
    return f"{title}\n\n{table(header, rows)}\n"


def _added(slow: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per target, its TTFT p50 and p99 minus direct's."""
    p50, p99 = slow["direct"]["ttft_p50_ms"], slow["direct"]["ttft_p99_ms"]
    return {t: (slow[t]["ttft_p50_ms"] - p50, slow[t]["ttft_p99_ms"] - p99) for t in TARGETS}


def _slow_table(
    slow: dict[str, Any], added: dict[str, tuple[float, float]], args: argparse.Namespace
) -> str:
    rows = []
    for target in TARGETS:
        r, plus = slow[target], added[target]
        rows.append(
            [
                target,
                str(r["complete"]),
                str(r["errors"] + r["incomplete"]),
                fmt(r["ttft_p50_ms"], 2),
                fmt(r["ttft_p99_ms"], 2),
                "-" if target == "direct" else fmt(plus[0], 2),
                "-" if target == "direct" else fmt(plus[1], 2),
                fmt(r["total_p50_ms"], 1),
                fmt(r["total_p99_ms"], 1),
            ]
        )
    title = (
        f"{args.slow} concurrent slow streams (same upstream), {args.slow_rounds} in a row per "
        f"connection after 1 warm-up, {args.repeat} interleaved repetitions pooled; TTFT = time "
        "to the first event with content"
    )
    header = ["target", "streams", "bad", "TTFT p50 ms", "TTFT p99 ms", "added p50",
              "added p99", "total p50 ms", "total p99 ms"]  # fmt: skip
    return f"{title}\n\n{table(header, rows)}\n"


def added_ratio(added: dict[str, tuple[float, float]], at: int) -> str:
    gateway, floor = added["gateway"][at], added["floor"][at]
    if floor <= 0:
        return f"undefined (the floor added {floor:.2f} ms, the gateway {gateway:.2f} ms)"
    return f"{gateway / floor:.2f}x"


def failures(results: dict[str, Any]) -> list[str]:
    found = []
    for part in ("concurrent", "slow"):
        for target, row in results[part].items():
            if row["errors"] or row["incomplete"] or not row["complete"]:
                found.append(
                    f"{part}/{target}: {row['errors']} errors, {row['incomplete']} incomplete, "
                    f"{row['complete']} complete"
                )
                found += [f"    {problem}" for problem in row["problems"]]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few checked streams, no timing")
    parser.add_argument("--concurrent", type=int, default=1000, help="streams at once (part 1)")
    parser.add_argument("--slow", type=int, default=32, help="concurrent slow streams (part 2)")
    parser.add_argument("--slow-rounds", type=int, default=6, help="streams per connection")
    parser.add_argument("--repeat", type=int, default=10, help="part 2 repetitions, interleaved")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="between upstream events")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per stream")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--commit", help="run the gateway from this commit (git archive)")
    args = parser.parse_args()
    if args.smoke:
        args.concurrent, args.slow, args.slow_rounds, args.repeat = 50, 8, 2, 1
    others = OtherLoad()
    run = run_on_targets(
        args, "thanos-streams-", {"upstream": args.delay_ms}, ("upstream",), measure
    )
    if run is None:
        return 1
    facts, results, died, logged = run.facts, run.results, run.died, run.logged
    problems = failures(results) + [f"{name} exited during the run" for name in died]
    record = {"facts": facts, "options": vars(args) | {"json": None}, "results": results}
    text = report(results, args)
    return conclude(
        args,
        record,
        others.summary(),
        text,
        logged,
        problems,
        "every stream was a 200 and complete",
    )


if __name__ == "__main__":
    raise SystemExit(main())
