"""Throughput of response-cache hits beside the pass-through and the floor, in one run.

    python benchmarks/cache.py              # completions and streams, about 1 minute
    python benchmarks/cache.py --smoke      # a few checked answers per target, < 20 s

Starts (with `processes.py`) the fake upstream, the floor in front of it, the ceiling
(`floor.py --framework constant`: the upstream's answer from an ASGI app under the same server,
no upstream call: what a hit can at best approach) and two `thanos serve`: `gateway` (no cache:
every request goes to the upstream) and `gateway-cache` (`[cache] enabled = true`, pre-warmed
with the one request `load.py` sends, so every measured request is a hit; a stream and a whole
answer share the entry). Then `load.py throughput` for each target, completions and streams,
and then streams and whole answers from a paced upstream (5 ms between events, the way a
provider writes; a whole answer comes when its stream would have ended, ~100 ms; gateway and
gateway-cache only), interleaved `--repeat` times; the report gives requests per second and
the ratios over the pass-through (the issue's target for hits: at least 3x) and over the
floor. `--smoke` sends a few requests per target, checks every answer and that the cache
answered `x-thanos-cache: hit`.
Pinning as in `run.py`: the upstream and the load generator on core 0, the rest on core 1.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from load import request_body
from machine import OtherLoad, cpu_seconds, environment
from processes import (
    HERE,
    PYTHON,
    Bench,
    free_port,
    tail,
    terminate_on_sigterm,
    thanos_command,
    wait_ready,
)
from report import fmt, ratio, table
from targets import GATEWAY_CONFIG, PACED_DELAY_MS

TARGETS = ("ceiling", "floor", "gateway", "gateway-cache")
PACED = ["--stream", "--model", "paced-model"]  # an upstream taking 5 ms between events
GATEWAYS = ("gateway", "gateway-cache")
MODES = {  # mode -> load.py flags, targets (the floor stands in front of the fast upstream only)
    "plain": ([], TARGETS),
    "stream": (["--stream"], TARGETS),
    "paced": (PACED, GATEWAYS),
    "plain-paced": (PACED[1:], GATEWAYS),  # whole answers, sent when the stream would end
}
CACHE = "\n[cache]\nenabled = true\n"
PATH = "/v1/chat/completions"


def start(bench: Bench) -> None:
    fast, paced = free_port(), free_port()
    upstream = [PYTHON, str(HERE / "upstream.py"), "--chunks", str(bench.chunks)]
    started = [bench.start("upstream", [*upstream, "--port", str(fast)], 0, fast)]
    paced_argv = [*upstream, "--port", str(paced), "--delay-ms", str(PACED_DELAY_MS)]
    started.append(bench.start("upstream-paced", paced_argv, 0, paced))
    floor = free_port()
    argv = [PYTHON, str(HERE / "floor.py"), "--port", str(floor), "--framework", "asgi"]
    started.append(
        bench.start("floor", [*argv, "--upstream", f"http://127.0.0.1:{fast}/v1"], 1, floor)
    )
    ceiling = free_port()
    constant = [PYTHON, str(HERE / "floor.py"), "--port", str(ceiling), "--framework", "constant"]
    started.append(bench.start("ceiling", [*constant, "--chunks", str(bench.chunks)], 1, ceiling))
    ports = {"floor": floor, "ceiling": ceiling}
    for name, extra in (("gateway", ""), ("gateway-cache", CACHE)):
        port = ports[name] = free_port()
        config = bench.workdir / f"{name}.toml"
        config.write_text(GATEWAY_CONFIG.format(port=port, fast=fast, paced=paced) + extra)
        serve = [*thanos_command(), "serve", "--config", str(config)]
        serve += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        data = {"XDG_DATA_HOME": str(bench.workdir / name)}
        started.append(bench.start(name, serve, 1, port, dict(os.environ) | data))
    for process in started:
        wait_ready(process)
    bench.urls = {name: f"http://127.0.0.1:{port}{PATH}" for name, port in ports.items()}


def post(url: str, stream: bool, model: str = "bench-model") -> tuple[int, str, bytes]:
    """One request as `load.py` sends it: status, `x-thanos-cache`, body."""
    port = int(url.split(":")[2].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST", PATH, request_body(model, stream), {"content-type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, response.getheader("x-thanos-cache") or "", response.read()
    finally:
        connection.close()


def warm(bench: Bench) -> list[str]:
    """Store the answer (from a stream: `load.py` checks a stream's text, and the upstream's
    whole answer says something else), then check a whole answer and a stream are hits."""
    problems = []
    for model in ("bench-model", "paced-model"):
        first = post(bench.urls["gateway-cache"], True, model)
        if first[:2] != (200, "miss"):
            problems.append(f"warming {model}: {first[0]}, x-thanos-cache {first[1]!r}")
    for stream in (False, True):
        status, cache, _body = post(bench.urls["gateway-cache"], stream)
        if status != 200 or cache != "hit":
            problems.append(f"{'stream' if stream else 'whole'}: {status}, cache {cache!r}")
    return problems


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    chunks = ["--chunks", str(bench.chunks)]
    for _ in range(args.repeat):
        for mode, (flags, targets) in MODES.items():
            for target in targets:
                url = bench.urls[target]
                print(f"  {mode:6} {target}", file=sys.stderr, flush=True)
                if args.smoke:
                    load = ["--requests", "10", "--warmup", "1", *chunks]
                    results.setdefault(f"{mode}/{target}", []).append(
                        bench.load("latency", url, *flags, *load)
                    )
                    continue
                load = ["--connections", str(args.connections), "--engine", args.engine]
                bench.load("throughput", url, *flags, *load, "--duration", "1")
                pid = bench.pid(target)
                before = cpu_seconds(pid)
                result = bench.load(
                    "throughput", url, *flags, *load, "--duration", str(args.duration)
                )
                result["cpu_ms_per_request"] = (
                    (cpu_seconds(pid) - before) * 1000 / max(1, result["requests"])
                )
                results.setdefault(f"{mode}/{target}", []).append(result)
    return results


def report(results: dict[str, list[dict[str, Any]]], smoke: bool) -> str:
    rows = []
    for mode, (_, targets) in MODES.items():
        rps: dict[str, float | None] = {t: None for t in TARGETS}
        for target in targets if not smoke else ():
            rps[target] = statistics.median(r["rps"] for r in results[f"{mode}/{target}"])
        for target in targets:
            runs = results[f"{mode}/{target}"]
            errors = str(sum(r["errors"] for r in runs))
            if smoke:
                answers = str(sum(r["requests"] for r in runs))
                rows.append([mode, target, answers, errors, "-", "-", "-"])
                continue
            cpu = fmt(statistics.median(r["cpu_ms_per_request"] for r in runs), 3)
            versus = [ratio(rps[target], rps["gateway"]), ratio(rps[target], rps["floor"])]
            rows.append([mode, target, fmt(rps[target], 0), errors, cpu, *versus])
    header = [
        "mode",
        "target",
        "req/s (median)" if not smoke else "answers",
        "errors",
        "CPU ms/request",
        "vs gateway",
        "vs floor",
    ]
    return table(header, rows)


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few checked answers per target")
    parser.add_argument("--duration", type=int, default=6, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--engine", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    return parser


def main() -> int:
    args = arguments().parse_args()
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    others = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="thanos-cache-bench-") as tmp, terminate_on_sigterm():
        bench = Bench(Path(tmp), pinned, args.chunks)
        try:
            start(bench)
            problems = warm(bench)
            results = measure(bench, args) if not problems else {}
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            for process in bench.processes:
                print(f"{process.name}:\n{tail(process, 10)}", file=sys.stderr)
            return 1
        finally:
            bench.stop()
    if problems:
        print("FAILED:\n" + "\n".join(problems))
        return 1
    print(environment(pinned, None))
    other, steal = others.shares()
    print(f"\nother processes kept {other:.2f} cores busy meanwhile (steal {steal:.2f})\n")
    print(report(results, args.smoke))
    failures = [
        f"{key}: {sum(r['errors'] for r in runs)} errors"
        for key, runs in results.items()
        if any(r["errors"] or not r["requests"] for r in runs)
    ]
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        return 1
    if args.smoke:
        print("\nsmoke: every answer was 200 and well-formed; the cache answered hits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
