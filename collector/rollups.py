"""SQL over the per-task and per-call rollups (``task_rollup``, ``llm_calls``; migrations 5 and 6).

Both are filled by materialized views on the spans table (so a stock OpenTelemetry Collector writing into it
feeds them too) with idempotent aggregates only: a re-sent span changes nothing, and the rows of one key need no
merge to be right because every read below GROUP BYs the key with the matching min/max/-Merge. Rows are keyed
by the hour of their spans, so a window prunes by primary key; a task's rows are read from the window's start
hour up to the latest end of the roots found in it (the same member rule as the raw-span queries); the per-task
summaries (collector/summary.py) read a task's rows over its trace's whole extent instead.

Fragments take the scope's bound parameters (``project``, ``service``) plus the window bounds named by the
caller (``from_ms``/``to_ms``, or ``base_ms`` for a trailing baseline). Callers declare their roots CTE
``AS MATERIALIZED``: it is read four or five times (bounds, IN sets, joins), and an inlined CTE would be
re-evaluated each time. ClickHouse parses the keyword from 26.3 and honours it only with ``enable_materialized_cte``
on, which the store adapter sets (collector/store.py; measured: -25 to -40 % on the task list, loops, cost
anomalies and drift at 1M spans).
"""

from __future__ import annotations

from agentwatch.collector.migrations import LLM_CALLS_TABLE, TASK_ROLLUP_TABLE


def ms(param: str) -> str:
    return f"fromUnixTimestamp64Milli({{{param}:Int64}})"


def roots(lo: str = "from_ms", hi: str = "to_ms") -> str:
    """Tasks whose root span starts in [lo, hi) (service: the root's): ``TraceId`` and ``r``, the root's fields
    (``ts``, ``dur``, ``service``, ``name``, ``span_name``, ``outcome``, ``error_type``, ``conversation_id``,
    ``session_id``, ``user_id``, ``span_id``). A task whose root has not arrived yet is not one of them."""
    return f"""SELECT TraceId, max(Root) AS r FROM {TASK_ROLLUP_TABLE}
WHERE ProjectId = {{project:String}} AND Hour >= toStartOfHour({ms(lo)}) AND Hour < {ms(hi)}
  AND Root.has = 1 AND Root.ts >= {ms(lo)} AND Root.ts < {ms(hi)}
  AND ({{service:String}} = '' OR Root.service = {{service:String}})
GROUP BY TraceId"""


def members_where(lo: str) -> str:
    """Rows of the tasks in the ``roots`` CTE (which has ``TraceId`` and ``te``): from the window's start hour to
    the roots' latest end."""
    return (
        f"ProjectId = {{project:String}} AND Hour >= toStartOfHour({ms(lo)})"
        " AND Hour <= (SELECT max(te) FROM roots) AND TraceId IN (SELECT TraceId FROM roots)"
    )


def calls(where: str, extra: str = "") -> str:
    """One row per LLM call (max of each field over the call's spans): TraceId, CallKey, ts (first span's start),
    span_id (first span), i, o, cr, cw, rt (tokens), c (cost, NULL = unpriced), d (duration ns), model, service;
    ``extra``: more aggregates."""
    return f"""SELECT TraceId, CallKey, min(First) AS first, first.ts AS ts, first.span_id AS span_id,
       max(InputTokens) AS i, max(OutputTokens) AS o, max(CacheReadTokens) AS cr, max(CacheWriteTokens) AS cw,
       max(ReasoningTokens) AS rt, max(CostUsd) AS c, max(Duration) AS d, max(Model) AS model,
       max(ServiceName) AS service{", " + extra if extra else ""}
FROM {LLM_CALLS_TABLE} WHERE {where}
GROUP BY TraceId, CallKey"""


# the longest run of identical (tool, args hash) among a task's tool calls in time order, from ToolSeq
MAX_REPEATS = """arrayFold(
               (acc, x) -> if(x = acc.2, (greatest(acc.1, acc.3 + 1), x, acc.3 + 1),
                              (greatest(acc.1, toUInt64(1)), x, toUInt64(1))),
               arrayMap(p -> p.2, arraySort(groupUniqArrayMerge(ToolSeq))),
               (toUInt64(0), '', toUInt64(0))
           ).1"""


def task_spans(where: str) -> str:
    """Per task from ``task_rollup``: steps (distinct spans), tool_calls, errors, max_repeats."""
    return f"""SELECT TraceId, uniqExactMerge(Spans) AS steps, uniqExactMerge(ToolSpans) AS tool_calls,
       uniqExactMerge(ErrorSpans) AS errors, {MAX_REPEATS} AS max_repeats
FROM {TASK_ROLLUP_TABLE} WHERE {where}
GROUP BY TraceId"""
