"""Drift (DESIGN.md, Semantics): per service, the window [from, to) against a baseline window before it
(default the 7 days of whole hours before the hour ``from`` falls in), metric by metric:

- continuous, per task: tokens, cost, steps (spans), duration; per LLM call: latency and output tokens —
  PSI over the baseline's deciles, and a two-sample Kolmogorov-Smirnov test;
- categorical: tool mix (tool spans by tool), model mix (LLM calls by response model), error rate (tasks
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
import pyarrow as pa

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import (
    check_range,
    chi2_homogeneity,
    ks_2samp,
    median_sorted,
    psi,
    psi_continuous,
    rnd,
    sorted_sample,
)
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

# One side (the baseline, or the window) is [lo, hi): tasks and LLM calls from the per-task and per-call summaries
# (collector/summary.py: computed from the rollups for the traces touched since the summarizer's watermark), tool
# mix from the spans, model mix from the calls' counts. Params: project, service, lo_ms, hi_ms, wm_ms; keep and
# keep_calls, the sampling rates.
_SIDE = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    f" AND Timestamp >= {R.ms('lo_ms')} AND Timestamp < {R.ms('hi_ms')}"
)

# The side's tasks and calls per service: they set the sampling rates (``max_samples`` of the busiest service's
# tasks, and of its calls).
COUNTS_SQL = f"""
WITH {S.dirty_ctes("s_dirty")}
{S.window_counts("lo_ms", "hi_ms")}
"""

# A deterministic sample by trace id, ``keep`` per million; a condition on the key, so the summaries' FINAL merges
# only the sampled rows (the whole day's rows were merged, then sampled: 335 -> ~70 ms for the tasks of a day).
TASKS_SAMPLED_SQL = f"""
WITH {S.window_ctes("lo_ms", "hi_ms", sample="keep")}
SELECT ServiceName AS service, InputTokens + OutputTokens AS tokens_per_task, CostUsd AS cost_per_task,
       Steps AS steps_per_task, DurationNs / 1e6 AS task_latency_ms, Outcome = 'error' AS err
FROM s_window
"""

# The side's LLM calls (whose first span starts in it), sampled by trace id at their own rate: a side holds about
# ten calls a task.
CALLS_SQL = f"""
WITH {S.calls_ctes("lo_ms", "hi_ms", sample="keep_calls").strip().rstrip(",")}
SELECT ServiceName AS service, Duration / 1e6 AS llm_latency_ms, OutputTokens AS output_tokens FROM c_window
"""

# tool mix: the side's tool spans by tool
TOOL_MIX_SQL = f"""
SELECT ServiceName AS service, ToolName AS tool, count() AS n
FROM {SPANS_TABLE} FINAL
WHERE {_SIDE} AND Kind = 'tool'
GROUP BY service, tool
"""

# the response models of the side's LLM calls, with the request model and the first use, from the calls' rollup rows
# (a row more or fewer per call changes no minimum: no FINAL, ~65 ms for a day of 1.7M calls)
MODELS_SQL = f"""
SELECT ServiceName AS service, RequestModel AS request_model, Model AS model,
       toUnixTimestamp64Nano(min(First.ts)) AS first_ns
FROM {LLM_CALLS_TABLE}
WHERE ProjectId = {{project:String}} AND ({{service:String}} = '' OR ServiceName = {{service:String}})
  AND Hour >= toStartOfHour({R.ms("lo_ms")}) AND Hour < {R.ms("hi_ms")}
  AND First.ts >= {R.ms("lo_ms")} AND First.ts < {R.ms("hi_ms")} AND Model != ''
GROUP BY service, request_model, model
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

    def sampled() -> tuple[list[dict[str, Any]], int, int, pa.Table, pa.Table]:
        counts = store.query(COUNTS_SQL, p)
        per_service: dict[tuple[str, str], int] = defaultdict(int)
        for r in counts:
            per_service[r["what"], r["service"]] += int(r["n"])
        most = {"tasks": 0, "calls": 0}
        for (what, _), n in per_service.items():
            most[what] = max(most[what], n)
        keep, keep_calls = _keep(most["tasks"], params["max_samples"]), _keep(most["calls"], params["max_samples"])
        q = {**p, "keep": keep, "keep_calls": keep_calls}
        tasks, calls = parallel(
            lambda: store.query_arrow(TASKS_SAMPLED_SQL, q), lambda: store.query_arrow(CALLS_SQL, q)
        )
        return counts, keep, keep_calls, tasks, calls

    # the mixes are read while the summaries are counted, then sampled (nested: ``parallel`` runs its first read in
    # the calling thread, so the pool's threads never wait on the pool); the window side of a day at 9.9M spans,
    # counts included: 743 -> ~380 ms
    (counts, keep, keep_calls, tasks, calls), tools, models = parallel(
        sampled, lambda: store.query(TOOL_MIX_SQL, p), lambda: store.query(MODELS_SQL, p)
    )
    side = Side(keep, keep_calls)
    for t, metrics in ((tasks, (*TASK_METRICS, "err")), (calls, CALL_METRICS)):
        if not t.num_rows:
            continue
        services = t.column("service").combine_chunks().dictionary_encode()
        codes = services.indices.to_numpy(zero_copy_only=False)
        cols = {m: t.column(m).to_numpy(zero_copy_only=False) for m in metrics}
        for code, service in enumerate(services.dictionary.to_pylist()):
            sel = codes == code
            for m in metrics:
                if m == "err":
                    side.samples[service]["error_rate"] = cols[m][sel].astype(bool).astype(int)
                else:  # sorted once (the baseline's stay cached): KS, PSI and medians read them in order
                    side.samples[service][m] = sorted_sample(cols[m][sel])
    for r in tools:
        side.mixes[r["service"]]["tool_mix"][r["tool"] or "(none)"] = int(r["n"])
    calls_by_model: dict[tuple[str, str], int] = {}
    for r in counts:
        if r["what"] == "calls":
            side.mixes[r["service"]]["model_mix"][r["model"] or "(none)"] = int(r["n"])
            calls_by_model[r["service"], r["model"]] = int(r["n"])
    for r in models:
        side.models.append({**r, "n": calls_by_model.get((r["service"], r["model"]), 0)})
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
                 "baseline_median": median_sorted(ba), "current_median": median_sorted(ca)}
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
    """Response models of the window that a service did not use in the baseline (``calls``: the window's LLM calls
    answered by the model)."""
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
