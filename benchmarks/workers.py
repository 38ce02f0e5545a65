"""Throughput of `thanos serve` with one worker and with `--workers N`, in one run.

    python benchmarks/workers.py                 # 1 vs 2 workers, about 1 minute
    python benchmarks/workers.py --workers 4 --repeat 5

Starts the fake upstream (`upstream.py`) and two gateways with the config `run.py` uses: one
with one worker, one with `--workers N`. Then, `--repeat` times, interleaved, wrk at
`--connections` for `--duration` s (after 1 s of warm-up) against each, completions and
streams, as in `run.py`'s throughput table. Nothing is pinned: the workers, the upstream and
wrk share every core, as a gateway with several workers would share a machine. Reports req/s
and, at the end, the resident memory (VmRSS) of each gateway's processes: uvicorn's parent,
and its children (the workers, and the resource tracker `multiprocessing` starts).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import OtherLoad, environment
from memory import rss_mib
from processes import (
    HERE,
    PYTHON,
    Bench,
    Process,
    free_port,
    terminate_on_sigterm,
    thanos_command,
    wait_ready,
)
from report import table
from targets import GATEWAY_CONFIG


def start(bench: Bench, workers: int) -> dict[str, Process]:
    upstream = free_port()
    argv = [PYTHON, str(HERE / "upstream.py"), "--chunks", str(bench.chunks)]
    started = {"upstream": bench.start("upstream", [*argv, "--port", str(upstream)], 0, upstream)}
    for count in (1, workers):
        port = free_port()
        config = bench.workdir / f"thanos-{count}.toml"
        config.write_text(GATEWAY_CONFIG.format(port=port, fast=upstream, paced=upstream))
        serve = [*thanos_command(), "serve", "--config", str(config), "--workers", str(count)]
        serve += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        started[f"{count} worker" + "s" * (count > 1)] = bench.start(
            f"gateway-{count}", serve, 0, port
        )
    for process in started.values():
        wait_ready(process, timeout=60)
    return started


def family_rss_mib(pid: int) -> list[float]:
    """VmRSS of `pid` and of each of its children (uvicorn's workers, and the resource tracker
    multiprocessing starts beside them), largest first after the parent's."""
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(rss_mib(int(name)))
    return [rss_mib(pid), *sorted(children, reverse=True)]


def measure(
    bench: Bench, targets: dict[str, Process], args: argparse.Namespace
) -> dict[str, list[float]]:
    """req/s of every repetition, per "mode/gateway"; raises on any error."""
    results: dict[str, list[float]] = {}
    load = ["--connections", str(args.connections), "--engine", args.engine]
    for repetition in range(args.repeat):
        for mode in ("plain", "stream"):
            flags = ["--stream"] if mode == "stream" else []
            for name, process in targets.items():
                print(f"  {mode:6} {name} ({repetition + 1})", file=sys.stderr, flush=True)
                url = f"http://127.0.0.1:{process.port}/v1/chat/completions"
                bench.load("throughput", url, *flags, *load, "--duration", "1")
                timed = ["--duration", str(args.duration)]
                result = bench.load("throughput", url, *flags, *load, *timed)
                if result["errors"]:
                    raise RuntimeError(f"{name} {mode}: {result['errors']} errors")
                results.setdefault(f"{mode}/{name}", []).append(result["rps"])
    return results


def report(
    results: dict[str, list[float]], memory: dict[str, list[float]], args: argparse.Namespace
) -> str:
    rows = []
    for mode in ("plain", "stream"):
        one = statistics.median(results[f"{mode}/1 worker"])
        for name in memory:
            rps = results[f"{mode}/{name}"]
            rows.append(
                [
                    mode,
                    name,
                    f"{statistics.median(rps):,.0f}",
                    f"{min(rps):,.0f}-{max(rps):,.0f}",
                    f"{statistics.median(rps) / one:.2f}x",
                    f"{sum(memory[name]):.1f}",
                    " + ".join(f"{part:.0f}" for part in memory[name]),
                ]
            )
    title = (
        f"Throughput: {args.connections} connections, {args.duration} s per run, median of "
        f"{args.repeat} interleaved repetitions; nothing pinned; RSS = every process of that "
        "`thanos serve` at the end\n"
    )
    header = [
        "mode",
        "gateway",
        "req/s",
        "req/s range",
        "vs 1 worker",
        "RSS MiB",
        "parent + children",
    ]
    return f"{title}\n{table(header, rows)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--engine", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    others = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="thanos-workers-") as tmp, terminate_on_sigterm():
        bench = Bench(Path(tmp), False, 20)
        try:
            facts = environment(False, None)
            print(
                f"starting the upstream and gateways (1, {args.workers} workers)", file=sys.stderr
            )
            targets = {
                name: p for name, p in start(bench, args.workers).items() if name != "upstream"
            }
            results = measure(bench, targets, args)
            memory = {name: family_rss_mib(p.popen.pid) for name, p in targets.items()}
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.stop()
    print(facts)
    print(others.summary())
    print()
    print(report(results, memory, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
