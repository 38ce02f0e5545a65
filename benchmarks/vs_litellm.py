"""Throughput of the gateway and of the LiteLLM proxy, one worker each, in one run.

    python benchmarks/vs_litellm.py --venv /work/litellm-venv   # about 3 minutes
    python benchmarks/vs_litellm.py --venv V --repeat 1 --duration 4

LiteLLM is not a dependency: install its proxy into a virtualenv of its own and name it with
`--venv` (benchmarks/README.md, "LiteLLM", says how). Both serve two models to an OpenAI chat
client from the same fake upstream (`upstream.py`): `bench-model` as an OpenAI-compatible
model (the gateway's pass-through, from the config `run.py` uses; LiteLLM's `model_list` entry
`openai/bench-model`) and `anth-model` translated to Anthropic Messages (the gateway's `kind =
"anthropic"`; LiteLLM's `anthropic/anth-model`), both with the upstream as base URL.
Neither checks client keys, neither writes an access log line per request. First a few
checked requests to each (a completion and a stream, as `run.py`'s latency runs check them);
then, `--repeat` times, interleaved, wrk at `--connections` for `--duration` seconds per target
and mode, as in `run.py`'s throughput table, each after `--warmup` (3) s of warm-up. The gateway
and LiteLLM run on core 1, the upstream and wrk on core 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import OtherLoad, cpu_seconds, environment, peak_rss_mib
from processes import (
    HERE,
    PYTHON,
    Bench,
    Process,
    free_port,
    tail,
    terminate_on_sigterm,
    thanos_command,
    wait_ready,
)
from report import fmt, table
from targets import GATEWAY_CONFIG

TARGETS = ("gateway", "litellm")
# path -> the model an OpenAI chat client asks for: served as an OpenAI-compatible model
# (the pass-through) or translated to Anthropic Messages, by both targets alike
PATHS = {"openai": "bench-model", "anthropic": "anth-model"}
ANTHROPIC_CONFIG = """
[providers.anth]
kind = "anthropic"
base_url = "http://127.0.0.1:{upstream}"
api_key = "x"
models = ["anth-model"]
"""
LITELLM_CONFIG = """\
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: x
  - model_name: anth-model
    litellm_params:
      model: anthropic/anth-model
      api_base: http://127.0.0.1:{upstream}
      api_key: x
litellm_settings:
  telemetry: false
"""
QUIET_LOGS = {  # uvicorn's access log off, as the gateway's is in run.py
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING"}, "uvicorn.error": {"level": "WARNING"}},
}
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list at start
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    # no master key: like the gateway here, it accepts every request (local benchmark only)
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}


def litellm_version(venv: Path) -> str:
    python = venv / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "?"


def start(bench: Bench, venv: Path) -> dict[str, Process]:
    upstream, gateway, litellm = free_port(), free_port(), free_port()
    argv = [PYTHON, str(HERE / "upstream.py"), "--chunks", str(bench.chunks)]
    processes = {"upstream": bench.start("upstream", [*argv, "--port", str(upstream)], 0, upstream)}
    config = bench.workdir / "thanos.toml"
    config.write_text(
        GATEWAY_CONFIG.format(port=gateway, fast=upstream, paced=upstream)
        + ANTHROPIC_CONFIG.format(upstream=upstream)
    )
    serve = [*thanos_command(), "serve", "--config", str(config)]
    serve += ["--host", "127.0.0.1", "--port", str(gateway), "--log-level", "warning"]
    processes["gateway"] = bench.start("gateway", serve, 1, gateway)
    settings = bench.workdir / "litellm.yaml"
    settings.write_text(LITELLM_CONFIG.format(upstream=upstream))
    logs = bench.workdir / "litellm-logging.json"
    logs.write_text(json.dumps(QUIET_LOGS))
    proxy = [str(venv / "bin" / "litellm"), "--config", str(settings), "--host", "127.0.0.1"]
    proxy += ["--port", str(litellm), "--num_workers", "1", "--log_config", str(logs)]
    env = {**os.environ, **LITELLM_ENV}
    processes["litellm"] = bench.start("litellm", proxy, 1, litellm, env)
    for process in processes.values():
        wait_ready(process, timeout=180)  # LiteLLM takes 10-20 s to start here
    return processes


def url(process: Process) -> str:
    return f"http://127.0.0.1:{process.port}/v1/chat/completions"


def check(bench: Bench, processes: dict[str, Process], chunks: int) -> list[str]:
    """A few checked completions and streams per target; what was wrong, if anything."""
    problems = []
    for path, model in PATHS.items():
        for target in TARGETS:
            for flags in ([], ["--stream"]):
                sequential = ["--requests", "20", "--warmup", "2", "--chunks", str(chunks)]
                where = url(processes[target])
                result = bench.load("latency", where, *flags, *sequential, "--model", model)
                if result["errors"] or not result["requests"]:
                    mode = "stream" if flags else "plain"
                    problems.append(f"{target} {path} {mode}: {result['errors']} errors")
                    problems += [f"    {p}" for p in result["problems"]]
    return problems


def throughput(
    bench: Bench, processes: dict[str, Process], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for repetition in range(args.repeat):
        for path, mode in [(p, m) for p in PATHS for m in ("plain", "stream")]:
            flags = ["--stream"] if mode == "stream" else []
            flags += ["--model", PATHS[path]]
            for target in TARGETS:
                print(
                    f"  {path:9} {mode:6} {target} ({repetition + 1}/{args.repeat})",
                    file=sys.stderr,
                    flush=True,
                )
                load = ["--connections", str(args.connections), "--engine", args.engine]
                where = url(processes[target])
                warm = ["--duration", str(args.warmup)]
                bench.load("throughput", where, *flags, *load, *warm)
                pid = processes[target].popen.pid
                before = cpu_seconds(pid)
                result = bench.load(
                    "throughput", where, *flags, *load, "--duration", str(args.duration)
                )
                result["cpu_ms_per_request"] = (
                    (cpu_seconds(pid) - before) * 1000 / max(1, result["requests"])
                )
                runs.setdefault(f"{path}:{mode}/{target}", []).append(result)
    return runs


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = []
    medians: dict[str, float] = {}
    for kind in [f"{p}:{m}" for p in PATHS for m in ("plain", "stream")]:
        for target in TARGETS:
            results = runs[f"{kind}/{target}"]
            rps = [r["rps"] for r in results]
            medians[f"{kind}/{target}"] = statistics.median(rps)
            rows.append(
                [
                    kind,
                    target,
                    f"{statistics.median(rps):,.0f}",
                    f"{min(rps):,.0f}-{max(rps):,.0f}",
                    fmt(statistics.median(r["cpu_ms_per_request"] for r in results), 3),
                    str(sum(r["errors"] for r in results)),
                    fmt(statistics.median(r["p50_ms"] for r in results)),
                    fmt(statistics.median(r["p99_ms"] for r in results)),
                ]
            )
    engine = runs["openai:plain/gateway"][0]["engine"]
    out = [
        f"Throughput, one worker each: {args.connections} connections, {args.duration} s per "
        f"run, load generator {engine}, median of {args.repeat} interleaved repetitions\n",
        table(
            [
                "path:mode",
                "target",
                "req/s",
                "req/s range",
                "CPU ms/req",
                "errors",
                "p50 ms",
                "p99 ms",
            ],
            rows,
        )
        + "\n",
    ]
    for mode in [f"{p}:{m}" for p in PATHS for m in ("plain", "stream")]:
        gateway, litellm = medians[f"{mode}/gateway"], medians[f"{mode}/litellm"]
        each = [
            g["rps"] / lite["rps"]
            for g, lite in zip(runs[f"{mode}/gateway"], runs[f"{mode}/litellm"], strict=True)
            if lite["rps"]
        ]
        spread = f" (per repetition {min(each):.1f}-{max(each):.1f}x)" if len(each) > 1 else ""
        ratio = gateway / litellm if litellm else float("nan")
        cpu = [
            statistics.median(r["cpu_ms_per_request"] for r in runs[f"{mode}/{target}"])
            for target in ("litellm", "gateway")
        ]
        out.append(
            f"{mode}: gateway / LiteLLM req/s = {ratio:.1f}x{spread}; LiteLLM's CPU ms per "
            f"request / the gateway's = {cpu[0] / cpu[1]:.1f}x"
        )
    out.append("targets: issue 9 >= 40x (openai); issue 22 >= 50x (openai and anthropic)")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="virtualenv with litellm[proxy]")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per throughput run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--engine", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args()
    if not (args.venv / "bin" / "litellm").exists():
        parser.error(f"no {args.venv}/bin/litellm; see benchmarks/README.md, 'LiteLLM'")
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None

    others = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="thanos-litellm-") as tmp, terminate_on_sigterm():
        bench = Bench(Path(tmp), pinned, args.chunks)
        try:
            facts = environment(pinned, None)
            facts += f"\nlitellm {litellm_version(args.venv)} (proxy, uvicorn, 1 worker)"
            print("starting the upstream, the gateway and LiteLLM", file=sys.stderr)
            processes = start(bench, args.venv)
            problems = check(bench, processes, args.chunks)
            runs = throughput(bench, processes, args) if not problems else {}
            rss = {t: peak_rss_mib(processes[t].popen.pid) for t in TARGETS}
            died = [p.name for p in bench.processes if p.popen.poll() is not None]
            logged = {t: tail(processes[t], 10) for t in TARGETS}
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.stop()
    print(facts)
    if problems:
        print("\nFAILED (wrong answers, nothing timed):\n" + "\n".join(problems))
        return 1
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "runs": runs, "rss_mib": rss}))
    print(others.summary())
    print()
    print(report(runs, args))
    peaks = f"gateway {fmt(rss['gateway'], 1)} MiB, LiteLLM {fmt(rss['litellm'], 1)} MiB"
    print(f"Peak RSS (VmHWM): {peaks}")
    for target, text in logged.items():  # LiteLLM prints a banner: only its errors
        if text.strip() and (target == "gateway" or "Traceback" in text or "ERROR" in text):
            print(f"\n{target} log (last lines):\n{text}")
    if died:
        print(f"\nFAILED: exited during the run: {', '.join(died)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
