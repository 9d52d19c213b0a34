"""The query layer: every read of the store, scoped to one project, with bound parameters.

The read API serves these and the alert engine evaluates over them, so a chart and a page never
disagree. Conventions:
- ``FINAL`` on the spans table: a span re-sent by an exporter retry (same trace and span id) is
  stored twice until a merge, and counts once in every query;
- one call, one count: an LLM call reported by two spans (a client's own telemetry plus an
  instrumentation) shares its response id (``CallKey``); tokens, cost and calls take it once;
- a task is a trace, found by its root span (no parent) starting in the window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.migrations import SPANS_TABLE, TRACE_LOOKUP_TABLE
from agentwatch.collector.store import Store, parallel

TRACE_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
DEFAULT_LOOP_REPEATS = 3


class QueryError(ValueError):
    """A parameter that cannot be served (400 with this message)."""


@dataclass(frozen=True)
class Scope:
    """Who asks and about what: every query takes one."""

    project: str
    start_ms: int
    end_ms: int
    service: str = ""

    def params(self) -> dict[str, Any]:
        return {"project": self.project, "from_ms": self.start_ms, "to_ms": self.end_ms, "service": self.service}


WHERE = (
    "ProjectId = {project:String}"
    " AND Timestamp >= fromUnixTimestamp64Milli({from_ms:Int64})"
    " AND Timestamp < fromUnixTimestamp64Milli({to_ms:Int64})"
    " AND ({service:String} = '' OR ServiceName = {service:String})"
)


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _round(v: float | None, n: int = 3) -> float | None:
    return None if v is None else round(float(v), n)


def _pcts(vals: list[float] | None) -> dict[str, float | None]:
    if not vals or len(vals) != 3:
        return {"p50": None, "p95": None, "p99": None}
    return {"p50": _round(vals[0]), "p95": _round(vals[1]), "p99": _round(vals[2])}


# The overview's two reads, run side by side (``parallel``): the window's spans (counts, percentiles) and its LLM
# calls (one call, one count: max per field over the call's spans; a call is the window's if its first span is).
# The calls come from the per-call summaries (collector/summary.py), computed from the rollups for the traces with
# newer spans. Measured at 9.9M spans: calls 400 ms grouped from the spans, ~250 ms from the summaries.
OVERVIEW_SPANS_SQL = f"""
SELECT countIf(ParentSpanId = '') AS tasks, countIf(ParentSpanId = '' AND Outcome = 'ok') AS tasks_ok,
       countIf(ParentSpanId = '' AND Outcome = 'error') AS tasks_error,
       countIf(ParentSpanId = '' AND Outcome = 'escalated') AS tasks_escalated, count() AS spans,
       countIf(ErrorType != '') AS errors, countIf(Kind = 'tool') AS tool_calls,
       quantilesExactInclusiveIf(0.5, 0.95, 0.99)(Duration / 1e6, Kind = 'task') AS lat_task,
       quantilesExactInclusiveIf(0.5, 0.95, 0.99)(Duration / 1e6, Kind = 'llm') AS lat_llm,
       quantilesExactInclusiveIf(0.5, 0.95, 0.99)(Duration / 1e6, Kind = 'tool') AS lat_tool
FROM {SPANS_TABLE} FINAL WHERE {WHERE}
"""
OVERVIEW_CALLS_SQL = f"""
WITH {S.calls_ctes().strip()}
SELECT count() AS llm_calls, sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
       sum(CacheReadTokens) AS cache_read_tokens, sum(CacheWriteTokens) AS cache_write_tokens,
       sum(ReasoningTokens) AS reasoning_tokens, sum(CostUsd) AS cost_usd,
       countIf(CostUsd IS NULL AND (InputTokens > 0 OR OutputTokens > 0)) AS unpriced_llm_calls
FROM c_window
"""


def overview(store: Store, scope: Scope) -> dict[str, Any]:
    calls_params = {**scope.params(), "wm_ms": S.watermark(store)}
    spans, calls = parallel(
        lambda: store.query(OVERVIEW_SPANS_SQL, scope.params()), lambda: store.query(OVERVIEW_CALLS_SQL, calls_params)
    )
    r = {**spans[0], **calls[0]}
    tasks = int(r["tasks"] or 0)
    return {
        "from": iso(scope.start_ms * 1_000_000),
        "to": iso(scope.end_ms * 1_000_000),
        "service": scope.service or None,
        "tasks": tasks,
        "completion_rate": _round(r["tasks_ok"] / tasks, 4) if tasks else None,
        "error_rate": _round(r["tasks_error"] / tasks, 4) if tasks else None,
        "escalation_rate": _round(r["tasks_escalated"] / tasks, 4) if tasks else None,
        "spans": int(r["spans"] or 0),
        "llm_calls": int(r["llm_calls"] or 0),
        "tool_calls": int(r["tool_calls"] or 0),
        "errors": int(r["errors"] or 0),
        "input_tokens": int(r["input_tokens"] or 0),
        "output_tokens": int(r["output_tokens"] or 0),
        "cache_read_tokens": int(r["cache_read_tokens"] or 0),
        "cache_write_tokens": int(r["cache_write_tokens"] or 0),
        "reasoning_tokens": int(r["reasoning_tokens"] or 0),
        "cost_usd": _round(r["cost_usd"] or 0.0, 9),
        "unpriced_llm_calls": int(r["unpriced_llm_calls"] or 0),
        "latency_ms": {"task": _pcts(r["lat_task"]), "llm": _pcts(r["lat_llm"]), "tool": _pcts(r["lat_tool"])},
    }


TASK_SORTS = {
    "start": "start_ns",
    "duration": "duration_ns",
    "cost": "cost_usd",
    "tokens": "total_tokens",
    "llm_calls": "llm_calls",
    "tool_calls": "tool_calls",
}
OUTCOMES = ("ok", "error", "escalated", "budget_exceeded", "loop_stopped", "timeout")


@dataclass(frozen=True)
class TaskFilter:
    sort: str = "start"
    order: str = "desc"
    limit: int = 50
    offset: int = 0
    outcome: str = ""
    name: str = ""
    loop: bool | None = None
    min_cost: float | None = None
    q: str = ""
    loop_repeats: int = DEFAULT_LOOP_REPEATS

    def validate(self) -> None:
        if self.sort not in TASK_SORTS:
            raise QueryError(f"sort must be one of {', '.join(TASK_SORTS)}, got {self.sort!r}")
        if self.order not in ("asc", "desc"):
            raise QueryError(f"order must be asc or desc, got {self.order!r}")
        if not 1 <= self.limit <= 1000:
            raise QueryError(f"limit must be between 1 and 1000, got {self.limit}")
        if not 0 <= self.offset <= 1_000_000:
            raise QueryError(f"offset must be between 0 and 1000000, got {self.offset}")
        if self.outcome and self.outcome not in OUTCOMES:
            raise QueryError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if not 2 <= self.loop_repeats <= 100:
            raise QueryError(f"loop_repeats must be between 2 and 100, got {self.loop_repeats}")


def roots_and_calls() -> str:
    """The CTEs ``roots`` (tasks starting in the window) and ``calls`` (every LLM call of the rows from the window's
    start hour to the roots' latest end, one row a call) straight from the rollups, for reads by call."""
    return f"""
roots AS MATERIALIZED (
    SELECT TraceId, r.service AS service, r.name AS name, r.outcome AS outcome, r.ts AS ts,
           r.ts + toIntervalNanosecond(r.dur) AS te
    FROM ({R.roots()})
),
calls AS ({R.calls(R.members_where("from_ms"))})"""


# One row per task whose root starts in the window (collector/summary.py: the summarizer's rows, and the tasks
# touched since its last pass computed from the rollups). Params: the scope's, wm_ms (``task_params``),
# loop_repeats. The CTE name ``tasks`` and its columns are a contract (analytics_stats reads them).
TASKS_CTE = f"""{S.window_ctes()},
tasks AS (
    SELECT TraceId, toUnixTimestamp64Nano(Start) AS start_ns, DurationNs AS duration_ns, ServiceName AS service,
           Name AS name, Outcome AS outcome, ErrorType AS error_type, ConversationId AS conversation_id,
           SessionId AS session_id, UserId AS user_id, LlmCalls AS llm_calls, InputTokens AS input_tokens,
           OutputTokens AS output_tokens, CacheReadTokens AS cache_read_tokens,
           CacheWriteTokens AS cache_write_tokens, ReasoningTokens AS reasoning_tokens, CostUsd AS cost_usd,
           UnpricedCalls AS unpriced_llm_calls, Models AS models, input_tokens + output_tokens AS total_tokens,
           Steps AS steps, ToolCalls AS tool_calls, Errors AS errors, MaxRepeats AS max_repeats,
           max_repeats >= {{loop_repeats:UInt32}} AS loop
    FROM s_window
)"""


def task_params(store: Store, scope: Scope, loop_repeats: int = DEFAULT_LOOP_REPEATS) -> dict[str, Any]:
    """The parameters of ``TASKS_CTE``: the scope's, the summarizer's watermark and the loop threshold."""
    return {**scope.params(), "wm_ms": S.watermark(store), "loop_repeats": loop_repeats}


def tasks(store: Store, scope: Scope, f: TaskFilter) -> dict[str, Any]:
    f.validate()
    conds = ["1"]
    params = task_params(store, scope, f.loop_repeats)
    if f.outcome:
        conds.append("outcome = {outcome:String}")
        params["outcome"] = f.outcome
    if f.name:
        conds.append("name = {name:String}")
        params["name"] = f.name
    if f.loop is not None:
        conds.append("loop = {loop:UInt8}")
        params["loop"] = int(f.loop)
    if f.min_cost is not None:
        conds.append("cost_usd >= {min_cost:Float64}")
        params["min_cost"] = f.min_cost
    if f.q:
        conds.append("(positionCaseInsensitive(name, {q:String}) > 0 OR TraceId = lower({q:String}))")
        params["q"] = f.q
    order = f"{TASK_SORTS[f.sort]} {f.order.upper()}, TraceId"
    sql = f"""
WITH {TASKS_CTE}
SELECT *, count() OVER () AS total FROM tasks WHERE {" AND ".join(conds)}
ORDER BY {order} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}
"""
    params.update(limit=f.limit, offset=f.offset)
    rows = store.query(sql, params)
    total = int(rows[0]["total"]) if rows else 0
    items = [
        {
            "trace_id": r["TraceId"],
            "service": r["service"],
            "name": r["name"],
            "start": iso(r["start_ns"]),
            "duration_ms": _round(r["duration_ns"] / 1e6),
            "outcome": r["outcome"],
            "error_type": r["error_type"] or None,
            "cost_usd": _round(r["cost_usd"], 9),
            "unpriced_llm_calls": int(r["unpriced_llm_calls"]),
            "input_tokens": int(r["input_tokens"]),
            "output_tokens": int(r["output_tokens"]),
            "cache_read_tokens": int(r["cache_read_tokens"]),
            "cache_write_tokens": int(r["cache_write_tokens"]),
            "reasoning_tokens": int(r["reasoning_tokens"]),
            "llm_calls": int(r["llm_calls"]),
            "tool_calls": int(r["tool_calls"]),
            "steps": int(r["steps"]),
            "errors": int(r["errors"]),
            "models": sorted(m for m in (r["models"] or []) if m),
            "loop": bool(r["loop"]),
            "max_repeats": int(r["max_repeats"]),
            "conversation_id": r["conversation_id"] or None,
            "session_id": r["session_id"] or None,
            "user_id": r["user_id"] or None,
        }
        for r in rows
    ]
    return {"items": items, "total": total, "limit": f.limit, "offset": f.offset}


def trace(store: Store, project: str, trace_id: str) -> dict[str, Any] | None:
    if not TRACE_ID_RE.match(trace_id):
        raise QueryError("trace_id must be 32 hex digits")
    tid = trace_id.lower()
    sql = f"""
WITH (SELECT min(Start) FROM {TRACE_LOOKUP_TABLE} WHERE TraceId = {{tid:String}}) AS lo,
     (SELECT max(End) + 1 FROM {TRACE_LOOKUP_TABLE} WHERE TraceId = {{tid:String}}) AS hi
SELECT SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ScopeName, ScopeVersion,
       toUnixTimestamp64Nano(Timestamp) AS start_ns, Duration, StatusCode, StatusMessage,
       Kind, Operation, Provider, RequestModel, Model, InputTokens, OutputTokens, CacheReadTokens, CacheWriteTokens,
       ReasoningTokens, CostUsd, PriceSource, TtftMs, ToolName, ToolArgsHash, AgentName, TaskName, ConversationId,
       SessionId, UserId, ErrorType, Outcome, DecisionName, ResponseId, SpanAttributes, ResourceAttributes,
       arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) AS ev_ts, Events.Name AS ev_name,
       Events.Attributes AS ev_attrs, Links.TraceId AS link_tid, Links.SpanId AS link_sid
FROM {SPANS_TABLE} FINAL
WHERE ProjectId = {{project:String}} AND TraceId = {{tid:String}} AND Timestamp >= lo AND Timestamp <= hi
ORDER BY Timestamp, SpanId
"""
    rows = store.query(sql, {"project": project, "tid": tid})
    if not rows:
        return None
    spans = [
        {
            "span_id": r["SpanId"],
            "parent_span_id": r["ParentSpanId"] or None,
            "name": r["SpanName"],
            "span_kind": r["SpanKind"],
            "service": r["ServiceName"],
            "scope": {"name": r["ScopeName"], "version": r["ScopeVersion"]},
            "start": iso(r["start_ns"]),
            "start_ns": r["start_ns"],
            "duration_ms": _round(r["Duration"] / 1e6),
            "status": r["StatusCode"],
            "status_message": r["StatusMessage"] or None,
            "kind": r["Kind"],
            "operation": r["Operation"] or None,
            "provider": r["Provider"] or None,
            "request_model": r["RequestModel"] or None,
            "model": r["Model"] or None,
            "input_tokens": r["InputTokens"],
            "output_tokens": r["OutputTokens"],
            "cache_read_tokens": r["CacheReadTokens"],
            "cache_write_tokens": r["CacheWriteTokens"],
            "reasoning_tokens": r["ReasoningTokens"],
            "cost_usd": _round(r["CostUsd"], 9),
            "price_source": r["PriceSource"] or None,
            "ttft_ms": _round(r["TtftMs"]) if r["TtftMs"] else None,
            "tool_name": r["ToolName"] or None,
            "tool_args_hash": r["ToolArgsHash"] or None,
            "agent_name": r["AgentName"] or None,
            "task_name": r["TaskName"] or None,
            "conversation_id": r["ConversationId"] or None,
            "session_id": r["SessionId"] or None,
            "user_id": r["UserId"] or None,
            "error_type": r["ErrorType"] or None,
            "outcome": r["Outcome"] if not r["ParentSpanId"] else None,
            "decision_name": r["DecisionName"] or None,
            "response_id": r["ResponseId"] or None,
            "attributes": dict(r["SpanAttributes"]),
            "resource": dict(r["ResourceAttributes"]),
            "events": [
                {"time": iso(t), "name": n, "attributes": dict(a)}
                for t, n, a in zip(r["ev_ts"], r["ev_name"], r["ev_attrs"], strict=False)
            ],
            "links": [{"trace_id": t, "span_id": s} for t, s in zip(r["link_tid"], r["link_sid"], strict=False)],
        }
        for r in rows
    ]
    return {"trace_id": tid, "spans": spans}
