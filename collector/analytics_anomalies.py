"""Cost anomalies (DESIGN.md, Semantics):

- tasks: per (service, task name), a task whose cost is far above a robust baseline — the median and MAD of
  log cost over a trailing window of whole hours before ``from``'s hour (default 7 days). Log space because task
  costs are right-skewed: a score of 4 means "4 robust standard deviations of the usual spread above the median", in
  ratio terms. A key with fewer than ``min_samples`` baseline tasks falls back to the window's own tasks
  (robust statistics tolerate the few anomalies among them); with fewer still it is not scored.
- token bombs: one LLM call whose input tokens are far above its call site's norm (service, task name,
  model), same robust score on log tokens;
- spend spikes: an hour whose cost (per service) is far above the baseline's hourly median.

The baseline is computed once and reused (per store, in the process) while its hours get no new rows and for
at most 10 minutes: it is most of the rows read, and the live windows of the dashboard and the alert engine
share one baseline for an hour. Measured at 9.9M spans (bench/queries.py): 12.8 s a call before; after, 7.4 s
for the first call of an hour and 2.5 s for the next ones (README, Benchmarks).

Flagged when score >= ``z`` AND value / baseline median >= ``ratio``: the score makes it unusual for this key,
the ratio makes it matter. Unpriced tasks (cost 0 because no price is known) are not scored for cost.
"""

from __future__ import annotations

import json
from typing import Any

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import MAD_SCALE, check_range, rnd
from agentwatch.collector.baselines import baselines
from agentwatch.collector.queries import QueryError, Scope, iso
from agentwatch.collector.store import Store

DEFAULT_BASELINE_H = 7 * 24
MIN_LOG_SPREAD = 0.05  # a floor on the robust spread in log space (~5 %): identical costs do not give z = inf

# The baseline is split off and cached: it is 7/8 of the rows read (7 days against one) and does not move while the
# window does. Baseline = tasks whose root starts in [from's hour - baseline_hours, from's hour) — whole hours, so the
# live "last 24 h" of the dashboard and the alert engine's "last 15 min" hit the same baseline for an hour — and
# their LLM calls; the window's tasks are scored against it. A key whose baseline has fewer than ``min_samples``
# points is scored against the window's own points. Params: project, service, base_ms, bend_ms (from's hour).
_BASE_ROOTS = f"""{S.window_ctes("base_ms", "bend_ms")},
roots AS MATERIALIZED (
    SELECT TraceId, ServiceName AS service, Name AS name, CostUsd AS cost,
           Start + toIntervalNanosecond(DurationNs) AS te
    FROM s_window
)"""


def _calls(lo: str, hi: str) -> str:
    """One row per call (collector/rollups.py) in the hours from ``lo`` to the roots' latest end and to ``hi`` (the
    spend rate wants every call up to it): every task's, not ``TraceId IN roots`` (the users join them to the roots;
    testing each row against the roots' set costs more)."""
    return R.calls(
        "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
        f" AND Hour >= toStartOfHour({R.ms(lo)}) AND Hour <= greatest((SELECT max(te) FROM roots), {R.ms(hi)})"
    )


def _robust(x: str) -> str:
    """n, median and MAD of ``x`` per group (the values' array is not returned)."""
    return (
        f"count() AS n, arrayReduce('medianExact', groupArray({x}) AS xs) AS med,"
        " arrayReduce('medianExact', arrayMap(v -> abs(v - med), xs)) AS mad"
    )


# per key: (kind, service, name, model, n, median, MAD) — of log task cost per (service, name), of log input tokens
# per call site (service, name, model), and of the hourly spend per service (not log; hours before from's hour)
BASELINE_SQL = f"""
WITH {_BASE_ROOTS},
calls AS MATERIALIZED ({_calls("base_ms", "bend_ms")}),
bomb_x AS (
    SELECT r.service AS service, r.name AS name, toString(c.model) AS model, log(c.i) AS x
    FROM calls AS c INNER JOIN roots AS r ON c.TraceId = r.TraceId
    WHERE c.i > 0 AND c.ts < {R.ms("bend_ms")}
),
hours AS (
    SELECT toString(service) AS service, toStartOfHour(ts) AS hour, sum(ifNull(c, 0)) AS cost
    FROM calls WHERE ts >= {R.ms("base_ms")} AND ts < {R.ms("bend_ms")} GROUP BY service, hour
)
SELECT 'task' AS kind, service, name, '' AS model, {_robust("log(cost)")}
FROM roots WHERE cost > 0 GROUP BY service, name
UNION ALL
SELECT 'bomb' AS kind, service, name, model, {_robust("x")} FROM bomb_x GROUP BY service, name, model
UNION ALL
SELECT 'spike' AS kind, service, '' AS name, '' AS model, {_robust("cost")} FROM hours GROUP BY service
"""

_BASELINE_TYPE = "Array(Tuple(String, String, String, String, UInt64, Float64, Float64))"

# The robust score of a value column `x` (log scale) per key against the cached baseline (``base``), the window's
# own points as a fallback. One GROUP BY over the points (an array of the window's values per key, then the points
# unrolled with their key's median and spread): evaluated once, not once per statistic. ARRAY JOIN, not
# arrayJoin(): with the function, the score filter is pushed below the join and the medians recomputed per row.
_SCORE = """
{name} AS (
    SELECT {keys}, use_b, n, med, spread, p
    FROM (
        SELECT {keys}, cp, nb >= {{min_samples:UInt32}} AS use_b, if(use_b, nb, nc) AS n,
               if(use_b, bmed, arrayReduce('medianExact', xc)) AS med,
               greatest({mad_scale} * if(use_b, bmad, arrayReduce('medianExact', arrayMap(v -> abs(v - med), xc))),
                        {min_spread}) AS spread
        FROM (
            SELECT {keys}, groupArray(x) AS xc, length(xc) AS nc, groupArray(({payload})) AS cp
            FROM {source} GROUP BY {keys}
        ) AS k
        LEFT JOIN (SELECT {keys}, n AS nb, med AS bmed, mad AS bmad FROM base WHERE kind = '{kind}') AS b USING ({keys})
        WHERE nb >= {{min_samples:UInt32}} OR nc >= {{min_samples:UInt32}}
    ) ARRAY JOIN cp AS p
)"""


def _score_cte(name: str, kind: str, source: str, keys: str, payload: str) -> str:
    return _SCORE.format(
        name=name, kind=kind, source=source, keys=keys, payload=payload, mad_scale=MAD_SCALE,
        min_spread=MIN_LOG_SPREAD,
    )  # fmt: skip


# The window's tasks far above their (service, name) baseline, its token bombs and its hourly spend against the
# baseline's hours (at least 24 of them), in one statement: all three read the window's calls. Roots from the
# baseline's start: a task that started before the window may make a call in it (a bomb); its cost is scored only
# if its root is in the window. ``kind`` tells the rows apart; each branch keeps its own filter, order and limit.
# Params: the scope's, base_ms, bend_ms, base (the baseline, JSON), the thresholds.
_BASE = f"""
base AS (
    SELECT b.1 AS kind, b.2 AS service, b.3 AS name, b.4 AS model, b.5 AS n, b.6 AS med, b.7 AS mad
    FROM (SELECT arrayJoin(JSONExtract({{base:String}}, '{_BASELINE_TYPE}')) AS b)
)"""
ANOMALIES_SQL = f"""
WITH {S.window_ctes("base_ms", "to_ms")},
roots AS MATERIALIZED (
    SELECT TraceId, ServiceName AS service, Name AS name, Start >= {R.ms("from_ms")} AS cur, Start AS ts,
           Start + toIntervalNanosecond(DurationNs) AS te, CostUsd AS cost, InputTokens AS i, OutputTokens AS o,
           LlmCalls AS llm_calls
    FROM s_window
),
calls AS MATERIALIZED ({_calls("from_ms", "to_ms")}),
{_BASE.strip()},
task_pts AS (
    SELECT TraceId, service, name, ts, cost, i, o, llm_calls, log(cost) AS x FROM roots WHERE cur AND cost > 0
),
{_score_cte("task_scored", "task", "task_pts", "service, name", "TraceId, ts, cost, i, o, llm_calls, x")},
bomb_pts AS (
    SELECT c.TraceId AS TraceId, c.span_id AS span_id, r.service AS service, r.name AS name,
           toString(c.model) AS model, c.ts AS ts, c.i AS i, c.c AS cost, log(c.i) AS x
    FROM calls AS c INNER JOIN roots AS r ON c.TraceId = r.TraceId
    WHERE c.i > 0 AND c.ts >= {R.ms("from_ms")} AND c.ts < {R.ms("to_ms")}
),
{_score_cte("bomb_scored", "bomb", "bomb_pts", "service, name, model", "TraceId, span_id, ts, i, cost, x")},
hours AS (
    SELECT toString(service) AS service, toStartOfHour(ts) AS hour, sum(ifNull(c, 0)) AS cost
    FROM calls WHERE ts >= {R.ms("from_ms")} AND ts < {R.ms("to_ms")} GROUP BY service, hour
)
SELECT * FROM (
    SELECT 'task' AS kind, p.1 AS trace_id, '' AS span_id, service, name, '' AS model,
           toUnixTimestamp64Nano(p.2) AS start_ns, p.3 AS cost, p.4 AS input_tokens, p.5 AS output_tokens,
           p.6 AS llm_calls, exp(med) AS baseline, n AS baseline_n, use_b, (p.7 - med) / spread AS score,
           p.3 / exp(med) AS ratio
    FROM task_scored
    WHERE score >= {{z:Float64}} AND ratio >= {{ratio:Float64}}
    ORDER BY score DESC, trace_id LIMIT {{limit:UInt32}}
    UNION ALL
    SELECT 'bomb' AS kind, p.1 AS trace_id, p.2 AS span_id, service, name, model,
           toUnixTimestamp64Nano(p.3) AS start_ns, p.5 AS cost, p.4 AS input_tokens, toUInt64(0) AS output_tokens,
           toUInt64(0) AS llm_calls, exp(med) AS baseline, n AS baseline_n, use_b, (p.6 - med) / spread AS score,
           p.4 / exp(med) AS ratio
    FROM bomb_scored
    WHERE score >= {{bomb_z:Float64}} AND ratio >= {{bomb_ratio:Float64}}
    ORDER BY score DESC, trace_id, span_id LIMIT {{limit:UInt32}}
    UNION ALL
    SELECT 'spike' AS kind, '' AS trace_id, '' AS span_id, h.service AS service, '' AS name, '' AS model,
           toUnixTimestamp64Nano(toDateTime64(h.hour, 9)) AS start_ns, h.cost AS cost, toUInt64(0) AS input_tokens,
           toUInt64(0) AS output_tokens, toUInt64(0) AS llm_calls, b.med AS baseline, b.n AS baseline_n,
           toUInt8(1) AS use_b, (h.cost - b.med) / greatest({MAD_SCALE} * b.mad, 0.05 * b.med, 1e-9) AS score,
           h.cost / greatest(b.med, 1e-12) AS ratio
    FROM hours AS h INNER JOIN (SELECT service, n, med, mad FROM base WHERE kind = 'spike' AND n >= 24) AS b
        ON b.service = h.service
    WHERE score >= {{spike_z:Float64}} AND ratio >= {{spike_ratio:Float64}}
)
ORDER BY kind DESC, score DESC, trace_id, span_id
"""

def _baseline(store: Store, params: dict[str, Any]) -> str:
    """The baseline's rows as the JSON the anomaly query takes (``base``), cached (collector/baselines.py)."""

    def compute() -> str:
        return json.dumps(
            [[r["kind"], r["service"], r["name"], r["model"], int(r["n"]), float(r["med"]), float(r["mad"])]
             for r in store.query(BASELINE_SQL, params)]
        )  # fmt: skip

    return baselines.get(store, ("anomalies", params["service"]), params, compute)


def cost_anomalies(
    store: Store, scope: Scope, *, baseline_hours: float = DEFAULT_BASELINE_H, z: float = 4.0, ratio: float = 3.0,
    min_samples: int = 20, bomb_z: float = 4.5, bomb_ratio: float = 5.0, spike_z: float = 6.0,
    spike_ratio: float = 2.0, limit: int = 200,
) -> dict[str, Any]:  # fmt: skip
    check_range("baseline_hours", baseline_hours, 1, 24 * 90)
    for name, v in (("z", z), ("bomb_z", bomb_z), ("spike_z", spike_z)):
        check_range(name, v, 0, 1000)
    for name, v in (("ratio", ratio), ("bomb_ratio", bomb_ratio), ("spike_ratio", spike_ratio)):
        check_range(name, v, 1, 1e6)
    if not 3 <= min_samples <= 100_000:
        raise QueryError(f"min_samples must be between 3 and 100000, got {min_samples}")
    if not 1 <= limit <= 5000:
        raise QueryError(f"limit must be between 1 and 5000, got {limit}")
    bend_ms = scope.start_ms - scope.start_ms % 3_600_000
    params = {
        **scope.params(), "base_ms": bend_ms - int(baseline_hours * 3_600_000), "bend_ms": bend_ms, "z": z,
        "ratio": ratio,
        "min_samples": min_samples, "bomb_z": bomb_z, "bomb_ratio": bomb_ratio, "spike_z": spike_z,
        "spike_ratio": spike_ratio, "limit": limit,
    }  # fmt: skip
    params["wm_ms"] = S.watermark(store)
    params["base"] = _baseline(store, params)
    rows = store.query(ANOMALIES_SQL, params)
    items = [
        {
            "trace_id": r["trace_id"],
            "service": r["service"],
            "name": r["name"],
            "start": iso(r["start_ns"]),
            "cost_usd": rnd(r["cost"], 9),
            "baseline_usd": rnd(r["baseline"], 9),
            "ratio": rnd(r["ratio"], 3),
            "score": rnd(r["score"], 3),
            "baseline_n": int(r["baseline_n"]),
            "baseline_source": "trailing" if r["use_b"] else "window",
            "input_tokens": int(r["input_tokens"]),
            "output_tokens": int(r["output_tokens"]),
            "llm_calls": int(r["llm_calls"]),
        }
        for r in rows
        if r["kind"] == "task"
    ]
    bombs = [
        {
            "trace_id": r["trace_id"],
            "span_id": r["span_id"],
            "service": r["service"],
            "name": r["name"],
            "model": r["model"] or None,
            "time": iso(r["start_ns"]),
            "input_tokens": int(r["input_tokens"]),
            "baseline_input_tokens": rnd(r["baseline"], 1),
            "ratio": rnd(r["ratio"], 3),
            "score": rnd(r["score"], 3),
            "cost_usd": rnd(r["cost"], 9),
            "baseline_n": int(r["baseline_n"]),
            "baseline_source": "trailing" if r["use_b"] else "window",
        }
        for r in rows
        if r["kind"] == "bomb"
    ]
    spikes = [
        {
            "service": r["service"],
            "hour": iso(r["start_ns"]),
            "cost_usd": rnd(r["cost"], 9),
            "baseline_usd": rnd(r["baseline"], 9),
            "ratio": rnd(r["ratio"], 3),
            "score": rnd(r["score"], 3),
            "baseline_hours": int(r["baseline_n"]),
        }
        for r in sorted((r for r in rows if r["kind"] == "spike"), key=lambda r: (r["start_ns"], r["service"]))
    ]
    return {
        "baseline_hours": baseline_hours,
        "thresholds": {"z": z, "ratio": ratio, "min_samples": min_samples, "bomb_z": bomb_z,
                       "bomb_ratio": bomb_ratio, "spike_z": spike_z, "spike_ratio": spike_ratio},
        "items": items,
        "token_bombs": bombs,
        "spend_spikes": spikes,
    }  # fmt: skip
