"""The gateway's memory over a long run, and what one open stream costs.

    python benchmarks/memory.py                    # 100,000 requests, about 2 minutes
    python benchmarks/memory.py --requests 20000   # a shorter run
    python benchmarks/memory.py --smoke            # 2,000 requests and 50 streams, < 20 s

Part 1, long run: `--requests` requests through one gateway (one worker) on `--connections`
keep-alive connections, alternating a completion and a 20-chunk stream (so half of each, and
the mix is the same all along); every answer is checked (200, a completion, a stream that
ends with [DONE] after all its events). The gateway's resident set (VmRSS in
/proc/PID/status) is read every `--every` requests; the report gives the table, and the
growth from the sample at 10% of the requests to the last one (10k -> 100k by default).

Part 2, per-stream memory: with the gateway idle, its RSS; then `--streams` (1,000) streams
opened at once against an upstream that sends an event every `--hold-delay-ms` (500), held
open until every one has had its first content event; the RSS then, minus the idle RSS, over
the number of streams. Then all streams are read to the end and checked, and the RSS read
again once they are done. Twice for the gateway (the second time shows whether the memory the
first left behind is reused or grows), then once against the floor, for reference.

Processes as in `run.py`: upstreams and this load generator on core 0; the gateway and the
floor on core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from load import request_body
from machine import OtherLoad, peak_rss_mib
from processes import Bench, run_on_targets
from report import conclude, fmt, table
from streams import Stream, session, stream

HEADERS = {"content-type": "application/json", "authorization": "Bearer x"}


def rss_mib(pid: int) -> float:
    """VmRSS (resident set now) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# -- part 1: the long run ----------------------------------------------------------------------


class LongRun:
    """Requests alternating completion and stream, with an RSS sample every `every`."""

    def __init__(self, pid: int, total: int, every: int, chunks: int) -> None:
        self.pid, self.total, self.every, self.chunks = pid, total, every, chunks
        self.issued = self.done = self.errors = 0
        self.problems: list[str] = []
        self.began = time.perf_counter()
        self.samples: list[tuple[int, float, float]] = [(0, 0.0, rss_mib(pid))]

    async def run(self, url: str, connections: int) -> None:
        bodies = (request_body("bench-model", False), request_body("bench-model", True))
        async with session(connections, 60) as client:
            self.began = time.perf_counter()
            await asyncio.gather(*(self._worker(client, url, bodies) for _ in range(connections)))

    async def _worker(
        self, client: aiohttp.ClientSession, url: str, bodies: tuple[bytes, bytes]
    ) -> None:
        while self.issued < self.total:
            streaming = self.issued % 2 == 1
            self.issued += 1
            problem = await self._one(client, url, bodies[streaming], streaming)
            if problem is not None:
                self.errors += 1
                if len(self.problems) < 5:
                    self.problems.append(problem)
            self.done += 1
            if self.done % self.every == 0 or self.done == self.total:
                elapsed = time.perf_counter() - self.began
                self.samples.append((self.done, elapsed, rss_mib(self.pid)))

    async def _one(
        self, client: aiohttp.ClientSession, url: str, body: bytes, streaming: bool
    ) -> str | None:
        try:
            async with client.post(url, data=body, headers=HEADERS) as response:
                data = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if status != 200:
            return f"status {status}: {data[:200]!r}"
        if not streaming:
            return None if b'"chat.completion"' in data else f"not a completion: {data[:200]!r}"
        events = data.count(b"data: ")
        if not data.endswith(b"data: [DONE]\n\n") or events != self.chunks + 3:
            return f"stream of {events} events: {data[-120:]!r}"
        return None


def growth(samples: list[tuple[int, float, float]], total: int) -> tuple[int, float, float]:
    """(requests at the base sample, RSS there, RSS at the end): from 10% of the run on."""
    base = next(s for s in samples if s[0] >= total // 10 and s[0] > 0)
    return base[0], base[2], samples[-1][2]


# -- part 2: memory per open stream ------------------------------------------------------------


class Holder:
    """Holds every stream after its first content event until `release` is set; `ready` is
    set once every stream is either held or over (failed before its first token)."""

    def __init__(self, count: int) -> None:
        self.count, self.held, self.over = count, 0, 0
        self.release, self.ready = asyncio.Event(), asyncio.Event()

    def first_token(self) -> Any:
        self.held += 1
        self._check()
        return self.release.wait()

    def ended(self, task: asyncio.Task[Stream]) -> None:
        if task.result().ttft_ms != task.result().ttft_ms:  # NaN: it was never held
            self.over += 1
            self._check()

    def _check(self) -> None:
        if self.held + self.over >= self.count:
            self.ready.set()


async def open_streams(pid: int, url: str, count: int, chunks: int) -> dict[str, Any]:
    """RSS idle, with `count` streams open (each past its first token), and after them."""
    body = request_body("paced-model", True)
    idle = rss_mib(pid)
    holder = Holder(count)
    async with session(count, 300) as client:
        began = time.perf_counter()
        tasks = []
        for _ in range(count):
            task = asyncio.ensure_future(stream(client, url, body, chunks, holder.first_token))
            task.add_done_callback(holder.ended)
            tasks.append(task)
        with contextlib.suppress(TimeoutError):  # reported: fewer opened than asked
            await asyncio.wait_for(holder.ready.wait(), 120)
        opened, seconds = holder.held, time.perf_counter() - began
        await asyncio.sleep(0.5)  # let the events in flight land
        held = rss_mib(pid)
        holder.release.set()
        streams: list[Stream] = await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)
    after = rss_mib(pid)
    bad = [s.problem for s in streams if s.problem]
    return {
        "streams": count,
        "opened": opened,
        "open_seconds": seconds,
        "idle_mib": idle,
        "held_mib": held,
        "after_mib": after,
        "per_stream_kib": (held - idle) * 1024 / max(1, opened),
        "bad": len(bad),
        "problems": sorted(set(bad))[:5],
    }


# -- running -----------------------------------------------------------------------------------


async def measure(bench: Bench, urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    gateway = bench.pid("gateway")
    print(f"  warm-up: {args.warmup} requests", file=sys.stderr, flush=True)
    warm = LongRun(gateway, args.warmup, args.warmup, args.chunks)
    await warm.run(urls["gateway"], args.connections)
    long = LongRun(gateway, args.requests, args.every, args.chunks)
    print(f"  {args.requests} requests, RSS every {args.every}", file=sys.stderr, flush=True)
    progress = asyncio.ensure_future(report_progress(long))
    await long.run(urls["gateway"], args.connections)
    progress.cancel()
    results: dict[str, Any] = {
        "long": {
            "samples": long.samples,
            "errors": long.errors + warm.errors,
            "problems": (warm.problems + long.problems)[:5],
            "seconds": time.perf_counter() - long.began,
        }
    }
    held = {}
    rounds = (("gateway", "gateway"), ("gateway, again", "gateway"), ("floor", "floor-slow"))
    for target, name in rounds:  # again: memory kept from the first round is reused, not added
        print(f"  {args.streams} open streams: {target}", file=sys.stderr, flush=True)
        held[target] = await open_streams(bench.pid(name), urls[name], args.streams, args.chunks)
    results["held"] = held
    results["peak_mib"] = {
        "gateway": peak_rss_mib(gateway),
        "floor": peak_rss_mib(bench.pid("floor-slow")),
    }
    return results


async def report_progress(run: LongRun) -> None:
    while True:
        await asyncio.sleep(10)
        rate = run.done / max(1e-9, time.perf_counter() - run.began)
        print(f"    {run.done} done, {rate:,.0f} req/s", file=sys.stderr, flush=True)


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    out = []
    samples = results["long"]["samples"]
    rows = []
    previous = (0, 0.0)
    for done, elapsed, rss in samples:
        rate = (done - previous[0]) / (elapsed - previous[1]) if elapsed > previous[1] else None
        rows.append(
            [f"{done:,}", fmt(elapsed, 1), fmt(rss, 1), "-" if rate is None else f"{rate:,.0f}"]
        )
        previous = (done, elapsed)
    out.append(
        f"RSS of the gateway over {args.requests:,} requests (after {args.warmup:,} warm-up), "
        f"{args.connections} connections, completions and {args.chunks}-chunk streams "
        "alternating\n"
    )
    out.append(table(["requests", "seconds", "VmRSS MiB", "req/s since last"], rows) + "\n")
    base_at, base, last = growth(samples, args.requests)
    change = (last - base) / base * 100
    out.append(
        f"growth from {base_at:,} to {samples[-1][0]:,} requests: {base:.1f} -> {last:.1f} MiB "
        f"({change:+.1f}%; issue 9's target: < 10%); answers wrong or failed: "
        f"{results['long']['errors']}\n"
    )
    rows = []
    for target, r in results["held"].items():
        rows.append(
            [
                target,
                f"{r['opened']}/{r['streams']}",
                fmt(r["open_seconds"], 1),
                fmt(r["idle_mib"], 1),
                fmt(r["held_mib"], 1),
                fmt(r["per_stream_kib"], 1),
                fmt(r["after_mib"], 1),
                str(r["bad"]),
            ]
        )
    out.append(
        f"Memory per open stream: {args.streams:,} streams held open at once, upstream events "
        f"{args.hold_delay_ms:g} ms apart; per stream = (RSS held - RSS idle) / streams\n"
    )
    header = ["target", "open", "s to open all", "idle MiB", "held MiB", "KiB per stream",
              "after MiB", "bad streams"]  # fmt: skip
    out.append(table(header, rows) + "\n")
    peak = results["peak_mib"]
    out.append(
        f"Peak RSS (VmHWM) over the whole run: gateway {fmt(peak['gateway'], 1)} MiB, floor "
        f"{fmt(peak['floor'], 1)} MiB"
    )
    return "\n".join(out)


def failures(results: dict[str, Any]) -> list[str]:
    found = []
    if results["long"]["errors"]:
        found.append(f"long run: {results['long']['errors']} answers wrong or failed")
        found += [f"    {p}" for p in results["long"]["problems"]]
    for target, r in results["held"].items():
        if r["bad"] or r["opened"] != r["streams"]:
            found.append(f"open streams, {target}: {r['opened']} opened, {r['bad']} bad")
            found += [f"    {p}" for p in r["problems"]]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short, checked, no targets")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--every", type=int, help="requests between RSS samples (default: 1/20)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--streams", type=int, default=1000, help="held open at once (part 2)")
    parser.add_argument("--hold-delay-ms", type=float, default=500.0, help="between events")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--commit", help="run the gateway from this commit (git archive)")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.warmup, args.streams, args.hold_delay_ms = 2000, 200, 50, 100.0
    args.every = args.every or max(1, args.requests // 20)
    others = OtherLoad()
    run = run_on_targets(
        args, "thanos-memory-", {"upstream": 0.0, "slow": args.hold_delay_ms}, ("slow",), measure
    )
    if run is None:
        return 1
    facts, results, died, logged = run.facts, run.results, run.died, run.logged
    problems = failures(results) + [f"{name} exited during the run" for name in died]
    record = {"facts": facts, "options": {**vars(args), "json": None}, "results": results}
    text = report(results, args)
    return conclude(
        args,
        record,
        others.summary(),
        text,
        logged,
        problems,
        "every answer was a 200 and well-formed",
    )


if __name__ == "__main__":
    raise SystemExit(main())
