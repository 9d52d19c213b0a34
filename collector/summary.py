"""Per-task summaries (``task_summary``, migration 7): one row per task, so the task list, cost anomalies and drift
read one row a task instead of merging the rollups' per-span states for every task of a window; and per-call
summaries (``call_summary``, migration 8): one row per LLM call with its task's service and name, so the overview's
call totals and token bombs read one row a call instead of grouping the rollup's rows and joining them to the roots;
and per-trace loops (``loop_summary``, migration 9, computed by collector/analytics_loops.py).

The summarizer (a thread of the collector) keeps the tables: every ``interval`` seconds it takes the traces with
spans ingested since its watermark (``IngestedAt``, the store's clock) and up to a limit below which every insert
is visible, computes their tasks and calls from the rollups (``compute_ctes``: the same SQL the reads use for the
rest) and writes them with the new watermark as their version. The limit: with the embedded store the collector's
writer is the only writer, so it is the start of the insert in progress (if any); with a ClickHouse server, where
other collectors or a stock OpenTelemetry Collector may insert too, ``lag`` seconds ago (an insert whose rows were
stamped before it became visible).

Reads (``window_ctes``, ``calls_ctes``) take the summary rows of the window's tasks (calls) with no span of their
trace ingested after the watermark, and compute the others from the rollups: the tasks still running or just
touched, and every task of a store the summarizer never ran on. So a read is exact at any moment; the summary only
makes it cheaper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agentwatch.collector import rollups as R
from agentwatch.collector.metrics import Metrics
from agentwatch.collector.migrations import (
    CALL_SUMMARY_TABLE,
    LLM_CALLS_TABLE,
    LOOP_SUMMARY_TABLE,
    SITE_HASH,
    SPANS_TABLE,
    SUMMARY_WATERMARK_TABLE,
    TASK_ROLLUP_TABLE,
    TASK_SUMMARY_TABLE,
    TRACE_LOOKUP_TABLE,
)
from agentwatch.collector.store import Store

log = logging.getLogger(__name__)

COLUMNS = [
    "ProjectId", "Hour", "TraceId", "Start", "DurationNs", "ServiceName", "Name", "SpanName", "Outcome", "ErrorType",
    "ConversationId", "SessionId", "UserId", "LlmCalls", "InputTokens", "OutputTokens", "CacheReadTokens",
    "CacheWriteTokens", "ReasoningTokens", "CostUsd", "UnpricedCalls", "Models", "Steps", "ToolCalls", "Errors",
    "MaxRepeats",
]  # fmt: skip
_COLS = ", ".join(COLUMNS)
CALL_COLUMNS = [
    "ProjectId", "Hour", "TraceId", "CallKey", "SpanId", "Ts", "ServiceName", "HasRoot", "RootService", "RootName",
    "Model", "InputTokens", "OutputTokens", "CacheReadTokens", "CacheWriteTokens", "ReasoningTokens", "CostUsd",
    "Duration",
]  # fmt: skip


def _ingested(after: str, upto: str | None) -> str:
    hi = f" AND IngestedAt <= fromUnixTimestamp64Milli({{{upto}:Int64}})" if upto else ""
    return (
        f"FROM {SPANS_TABLE} WHERE ProjectId = {{project:String}}"
        f" AND IngestedAt > fromUnixTimestamp64Milli({{{after}:Int64}}){hi}"
    )


def dirty(after: str, upto: str | None = None) -> str:
    """The project's traces with a span ingested after ``{after}`` (ms since the epoch), up to ``{upto}``, as ``h``,
    the 64-bit hash of the trace id: a set of 8-byte keys builds and probes faster than one of 32-byte strings, and
    a collision only makes a clean task be computed from the rollups (the same answer)."""
    return f"SELECT DISTINCT cityHash64(TraceId) AS h {_ingested(after, upto)}"


def dirty_ctes(name: str) -> str:
    """The CTE ``name`` (``dirty`` after ``{wm_ms}``) and ``{name}_n``, its size (``bounds_ctes``).

    One snapshot per statement: the set is read once, as a scalar (``{name}_v``, an array), and the CTE unrolls
    it. ClickHouse evaluates a statement's scalar subqueries apart from its body, and a MATERIALIZED CTE used by
    both ran once in each (chDB 26.9): a span ingested between the two made a trace dirty for the body and not
    for a scalar (the extent of the traces to compute), and its task could be left out of one read. The set is
    also read once instead of up to three times."""
    return (
        f"(SELECT groupArray(h) FROM ({dirty('wm_ms')})) AS {name}_v,\n"
        f"{name} AS (SELECT arrayJoin({name}_v) AS h),\nlength({name}_v) AS {name}_n"
    )


def dirty_ids(after: str, upto: str | None = None) -> str:
    """The same traces, by id."""
    return f"SELECT DISTINCT TraceId {_ingested(after, upto)}"


_DIRTY = "cityHash64(TraceId) IN (SELECT h FROM s_dirty)"


def _clean(dirty_cte: str) -> str:
    """A summary row of a trace not touched since the watermark (``TraceHash``, migration 10, is the hash ``dirty``
    takes, stored); with no dirty trace at all the set is not probed for every row (34 -> 17 ms for a day's 320k
    task rows)."""
    return f"({dirty_cte}_n = 0 OR TraceHash NOT IN (SELECT h FROM {dirty_cte}))"


_CLEAN = _clean("s_dirty")


def _sample(rate: str, column: str) -> str:
    """A deterministic sample of the traces, ``{rate}`` per million, by the trace id's hash (``column``: TraceHash,
    or cityHash64(TraceId) where it is not stored)."""
    return f"{column} % 1000000 < {{{rate}:UInt32}}"


def bounds_sql(ids: str) -> str:
    """lo, hi: the first and last span start of the traces of the CTE ``ids`` (NULL if none)."""
    return f"""SELECT minOrNull(Start) AS lo, maxOrNull(End) AS hi FROM {TRACE_LOOKUP_TABLE}
    WHERE TraceId IN (SELECT TraceId FROM {ids})"""


def bounds_ctes(name: str, ids: str, *, materialized: bool = True) -> str:
    """The CTE ``name`` (``bounds_sql`` of ``ids``) and ``{name}_v``, its (lo, hi) as one scalar: a statement's
    scalar subqueries run as it is planned, so every ``(SELECT lo FROM name)`` ran on its own (the computed-tasks
    CTEs held nine, ~50 ms of a read's ~90 ms with nothing to compute)."""
    kind = " MATERIALIZED" if materialized else ""
    return f"{name} AS{kind} ({bounds_sql(ids)}),\n(SELECT (lo, hi) FROM {name}) AS {name}_v"


def extent_where(ids: str, bounds: str) -> str:
    """Rollup rows of the traces of the CTE ``ids`` over their extent (the CTE ``bounds``, from ``bounds_ctes``)."""
    return (
        f"{bounds}_v.1 IS NOT NULL AND ProjectId = {{project:String}}"
        f" AND Hour >= toStartOfHour({bounds}_v.1) AND Hour <= {bounds}_v.2"
        f" AND TraceId IN (SELECT TraceId FROM {ids})"
    )


def max_roots_sql(ids: str, bounds: str) -> str:
    """``TraceId``, ``r`` (the root tuple, collector/rollups.py) of the traces of the CTE ``ids``, over their extent
    (the CTE ``bounds``; ``r.has`` is 0 for a trace whose root has not arrived), and ``root_hours``, the hours
    holding a root of the trace."""
    return f"""SELECT TraceId, max(Root) AS r, groupUniqArrayIf(Hour, Root.has = 1) AS root_hours
        FROM {TASK_ROLLUP_TABLE} WHERE {extent_where(ids, bounds)}
        GROUP BY TraceId"""


def cand_ctes(cand_sql: str) -> str:
    """``s_cand`` (the traces to compute) and ``s_bounds`` (lo, hi: their first and last span start, NULL if none).
    The traces are read once, as a scalar that the CTE unrolls (``dirty_ctes``: the bounds, a scalar, and the
    body see the same traces)."""
    return f"""
(SELECT groupArray(TraceId) FROM ({cand_sql})) AS s_cand_v,
s_cand AS (SELECT arrayJoin(s_cand_v) AS TraceId),
{bounds_ctes("s_bounds", "s_cand")}"""


def compute_ctes(cand_sql: str, root_where: str = "1") -> str:
    """CTEs ending in ``s_tasks``: the summary rows (``COLUMNS``) of the tasks among ``cand_sql``'s traces whose
    root has arrived and passes ``root_where`` (over ``r``, the root tuple of
    collector/rollups.py). Their rollup rows are read over the traces' whole extent (the trace lookup's first and
    last span start)."""
    members = extent_where("s_roots", "s_bounds")
    return f"""{cand_ctes(cand_sql)},
s_roots AS MATERIALIZED (
    SELECT TraceId, r.ts AS ts, r.dur AS dur, r.service AS service, r.name AS name, r.span_name AS span_name,
           r.outcome AS outcome, r.error_type AS error_type, r.conversation_id AS conversation_id,
           r.session_id AS session_id, r.user_id AS user_id, root_hours
    FROM ({max_roots_sql("s_cand", "s_bounds")}) WHERE r.has = 1 AND ({root_where})
),
s_calls AS (
    SELECT TraceId, count() AS llm_calls, sum(i) AS input_tokens, sum(o) AS output_tokens,
           sum(cr) AS cache_read_tokens, sum(cw) AS cache_write_tokens, sum(rt) AS reasoning_tokens,
           sum(c) AS priced_cost, countIf(c IS NULL AND (i > 0 OR o > 0)) AS unpriced_calls,
           groupUniqArray(model) AS models
    FROM ({R.calls(members)}) GROUP BY TraceId
),
s_spans AS ({R.task_spans(members)}),
s_tasks AS (
    SELECT {{project:String}} AS ProjectId, toStartOfHour(ts) AS Hour, TraceId, ts AS Start, dur AS DurationNs,
           service AS ServiceName, name AS Name, span_name AS SpanName, outcome AS Outcome,
           error_type AS ErrorType, conversation_id AS ConversationId, session_id AS SessionId,
           user_id AS UserId, toUInt32(ifNull(llm_calls, 0)) AS LlmCalls, ifNull(input_tokens, 0) AS InputTokens,
           ifNull(output_tokens, 0) AS OutputTokens, ifNull(cache_read_tokens, 0) AS CacheReadTokens,
           ifNull(cache_write_tokens, 0) AS CacheWriteTokens, ifNull(reasoning_tokens, 0) AS ReasoningTokens,
           toFloat64(ifNull(priced_cost, 0)) AS CostUsd, toUInt32(ifNull(unpriced_calls, 0)) AS UnpricedCalls,
           arrayFilter(m -> m != '', ifNull(models, [])) AS Models, toUInt32(ifNull(steps, 1)) AS Steps,
           toUInt32(ifNull(tool_calls, 0)) AS ToolCalls, toUInt32(ifNull(errors, 0)) AS Errors,
           toUInt32(ifNull(max_repeats, 0)) AS MaxRepeats, arrayFilter(h -> h != Hour, root_hours) AS StaleHours
    FROM s_roots LEFT JOIN s_calls USING TraceId LEFT JOIN s_spans USING TraceId
    SETTINGS join_use_nulls = 1
)"""


def window_ctes(lo: str = "from_ms", hi: str = "to_ms", *, service: bool = True, sample: str = "") -> str:
    """CTEs ending in ``s_window``: the summary rows (``COLUMNS``) of the tasks whose root starts in [lo, hi) (and is
    of the scope's service, with ``service``): from ``task_summary`` for the tasks with no span ingested after the
    watermark ``{wm_ms}``, computed from the rollups for the others. Params: project, service, wm_ms, lo, hi.
    ``sample``: the name of a rate parameter (per million): a deterministic sample of the tasks by trace id, applied
    before FINAL merges the summary's rows (PREWHERE: every version of a row has the same TraceId, a column of the
    key) and before the dirty tasks are computed."""
    in_window = f"Start >= {R.ms(lo)} AND Start < {R.ms(hi)}"
    svc = " AND ({service:String} = '' OR ServiceName = {service:String})" if service else ""
    root_svc = " AND ({service:String} = '' OR r.service = {service:String})" if service else ""
    # the candidates: the window's roots (of the service) among the dirty traces, found by the root rows in the
    # window's hours as the raw reads do (a narrow column), not by reading every dirty trace's rows
    cand = (
        f"SELECT TraceId FROM (SELECT DISTINCT TraceId FROM {TASK_ROLLUP_TABLE}"
        f" WHERE s_dirty_n > 0 AND ProjectId = {{project:String}}"
        f" AND Hour >= toStartOfHour({R.ms(lo)}) AND Hour < {R.ms(hi)} AND Root.has = 1"
        f" AND Root.ts >= {R.ms(lo)} AND Root.ts < {R.ms(hi)}{root_svc.replace('r.service', 'Root.service')})"
        f" WHERE {_DIRTY}{' AND ' + _sample(sample, 'cityHash64(TraceId)') if sample else ''}"
    )
    prewhere = f"\n    PREWHERE {_sample(sample, 'TraceHash')}" if sample else ""
    return f"""
{dirty_ctes("s_dirty")},{compute_ctes(cand, f"r.ts >= {R.ms(lo)} AND r.ts < {R.ms(hi)}{root_svc}")},
s_window AS (
    SELECT {_COLS} FROM {TASK_SUMMARY_TABLE} FINAL{prewhere}
    WHERE ProjectId = {{project:String}} AND Hour >= toStartOfHour({R.ms(lo)}) AND Hour < {R.ms(hi)}
      AND {in_window}{svc} AND {_CLEAN}
    UNION ALL
    SELECT {_COLS} FROM s_tasks
)"""


def window_counts(lo: str, hi: str) -> str:
    """SELECT what ('tasks' or 'calls'), service, model, n: the tasks (by root service; model '') and the LLM calls
    (by their service and response model) of [lo, hi) of the scope's service, from the keys alone: the summaries'
    rows of the clean traces (as ``window_ctes`` and ``calls_ctes`` read them) and, for the dirty traces (the CTEs
    of ``dirty_ctes("s_dirty")``), their root rows and call rows in the window's hours, not computed (a running task
    counts; a call that started before ``lo`` may). ~40 ms for a day of 320k tasks and 1.7M calls, where the reads'
    own statements compute the dirty traces first (~100 ms more). For sampling rates and mixes, not for totals."""
    hours = f"ProjectId = {{project:String}} AND Hour >= toStartOfHour({R.ms(lo)}) AND Hour < {R.ms(hi)}"
    svc = " AND ({service:String} = '' OR ServiceName = {service:String})"
    live = "s_dirty_n > 0 AND " + _DIRTY
    return f"""SELECT what, service, model, sum(n) AS n FROM (
    SELECT 'tasks' AS what, ServiceName AS service, '' AS model, count() AS n FROM {TASK_SUMMARY_TABLE} FINAL
    WHERE {hours} AND Start >= {R.ms(lo)} AND Start < {R.ms(hi)}{svc} AND {_CLEAN} GROUP BY service
    UNION ALL
    SELECT 'tasks', service, '', uniqExact(TraceId) FROM (
        SELECT TraceId, Root.service AS service FROM {TASK_ROLLUP_TABLE}
        WHERE {live} AND {hours} AND Root.has = 1 AND Root.ts >= {R.ms(lo)} AND Root.ts < {R.ms(hi)}
          AND ({{service:String}} = '' OR Root.service = {{service:String}})
    ) GROUP BY service
    UNION ALL
    SELECT 'calls', ServiceName, Model, count() FROM {CALL_SUMMARY_TABLE} FINAL
    WHERE {hours} AND Ts >= {R.ms(lo)} AND Ts < {R.ms(hi)}{svc} AND {_CLEAN} GROUP BY ServiceName, Model
    UNION ALL
    SELECT 'calls', ServiceName, Model, uniqExact(TraceId, CallKey) FROM {LLM_CALLS_TABLE}
    WHERE {live} AND {hours}{svc} GROUP BY ServiceName, Model
) GROUP BY what, service, model"""


def _call_rows(calls: str, roots: str, extra: str = "") -> str:
    """``CALL_COLUMNS`` of the calls of ``calls`` (a table, or a subquery of collector/rollups.py ``calls``), each
    with its task's root (from ``roots``: TraceId, service, name; a trace whose root has not arrived: HasRoot 0)."""
    return f"""SELECT {{project:String}} AS ProjectId, toStartOfHour(c.ts) AS Hour, c.TraceId AS TraceId,
       c.CallKey AS CallKey, c.span_id AS SpanId, c.ts AS Ts, c.service AS ServiceName, r.has AS HasRoot,
       r.service AS RootService, r.name AS RootName, c.model AS Model, c.i AS InputTokens, c.o AS OutputTokens,
       c.cr AS CacheReadTokens, c.cw AS CacheWriteTokens, c.rt AS ReasoningTokens, c.c AS CostUsd,
       c.d AS Duration{extra}
FROM {calls} AS c
LEFT JOIN (SELECT TraceId, service, name, toUInt8(1) AS has FROM {roots}) AS r ON c.TraceId = r.TraceId"""


def calls_ctes(lo: str = "from_ms", hi: str = "to_ms", *, dirty_cte: str = "", sample: str = "") -> str:
    """CTEs ending in ``c_window``: the LLM calls (``CALL_COLUMNS`` but ProjectId and Hour, with ``TraceHash`` and
    ``SiteHash``) whose first span starts in [lo, hi), of the scope's service: from ``call_summary`` for the traces
    with no span ingested after the watermark ``{wm_ms}``, computed from the rollups (with their roots) for the
    others. Params: project, service, wm_ms, lo, hi. ``dirty_cte``: the name of a CTE of the statement that holds the
    dirty traces already (``s_dirty`` of ``window_ctes``), read once instead of twice. ``sample``: a rate
    parameter's name, as ``window_ctes``."""
    hours = f"ProjectId = {{project:String}} AND Hour >= toStartOfHour({R.ms(lo)}) AND Hour < {R.ms(hi)}"
    svc = " AND ({service:String} = '' OR ServiceName = {service:String})"
    d = dirty_cte or "c_dirty"
    dirty_ = f"cityHash64(TraceId) IN (SELECT h FROM {d})"
    cols = ", ".join(c for c in CALL_COLUMNS if c not in ("ProjectId", "Hour"))
    own = "" if dirty_cte else f"\n{dirty_ctes('c_dirty')},"
    live_sample = f" AND {_sample(sample, 'cityHash64(TraceId)')}" if sample else ""
    prewhere = f"\n    PREWHERE {_sample(sample, 'TraceHash')}" if sample else ""
    return f"""{own}
c_live AS MATERIALIZED (
    SELECT * FROM ({R.calls(f"{d}_n > 0 AND {hours}{svc} AND {dirty_}{live_sample}")})
    WHERE ts >= {R.ms(lo)} AND ts < {R.ms(hi)}
),
{bounds_ctes("c_bounds", "c_live")},
c_roots AS MATERIALIZED (
    SELECT TraceId, r.service AS service, r.name AS name FROM ({max_roots_sql("c_live", "c_bounds")}) WHERE r.has = 1
),
c_window AS (
    SELECT {cols}, TraceHash, SiteHash FROM {CALL_SUMMARY_TABLE} FINAL{prewhere}
    WHERE {hours} AND Ts >= {R.ms(lo)} AND Ts < {R.ms(hi)}{svc} AND {_clean(d)}
    UNION ALL
    SELECT {cols}, cityHash64(TraceId) AS TraceHash, {SITE_HASH} AS SiteHash
    FROM ({_call_rows("c_live", "c_roots")})
)"""


def watermark(store: Store) -> int:
    """The summarizer's watermark, ms since the epoch (0: it never ran, every task is computed at read)."""
    rows = store.query(f"SELECT toUnixTimestamp64Milli(max(Watermark)) AS wm FROM {SUMMARY_WATERMARK_TABLE}")
    return int(rows[0]["wm"] or 0) if rows else 0


_PROJECTS_SQL = f"""
SELECT DISTINCT ProjectId FROM {SPANS_TABLE}
WHERE IngestedAt > fromUnixTimestamp64Milli({{after:Int64}}) AND IngestedAt <= fromUnixTimestamp64Milli({{upto:Int64}})
"""
_NEXT_SQL = f"""
SELECT toUnixTimestamp64Milli(now64(3)) AS now_ms,
       toUnixTimestamp64Milli(minOrNull(IngestedAt)) AS first_ms
FROM {SPANS_TABLE} WHERE IngestedAt > fromUnixTimestamp64Milli({{after:Int64}})
"""
# with StaleHours: the other hours holding a root of the task, where an earlier row of it may be (the row is under
# its latest root's hour): the pass writes a tombstone there (where no row was, a tombstone is harmless)
_COMPUTE_SQL = f"WITH {compute_ctes(dirty_ids('after', 'upto'))}\nSELECT {_COLS}, StaleHours FROM s_tasks"
# the calls of the pass's traces (root or not yet), over the traces' whole extent; StaleHours: the other hours the
# call's spans are in, where an earlier row of it may be (the row is under its first span's hour, which only moves
# earlier)
_CALLS_COMPUTE_SQL = f"""WITH {compute_ctes(dirty_ids("after", "upto"))}
{_call_rows("(" + R.calls(extent_where("s_cand", "s_bounds"), extra="groupUniqArray(Hour) AS hours") + ")",
            "s_roots", extra=", arrayFilter(h -> h != toStartOfHour(c.ts), c.hours) AS StaleHours")}"""

BACKOFF = 2.0  # the pause after a pass is at least this many times the pass's length
TARGET_TASKS = 100_000  # tasks a catching-up pass aims at: bounded memory and time, few passes


def _split_stale(table: pa.Table, keys: list[str]) -> tuple[pa.Table, pa.Table]:
    """The rows to write (without ``StaleHours``) and the tombstones: ``keys`` and ``Hour`` for each stale hour."""
    hours = table.column("StaleHours")
    rows = table.drop_columns(["StaleHours"])
    flat = pc.list_flatten(hours)
    parents = pc.list_parent_indices(hours)
    stale = rows.select(keys).take(parents).append_column("Hour", flat.cast(rows.schema.field("Hour").type))
    return rows, stale


class Summarizer:
    """Keeps ``task_summary``, ``call_summary`` and ``loop_summary`` up to date, one pass every ``interval`` seconds,
    in a daemon thread.

    A pass covers the spans ingested in (watermark, min(limit, watermark + chunk)] (``_limit``): a store loaded
    before the summarizer existed is caught up chunk by chunk (``catch_up``, with a progress line), each chunk of
    ingest time sized from the last one's task count (a log line every 10 s while it catches up). A failed pass is
    logged and retried on the next tick; the watermark only moves once a pass is written.
    """

    def __init__(
        self, store: Store, *, interval: float = 2.0, lag: float = 4.0, chunk: float = 10.0,
        metrics: Metrics | None = None, inflight: Callable[[], float | None] | None = None,
    ) -> None:  # fmt: skip
        self.store, self.interval, self.lag, self.chunk, self.metrics = store, interval, lag, chunk, metrics
        self.inflight = inflight
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.rows_written = 0
        self.passes = 0
        self.last_pass_s = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agentwatch-summarizer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        pause = self.interval
        while not self._stop.wait(pause):
            pause = self.interval
            try:
                t0, before, said = time.monotonic(), self.rows_written, time.monotonic()
                while self.run_once() and not self._stop.is_set():  # catching up: chunks back to back
                    if time.monotonic() - said >= 10:
                        said = time.monotonic()
                        log.info("agentwatch summarizer: catching up, %d tasks in %.0fs so far",
                                 self.rows_written - before, said - t0)  # fmt: skip
                # under heavy ingest a pass takes long: the next waits at least twice as long, so the summarizer
                # takes at most about a third of the time (its passes get bigger and fewer, each costs less per
                # span), and the reads compute the few seconds more of traces it has not summarized yet
                pause = max(self.interval, BACKOFF * self.last_pass_s)
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - a pass fails (store down): the reads compute it, retry later
                if self.last_error != str(e):
                    log.warning("agentwatch summarizer: a pass failed, retrying in %.0fs: %s", self.interval, e)
                self.last_error = str(e)
                if self.metrics:
                    self.metrics.summary_errors.inc()

    def run_once(self) -> bool:
        """One pass; True if it stopped at the chunk size (more is waiting), False when caught up."""
        t0 = time.monotonic()
        try:
            return self._pass()
        finally:
            self.last_pass_s = time.monotonic() - t0

    def _pass(self) -> bool:
        # imported here: analytics_loops builds its SQL from this module's fragments when it is imported
        from agentwatch.collector.analytics_loops import summary_rows as loop_rows

        after = watermark(self.store)
        nxt = self.store.query(_NEXT_SQL, {"after": after})[0]
        limit = self._limit(int(nxt["now_ms"]))
        if nxt["first_ms"] is None or int(nxt["first_ms"]) > limit:
            if self.metrics:  # nothing ingested up to the limit is left: summarized up to there
                self.metrics.summary_watermark.set(max(after, limit) / 1000)
            return False
        start = max(after, int(nxt["first_ms"]) - 1)
        upto = min(limit, start + int(self.chunk * 1000))
        params: dict[str, Any] = {"after": after, "upto": upto, "version": upto}
        tasks = 0
        for row in self.store.query(_PROJECTS_SQL, params):
            p = {**params, "project": row["ProjectId"]}
            for part, sql, target, keys in (
                ("tasks", _COMPUTE_SQL, TASK_SUMMARY_TABLE, ["ProjectId", "TraceId"]),
                ("calls", _CALLS_COMPUTE_SQL, CALL_SUMMARY_TABLE, ["ProjectId", "TraceId", "CallKey"]),
            ):
                t0 = time.monotonic()
                table = self.store.query_arrow(sql, p)
                if target == TASK_SUMMARY_TABLE:
                    tasks += table.num_rows
                rows, stale = _split_stale(table, keys)
                if target == CALL_SUMMARY_TABLE:
                    calls = rows  # the loops of these traces are priced with them
                if rows.num_rows:
                    self._insert(rows, upto, table_name=target)
                if stale.num_rows:
                    self._insert(stale, upto, deleted=True, table_name=target)
                self._took(part, t0)
            t0 = time.monotonic()
            rows, gone = loop_rows(self.store, p, calls=calls)
            for table, deleted in ((rows, False), (gone, True)):
                if table.num_rows:
                    self._insert(table, upto, deleted=deleted, table_name=LOOP_SUMMARY_TABLE)
            self._took("loops", t0)
        self.store.command(
            f"INSERT INTO {SUMMARY_WATERMARK_TABLE} (Watermark) VALUES (fromUnixTimestamp64Milli({{wm:Int64}}))",
            {"wm": upto},
        )
        self.passes += 1
        if self.metrics:
            self.metrics.summary_watermark.set(upto / 1000)
        if upto < limit:  # catching up: size the next chunk for about TARGET_TASKS tasks (a backlog may be months)
            self.chunk = min(max(self.chunk * min(max(TARGET_TASKS / max(tasks, 1), 0.25), 4.0), 1.0), 86400.0)
            return True
        return False

    def _took(self, part: str, since: float) -> None:
        if self.metrics:
            self.metrics.summary_seconds.labels(part).observe(time.monotonic() - since)

    def _limit(self, now_ms: int) -> int:
        """The newest ``IngestedAt`` a pass may cover: every span stamped up to it is visible. With the only writer
        in this process (``inflight``: the embedded store), that is up to the start of the insert in progress,
        and the store's clock read first, its current millisecond excluded; else ``lag`` seconds ago."""
        if self.inflight is None:
            return now_ms - int(self.lag * 1000)
        since = self.inflight()
        return now_ms - 1 if since is None else min(now_ms, int(since * 1000)) - 1

    def _insert(self, table: pa.Table, version: int, *, deleted: bool = False,
                table_name: str = TASK_SUMMARY_TABLE) -> None:  # fmt: skip
        n = table.num_rows
        table = table.append_column("Version", pa.array([version] * n, pa.uint64()))
        table = table.append_column("IsDeleted", pa.array([int(deleted)] * n, pa.uint8()))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        self.store.insert_arrow(table_name, table.column_names, sink.getvalue().to_pybytes())
        if deleted:
            return
        if table_name == TASK_SUMMARY_TABLE:
            self.rows_written += n
            if self.metrics:
                self.metrics.summarized.inc(n)
        elif table_name == CALL_SUMMARY_TABLE and self.metrics:
            self.metrics.calls_summarized.inc(n)
        elif self.metrics:
            self.metrics.loops_summarized.inc(n)

    def catch_up(self, *, progress: bool = False) -> int:
        """Run passes until the summary is as fresh as the lag allows; returns the rows written."""
        before, t = self.rows_written, time.monotonic()
        while self.run_once():
            if progress:
                print(f"  summarizing: {self.rows_written - before:,} tasks, {time.monotonic() - t:.0f}s", flush=True)
        return self.rows_written - before
