"""Read-API query times on a large synthetic fleet (bench/fleet.py) in the embedded store.

    .venv/bin/python bench/queries.py [--baseline-tasks 15000 --current-tasks 8000]   # ~1M spans

Prints the median of 3 warm runs of each query the dashboard and the alert engine make, over the current
24 h window (and the 7-day baseline where a detector needs one). Wall times on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet as F  # noqa: E402

from agentwatch.collector import (  # noqa: E402
    analytics_anomalies,
    analytics_drift,
    analytics_loops,
    analytics_stats,
    queries,
)
from agentwatch.collector.migrations import migrate  # noqa: E402
from agentwatch.collector.store import ChdbStore  # noqa: E402


def timed(fn, runs: int = 3) -> tuple[float, object]:
    out = fn()  # warm
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-tasks", type=int, default=15000, help="per service")
    ap.add_argument("--current-tasks", type=int, default=8000, help="per service")
    args = ap.parse_args()
    cfg = F.FleetConfig(baseline_tasks=args.baseline_tasks, current_tasks=args.current_tasks)
    t = time.perf_counter()
    fleet = F.generate(cfg)
    print(f"generated {fleet.spans:,} spans in {time.perf_counter() - t:.1f}s", flush=True)
    with tempfile.TemporaryDirectory() as d:
        store = ChdbStore(Path(d))
        migrate(store)
        t = time.perf_counter()
        fleet.insert(store)
        print(f"inserted in {time.perf_counter() - t:.1f}s", flush=True)
        store.command("OPTIMIZE TABLE otel_traces FINAL")
        scope = queries.Scope(cfg.project, cfg.current_start_ms, cfg.current_end_ms)
        tid = next(iter(fleet.truth.current_tasks))
        cases = {
            "overview (24 h)": lambda: queries.overview(store, scope),
            "tasks, top 50 by cost (24 h)": lambda: queries.tasks(store, scope, queries.TaskFilter(sort="cost")),
            "one trace by id": lambda: queries.trace(store, cfg.project, tid),
            "latency p50/p95/p99 by model, auto buckets": lambda: analytics_stats.latency(
                store, scope, kind="llm", group_by="model"),
            "tools": lambda: analytics_stats.tools(store, scope),
            "loops": lambda: analytics_loops.loops(store, scope),
            "cost anomalies + token bombs (7 d baseline)": lambda: analytics_anomalies.cost_anomalies(store, scope),
            "drift (7 d baseline)": lambda: analytics_drift.drift(store, scope),
        }  # fmt: skip
        print(f"{'query':48} {'median ms':>10}")
        for name, fn in cases.items():
            ms, _ = timed(fn)
            print(f"{name:48} {ms:10.0f}", flush=True)
        store.close()


if __name__ == "__main__":
    main()
