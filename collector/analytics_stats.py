"""Descriptive analytics: latency percentiles, tools, task outcomes over time, unit economics, ingestion health.

Every function takes the caller's ``Scope`` (project, window, service) and binds every value; the only SQL
text chosen from input is a column picked from a fixed whitelist (``GROUP_BY``).
"""

from __future__ import annotations

from typing import Any

from agentwatch.collector.analytics_common import PCTS, PCTS_IF, bucket_sql, interval_seconds, pcts, rnd
from agentwatch.collector.migrations import INGEST_STATS_TABLE, SPANS_TABLE
from agentwatch.collector.queries import TASKS_CTE, WHERE, QueryError, Scope, iso, roots_and_calls, task_params
from agentwatch.collector.store import Store, parallel

LATENCY_KINDS = ("task", "llm", "tool", "decision", "other", "all")
GROUP_BY = {
    "none": "''",
    "model": "Model",
    "tool": "ToolName",
    "service": "ServiceName",
    "task": "TaskName",
    "kind": "Kind",
    "provider": "Provider",
    "operation": "Operation",
    "span": "SpanName",
}


def _ms_iso(ms: int) -> str | None:
    return iso(int(ms) * 1_000_000)


def latency(
    store: Store, scope: Scope, *, kind: str = "llm", group_by: str = "none", interval: str | int | None = "auto"
) -> dict[str, Any]:
    """P50/P95/P99, max and count of span durations (ms) per group and time bucket, each computed over the
    bucket's spans (never an average of percentiles); time to first token where streaming spans carry it."""
    if kind not in LATENCY_KINDS:
        raise QueryError(f"kind must be one of {', '.join(LATENCY_KINDS)}, got {kind[:64]!r}")
    if group_by not in GROUP_BY:
        raise QueryError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by[:64]!r}")
    iv = interval_seconds(scope, interval)
    sql = f"""
SELECT {GROUP_BY[group_by]} AS grp, {bucket_sql()} AS bucket_ms, count() AS n,
       {PCTS}(Duration / 1e6) AS q, max(Duration) / 1e6 AS mx,
       countIf(TtftMs > 0) AS ttft_n, {PCTS_IF}(TtftMs, TtftMs > 0) AS ttft
FROM {SPANS_TABLE} FINAL
WHERE {WHERE} AND ({{kind:String}} = 'all' OR Kind = {{kind:String}})
GROUP BY grp, bucket_ms ORDER BY grp, bucket_ms
"""
    rows = store.query(sql, {**scope.params(), "kind": kind, "interval_ms": iv * 1000})
    items = []
    for r in rows:
        item = {
            "group": r["grp"] if group_by != "none" else None,
            "bucket": _ms_iso(r["bucket_ms"]),
            "bucket_ms": int(r["bucket_ms"]),
            "count": int(r["n"]),
            **pcts(r["q"]),
            "max": rnd(r["mx"]),
        }
        if r["ttft_n"]:
            item["ttft_count"] = int(r["ttft_n"])
            item["ttft_ms"] = pcts(r["ttft"])
        items.append(item)
    return {"kind": kind, "group_by": group_by, "interval_s": iv, "unit": "ms", "items": items}


# tools: per tool, calls, errors and latency over the window's tool spans (TOOLS_SQL), and, side by side, the
# retries and repeated calls (TOOL_PAIRS_SQL), which need each task's tool calls in time order. Grouped by the trace
# id's 16 bytes (a UInt128 key: the collector takes only 16-byte ids, written as 32 hex digits, as the OTel
# exporter writes them), not its 32-character string. Measured at 9.9M spans, the whole tools read: 511-553 ms as
# one statement grouping by the string, 378-392 ms now.
TOOLS_SQL = f"""
SELECT ToolName AS tool, cityHash64(tool) AS th, count() AS calls, countIf(ErrorType != '') AS errors,
       {PCTS}(Duration / 1e6) AS q, max(Duration) / 1e6 AS mx
FROM {SPANS_TABLE} FINAL WHERE {WHERE} AND Kind = 'tool'
GROUP BY tool
"""
# tool names and argument hashes compared as 64-bit hashes (a collision would have to be between two tools, or two
# argument hashes, of one task): sorting and comparing integers, not strings, 15-20 % of the statement
TOOL_PAIRS_SQL = f"""
SELECT p.1 AS th, countIf(p.2) AS retries, countIf(p.3) AS repeated
FROM (
    SELECT arraySort(groupArray((Timestamp, cityHash64(ToolName), cityHash64(ToolArgsHash), ErrorType != '',
                                 ToolArgsHash != ''))) AS a,
           a.2 AS tool, a.3 AS args, a.4 AS failed, a.5 AS has_args,
           arrayFilter(t -> t.2 OR t.3, arrayZip(
               arrayPopFront(tool),
               arrayMap((pt, t, pf) -> pt = t AND pf, arrayPopBack(tool), arrayPopFront(tool), arrayPopBack(failed)),
               arrayMap((pt, t, pa, ta, th) -> pt = t AND pa = ta AND th,
                        arrayPopBack(tool), arrayPopFront(tool), arrayPopBack(args), arrayPopFront(args),
                        arrayPopFront(has_args))
           )) AS pairs
    FROM {SPANS_TABLE} FINAL WHERE {WHERE} AND Kind = 'tool'
    GROUP BY reinterpretAsUInt128(unhex(TraceId)) HAVING count() > 1
)
ARRAY JOIN pairs AS p
GROUP BY th
"""


def tools(store: Store, scope: Scope, *, limit: int = 200) -> dict[str, Any]:
    """Per tool: calls, errors and error rate, latency percentiles, retries (a call right after a failed call
    of the same tool in the same task) and repeated identical calls (same tool and arguments as the task's
    previous tool call); the most called first."""
    params = {**scope.params(), "limit": limit}
    rows, pairs = parallel(lambda: store.query(TOOLS_SQL, params), lambda: store.query(TOOL_PAIRS_SQL, params))
    by_tool = {p["th"]: p for p in pairs}
    rows.sort(key=lambda r: (-r["calls"], r["tool"]))
    return {
        "items": [
            {
                "tool": r["tool"],
                "calls": int(r["calls"]),
                "errors": int(r["errors"]),
                "error_rate": rnd(r["errors"] / r["calls"], 4) if r["calls"] else None,
                "latency_ms": pcts(r["q"]),
                "max_ms": rnd(r["mx"]),
                "retries": int(by_tool.get(r["th"], {}).get("retries", 0)),
                "repeated_identical": int(by_tool.get(r["th"], {}).get("repeated", 0)),
            }
            for r in rows[:limit]
        ]
    }


def outcomes(store: Store, scope: Scope, *, interval: str | int | None = "auto") -> dict[str, Any]:
    """Tasks per time bucket by outcome, with completion, error and escalation rates."""
    iv = interval_seconds(scope, interval)
    sql = f"""
SELECT {bucket_sql()} AS bucket_ms, count() AS tasks, countIf(Outcome = 'ok') AS ok,
       countIf(Outcome = 'error') AS error, countIf(Outcome = 'escalated') AS escalated,
       countIf(Outcome = 'budget_exceeded') AS budget_exceeded, countIf(Outcome = 'loop_stopped') AS loop_stopped,
       countIf(Outcome = 'timeout') AS timeout
FROM {SPANS_TABLE} FINAL WHERE {WHERE} AND ParentSpanId = ''
GROUP BY bucket_ms ORDER BY bucket_ms
"""
    rows = store.query(sql, {**scope.params(), "interval_ms": iv * 1000})
    items = []
    for r in rows:
        n = int(r["tasks"])
        counts = {k: int(r[k]) for k in ("ok", "error", "escalated", "budget_exceeded", "loop_stopped", "timeout")}
        items.append(
            {
                "bucket": _ms_iso(r["bucket_ms"]),
                "bucket_ms": int(r["bucket_ms"]),
                "tasks": n,
                **counts,
                "completion_rate": rnd(counts["ok"] / n, 4) if n else None,
                "error_rate": rnd(counts["error"] / n, 4) if n else None,
                "escalation_rate": rnd(counts["escalated"] / n, 4) if n else None,
            }
        )
    return {"interval_s": iv, "items": items}


ECONOMICS_GROUPS = ("service", "name", "model")


def unit_economics(store: Store, scope: Scope, *, group_by: str = "service") -> dict[str, Any]:
    """Cost per task and per successful task (all the group's cost over its successful tasks) by service,
    task name or model; and the models whose calls could not be priced."""
    if group_by not in ECONOMICS_GROUPS:
        raise QueryError(f"group_by must be one of {', '.join(ECONOMICS_GROUPS)}, got {group_by[:64]!r}")
    if group_by == "model":
        # a task counts once for every model it called; cost is that model's calls only
        sql = f"""
WITH {roots_and_calls()},
per_model AS (
    SELECT c.TraceId AS TraceId, c.model AS grp, count() AS calls, sum(c.c) AS cost, sum(c.i) AS i, sum(c.o) AS o,
           countIf(c.c IS NULL AND (c.i > 0 OR c.o > 0)) AS unpriced
    FROM calls AS c WHERE c.TraceId IN (SELECT TraceId FROM roots) GROUP BY TraceId, grp
)
SELECT grp, count() AS tasks, countIf(t.outcome = 'ok') AS ok, sum(calls) AS llm_calls, sum(ifNull(cost, 0)) AS cost,
       sum(i) AS input_tokens, sum(o) AS output_tokens, sum(unpriced) AS unpriced_llm_calls
FROM per_model AS m INNER JOIN roots AS t ON t.TraceId = m.TraceId
GROUP BY grp ORDER BY cost DESC, grp
"""
    else:
        col = "service" if group_by == "service" else "name"
        sql = f"""
WITH {TASKS_CTE}
SELECT {col} AS grp, count() AS tasks, countIf(outcome = 'ok') AS ok, sum(llm_calls) AS llm_calls,
       sum(cost_usd) AS cost, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(unpriced_llm_calls) AS unpriced_llm_calls
FROM tasks GROUP BY grp ORDER BY cost DESC, grp
"""
    rows = store.query(sql, task_params(store, scope) if group_by != "model" else scope.params())
    items = []
    for r in rows:
        n, ok, cost = int(r["tasks"]), int(r["ok"]), float(r["cost"] or 0)
        items.append(
            {
                "group": r["grp"],
                "tasks": n,
                "successful_tasks": ok,
                "success_rate": rnd(ok / n, 4) if n else None,
                "llm_calls": int(r["llm_calls"] or 0),
                "cost_usd": rnd(cost, 9),
                "cost_per_task_usd": rnd(cost / n, 9) if n else None,
                "cost_per_successful_task_usd": rnd(cost / ok, 9) if ok else None,
                "input_tokens": int(r["input_tokens"] or 0),
                "output_tokens": int(r["output_tokens"] or 0),
                "unpriced_llm_calls": int(r["unpriced_llm_calls"] or 0),
            }
        )
    unpriced_sql = f"""
SELECT Provider AS provider, Model AS model, uniqExact(TraceId, CallKey) AS calls, sum(InputTokens) AS i,
       sum(OutputTokens) AS o
FROM {SPANS_TABLE} FINAL
WHERE {WHERE} AND Kind = 'llm' AND CostUsd IS NULL AND (InputTokens > 0 OR OutputTokens > 0)
GROUP BY provider, model ORDER BY calls DESC, model LIMIT 100
"""
    unpriced = [
        {"provider": r["provider"] or None, "model": r["model"] or None, "calls": int(r["calls"]),
         "input_tokens": int(r["i"]), "output_tokens": int(r["o"])}
        for r in store.query(unpriced_sql, scope.params())
    ]  # fmt: skip
    return {"group_by": group_by, "items": items, "unpriced_models": unpriced}


INGEST_STAGES = ("accepted", "rejected", "stored", "unpriced", "dropped")


def ingestion(store: Store, scope: Scope, *, interval: str | int | None = "auto") -> dict[str, Any]:
    """Spans accepted, rejected (by reason), stored and unpriced per time bucket, for the caller's project.
    Counts are per project, not per service: ``service`` does not narrow them. ``pending`` is accepted minus
    stored over the window (spooled, or still on their way)."""
    iv = interval_seconds(scope, interval)
    iv = max(iv, 60) if iv else 0  # the counts are per minute
    sql = f"""
SELECT {bucket_sql("Minute")} AS bucket_ms, Stage AS stage, Reason AS reason, sum(Spans) AS spans
FROM {INGEST_STATS_TABLE}
WHERE ProjectId = {{project:String}}
  AND Minute >= toDateTime(intDiv({{from_ms:Int64}}, 1000)) AND Minute < toDateTime(intDiv({{to_ms:Int64}}, 1000))
GROUP BY bucket_ms, stage, reason ORDER BY bucket_ms, stage, reason
"""
    rows = store.query(sql, {**scope.params(), "interval_ms": iv * 1000})
    buckets: dict[int, dict[str, Any]] = {}
    totals: dict[str, Any] = {"accepted": 0, "stored": 0, "unpriced": 0, "dropped": 0, "rejected": 0}
    rejected_by: dict[str, int] = {}
    for r in rows:
        b = buckets.setdefault(
            int(r["bucket_ms"]),
            {"bucket": _ms_iso(r["bucket_ms"]), "bucket_ms": int(r["bucket_ms"]), **dict.fromkeys(totals, 0),
             "rejected_by_reason": {}},
        )  # fmt: skip
        n = int(r["spans"])
        stage = r["stage"]
        b[stage] = b.get(stage, 0) + n
        totals[stage] = totals.get(stage, 0) + n
        if stage == "rejected":
            b["rejected_by_reason"][r["reason"] or "unknown"] = n
            rejected_by[r["reason"] or "unknown"] = rejected_by.get(r["reason"] or "unknown", 0) + n
    totals["rejected_by_reason"] = rejected_by
    totals["pending"] = max(0, totals["accepted"] - totals["stored"] - totals["dropped"])
    return {"interval_s": iv, "items": list(buckets.values()), "totals": totals}
