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
for the first call of an hour and 2.5 s for the next ones; with the task and call summaries (collector/summary.py),
1.6-1.7 s and 0.76-0.81 s; with the tasks and the calls read side by side, 0.66-0.81 s on a slower day (README,
Benchmarks).

Flagged when score >= ``z`` AND value / baseline median >= ``ratio``: the score makes it unusual for this key,
the ratio makes it matter. Unpriced tasks (cost 0 because no price is known) are not scored for cost.
"""

from __future__ import annotations

import json
from typing import Any

from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import MAD_SCALE, check_range, rnd
from agentwatch.collector.baselines import baselines
from agentwatch.collector.queries import QueryError, Scope, iso
from agentwatch.collector.store import Store, parallel

DEFAULT_BASELINE_H = 7 * 24
MIN_LOG_SPREAD = 0.05  # a floor on the robust spread in log space (~5 %): identical costs do not give z = inf

# The baseline is split off and cached: it is 7/8 of the rows read (7 days against one) and does not move while the
# window does. Baseline = tasks whose root starts in [from's hour - baseline_hours, from's hour) — whole hours, so the
# live "last 24 h" of the dashboard and the alert engine's "last 15 min" hit the same baseline for an hour — and
# the LLM calls that start in those hours; the window's tasks are scored against it. A key whose baseline has fewer
# than ``min_samples`` points is scored against the window's own points. Tasks and calls come from the summaries
# (collector/summary.py: a call carries its task's service and name, so a call site needs no join to the roots),
# computed from the rollups for the traces with newer spans. Params: project, service, wm_ms, base_ms, bend_ms.


def _robust(x: str) -> str:
    """n, median and MAD of ``x`` per group (the values' array is not returned)."""
    return (
        f"count() AS n, arrayReduce('medianExact', groupArray({x}) AS xs) AS med,"
        " arrayReduce('medianExact', arrayMap(v -> abs(v - med), xs)) AS mad"
    )


# The window's (or the baseline's) calls as the detectors need them: numbers and a site's hash (SiteHash, migration
# 10: cityHash64(RootService, RootName, Model)), no strings; the points of a call site are the calls of a task
# whose root has arrived, with input tokens
_WINDOW_CALLS = """SELECT SiteHash, HasRoot, ServiceName, Ts, InputTokens, CostUsd FROM c_window"""
_BOMB_PTS = """SELECT SiteHash AS k, log(InputTokens) AS x FROM calls WHERE HasRoot = 1 AND InputTokens > 0"""
_HOURS = """SELECT toString(ServiceName) AS service, toStartOfHour(Ts) AS hour, sum(ifNull(CostUsd, 0)) AS cost
    FROM {calls} GROUP BY service, hour"""

# per key: (kind, service, name, model, n, median, MAD, k) — of log task cost per (service, name), of log input tokens
# per call site (k, its hash: a week of calls grouped by 8 bytes, not three strings; 798 -> ~500 ms at 9.9M spans),
# and of the hourly spend per service (not log; hours before from's hour)
BASELINE_SQL = f"""
WITH {S.window_ctes("base_ms", "bend_ms")},{S.calls_ctes("base_ms", "bend_ms", dirty_cte="s_dirty")},
calls AS MATERIALIZED ({_WINDOW_CALLS}),
bomb_pts AS ({_BOMB_PTS}),
hours AS ({_HOURS.format(calls="calls")})
SELECT 'task' AS kind, toString(ServiceName) AS service, Name AS name, '' AS model, {_robust("log(CostUsd)")},
       toUInt64(0) AS k
FROM s_window WHERE CostUsd > 0 GROUP BY service, name
UNION ALL
SELECT 'bomb' AS kind, '' AS service, '' AS name, '' AS model, {_robust("x")}, k FROM bomb_pts GROUP BY k
UNION ALL
SELECT 'spike' AS kind, service, '' AS name, '' AS model, {_robust("cost")}, toUInt64(0) AS k
FROM hours GROUP BY service
"""

_BASELINE_TYPE = "Array(Tuple(String, String, String, String, UInt64, Float64, Float64, UInt64))"

# The robust score of a value column `x` (log scale) per key against the cached baseline (``base``), the window's
# own points as a fallback. One GROUP BY over the points (an array of the window's values per key, then the points
# unrolled with their key's median and spread): evaluated once, not once per statistic. ARRAY JOIN, not
# arrayJoin(): with the function, the score filter is pushed below the join and the medians recomputed per row.
# a key's robust statistics: from the baseline (nb, bmed, bmad) when it has ``min_samples`` points, else from the
# window's own values (xc, nc)
_STATS = f"""nb >= {{min_samples:UInt32}} AS use_b, if(use_b, nb, nc) AS n,
               if(use_b, bmed, arrayReduce('medianExact', xc)) AS med,
               greatest({MAD_SCALE} * if(use_b, bmad, arrayReduce('medianExact', arrayMap(v -> abs(v - med), xc))),
                        {MIN_LOG_SPREAD}) AS spread"""
_SCORE = f"""
{{name}} AS (
    SELECT {{keys}}, use_b, n, med, spread, p
    FROM (
        SELECT {{keys}}, cp, {_STATS.replace("{", "{{").replace("}", "}}")}
        FROM (
            SELECT {{keys}}, groupArray(x) AS xc, length(xc) AS nc, groupArray(({{payload}})) AS cp
            FROM {{source}} GROUP BY {{keys}}
        ) AS k
        LEFT JOIN (SELECT {{keys}}, n AS nb, med AS bmed, mad AS bmad FROM base WHERE kind = '{{kind}}') AS b
            USING ({{keys}})
        WHERE nb >= {{{{min_samples:UInt32}}}} OR nc >= {{{{min_samples:UInt32}}}}
    ) ARRAY JOIN cp AS p
)"""

def _score_cte(name: str, kind: str, source: str, keys: str, payload: str) -> str:
    return _SCORE.format(name=name, kind=kind, source=source, keys=keys, payload=payload)


# The window's tasks far above their (service, name) baseline (TASK_ANOMALIES_SQL, from the task summaries), and,
# side by side, its token bombs and its hourly spend against the baseline's hours, at least 24 of them
# (CALL_ANOMALIES_SQL, from the call summaries; ``kind`` tells the rows apart, each branch keeps its own filter,
# order and limit). Two statements, not one: measured at 9.9M spans, 842-1,077 -> 661-807 ms. Params: the scope's,
# wm_ms, base (the baseline, JSON), the thresholds.
_BASE = f"""
base AS (
    SELECT b.1 AS kind, b.2 AS service, b.3 AS name, b.4 AS model, b.5 AS n, b.6 AS med, b.7 AS mad, b.8 AS k
    FROM (SELECT arrayJoin(JSONExtract({{base:String}}, '{_BASELINE_TYPE}')) AS b)
)"""
_TASK_CTES = f"""
WITH {S.window_ctes("from_ms", "to_ms")},
roots AS (
    SELECT TraceId, ServiceName AS service, Name AS name, Start AS ts, CostUsd AS cost, InputTokens AS i,
           OutputTokens AS o, LlmCalls AS llm_calls
    FROM s_window
),
{_BASE.strip()},
task_pts AS (
    SELECT TraceId, service, name, ts, cost, i, o, llm_calls, log(cost) AS x FROM roots WHERE cost > 0
),
{_score_cte("task_scored", "task", "task_pts", "service, name", "TraceId, ts, cost, i, o, llm_calls, x")}
"""
TASK_ANOMALIES_SQL = f"""{_TASK_CTES}
SELECT 'task' AS kind, p.1 AS trace_id, '' AS span_id, service, name, '' AS model,
       toUnixTimestamp64Nano(p.2) AS start_ns, p.3 AS cost, p.4 AS input_tokens, p.5 AS output_tokens,
       p.6 AS llm_calls, exp(med) AS baseline, n AS baseline_n, use_b, (p.7 - med) / spread AS score,
       p.3 / exp(med) AS ratio
FROM task_scored
WHERE score >= {{z:Float64}} AND ratio >= {{ratio:Float64}}
ORDER BY score DESC, trace_id LIMIT {{limit:UInt32}}
"""
# Token bombs: a site's statistics are the baseline's (by its hash, SiteHash, stored on the call summary: migration
# 10) or, for a site with fewer than min_samples baseline points, its window values'; each becomes a threshold on log
# input tokens (score >= bomb_z and ratio >= bomb_ratio, less a rounding margin: the final filter is exact); one pass
# over the window's calls keeps those past their site's threshold, and only they carry their strings on. Carrying
# every call's strings through the scoring, this statement took ~650 ms of cost anomalies' ~730 at 9.9M spans.
CALL_ANOMALIES_SQL = f"""
WITH {S.calls_ctes("from_ms", "to_ms").strip().rstrip(",")},
{_BASE.strip()},
-- a site with min_samples baseline points is scored against the baseline; only the others' window values are
-- gathered (usually none), not a day's 1.7M
bomb_sites AS MATERIALIZED (
    SELECT k FROM base WHERE kind = 'bomb' AND n >= {{min_samples:UInt32}}
),
bomb_stats AS (
    SELECT k, toUInt8(1) AS use_b, n, med, greatest({MAD_SCALE} * mad, {MIN_LOG_SPREAD}) AS spread
    FROM base WHERE kind = 'bomb' AND n >= {{min_samples:UInt32}}
    UNION ALL
    SELECT k, toUInt8(0) AS use_b, length(xc) AS n, arrayReduce('medianExact', xc) AS med,
           greatest({MAD_SCALE} * arrayReduce('medianExact', arrayMap(v -> abs(v - med), xc)), {MIN_LOG_SPREAD})
               AS spread
    FROM (
        SELECT SiteHash AS k, groupArray(log(InputTokens)) AS xc FROM c_window
        WHERE HasRoot = 1 AND InputTokens > 0 AND SiteHash NOT IN (SELECT k FROM bomb_sites)
        GROUP BY k HAVING length(xc) >= {{min_samples:UInt32}}
    )
),
bomb_thresholds AS MATERIALIZED (
    SELECT k, med, n, use_b, spread,
           greatest(med + {{bomb_z:Float64}} * spread, med + log({{bomb_ratio:Float64}})) - 1e-9 AS tx
    FROM bomb_stats
),
bombs AS (
    SELECT c.TraceId AS trace_id, c.SpanId AS span_id, toString(c.RootService) AS service, c.RootName AS name,
           toString(c.Model) AS model, c.Ts AS ts, c.CostUsd AS cost, c.InputTokens AS i, log(i) AS x, t.med AS med,
           t.n AS n, t.use_b AS use_b, (x - t.med) / t.spread AS score, i / exp(t.med) AS ratio
    FROM c_window AS c INNER JOIN bomb_thresholds AS t ON c.SiteHash = t.k
    WHERE c.HasRoot = 1 AND c.InputTokens > 0 AND log(c.InputTokens) >= t.tx
),
hours AS ({_HOURS.format(calls="c_window")})
SELECT * FROM (
    SELECT 'bomb' AS kind, trace_id, span_id, service, name, model, toUnixTimestamp64Nano(ts) AS start_ns, cost,
           i AS input_tokens, toUInt64(0) AS output_tokens, toUInt64(0) AS llm_calls, exp(med) AS baseline,
           n AS baseline_n, use_b, score, ratio
    FROM bombs
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
ORDER BY kind, score DESC, trace_id, span_id
"""


def _baseline(store: Store, params: dict[str, Any]) -> str:
    """The baseline's rows as the JSON the anomaly query takes (``base``), cached (collector/baselines.py)."""

    def compute() -> str:
        return json.dumps(
            [[r["kind"], r["service"], r["name"], r["model"], int(r["n"]), float(r["med"]), float(r["mad"]),
              int(r["k"])] for r in store.query(BASELINE_SQL, params)]
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
    # the tasks (task summaries) and the calls (call summaries) are independent reads: side by side
    tasks, calls = parallel(lambda: store.query(TASK_ANOMALIES_SQL, params),
                            lambda: store.query(CALL_ANOMALIES_SQL, params))  # fmt: skip
    rows = tasks + calls
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
