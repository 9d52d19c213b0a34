"""Precision and recall of each detector on synthetic fleets with known truth (bench/fleet.py).

    .venv/bin/python bench/detectors.py [--seed 0] [--null-seeds 20] [--baseline-tasks 2000 --current-tasks 1000]

Loads the fleet into an embedded store in a temporary directory and runs the same query layer the read API
serves, at its default thresholds. Scored in the current window:
- loops: per task (any pattern; and recall per pattern and for tasks still running);
- token bombs: recall over planted bombs; share of normal tasks flagged;
- cost anomalies: truth = token bombs and runaway tasks; loop tasks are neither (reported apart);
- latency spike: 5-minute buckets per tool whose P95 is > 3x the tool's median bucket P95;
- drift: (service, metric) pairs flagged vs planted; then ``--null-seeds`` unchanged fleets must flag nothing.
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

from agentwatch.collector import analytics_anomalies, analytics_drift, analytics_loops, analytics_stats  # noqa: E402
from agentwatch.collector.migrations import migrate  # noqa: E402
from agentwatch.collector.queries import Scope  # noqa: E402
from agentwatch.collector.store import ChdbStore  # noqa: E402


def pr(tp: int, fp: int, fn: int) -> str:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return f"precision {p:.3f}  recall {r:.3f}  (tp {tp}, fp {fp}, fn {fn})"


def spike_buckets(store, scope: Scope, service: str, factor: float = 3.0) -> set[tuple[str, int]]:
    lat = analytics_stats.latency(
        store, Scope(scope.project, scope.start_ms, scope.end_ms, service), kind="tool", group_by="tool", interval=300
    )
    by_tool: dict[str, list[dict]] = {}
    for it in lat["items"]:
        by_tool.setdefault(it["group"], []).append(it)
    out = set()
    for tool, items in by_tool.items():
        med = statistics.median(i["p95"] for i in items)
        out |= {(tool, i["bucket_ms"]) for i in items if i["p95"] > factor * med and i["count"] >= 3}
    return out


def evaluate(store, fl: F.Fleet) -> dict[str, float]:
    cfg, tr = fl.config, fl.truth
    scope = Scope(cfg.project, cfg.current_start_ms, cfg.current_end_ms)
    cur = tr.current_tasks
    res: dict[str, float] = {}

    t0 = time.perf_counter()
    found = {i["trace_id"]: i for i in analytics_loops.loops(store, scope, limit=1000)["items"]}
    truth = {t: p for t, p in tr.loops.items() if t in cur}
    tp, fp, fn = len(set(found) & set(truth)), len(set(found) - set(truth)), len(set(truth) - set(found))
    print(f"loops           {pr(tp, fp, fn)}  [{time.perf_counter() - t0:.2f}s]")
    for pat in analytics_loops.PATTERNS:
        want = {t for t, p in truth.items() if p == pat}
        got = {t for t in want if t in found and found[t]["pattern"] == pat}
        print(f"  {pat:<13} recall {len(got) / max(1, len(want)):.3f} of {len(want)} (pattern named right)")
    running = {t for t in truth if t in tr.running}
    print(f"  running tasks recall {len(running & set(found)) / max(1, len(running)):.3f} of {len(running)}")
    res["loops_precision"] = tp / max(1, tp + fp)
    res["loops_recall"] = tp / max(1, tp + fn)

    t0 = time.perf_counter()
    an = analytics_anomalies.cost_anomalies(store, scope, baseline_hours=cfg.baseline_hours)
    dt = time.perf_counter() - t0
    bombs_truth = {t for t in tr.bombs if t in cur and t not in tr.running}
    bomb_flag = {b["trace_id"] for b in an["token_bombs"]}
    normal = {t for t in cur if t not in tr.bombs and t not in tr.running}
    fp_tasks = bomb_flag & normal
    tp_b, fp_b, fn_b = len(bomb_flag & bombs_truth), len(bomb_flag - bombs_truth), len(bombs_truth - bomb_flag)
    print(f"token bombs     {pr(tp_b, fp_b, fn_b)}"
          f"  normal tasks flagged {len(fp_tasks)}/{len(normal)} = {len(fp_tasks) / max(1, len(normal)):.2%}"
          f"  [{dt:.2f}s]")  # fmt: skip
    res["bombs_recall"] = len(bomb_flag & bombs_truth) / max(1, len(bombs_truth))
    res["bombs_normal_flagged"] = len(fp_tasks) / max(1, len(normal))
    # a service whose cost drifted (model switch) has all its later tasks above the trailing baseline: those are
    # flagged, rightly, as a cost regression; they are counted apart, the drift detector names the cause
    drifted_cost = {s for s, ms in tr.drift.items() if "cost_per_task" in ms}
    cost_truth = {t for t in cur if (t in tr.bombs or t in tr.runaways) and t not in tr.running}
    flagged = {i["trace_id"] for i in an["items"]}
    by_drift = {t for t in flagged if tr.service_of.get(t) in drifted_cost} - cost_truth
    ambiguous = (flagged & set(tr.loops)) - by_drift
    scored = flagged - ambiguous - by_drift
    runaways = {t for t in cost_truth if t in tr.runaways}
    bombs_c = cost_truth - runaways
    print(
        f"cost anomalies  precision {len(scored & cost_truth) / max(1, len(scored)):.3f} "
        f"(flagged {len(scored)}: {len(scored & runaways)} runaways, {len(scored & bombs_c)} bomb tasks, "
        f"{len(scored - cost_truth)} normal)  runaway recall {len(flagged & runaways) / max(1, len(runaways)):.3f} "
        f"of {len(runaways)}, bomb-task recall {len(flagged & bombs_c) / max(1, len(bombs_c)):.3f}"
    )
    print(f"  also flagged: {len(ambiguous)} loop tasks (not scored), {len(by_drift)} tasks of cost-drifted "
          f"{sorted(drifted_cost)} (a service-wide cost regression)")  # fmt: skip
    res["cost_precision"] = len(scored & cost_truth) / max(1, len(scored))
    res["cost_runaway_recall"] = len(flagged & runaways) / max(1, len(runaways))

    if tr.spike:
        svc, tool, s_ms, e_ms = tr.spike
        got = spike_buckets(store, scope, svc)
        # buckets at least half inside the spike
        want = {(tool, b) for b in range(s_ms // 300_000 * 300_000, e_ms, 300_000) if s_ms <= b + 150_000 < e_ms}
        print(f"latency spike   {pr(len(got & want), len(got - want), len(want - got))}  (5-min buckets of {svc})")
        res["spike_recall"] = len(got & want) / max(1, len(want))

    t0 = time.perf_counter()
    dr = analytics_drift.drift(store, scope, baseline_hours=cfg.baseline_hours)
    dt = time.perf_counter() - t0
    flagged_d = {(i["service"], i["metric"]) for i in dr["items"] if i["drifted"]}
    truth_d = {(s, m) for s, ms in tr.drift.items() for m in ms}
    print(f"drift           {pr(len(flagged_d & truth_d), len(flagged_d - truth_d), len(truth_d - flagged_d))}"
          f"  flagged {sorted(flagged_d)}  [{dt:.2f}s]")  # fmt: skip
    if tr.model_change:
        ev = [e for e in dr["model_changes"] if e["service"] == tr.model_change[0]]
        print(f"  model change events: {[(e['service'], e['model'], e['time']) for e in ev]}")
    res["drift_fp"] = len(flagged_d - truth_d)
    res["drift_fn"] = len(truth_d - flagged_d)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--null-seeds", type=int, default=20)
    ap.add_argument("--baseline-tasks", type=int, default=2000)
    ap.add_argument("--current-tasks", type=int, default=1000)
    ap.add_argument("--null-baseline-tasks", type=int, default=600)
    ap.add_argument("--null-current-tasks", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = ChdbStore(Path(d))
        migrate(store)
        cfg = F.FleetConfig(seed=args.seed, baseline_tasks=args.baseline_tasks, current_tasks=args.current_tasks)
        t0 = time.perf_counter()
        fl = F.generate(cfg)
        fl.insert(store)
        dt = time.perf_counter() - t0
        print(f"fleet seed {args.seed}: {fl.spans} spans, {len(fl.truth.service_of)} tasks "
              f"({len(fl.truth.current_tasks)} in the current window) loaded in {dt:.1f}s")  # fmt: skip
        evaluate(store, fl)

        flagged_total = 0
        for seed in range(args.null_seeds):
            ncfg = F.FleetConfig(
                seed=1000 + seed, project=f"null-{seed}", drift=False, spike=False,
                baseline_tasks=args.null_baseline_tasks, current_tasks=args.null_current_tasks,
                baseline_hours=48, current_hours=12,
            )  # fmt: skip
            nf = F.generate(ncfg)
            nf.insert(store)
            dr = analytics_drift.drift(
                store, Scope(ncfg.project, ncfg.current_start_ms, ncfg.current_end_ms), baseline_hours=48
            )
            flags = [(i["service"], i["metric"], i["psi"]) for i in dr["items"] if i["drifted"]]
            worst = max(dr["items"], key=lambda i: i["psi"])
            flagged_total += len(flags)
            print(f"  unchanged fleet seed {1000 + seed}: drift flags {flags or 'none'}; "
                  f"max psi {worst['psi']:.3f} ({worst['service']} {worst['metric']}), "
                  f"min adjusted p {min(i['p_adjusted'] for i in dr['items']):.3g}")  # fmt: skip
        if args.null_seeds:
            print(f"drift on unchanged fleets: {flagged_total} flags over {args.null_seeds} seeds")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
