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

from agentwatch.collector.analytics_common import MAD_SCALE, check_range, rnd
from agentwatch.collector.migrations import SPANS_TABLE
from agentwatch.collector.queries import QueryError, Scope, iso
from agentwatch.collector.store import Store

DEFAULT_BASELINE_H = 7 * 24
MIN_LOG_SPREAD = 0.05  # a floor on the robust spread in log space (~5 %): identical costs do not give z = inf

# spans of the baseline + the window, scoped; params: project, service, base_ms, to_ms
_SCOPE = (
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    " AND Timestamp >= fromUnixTimestamp64Milli({base_ms:Int64})"
)

_ROOTS = f"""
roots AS (
    SELECT TraceId, ServiceName AS service, if(TaskName != '', TaskName, SpanName) AS name,
           Timestamp >= fromUnixTimestamp64Milli({{from_ms:Int64}}) AS cur, Timestamp AS ts, EndTime AS te
    FROM {SPANS_TABLE} FINAL
    WHERE {_SCOPE} AND Timestamp < fromUnixTimestamp64Milli({{to_ms:Int64}}) AND ParentSpanId = ''
),
calls AS (
    SELECT TraceId, CallKey, min(Timestamp) AS ts, max(InputTokens) AS i, max(OutputTokens) AS o, max(CostUsd) AS c,
           any(Model) AS model, argMin(SpanId, Timestamp) AS span_id
    FROM {SPANS_TABLE} FINAL
    WHERE {_SCOPE} AND Timestamp <= (SELECT max(te) FROM roots) AND Kind = 'llm'
      AND TraceId IN (SELECT TraceId FROM roots)
    GROUP BY TraceId, CallKey
)"""

# the robust score of a value column `x` (log scale) per key, baseline first, the window as a fallback
_SCORE = """
stats AS (
    SELECT {keys}, countIf(NOT cur) AS nb, countIf(cur) AS nc,
           medianExactIf(x, NOT cur) AS med_b, medianExactIf(x, cur) AS med_c
    FROM pts GROUP BY {keys}
),
mads AS (
    SELECT {keys}, medianExactIf(abs(x - s.med_b), NOT cur) AS mad_b, medianExactIf(abs(x - s.med_c), cur) AS mad_c
    FROM pts INNER JOIN stats AS s USING ({keys}) GROUP BY {keys}
),
base AS (
    SELECT {keys}, nb >= {{min_samples:UInt32}} AS use_b, if(use_b, nb, nc) AS n, if(use_b, med_b, med_c) AS med,
           greatest({mad_scale} * if(use_b, mad_b, mad_c), {min_spread}) AS spread
    FROM stats INNER JOIN mads USING ({keys}) WHERE nb >= {{min_samples:UInt32}} OR nc >= {{min_samples:UInt32}}
)"""


def _score_cte(keys: str) -> str:
    return _SCORE.format(keys=keys, mad_scale=MAD_SCALE, min_spread=MIN_LOG_SPREAD)


TASKS_SQL = f"""
WITH {_ROOTS},
cost AS (SELECT TraceId, sum(c) AS cost, sum(i) AS i, sum(o) AS o, count() AS llm_calls FROM calls GROUP BY TraceId),
pts AS (
    SELECT r.TraceId AS TraceId, r.service AS service, r.name AS name, r.cur AS cur, r.ts AS ts, c.cost AS cost,
           c.i AS i, c.o AS o, c.llm_calls AS llm_calls, log(c.cost) AS x
    FROM roots AS r INNER JOIN cost AS c ON c.TraceId = r.TraceId
    WHERE c.cost > 0
),
{_score_cte("service, name")}
SELECT p.TraceId AS trace_id, p.service AS service, p.name AS name, toUnixTimestamp64Nano(p.ts) AS start_ns,
       p.cost AS cost, p.i AS input_tokens, p.o AS output_tokens, p.llm_calls AS llm_calls,
       exp(b.med) AS baseline, b.n AS baseline_n, b.use_b AS use_b, (p.x - b.med) / b.spread AS score,
       p.cost / exp(b.med) AS ratio
FROM pts AS p INNER JOIN base AS b ON p.service = b.service AND p.name = b.name
WHERE p.cur AND score >= {{z:Float64}} AND ratio >= {{ratio:Float64}}
ORDER BY score DESC, trace_id LIMIT {{limit:UInt32}}
"""

BOMBS_SQL = f"""
WITH {_ROOTS},
pts AS (
    SELECT c.TraceId AS TraceId, c.span_id AS span_id, r.service AS service, r.name AS name, c.model AS model,
           c.ts >= fromUnixTimestamp64Milli({{from_ms:Int64}}) AS cur, c.ts AS ts, c.i AS i, c.c AS cost,
           log(c.i) AS x
    FROM calls AS c INNER JOIN roots AS r ON c.TraceId = r.TraceId
    WHERE c.i > 0
),
{_score_cte("service, name, model")}
SELECT p.TraceId AS trace_id, p.span_id AS span_id, p.service AS service, p.name AS name, p.model AS model,
       toUnixTimestamp64Nano(p.ts) AS ts_ns, p.i AS input_tokens, p.cost AS cost, exp(b.med) AS baseline,
       b.n AS baseline_n, b.use_b AS use_b, (p.x - b.med) / b.spread AS score, p.i / exp(b.med) AS ratio
FROM pts AS p INNER JOIN base AS b ON p.service = b.service AND p.name = b.name AND p.model = b.model
WHERE p.cur AND p.ts < fromUnixTimestamp64Milli({{to_ms:Int64}}) AND score >= {{bomb_z:Float64}}
  AND ratio >= {{bomb_ratio:Float64}}
ORDER BY score DESC, trace_id, span_id LIMIT {{limit:UInt32}}
"""

SPIKES_SQL = f"""
WITH one_call AS (
    SELECT any(ServiceName) AS service, min(Timestamp) AS ts, max(CostUsd) AS cost
    FROM {SPANS_TABLE} FINAL
    WHERE {_SCOPE} AND Timestamp < fromUnixTimestamp64Milli({{to_ms:Int64}}) AND Kind = 'llm'
    GROUP BY TraceId, CallKey
),
hours AS (
    SELECT service, toStartOfHour(ts) AS hour, ts >= fromUnixTimestamp64Milli({{from_ms:Int64}}) AS cur,
           sum(ifNull(cost, 0)) AS cost
    FROM one_call GROUP BY service, hour, cur
),
st AS (
    SELECT service, countIf(NOT cur) AS nb, medianExactIf(cost, NOT cur) AS med FROM hours GROUP BY service
),
mad AS (
    SELECT service, medianExactIf(abs(cost - st.med), NOT cur) AS mad FROM hours INNER JOIN st USING service
    GROUP BY service
),
md AS (SELECT * FROM st INNER JOIN mad USING service)
SELECT h.service AS service, toUnixTimestamp(h.hour) AS hour_s, h.cost AS cost, m.med AS baseline, m.nb AS baseline_n,
       (h.cost - m.med) / greatest({MAD_SCALE} * m.mad, 0.05 * m.med, 1e-9) AS score,
       h.cost / greatest(m.med, 1e-12) AS ratio
FROM hours AS h INNER JOIN md AS m USING service
WHERE h.cur AND m.nb >= 24 AND score >= {{spike_z:Float64}} AND ratio >= {{spike_ratio:Float64}}
ORDER BY h.hour, h.service
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
        for r in store.query(TASKS_SQL, params)
    ]
    bombs = [
        {
            "trace_id": r["trace_id"],
            "span_id": r["span_id"],
            "service": r["service"],
            "name": r["name"],
            "model": r["model"] or None,
            "time": iso(r["ts_ns"]),
            "input_tokens": int(r["input_tokens"]),
            "baseline_input_tokens": rnd(r["baseline"], 1),
            "ratio": rnd(r["ratio"], 3),
            "score": rnd(r["score"], 3),
            "cost_usd": rnd(r["cost"], 9),
            "baseline_n": int(r["baseline_n"]),
            "baseline_source": "trailing" if r["use_b"] else "window",
        }
        for r in store.query(BOMBS_SQL, params)
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
