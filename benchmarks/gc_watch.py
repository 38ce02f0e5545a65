"""`thanos serve` with its garbage collector watched: collections of each generation, the
time they took and what they freed, and where the young generation's count sits (sampled
every 2 ms), printed to stderr on SIGUSR1 (since the last SIGUSR1) and at exit.

    python benchmarks/gc_watch.py serve --config thanos.toml --port 8080  # `thanos` arguments
    kill -USR1 PID                  # the figures since the last report
    THANOS_BENCH_GC_YOUNG=10000 python benchmarks/gc_watch.py serve ...   # another threshold

A young count that often sits near 0 and collections that free ~nothing are the sign of open
requests holding more objects than the threshold (`thanos_asgi/server/serve.py`, `_tune_gc`).
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
import time
from typing import Any

_started = [0.0]
_runs: dict[int, list[float]] = {}  # generation: [collections, seconds, objects freed]
_counts: list[int] = []


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    run = _runs.setdefault(info["generation"], [0, 0.0, 0])
    run[0] += 1
    run[1] += time.perf_counter() - _started[0]
    run[2] += info["collected"]


def _sample() -> None:
    while True:
        time.sleep(0.002)
        _counts.append(gc.get_count()[0])


def _report(*_: object) -> None:
    runs = ", ".join(
        f"gen {g}: {n:.0f} in {s * 1000:.1f} ms, {freed:.0f} freed"
        for g, (n, s, freed) in sorted(_runs.items())
    )
    counts = sorted(_counts)
    _runs.clear()
    _counts.clear()
    line = f"gc_watch[{os.getpid()}] {runs or 'no collections'}"
    if counts:
        at = [counts[int(len(counts) * q)] for q in (0.01, 0.1, 0.5, 0.9, 0.99)]
        near_zero = sum(1 for count in counts if count < 50) / len(counts)
        line += f"; young count p1/p10/p50/p90/p99 {at}, {near_zero:.0%} of samples under 50"
    print(line, file=sys.stderr, flush=True)


def main() -> int:
    import thanos_asgi.server.serve as serve
    from thanos_asgi.cli import main as thanos

    if os.environ.get("THANOS_BENCH_GC_YOUNG"):
        serve.YOUNG_GC_THRESHOLD = int(os.environ["THANOS_BENCH_GC_YOUNG"])
    gc.callbacks.append(_on_collection)
    threading.Thread(target=_sample, daemon=True).start()
    signal.signal(signal.SIGUSR1, _report)
    atexit.register(_report)
    return thanos(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
