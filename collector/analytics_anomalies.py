"""Cost anomalies (DESIGN.md, Semantics):

- tasks: per (service, task name), a task whose cost is far above a robust baseline — the median and MAD of
  log cost over a trailing window before ``from`` (default 7 days). Log space because task costs are
  right-skewed: a score of 4 means "4 robust standard deviations of the usual spread above the median", in
  ratio terms. A key with fewer than ``min_samples`` baseline tasks falls back to the window's own tasks
  (robust statistics tolerate the few anomalies among them); with fewer still it is not scored.
- token bombs: one LLM call whose input tokens are far above its call site's norm (service, task name,
  model), same robust score on log tokens;
- spend spikes: an hour whose cost (per service) is far above the baseline's hourly median.

Flagged when score >= ``z`` AND value / baseline median >= ``ratio``: the score makes it unusual for this key,
the ratio makes it matter. Unpriced tasks (cost 0 because no price is known) are not scored for cost.
"""

from __future__ import annotations

from typing import Any

from agentwatch.collector import rollups as R
from agentwatch.collector.analytics_common import MAD_SCALE, check_range, rnd
from agentwatch.collector.queries import QueryError, Scope, iso
from agentwatch.collector.store import Store

DEFAULT_BASELINE_H = 7 * 24
MIN_LOG_SPREAD = 0.05  # a floor on the robust spread in log space (~5 %): identical costs do not give z = inf

_CALLS_WINDOW = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    f" AND Hour >= toStartOfHour({R.ms('base_ms')}) AND Hour < {R.ms('to_ms')}"
)

# tasks (root starting in [base, to)) and their LLM calls, from the rollups (collector/rollups.py): one call
# counted once, a re-sent span never twice; params: project, service, base_ms, from_ms, to_ms. The calls are every
# task's in those hours, not ``TraceId IN roots``: both users join them to the roots, and testing each row against
# the roots' set costs more than aggregating the few extra tasks. MATERIALIZED: the task and the bomb scores share
# them.
_ROOTS = f"""
roots AS MATERIALIZED (
    SELECT TraceId, r.service AS service, r.name AS name, r.ts >= {R.ms("from_ms")} AS cur, r.ts AS ts,
           r.ts + toIntervalNanosecond(r.dur) AS te
    FROM ({R.roots("base_ms", "to_ms")})
),
calls AS MATERIALIZED ({R.calls(R.member_hours_where("base_ms", service=True))})"""

# The robust score of a value column `x` (log scale) per key, baseline first, the window as a fallback. One
# GROUP BY over the points (arrays of the baseline's and the window's values per key, then the window's points
# unrolled with their key's median and spread): they are evaluated once, not once per statistic. ARRAY JOIN, not
# arrayJoin(): with the function, the score filter is pushed below the join and the medians recomputed per row.
_SCORE = """
{name} AS (
    SELECT {keys}, use_b, n, med, spread, p
    FROM (
        SELECT {keys}, cp, nb >= {{min_samples:UInt32}} AS use_b, if(use_b, nb, nc) AS n,
               arrayReduce('medianExact', if(use_b, xb, xc)) AS med,
               greatest({mad_scale} * arrayReduce('medianExact', arrayMap(v -> abs(v - med), if(use_b, xb, xc))),
                        {min_spread}) AS spread
        FROM (
            SELECT {keys}, groupArrayIf(x, NOT cur) AS xb, groupArrayIf(x, cur) AS xc, length(xb) AS nb,
                   length(xc) AS nc, groupArrayIf(({payload}), cur) AS cp
            FROM {source} GROUP BY {keys}
        )
        WHERE nb >= {{min_samples:UInt32}} OR nc >= {{min_samples:UInt32}}
    ) ARRAY JOIN cp AS p
)"""


def _score_cte(name: str, source: str, keys: str, payload: str) -> str:
    return _SCORE.format(
        name=name, source=source, keys=keys, payload=payload, mad_scale=MAD_SCALE, min_spread=MIN_LOG_SPREAD
    )


# Tasks far above their (service, name) baseline and token bombs, in one statement: both read the same roots and
# calls over the baseline and the window, the most expensive part of either. ``kind`` tells the rows apart; each
# branch keeps its own filter, order and limit.
ANOMALIES_SQL = f"""
WITH {_ROOTS},
cost AS (SELECT TraceId, sum(c) AS cost, sum(i) AS i, sum(o) AS o, count() AS llm_calls FROM calls GROUP BY TraceId),
task_pts AS (
    SELECT r.TraceId AS TraceId, r.service AS service, r.name AS name, r.cur AS cur, r.ts AS ts, c.cost AS cost,
           c.i AS i, c.o AS o, c.llm_calls AS llm_calls, log(c.cost) AS x
    FROM roots AS r INNER JOIN cost AS c ON c.TraceId = r.TraceId
    WHERE c.cost > 0
),
{_score_cte("task_scored", "task_pts", "service, name", "TraceId, ts, cost, i, o, llm_calls, x")},
bomb_pts AS (
    SELECT c.TraceId AS TraceId, c.span_id AS span_id, r.service AS service, r.name AS name, c.model AS model,
           c.ts >= fromUnixTimestamp64Milli({{from_ms:Int64}}) AS cur, c.ts AS ts, c.i AS i, c.c AS cost,
           log(c.i) AS x
    FROM calls AS c INNER JOIN roots AS r ON c.TraceId = r.TraceId
    WHERE c.i > 0
),
{_score_cte("bomb_scored", "bomb_pts", "service, name, model", "TraceId, span_id, ts, i, cost, x")}
SELECT * FROM (
    SELECT 'task' AS kind, p.1 AS trace_id, '' AS span_id, service, name, '' AS model,
           toUnixTimestamp64Nano(p.2) AS start_ns, p.3 AS cost, p.4 AS input_tokens, p.5 AS output_tokens,
           p.6 AS llm_calls, exp(med) AS baseline, n AS baseline_n, use_b, (p.7 - med) / spread AS score,
           p.3 / exp(med) AS ratio
    FROM task_scored
    WHERE score >= {{z:Float64}} AND ratio >= {{ratio:Float64}}
    ORDER BY score DESC, trace_id LIMIT {{limit:UInt32}}
    UNION ALL
    SELECT 'bomb' AS kind, p.1 AS trace_id, p.2 AS span_id, service, name, toString(model) AS model,
           toUnixTimestamp64Nano(p.3) AS start_ns, p.5 AS cost, p.4 AS input_tokens, toUInt64(0) AS output_tokens,
           toUInt64(0) AS llm_calls, exp(med) AS baseline, n AS baseline_n, use_b, (p.6 - med) / spread AS score,
           p.4 / exp(med) AS ratio
    FROM bomb_scored
    WHERE p.3 < fromUnixTimestamp64Milli({{to_ms:Int64}}) AND score >= {{bomb_z:Float64}}
      AND ratio >= {{bomb_ratio:Float64}}
    ORDER BY score DESC, trace_id, span_id LIMIT {{limit:UInt32}}
)
ORDER BY kind DESC, score DESC, trace_id, span_id
"""

SPIKES_SQL = f"""
WITH one_call AS (
    SELECT service, ts, c AS cost FROM ({R.calls(_CALLS_WINDOW)})
    WHERE ts >= {R.ms("base_ms")} AND ts < {R.ms("to_ms")}
),
hours AS (
    SELECT service, toStartOfHour(ts) AS hour, ts >= fromUnixTimestamp64Milli({{from_ms:Int64}}) AS cur,
           sum(ifNull(cost, 0)) AS cost
    FROM one_call GROUP BY service, hour, cur
),
scored AS (
    SELECT service, nb, med, mad, h
    FROM (
        SELECT service, nb, cp, arrayReduce('medianExact', xb) AS med,
               arrayReduce('medianExact', arrayMap(v -> abs(v - med), xb)) AS mad
        FROM (
            SELECT service, groupArrayIf(cost, NOT cur) AS xb, length(xb) AS nb, groupArrayIf((hour, cost), cur) AS cp
            FROM hours GROUP BY service
        )
        WHERE nb >= 24
    ) ARRAY JOIN cp AS h
)
SELECT service, toUnixTimestamp(h.1) AS hour_s, h.2 AS cost, med AS baseline, nb AS baseline_n,
       (h.2 - med) / greatest({MAD_SCALE} * mad, 0.05 * med, 1e-9) AS score, h.2 / greatest(med, 1e-12) AS ratio
FROM scored
WHERE score >= {{spike_z:Float64}} AND ratio >= {{spike_ratio:Float64}}
ORDER BY h.1, service
"""


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
    params = {
        **scope.params(), "base_ms": scope.start_ms - int(baseline_hours * 3_600_000), "z": z, "ratio": ratio,
        "min_samples": min_samples, "bomb_z": bomb_z, "bomb_ratio": bomb_ratio, "spike_z": spike_z,
        "spike_ratio": spike_ratio, "limit": limit,
    }  # fmt: skip
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
            "hour": iso(int(r["hour_s"]) * 1_000_000_000),
            "cost_usd": rnd(r["cost"], 9),
            "baseline_usd": rnd(r["baseline"], 9),
            "ratio": rnd(r["ratio"], 3),
            "score": rnd(r["score"], 3),
            "baseline_hours": int(r["baseline_n"]),
        }
        for r in store.query(SPIKES_SQL, params)
    ]
    return {
        "baseline_hours": baseline_hours,
        "thresholds": {"z": z, "ratio": ratio, "min_samples": min_samples, "bomb_z": bomb_z,
                       "bomb_ratio": bomb_ratio, "spike_z": spike_z, "spike_ratio": spike_ratio},
        "items": items,
        "token_bombs": bombs,
        "spend_spikes": spikes,
    }  # fmt: skip
