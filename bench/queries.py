"""Read-API query times on a large synthetic fleet (bench/fleet.py) in the embedded store.

    .venv/bin/python bench/queries.py [--baseline-tasks 15000 --current-tasks 8000]   # ~1M spans
    .venv/bin/python bench/queries.py --baseline-tasks 150000 --current-tasks 80000 --data-dir /tmp/fleet10m
                                                                                      # ~10M spans, kept

With ``--data-dir`` the store is kept: a later run with the same sizes skips generating and loading (and applies
new migrations, backfills included, as an upgrade would), so query changes can be timed again in seconds.

Prints the first call and the median of the next 3 of each query the dashboard and the alert engine make, over
the current 24 h window (and the 7-day baseline where a detector needs one). Wall times on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    summary,
)
from agentwatch.collector.migrations import migrate  # noqa: E402
from agentwatch.collector.store import ChdbStore  # noqa: E402


def timed(fn, runs: int = 3) -> tuple[float, float, object]:
    """(first call ms, median of the next ``runs`` calls ms, result): the first also fills caches (the anomaly
    baseline) and warms the store's."""
    t = time.perf_counter()
    out = fn()
    first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-tasks", type=int, default=15000, help="per service")
    ap.add_argument("--current-tasks", type=int, default=8000, help="per service")
    ap.add_argument("--data-dir", type=Path, help="keep the loaded store here and reuse it on the next run")
    ap.add_argument("--only", action="append", default=[], help="time only the queries whose name has this text")
    args = ap.parse_args()
    cfg = F.FleetConfig(baseline_tasks=args.baseline_tasks, current_tasks=args.current_tasks)
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, args.data_dir or Path(tmp), args.only)


def run(cfg: F.FleetConfig, data_dir: Path, only: list[str]) -> None:
    marker = data_dir / "bench-fleet.json"
    sizes = {"baseline_tasks": cfg.baseline_tasks, "current_tasks": cfg.current_tasks, "seed": cfg.seed}
    if marker.exists() and json.loads(marker.read_text()) != sizes:
        print(f"{data_dir} holds another fleet ({marker.read_text()}); loading anew", flush=True)
        shutil.rmtree(data_dir)
    loaded = marker.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    store = ChdbStore(data_dir / "store")
    t = time.perf_counter()
    applied = migrate(store)
    if loaded:
        print(f"reusing the fleet in {data_dir}; migrations applied now: {applied or 'none'}"
              f" ({time.perf_counter() - t:.1f}s)", flush=True)  # fmt: skip
    else:
        t = time.perf_counter()
        fleet = F.generate(cfg)
        print(f"generated {fleet.spans:,} spans in {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        fleet.insert(store)
        del fleet
        print(f"inserted in {time.perf_counter() - t:.1f}s", flush=True)
        store.command("OPTIMIZE TABLE otel_traces FINAL")
        marker.write_text(json.dumps(sizes))
    spans = store.query("SELECT count() AS n FROM otel_traces")[0]["n"]
    print(f"{spans:,} spans in the store", flush=True)
    # what the collector's summarizer does in the background as spans arrive (lag 0: the fleet is all in)
    t = time.perf_counter()
    n = summary.Summarizer(store, lag=0.0).catch_up(progress=True)
    print(f"summarized {n:,} tasks in {time.perf_counter() - t:.1f}s (task_summary)", flush=True)
    scope = queries.Scope(cfg.project, cfg.current_start_ms, cfg.current_end_ms)
    tid = store.query(
        "SELECT TraceId FROM otel_traces WHERE ProjectId = {p:String} AND ParentSpanId = ''"
        " AND Timestamp >= fromUnixTimestamp64Milli({t:Int64}) ORDER BY Timestamp, TraceId LIMIT 1",
        {"p": cfg.project, "t": cfg.current_start_ms},
    )[0]["TraceId"]
    cases = {
        "overview (24 h)": lambda: queries.overview(store, scope),
        "tasks, top 100 by cost (24 h)": lambda: queries.tasks(store, scope, queries.TaskFilter(sort="cost",
                                                                                              limit=100)),
        "one trace by id": lambda: queries.trace(store, cfg.project, tid),
        "latency p50/p95/p99 by model, by minute": lambda: analytics_stats.latency(
            store, scope, kind="llm", group_by="model", interval=60),
        "tools": lambda: analytics_stats.tools(store, scope),
        "loops": lambda: analytics_loops.loops(store, scope),
        "cost anomalies + token bombs (7 d baseline)": lambda: analytics_anomalies.cost_anomalies(store, scope),
        "drift (7 d baseline)": lambda: analytics_drift.drift(store, scope),
    }  # fmt: skip
    print(f"{'query':48} {'first ms':>10} {'median ms':>10}")
    for name, fn in cases.items():
        if only and not any(o in name for o in only):
            continue
        first, ms, _ = timed(fn)
        print(f"{name:48} {first:10.0f} {ms:10.0f}", flush=True)
    store.close()


if __name__ == "__main__":
    main()
