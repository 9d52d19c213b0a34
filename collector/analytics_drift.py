"""Drift (DESIGN.md, Semantics): per service, the window [from, to) against a baseline window before it
(default the 7 days before ``from``), metric by metric:

- continuous, per task: tokens, cost, steps (spans), duration; per LLM call: latency and output tokens —
  PSI over the baseline's deciles, and a two-sample Kolmogorov-Smirnov test;
- categorical: tool mix (tool spans by tool), model mix (LLM spans by response model), error rate (tasks
  with outcome error) — PSI over the categories, and a chi-square test of homogeneity.

A metric is drifted when PSI >= ``psi`` (default 0.2, the usual "significant shift") AND its test's p-value,
Bonferroni-corrected over the service's metrics, is below ``alpha`` (default 0.05): the PSI says the shift is
big enough to matter, the corrected test that it is not sampling noise, so a quiet service is not flagged by
chance across nine metrics. Large windows are sampled deterministically by trace id (``max_samples`` tasks
per service and window), which keeps the answer stable between calls.

Also: model-version changes — a response model (``gen_ai.response.model``) first seen in the window that the
service did not use in the baseline — as events with the time of first use.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import check_range, chi2_homogeneity, ks_2samp, psi, psi_continuous, rnd
from agentwatch.collector.migrations import SPANS_TABLE
from agentwatch.collector.queries import QueryError, Scope, iso
from agentwatch.collector.store import Store

DEFAULT_BASELINE_H = 7 * 24
TASK_METRICS = ("tokens_per_task", "cost_per_task", "steps_per_task", "task_latency_ms")
CALL_METRICS = ("llm_latency_ms", "output_tokens")
CATEGORICAL = ("tool_mix", "model_mix", "error_rate")
METRICS = (*TASK_METRICS, *CALL_METRICS, *CATEGORICAL)
PPM = 1_000_000

_SCOPE = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    " AND Timestamp >= fromUnixTimestamp64Milli({base_ms:Int64})"
)
_CUR = "Timestamp >= fromUnixTimestamp64Milli({from_ms:Int64})"

# tasks from the per-task summaries (collector/summary.py), LLM calls from the rollups (collector/rollups.py); tool
# and model mix stay on the spans (one pass each)
_TASKS = f"""{S.window_ctes("base_ms", "to_ms")},
all_roots AS MATERIALIZED (
    SELECT TraceId, ServiceName AS service, Start >= {R.ms("from_ms")} AS cur, DurationNs / 1e6 AS duration_ms,
           Outcome = 'error' AS err, InputTokens + OutputTokens AS tokens, CostUsd AS cost, Steps AS steps
    FROM s_window
)"""

COUNTS_SQL = f"""
WITH {_TASKS}
SELECT service, cur, count() AS n FROM all_roots GROUP BY service, cur
"""


# The sampled tasks' metrics, with the sampling rates (``_keep`` of the largest service's task count per window, for
# ``max_samples``) computed in the statement (``keeps``) and returned on every row: the tasks are read once, not once
# for COUNTS_SQL and again for the samples. COUNTS_SQL gives the rates when no task is returned.
# params: the scope's, base_ms, wm_ms, max_samples.
_KEEP = (
    "if({n} <= {{max_samples:UInt32}}, 1000000, greatest(1, toUInt32(floor(1000000 * {{max_samples:UInt32}} / {n}))))"
)
TASKS_SAMPLED_SQL = f"""
WITH {_TASKS},
keeps AS MATERIALIZED (
    SELECT {_KEEP.format(n="maxIf(n, cur)")} AS keep_cur, {_KEEP.format(n="maxIf(n, NOT cur)")} AS keep_base
    FROM (SELECT service, cur, count() AS n FROM all_roots GROUP BY service, cur)
)
SELECT service, cur, tokens AS tokens_per_task, cost AS cost_per_task, steps AS steps_per_task,
       duration_ms AS task_latency_ms, err, (SELECT keep_cur FROM keeps) AS keep_cur,
       (SELECT keep_base FROM keeps) AS keep_base
FROM all_roots
WHERE cityHash64(TraceId) % 1000000 < if(cur, (SELECT keep_cur FROM keeps), (SELECT keep_base FROM keeps))
"""

_CALLS_WHERE = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    f" AND Hour >= toStartOfHour({R.ms('base_ms')}) AND Hour < {R.ms('to_ms')}"
    f" AND cityHash64(TraceId) % 1000000 < if(First.ts >= {R.ms('from_ms')}, {{keep_cur:UInt32}}, {{keep_base:UInt32}})"
)
CALLS_SQL = f"""
SELECT service, ts >= {R.ms("from_ms")} AS cur, d / 1e6 AS llm_latency_ms, o AS output_tokens
FROM ({R.calls(_CALLS_WHERE)})
WHERE ts >= {R.ms("base_ms")} AND ts < {R.ms("to_ms")}
"""

MIX_SQL = f"""
SELECT ServiceName AS service, {_CUR} AS cur, Kind AS kind, if(Kind = 'tool', ToolName, Model) AS cat, count() AS n
FROM {SPANS_TABLE} FINAL
WHERE {_SCOPE} AND Timestamp < fromUnixTimestamp64Milli({{to_ms:Int64}}) AND Kind IN ('tool', 'llm')
GROUP BY service, cur, kind, cat
"""

MODELS_SQL = f"""
SELECT ServiceName AS service, RequestModel AS request_model, Model AS model,
       countIf(NOT {_CUR}) AS nb, countIf({_CUR}) AS nc,
       toUnixTimestamp64Nano(minIf(Timestamp, {_CUR})) AS first_ns, toUnixTimestamp64Nano(max(Timestamp)) AS last_ns
FROM {SPANS_TABLE} FINAL
WHERE {_SCOPE} AND Timestamp < fromUnixTimestamp64Milli({{to_ms:Int64}}) AND Kind = 'llm' AND Model != ''
GROUP BY service, request_model, model
"""


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
    params: dict[str, Any] = {
        **scope.params(), "base_ms": scope.start_ms - int(baseline_hours * 3_600_000), "max_samples": max_samples,
        "wm_ms": S.watermark(store),
    }  # fmt: skip
    tasks = store.query_arrow(TASKS_SAMPLED_SQL, params)
    if tasks.num_rows:
        params.update(keep_cur=int(tasks.column("keep_cur")[0].as_py()),
                      keep_base=int(tasks.column("keep_base")[0].as_py()))  # fmt: skip
    else:
        counts: dict[bool, int] = defaultdict(int)
        for r in store.query(COUNTS_SQL, params):
            counts[bool(r["cur"])] = max(counts[bool(r["cur"])], int(r["n"]))
        params.update(keep_cur=_keep(counts[True], max_samples), keep_base=_keep(counts[False], max_samples))

    # columnar (Arrow -> numpy), not one Python dict per task / call: hundreds of thousands of rows at scale
    samples: dict[str, dict[str, dict[bool, Any]]] = defaultdict(lambda: defaultdict(lambda: {False: [], True: []}))
    for t, metrics in ((tasks, (*TASK_METRICS, "err")), (None, CALL_METRICS)):
        if t is None:
            t = store.query_arrow(CALLS_SQL, params)
        if not t.num_rows:
            continue
        services = np.asarray(t.column("service").to_pylist(), dtype=object)
        curs = t.column("cur").to_numpy(zero_copy_only=False).astype(bool)
        cols = {m: t.column(m).to_numpy(zero_copy_only=False) for m in metrics}
        for service in set(services.tolist()):
            sel = services == service
            for cur in (False, True):
                mask = sel & (curs == cur)
                for m in metrics:
                    v = cols[m][mask]
                    if m == "err":
                        samples[service]["error_rate"][cur] = v.astype(bool).astype(int)
                    else:
                        samples[service][m][cur] = v.astype(float)
    mixes: dict[str, dict[str, dict[bool, dict[str, int]]]] = defaultdict(
        lambda: defaultdict(lambda: {False: {}, True: {}})
    )
    for r in store.query(MIX_SQL, params):
        metric = "tool_mix" if r["kind"] == "tool" else "model_mix"
        mixes[r["service"]][metric][bool(r["cur"])][r["cat"] or "(none)"] = int(r["n"])

    items = []
    for service in sorted(set(samples) | set(mixes)):
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
        "baseline": {"from": iso(params["base_ms"] * 1_000_000), "to": iso(scope.start_ms * 1_000_000)},
        "thresholds": {"psi": psi_threshold, "alpha": alpha, "correction": "bonferroni", "min_samples": min_samples},
        "sampled": {"baseline_ppm": params["keep_base"], "current_ppm": params["keep_cur"]},
        "items": items,
        "model_changes": model_changes(store, params),
    }


def model_changes(store: Store, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = store.query(MODELS_SQL, params)
    by_service: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_service[r["service"]].append(r)
    events = []
    for service, models in sorted(by_service.items()):
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
