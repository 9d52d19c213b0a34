"""Drift (DESIGN.md, Semantics): per service, the window [from, to) against a baseline window before it
(default the 7 days of whole hours before the hour ``from`` falls in), metric by metric:

- continuous, per task: tokens, cost, steps (spans), duration; per LLM call: latency and output tokens —
  PSI over the baseline's deciles, and a two-sample Kolmogorov-Smirnov test;
- categorical: tool mix (tool spans by tool), model mix (LLM spans by response model), error rate (tasks
  with outcome error) — PSI over the categories, and a chi-square test of homogeneity.

A metric is drifted when PSI >= ``psi`` (default 0.2, the usual "significant shift") AND its test's p-value,
Bonferroni-corrected over the service's metrics, is below ``alpha`` (default 0.05): the PSI says the shift is
big enough to matter, the corrected test that it is not sampling noise, so a quiet service is not flagged by
chance across nine metrics. Large windows are sampled deterministically by trace id (``max_samples`` tasks, and
``max_samples`` LLM calls, of the busiest service per window), which keeps the answer stable between calls.

The baseline side is read once and reused (collector/baselines.py, as cost anomalies do) while its hours get no new
rows, for at most 10 minutes; only the window is read per call.

Also: model-version changes — a response model (``gen_ai.response.model``) first seen in the window that the
service did not use in the baseline — as events with the time of first use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import check_range, chi2_homogeneity, ks_2samp, psi, psi_continuous, rnd
from agentwatch.collector.baselines import baselines
from agentwatch.collector.migrations import LLM_CALLS_TABLE, SPANS_TABLE
from agentwatch.collector.queries import QueryError, Scope, iso
from agentwatch.collector.store import Store, parallel

DEFAULT_BASELINE_H = 7 * 24
TASK_METRICS = ("tokens_per_task", "cost_per_task", "steps_per_task", "task_latency_ms")
CALL_METRICS = ("llm_latency_ms", "output_tokens")
CATEGORICAL = ("tool_mix", "model_mix", "error_rate")
METRICS = (*TASK_METRICS, *CALL_METRICS, *CATEGORICAL)
PPM = 1_000_000

# One side (the baseline, or the window) is [lo, hi): tasks from the per-task summaries (collector/summary.py), LLM
# calls from the rollups (collector/rollups.py), tool and model mix from the spans. Params: project, service, lo_ms,
# hi_ms, wm_ms, max_samples.
_SIDE = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    f" AND Timestamp >= {R.ms('lo_ms')} AND Timestamp < {R.ms('hi_ms')}"
)
_TASKS = f"""{S.window_ctes("lo_ms", "hi_ms")},
all_roots AS (
    SELECT TraceId, ServiceName AS service, DurationNs / 1e6 AS duration_ms, Outcome = 'error' AS err,
           InputTokens + OutputTokens AS tokens, CostUsd AS cost, Steps AS steps
    FROM s_window
)"""

COUNTS_SQL = f"""
WITH {_TASKS}
SELECT service, count() AS n FROM all_roots GROUP BY service
"""

# The sampled tasks' metrics, with the sampling rate (``_keep`` of the largest service's task count, for
# ``max_samples``) computed in the statement and returned on every row: the tasks are read once, not once for
# COUNTS_SQL and again for the samples. COUNTS_SQL gives the rate when no task is returned.
_KEEP = (
    "if({n} <= {{max_samples:UInt32}}, 1000000, greatest(1, toUInt32(floor(1000000 * {{max_samples:UInt32}} / {n}))))"
)
TASKS_SAMPLED_SQL = f"""
WITH {_TASKS},
keeps AS MATERIALIZED (
    SELECT {_KEEP.format(n="max(n)")} AS keep FROM (SELECT service, count() AS n FROM all_roots GROUP BY service)
)
SELECT service, tokens AS tokens_per_task, cost AS cost_per_task, steps AS steps_per_task,
       duration_ms AS task_latency_ms, err, (SELECT keep FROM keeps) AS keep
FROM all_roots
WHERE cityHash64(TraceId) % 1000000 < (SELECT keep FROM keeps)
"""

# The side's LLM calls, sampled by trace id like the tasks but at their own rate (``max_samples`` calls of the busiest
# service, from its rollup rows): a window holds about ten calls a task, and grouping every sampled task's calls
# was most of drift's time (0.8 s of 1.2 s at 9.9M spans). Returns the rate on every row.
_CALLS_HOURS = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    f" AND Hour >= toStartOfHour({R.ms('lo_ms')}) AND Hour < {R.ms('hi_ms')}"
)
CALLS_SQL = f"""
WITH keeps AS MATERIALIZED (
    SELECT {_KEEP.format(n="max(n)")} AS keep
    FROM (SELECT ServiceName, count() AS n FROM {LLM_CALLS_TABLE} WHERE {_CALLS_HOURS} GROUP BY ServiceName)
)
SELECT service, d / 1e6 AS llm_latency_ms, o AS output_tokens, (SELECT keep FROM keeps) AS keep
FROM ({R.calls(f"{_CALLS_HOURS} AND cityHash64(TraceId) % 1000000 < (SELECT keep FROM keeps)")})
WHERE ts >= {R.ms("lo_ms")} AND ts < {R.ms("hi_ms")}
"""

# tool mix (tool spans by tool), model mix (LLM spans by response model) and the models with their first use, in one
# pass over the side's spans
MIX_SQL = f"""
SELECT ServiceName AS service, Kind AS kind, if(Kind = 'tool', ToolName, Model) AS cat,
       if(Kind = 'llm', RequestModel, '') AS request_model, count() AS n,
       toUnixTimestamp64Nano(min(Timestamp)) AS first_ns
FROM {SPANS_TABLE} FINAL
WHERE {_SIDE} AND Kind IN ('tool', 'llm')
GROUP BY service, kind, cat, request_model
"""


@dataclass
class Side:
    """What one side (baseline or window) contributes, per service: metric samples, category counts, models."""

    keep: int
    keep_calls: int = PPM
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=lambda: defaultdict(dict))
    mixes: dict[str, dict[str, dict[str, int]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    models: list[dict[str, Any]] = field(default_factory=list)


def read_side(store: Store, params: dict[str, Any], lo_ms: int, hi_ms: int) -> Side:
    """The samples of [lo_ms, hi_ms): columnar (Arrow -> numpy), not one Python dict per task or call."""
    p = {**params, "lo_ms": lo_ms, "hi_ms": hi_ms}
    # three independent reads, side by side: the window side 685 -> 555 ms at 9.9M spans
    tasks, calls, mix = parallel(
        lambda: store.query_arrow(TASKS_SAMPLED_SQL, p), lambda: store.query_arrow(CALLS_SQL, p),
        lambda: store.query(MIX_SQL, p),
    )  # fmt: skip
    if tasks.num_rows:
        keep = int(tasks.column("keep")[0].as_py())
    else:
        keep = _keep(max((int(r["n"]) for r in store.query(COUNTS_SQL, p)), default=0), params["max_samples"])
    side = Side(keep)
    if calls.num_rows:
        side.keep_calls = int(calls.column("keep")[0].as_py())
    for t, metrics in ((tasks, (*TASK_METRICS, "err")), (calls, CALL_METRICS)):
        if not t.num_rows:
            continue
        services = np.asarray(t.column("service").to_pylist(), dtype=object)
        cols = {m: t.column(m).to_numpy(zero_copy_only=False) for m in metrics}
        for service in set(services.tolist()):
            sel = services == service
            for m in metrics:
                if m == "err":
                    side.samples[service]["error_rate"] = cols[m][sel].astype(bool).astype(int)
                else:
                    side.samples[service][m] = cols[m][sel].astype(float)
    for r in mix:
        mix = side.mixes[r["service"]]["tool_mix" if r["kind"] == "tool" else "model_mix"]
        cat = r["cat"] or "(none)"
        mix[cat] = mix.get(cat, 0) + int(r["n"])
        if r["kind"] == "llm" and r["cat"]:
            side.models.append({"service": r["service"], "request_model": r["request_model"], "model": r["cat"],
                                "n": int(r["n"]), "first_ns": r["first_ns"]})  # fmt: skip
    return side


def _bias(bins: int, n_b: float, n_c: float) -> float:
    """PSI's expected value between two samples of one distribution, ~ (bins - 1) (1/n_b + 1/n_c): PSI is Jeffreys'
    divergence, asymptotically chi-square with bins - 1 degrees of freedom over the effective sample size. Small
    samples inflate PSI by about this much; the decision (``psi_adjusted``) subtracts it."""
    return (bins - 1) * (1 / max(n_b, 1) + 1 / max(n_c, 1))


def _keep(n: int, max_samples: int) -> int:
    return PPM if n <= max_samples else max(1, int(PPM * max_samples / n))


def drift(
    store: Store, scope: Scope, *, baseline_hours: float = DEFAULT_BASELINE_H, psi_threshold: float = 0.2,
    alpha: float = 0.05, min_samples: int = 30, max_samples: int = 20_000,
) -> dict[str, Any]:  # fmt: skip
    check_range("baseline_hours", baseline_hours, 1, 24 * 90)
    check_range("psi", psi_threshold, 0.001, 10)
    check_range("alpha", alpha, 1e-9, 0.5)
    if not 5 <= min_samples <= 100_000:
        raise QueryError(f"min_samples must be between 5 and 100000, got {min_samples}")
    if not 100 <= max_samples <= 200_000:
        raise QueryError(f"max_samples must be between 100 and 200000, got {max_samples}")
    bend_ms = scope.start_ms - scope.start_ms % 3_600_000
    params: dict[str, Any] = {
        **scope.params(), "base_ms": bend_ms - int(baseline_hours * 3_600_000), "bend_ms": bend_ms,
        "max_samples": max_samples, "wm_ms": S.watermark(store),
    }  # fmt: skip
    base = baselines.get(
        store, ("drift", scope.service, max_samples), params,
        lambda: read_side(store, params, params["base_ms"], bend_ms),
    )  # fmt: skip
    cur = read_side(store, params, scope.start_ms, scope.end_ms)
    services = set(base.samples) | set(cur.samples) | set(base.mixes) | set(cur.mixes)
    empty: dict[str, Any] = {}
    samples = {svc: {m: {False: base.samples.get(svc, empty).get(m, []), True: cur.samples.get(svc, empty).get(m, [])}
                     for m in (*TASK_METRICS, *CALL_METRICS, "error_rate")}
               for svc in services}  # fmt: skip
    mixes = {svc: {m: {False: base.mixes.get(svc, empty).get(m, {}), True: cur.mixes.get(svc, empty).get(m, {})}
                   for m in ("tool_mix", "model_mix")}
             for svc in services}  # fmt: skip

    items = []
    for service in sorted(services):
        rows = []
        for m in (*TASK_METRICS, *CALL_METRICS):
            b, c = samples[service][m][False], samples[service][m][True]
            if len(b) < min_samples or len(c) < min_samples:
                continue
            ba, ca = np.asarray(b), np.asarray(c)
            d, p = ks_2samp(ba, ca)
            value, bins = psi_continuous(ba, ca)
            bias = _bias(bins, len(ba), len(ca))
            rows.append(
                {"service": service, "metric": m, "type": "continuous", "psi": value, "_bias": bias,
                 "test": "ks", "statistic": d, "p_value": p, "baseline_n": len(b), "current_n": len(c),
                 "baseline_median": float(np.median(ba)), "current_median": float(np.median(ca))}
            )  # fmt: skip
        errs = samples[service]["error_rate"]
        if len(errs[False]) >= min_samples and len(errs[True]) >= min_samples:
            eb = np.bincount(np.asarray(errs[False], dtype=int), minlength=2).astype(float)
            ec = np.bincount(np.asarray(errs[True], dtype=int), minlength=2).astype(float)
            stat, p = chi2_homogeneity(eb, ec)
            rows.append(
                {"service": service, "metric": "error_rate", "type": "categorical", "psi": psi(eb, ec),
                 "_bias": _bias(2, eb.sum(), ec.sum()),
                 "test": "chi2", "statistic": stat, "p_value": p, "baseline_n": int(eb.sum()),
                 "current_n": int(ec.sum()), "baseline_value": eb[1] / eb.sum(), "current_value": ec[1] / ec.sum()}
            )  # fmt: skip
        for m in ("tool_mix", "model_mix"):
            mb, mc = mixes[service][m][False], mixes[service][m][True]
            if sum(mb.values()) < min_samples or sum(mc.values()) < min_samples:
                continue
            cats = sorted(set(mb) | set(mc))
            vb = np.array([mb.get(k, 0) for k in cats], dtype=float)
            vc = np.array([mc.get(k, 0) for k in cats], dtype=float)
            stat, p = chi2_homogeneity(vb, vc)
            rows.append(
                {"service": service, "metric": m, "type": "categorical", "psi": psi(vb, vc), "test": "chi2",
                 "_bias": _bias(len(cats), vb.sum(), vc.sum()),
                 "statistic": stat, "p_value": p, "baseline_n": int(vb.sum()), "current_n": int(vc.sum()),
                 "baseline_shares": {k: rnd(v / vb.sum(), 4) for k, v in zip(cats, vb, strict=True) if v},
                 "current_shares": {k: rnd(v / vc.sum(), 4) for k, v in zip(cats, vc, strict=True) if v}}
            )  # fmt: skip
        family = len(rows)
        for row in rows:
            p_adj = min(1.0, row["p_value"] * family)
            row["p_adjusted"] = p_adj
            row["psi_adjusted"] = max(0.0, row["psi"] - row.pop("_bias"))
            row["drifted"] = bool(row["psi_adjusted"] >= psi_threshold and p_adj < alpha)
            for k in (
                "psi",
                "psi_adjusted",
                "statistic",
                "baseline_median",
                "current_median",
                "baseline_value",
                "current_value",
            ):
                if k in row:
                    row[k] = rnd(row[k], 6)
            row["p_value"] = float(f"{row['p_value']:.6g}")
            row["p_adjusted"] = float(f"{p_adj:.6g}")
        items.extend(rows)
    return {
        "baseline": {"from": iso(params["base_ms"] * 1_000_000), "to": iso(bend_ms * 1_000_000)},
        "thresholds": {"psi": psi_threshold, "alpha": alpha, "correction": "bonferroni", "min_samples": min_samples},
        "sampled": {"baseline_ppm": base.keep, "current_ppm": cur.keep, "baseline_calls_ppm": base.keep_calls,
                    "current_calls_ppm": cur.keep_calls},
        "items": items,
        "model_changes": model_changes(base.models, cur.models),
    }


def model_changes(before_rows: list[dict[str, Any]], window_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Response models of the window that a service did not use in the baseline (its models by LLM spans)."""
    by_service: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for r in before_rows:
        by_service[r["service"]][(r["request_model"], r["model"])] = {**r, "nb": r["n"], "nc": 0, "first_ns": None}
    for r in window_rows:
        m = by_service[r["service"]].setdefault((r["request_model"], r["model"]), {**r, "nb": 0})
        m.update(nc=r["n"], first_ns=r["first_ns"])
    events = []
    for service, by_model in sorted(by_service.items()):
        models = list(by_model.values())
        before = [m for m in models if m["nb"]]
        if not before:
            continue  # a new service: nothing to change from
        for m in models:
            if m["nb"] or not m["nc"]:
                continue
            same_req = [b for b in before if b["request_model"] == m["request_model"] and b["model"] != m["model"]]
            prev = same_req or [b for b in before if b["model"] != m["model"]]
            prev.sort(key=lambda b: -b["nb"])
            events.append(
                {"service": service, "type": "model_version_change" if same_req else "new_model",
                 "request_model": m["request_model"] or None, "model": m["model"],
                 "previous_models": [b["model"] for b in prev], "time": iso(m["first_ns"]), "calls": int(m["nc"])}
            )  # fmt: skip
    events.sort(key=lambda e: (e["time"] or "", e["service"]))
    return events
