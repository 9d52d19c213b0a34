"""Numbered, idempotent schema migrations, applied at start and recorded in ``agentwatch_migrations``.

The spans table keeps the OpenTelemetry Collector ClickHouse exporter's 22 insert columns with the
same names and types (STANDARDS.md 4), so a stock collector can write into it (``create_schema: false``);
our own columns sit on top. Why the engine and keys are what they are is in the README (Architecture).

Never edit an applied migration: add a new one. ``cluster`` renders the ON CLUSTER / Replicated
variant for a ClickHouse cluster (``agentwatch migrate --print-sql --cluster NAME``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from agentwatch.alerts import schema as alert_schema
from agentwatch.collector.normalize import typed_columns
from agentwatch.collector.store import Store

log = logging.getLogger(__name__)

SPANS_TABLE = "otel_traces"
TRACE_LOOKUP_TABLE = "otel_traces_trace_id_ts"
KEYS_TABLE = "api_keys"
INGEST_STATS_TABLE = "ingest_stats"
LLM_CALLS_TABLE = "llm_calls"
TASK_ROLLUP_TABLE = "task_rollup"
TASK_SUMMARY_TABLE = "task_summary"
SUMMARY_WATERMARK_TABLE = "task_summary_watermark"
CALL_SUMMARY_TABLE = "call_summary"
LOOP_SUMMARY_TABLE = "loop_summary"

# the exporter's INSERT columns, in its order (STANDARDS.md 4.5), then ours
OTEL_INSERT_COLUMNS = [
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
    "Links.TraceState", "Links.Attributes",
]  # fmt: skip
INSERT_COLUMNS = [*OTEL_INSERT_COLUMNS, "ProjectId", "CostUsd", "PriceSource"]


@dataclass(frozen=True)
class Target:
    """Where the DDL goes: a single server / chDB, or a cluster (ON CLUSTER, Replicated engines)."""

    cluster: str | None = None

    def on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""

    def engine(self, name: str, table: str, args: str = "") -> str:
        if not self.cluster:
            return f"{name}({args})"
        zk = f"'/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}'"
        return f"Replicated{name}({zk}{', ' + args if args else ''})"

    def local(self, table: str) -> str:
        """With a cluster, data lives in `<table>_local`; `<table>` is the Distributed table over it."""
        return f"{table}_local" if self.cluster else table


def _spans_ddl(t: Target) -> list[str]:
    typed = ",\n    ".join(f"{c.name} {c.type} MATERIALIZED {c.expr}" for c in typed_columns())
    table = t.local(SPANS_TABLE)
    ddl = f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ProjectId LowCardinality(String) DEFAULT 'default',
    CostUsd Nullable(Float64),
    PriceSource LowCardinality(String) DEFAULT '',
    IngestedAt DateTime64(3) DEFAULT now64(3),
    {typed},
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_kind Kind TYPE set(8) GRANULARITY 1,
    INDEX idx_tool ToolName TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_model Model TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = {t.engine("ReplacingMergeTree", table)}
PARTITION BY toDate(Timestamp)
ORDER BY (ProjectId, toStartOfHour(Timestamp), ServiceName, TraceId, SpanId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000"""
    out = [ddl]
    if t.cluster:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {SPANS_TABLE}{t.on_cluster()} AS {table} "
            f"ENGINE = Distributed(`{t.cluster}`, currentDatabase(), {table}, cityHash64(TraceId))"
        )
    return out


def _trace_lookup_ddl(t: Target) -> list[str]:
    table = t.local(TRACE_LOOKUP_TABLE)
    out = [
        f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = {t.engine("AggregatingMergeTree", table)}
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {TRACE_LOOKUP_TABLE}_mv{t.on_cluster()}
TO {table}
AS SELECT TraceId, min(toDateTime(Timestamp)) AS Start, max(toDateTime(Timestamp)) AS End
FROM {t.local(SPANS_TABLE)}
WHERE TraceId != ''
GROUP BY TraceId""",
    ]
    if t.cluster:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {TRACE_LOOKUP_TABLE}{t.on_cluster()} AS {table} "
            f"ENGINE = Distributed(`{t.cluster}`, currentDatabase(), {table}, cityHash64(TraceId))"
        )
    return out


def _keys_ddl(t: Target) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {KEYS_TABLE}{t.on_cluster()} (
    KeyHash String,
    KeyPrefix String,
    ProjectId LowCardinality(String),
    Role LowCardinality(String),
    Name String,
    CreatedAt DateTime DEFAULT now(),
    Revoked UInt8 DEFAULT 0,
    Version UInt64
) ENGINE = {t.engine("ReplacingMergeTree", KEYS_TABLE, "Version")}
ORDER BY KeyHash"""
    ]


def _ingest_stats_ddl(t: Target) -> list[str]:
    table = t.local(INGEST_STATS_TABLE)
    out = [
        f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    Minute DateTime,
    ProjectId LowCardinality(String),
    Stage LowCardinality(String),
    Reason LowCardinality(String),
    Spans SimpleAggregateFunction(sum, UInt64)
) ENGINE = {t.engine("AggregatingMergeTree", table)}
PARTITION BY toYYYYMM(Minute)
ORDER BY (ProjectId, Minute, Stage, Reason)"""
    ]
    if t.cluster:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {INGEST_STATS_TABLE}{t.on_cluster()} AS {table} "
            f"ENGINE = Distributed(`{t.cluster}`, currentDatabase(), {table}, rand())"
        )
    return out


def _distributed(t: Target, name: str, key: str = "cityHash64(TraceId)") -> list[str]:
    if not t.cluster:
        return []
    return [
        f"CREATE TABLE IF NOT EXISTS {name}{t.on_cluster()} AS {t.local(name)} "
        f"ENGINE = Distributed(`{t.cluster}`, currentDatabase(), {t.local(name)}, {key})"
    ]


# The rows a rollup view sees: one inserted block of spans. Spans of one trace may come in several blocks and
# the same span may come twice (exporter retry, spool replay, a stock OTel Collector), so every column below is an
# idempotent aggregate (min, max, uniqExact, groupUniqArray): re-inserting a span never changes a result, and
# rows of one key need no merge to be right, because every read GROUP BYs the key with the matching -Merge/min/max.
def _llm_calls_ddl(t: Target) -> list[str]:
    """One row per LLM call (``CallKey``: the response id, else the span id) per trace, per hour of its spans.

    Why: token bombs, spend spikes, per-task tokens and cost all want "one call, one count" — an LLM call reported
    by two spans (a client library's own span + an instrumentation's, which may carry different token values) is
    counted once, with the max of each field. Sums over spans cannot do that and are not idempotent; max per call
    is both. A read is ``GROUP BY TraceId, CallKey`` with max()/min() over a table ~half the spans' row count and
    a handful of narrow columns, with no FINAL.

    - ``Hour`` (of each span) leads the key after the project, so a window prunes by primary key; the two spans of
      a call that straddle an hour land in two rows, merged by the read's GROUP BY. Day partitions as the spans
      table, so ``ttl_only_drop_parts`` drops whole days.
    - ``First`` = min((Timestamp, SpanId)): the call's start and its first span id (ties broken by span id, so the
      answer is deterministic).
    - Strings (service, provider, model) are max(): the two spans of one call agree on them in practice; max makes
      the pick deterministic where they do not.
    """
    table = t.local(LLM_CALLS_TABLE)
    return [
        f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    ProjectId LowCardinality(String),
    Hour DateTime,
    TraceId String CODEC(ZSTD(1)),
    CallKey String CODEC(ZSTD(1)),
    First SimpleAggregateFunction(min, Tuple(ts DateTime64(9), span_id String)) CODEC(ZSTD(1)),
    ServiceName SimpleAggregateFunction(max, LowCardinality(String)),
    Provider SimpleAggregateFunction(max, LowCardinality(String)),
    RequestModel SimpleAggregateFunction(max, LowCardinality(String)),
    Model SimpleAggregateFunction(max, LowCardinality(String)),
    InputTokens SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1)),
    OutputTokens SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1)),
    CacheReadTokens SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1)),
    CacheWriteTokens SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1)),
    ReasoningTokens SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1)),
    CostUsd SimpleAggregateFunction(max, Nullable(Float64)) CODEC(ZSTD(1)),
    Duration SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1))
) ENGINE = {t.engine("AggregatingMergeTree", table)}
PARTITION BY toDate(Hour)
ORDER BY (ProjectId, Hour, TraceId, CallKey)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {LLM_CALLS_TABLE}_mv{t.on_cluster()} TO {table} AS
{_LLM_CALLS_SELECT.format(src=t.local(SPANS_TABLE))}""",
        *_distributed(t, LLM_CALLS_TABLE),
        # backfill: the spans stored before this migration (idempotent: a span also seen by the view, or a second
        # run, changes nothing). On a cluster, run it on each shard (it reads the shard's local spans).
        f"INSERT INTO {table} {_LLM_CALLS_SELECT.format(src=t.local(SPANS_TABLE))}",
    ]


_LLM_CALLS_SELECT = """SELECT ProjectId, toStartOfHour(toDateTime(Timestamp)) AS Hour, TraceId, CallKey,
       min((Timestamp, SpanId)) AS First, max(ServiceName) AS ServiceName, max(Provider) AS Provider,
       max(RequestModel) AS RequestModel, max(Model) AS Model, max(InputTokens) AS InputTokens,
       max(OutputTokens) AS OutputTokens, max(CacheReadTokens) AS CacheReadTokens,
       max(CacheWriteTokens) AS CacheWriteTokens, max(ReasoningTokens) AS ReasoningTokens, max(CostUsd) AS CostUsd,
       max(Duration) AS Duration
FROM {src}
WHERE Kind = 'llm'
GROUP BY ProjectId, Hour, TraceId, CallKey"""

# the root span's fields, as one comparable tuple: max() over a trace's spans picks the root's (has = 1)
ROOT_TUPLE_TYPE = (
    "Tuple(has UInt8, ts DateTime64(9), dur UInt64, service String, name String, span_name String, outcome String,"
    " error_type String, conversation_id String, session_id String, user_id String, span_id String)"
)
_ROOT_EXPR = (
    "CAST(if(ParentSpanId = '', tuple(toUInt8(1), Timestamp, Duration, toString(s.ServiceName),"
    " if(TaskName != '', toString(TaskName), toString(SpanName)), toString(SpanName), toString(Outcome),"
    " toString(ErrorType), ConversationId, SessionId, UserId, SpanId),"
    " tuple(toUInt8(0), toDateTime64(0, 9), toUInt64(0), '', '', '', '', '', '', '', '', '')),"
    f" '{ROOT_TUPLE_TYPE}')"
)
_TASK_ROLLUP_SELECT = f"""SELECT ProjectId, toStartOfHour(toDateTime(Timestamp)) AS Hour, TraceId,
       max(ServiceName) AS ServiceName, min(Timestamp) AS Start, max(EndTime) AS End, max({_ROOT_EXPR}) AS Root,
       uniqExactState(SpanId) AS Spans, uniqExactStateIf(SpanId, Kind = 'tool') AS ToolSpans,
       uniqExactStateIf(SpanId, ErrorType != '') AS ErrorSpans,
       uniqExactStateIf(CallKey, Kind = 'llm') AS Calls,
       groupUniqArrayStateIf((Timestamp, concat(ToolName, '#', ToolArgsHash), SpanId), Kind = 'tool') AS ToolSeq
FROM {{src}} AS s
WHERE TraceId != ''
GROUP BY ProjectId, Hour, TraceId"""


def _task_rollup_ddl(t: Target) -> list[str]:
    """One row per task (trace) per hour of its spans: what the task lists, anomaly and drift queries need
    without reading the spans.

    Why not a sum-based rollup: a re-sent span would count twice, and one LLM call reported by two spans too.
    Every column is idempotent instead: ``Start``/``End`` min/max; ``Root`` = max() of a tuple that is
    (1, the root span's fields) for the root and all zeros otherwise, so it is the root's fields once the root
    arrived and has = 0 while the task is still running; steps, tool calls, errors and LLM calls are
    ``uniqExact`` states of span ids (call keys), so a duplicate adds nothing; the tool sequence for the loop
    flag is a ``groupUniqArray`` of (start, tool#args hash, span id) — a set, sorted at read time. Token and cost
    totals are not here (they need max per call, then a sum): they come from ``llm_calls``.

    Key: (ProjectId, Hour, TraceId), Hour being that of each span. A trace's spans normally sit in one or two
    hours; rows of one trace under different hours are merged by the read (GROUP BY TraceId), so correctness does
    not depend on merges, and a window (even 7 days of baseline) prunes by primary key. Reads find the roots
    starting in the window first (the narrow ``Root`` column), then read the rows of those traces between the
    window's start hour and the roots' latest end — the same member rule as the raw-span queries.

    Measured (bench/queries.py --baseline-tasks 4000 --current-tasks 2000, 259k spans, shared 2 cores, chDB 4.4,
    old and new code run back to back, twice): cost anomalies + token bombs 1.8-4.0 s -> 0.85-0.93 s; overview
    (rewritten as two passes over the spans) 0.33-0.35 s -> 0.04-0.07 s; the task list 0.24 s -> 0.25-0.38 s and
    drift 0.7-1.7 s -> 1.1-1.3 s, no gain yet at this size (uniqExact state merges per task cost about what a FINAL
    scan of one day's spans costs). The raw spans stay the source of truth (latency percentiles, loops, traces)
    and the rollups can be rebuilt from them with the backfill statement below.
    """
    table = t.local(TASK_ROLLUP_TABLE)
    return [
        f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    ProjectId LowCardinality(String),
    Hour DateTime,
    TraceId String CODEC(ZSTD(1)),
    ServiceName SimpleAggregateFunction(max, LowCardinality(String)),
    Start SimpleAggregateFunction(min, DateTime64(9)) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime64(9)) CODEC(ZSTD(1)),
    Root SimpleAggregateFunction(max, {ROOT_TUPLE_TYPE}) CODEC(ZSTD(1)),
    Spans AggregateFunction(uniqExact, String),
    ToolSpans AggregateFunction(uniqExact, String),
    ErrorSpans AggregateFunction(uniqExact, String),
    Calls AggregateFunction(uniqExact, String),
    ToolSeq AggregateFunction(groupUniqArray, Tuple(DateTime64(9), String, String)) CODEC(ZSTD(1))
) ENGINE = {t.engine("AggregatingMergeTree", table)}
PARTITION BY toDate(Hour)
ORDER BY (ProjectId, Hour, TraceId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {TASK_ROLLUP_TABLE}_mv{t.on_cluster()} TO {table} AS
{_TASK_ROLLUP_SELECT.format(src=t.local(SPANS_TABLE))}""",
        *_distributed(t, TASK_ROLLUP_TABLE),
        f"INSERT INTO {table} {_TASK_ROLLUP_SELECT.format(src=t.local(SPANS_TABLE))}",
    ]


def _task_summary_ddl(t: Target) -> list[str]:
    """One row per task, written by the collector's summarizer (collector/summary.py) once the task's spans are in:
    everything the task list, cost anomalies and drift read per task, so they read one row a task instead of
    merging the rollups' per-span states for every task of a week.

    A cache of the rollups, never the source of truth: the summarizer recomputes a task whenever spans of its trace
    are ingested after the last pass (``IngestedAt`` above the watermark, found through the ``idx_ingested`` minmax
    index), and every read takes the summary rows of the tasks with no newer spans and computes the others (still
    running, or just updated) from the rollups, as before. So a read never sees a stale row, and a store the
    summarizer never ran on answers the same, only slower.

    ReplacingMergeTree by ``Version`` (the watermark of the pass that wrote the row): the newest row of a task wins
    (reads use FINAL). Key (ProjectId, Hour of the root's start, TraceId): windows prune by primary key, day
    partitions as the spans. A task whose root moves to another hour (a second root span) gets a deleted row
    (``IsDeleted``) under its old key.
    """
    table = t.local(TASK_SUMMARY_TABLE)
    return [
        f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    ProjectId LowCardinality(String),
    Hour DateTime,
    TraceId String CODEC(ZSTD(1)),
    Start DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    DurationNs UInt64 CODEC(T64, ZSTD(1)),
    ServiceName LowCardinality(String),
    Name String CODEC(ZSTD(1)),
    SpanName String CODEC(ZSTD(1)),
    Outcome LowCardinality(String),
    ErrorType LowCardinality(String),
    ConversationId String CODEC(ZSTD(1)),
    SessionId String CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    LlmCalls UInt32,
    InputTokens UInt64 CODEC(T64, ZSTD(1)),
    OutputTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheReadTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheWriteTokens UInt64 CODEC(T64, ZSTD(1)),
    ReasoningTokens UInt64 CODEC(T64, ZSTD(1)),
    CostUsd Float64 CODEC(ZSTD(1)),
    UnpricedCalls UInt32,
    Models Array(LowCardinality(String)),
    Steps UInt32,
    ToolCalls UInt32,
    Errors UInt32,
    MaxRepeats UInt32,
    Version UInt64,
    IsDeleted UInt8 DEFAULT 0
) ENGINE = {t.engine("ReplacingMergeTree", table, "Version, IsDeleted")}
PARTITION BY toDate(Hour)
ORDER BY (ProjectId, Hour, TraceId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        *_distributed(t, TASK_SUMMARY_TABLE),
        f"""CREATE TABLE IF NOT EXISTS {SUMMARY_WATERMARK_TABLE}{t.on_cluster()} (
    Watermark DateTime64(3),
    WrittenAt DateTime DEFAULT now()
) ENGINE = {t.engine("ReplacingMergeTree", SUMMARY_WATERMARK_TABLE, "Watermark")}
ORDER BY tuple()""",
        # what the summarizer and the reads look up: the spans ingested after a watermark
        f"ALTER TABLE {t.local(SPANS_TABLE)}{t.on_cluster()} ADD INDEX IF NOT EXISTS idx_ingested IngestedAt"
        " TYPE minmax GRANULARITY 1",
        f"ALTER TABLE {t.local(SPANS_TABLE)}{t.on_cluster()} MATERIALIZE INDEX idx_ingested",
    ]


def _summary_table(t: Target, name: str, columns: str, key: str) -> list[str]:
    """A summary table kept by the summarizer after migration 7's (``ReplacingMergeTree`` by the pass's ``Version``,
    ``IsDeleted`` for tombstones, keyed (ProjectId, Hour, TraceId, ``key``), day partitions), with the watermark
    reset so that the summarizer writes it for the traces it summarized before."""
    table = t.local(name)
    return [
        f"""CREATE TABLE IF NOT EXISTS {table}{t.on_cluster()} (
    ProjectId LowCardinality(String),
    Hour DateTime,
    TraceId String CODEC(ZSTD(1)),{columns}
    Version UInt64,
    IsDeleted UInt8 DEFAULT 0
) ENGINE = {t.engine("ReplacingMergeTree", table, "Version, IsDeleted")}
PARTITION BY toDate(Hour)
ORDER BY (ProjectId, Hour, TraceId, {key})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        *_distributed(t, name),
        f"TRUNCATE TABLE IF EXISTS {SUMMARY_WATERMARK_TABLE}{t.on_cluster()}",
    ]


def _call_summary_ddl(t: Target) -> list[str]:
    """One row per LLM call with its task's root service and name, written by the summarizer beside the task
    summaries (collector/summary.py), under the same rules: a cache of the rollups, recomputed whenever its trace
    gets new spans, read only for traces with no span ingested after the watermark.

    What it saves: the window's calls without grouping the ``llm_calls`` rollup's rows by call (the overview's
    call totals, spend per hour), and token bombs without joining every call to its task's root (the call site is
    service, task name and model). Key (ProjectId, Hour of the call's first span, TraceId, CallKey); a call whose
    first span moves to another hour gets a deleted row under its old key.

    The watermark is reset with it, so the summarizer writes the calls of the tasks it summarized before (the
    reads compute everything from the rollups until it has caught up: the same answers, slower for a while).
    """
    return _summary_table(
        t,
        CALL_SUMMARY_TABLE,
        """
    CallKey String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    Ts DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    ServiceName LowCardinality(String),
    HasRoot UInt8,
    RootService LowCardinality(String),
    RootName String CODEC(ZSTD(1)),
    Model LowCardinality(String),
    InputTokens UInt64 CODEC(T64, ZSTD(1)),
    OutputTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheReadTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheWriteTokens UInt64 CODEC(T64, ZSTD(1)),
    ReasoningTokens UInt64 CODEC(T64, ZSTD(1)),
    CostUsd Nullable(Float64) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),""",
        "CallKey",
    )


def _loop_summary_ddl(t: Target) -> list[str]:
    """One row per loop pattern of a trace (its longest run of each pattern, 2 or more), with what the loops read
    shows for it (collector/analytics_loops.py), written by the summarizer beside the task summaries under the same
    rules: a cache, recomputed whenever its trace gets new spans, read only for traces with no span ingested after
    the watermark, and only for traces wholly inside the read's window (``First``, ``Last``: the trace lookup's
    first and last span second). A row with an empty ``Pattern`` marks a trace of several services (``Services``),
    which a read of one service computes from the spans.

    What it saves: loops over a day grouped every tool span of the window by trace and compared them in arrays
    (~1.7 s at 10M spans); the read is now a filter of the summary rows, plus that work for the few traces not
    summarized (running, just touched, or crossing the window's edges).

    Key (ProjectId, Hour of the trace's first span, TraceId, Pattern); a row whose trace's first span moves to
    another hour, or whose pattern is gone, gets a deleted row under its old key. The watermark is reset with it,
    so the summarizer writes the loops of the traces it summarized before.
    """
    return _summary_table(
        t,
        LOOP_SUMMARY_TABLE,
        """
    Pattern LowCardinality(String),
    First DateTime,
    Last DateTime,
    ServiceName LowCardinality(String),
    Services UInt32,
    Name String CODEC(ZSTD(1)),
    Running UInt8,
    Repeats UInt32,
    Tool String CODEC(ZSTD(1)),
    ArgsHash String CODEC(ZSTD(1)),
    ErrorType String CODEC(ZSTD(1)),
    StartNs Int64,
    EndNs Int64,
    WastedToolCalls UInt32,
    WastedToolMs Float64,
    WastedLlmCalls UInt32,
    WastedTokens UInt64,
    WastedCostUsd Nullable(Float64),
    UnpricedLlmCalls UInt32,""",
        "Pattern",
    )


# a call's token-bomb site (service, task name, model) as stored on the call summary; reads compute it the same way
# for the calls not summarized yet
SITE_HASH = "cityHash64(RootService, RootName, Model)"


def _hash_columns_ddl(t: Target) -> list[str]:
    """64-bit hashes on the summaries, computed at insert:

    - ``TraceHash`` = cityHash64(TraceId) on the task and call summaries: the reads' "not touched since the
      watermark" check and drift's sample by trace id read 8 bytes a row instead of hashing the 32-character id
      (drift's sampled calls of a day at 9.9M spans: 209 -> 123 ms);
    - ``SiteHash`` = cityHash64(RootService, RootName, Model) on the call summary: a call's token-bomb site, so
      scoring a day's 1.7M calls reads numbers, and the strings of the few flagged ones only.

    The parts written before get them from the MATERIALIZE mutations; until then ClickHouse computes them on read,
    the same values.

    Also: the call summary's ids (TraceId, SpanId, CallKey) compressed with LZ4 instead of ZSTD: token bombs read
    them for a day's calls (the flagged ones are spread over every granule), and LZ4 decodes them in about half the
    time (cost anomalies 530-547 -> 478-514 ms at 9.9M spans), for twice the bytes of those three columns (199 MB
    against 101 MB for 4.95M calls, in a store of ~1.6 GB). Parts written before change codec as they
    merge."""
    columns = {
        TASK_SUMMARY_TABLE: ["TraceHash UInt64 MATERIALIZED cityHash64(TraceId) AFTER TraceId"],
        CALL_SUMMARY_TABLE: [
            "TraceHash UInt64 MATERIALIZED cityHash64(TraceId) AFTER TraceId",
            f"SiteHash UInt64 MATERIALIZED {SITE_HASH}",
        ],
    }
    out = []
    for name, cols in columns.items():
        for column in cols:
            out.append(f"ALTER TABLE {t.local(name)}{t.on_cluster()} ADD COLUMN IF NOT EXISTS {column}")
            if t.cluster:
                out.append(f"ALTER TABLE {name}{t.on_cluster()} ADD COLUMN IF NOT EXISTS {column}")
            out.append(f"ALTER TABLE {t.local(name)}{t.on_cluster()} MATERIALIZE COLUMN {column.split()[0]}")
    for column in ("TraceId", "SpanId", "CallKey"):
        table = t.local(CALL_SUMMARY_TABLE)
        out.append(f"ALTER TABLE {table}{t.on_cluster()} MODIFY COLUMN {column} String CODEC(LZ4)")
    return out


WIDE_PART_BYTES = 128 << 20


def _compact_parts_ddl(t: Target) -> list[str]:
    """The spans' parts are written Compact (all columns in one file) below 128 MiB uncompressed, Wide above (the
    default switches at 10 MiB). An insert of a 32 MB spool segment (~31k spans, ~18 MiB in the table) wrote a
    Wide part: a compressed stream and its buffer for each of the table's ~90 column files, and its first merges
    wrote Wide parts too, row by row (a vertical merge, column by column, starts at 131k rows). Compact, they write
    one stream; parts over 128 MiB (~200k spans) are past the vertical merge's threshold. Measured with
    bench/ingest.py (two runs each, interleaved): the embedded engine's own peak memory 722-747 -> 308-344 MiB,
    the collector's peak RSS 1,157-1,186 -> 973-1,112 MiB, spans/s unchanged (31-34k). Reads of the newest
    minutes read Compact parts; the hours and days behind them are Wide."""
    return [
        f"ALTER TABLE {t.local(SPANS_TABLE)}{t.on_cluster()} MODIFY SETTING min_bytes_for_wide_part = {WIDE_PART_BYTES}"
    ]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[Target], list[str]]


MIGRATIONS: list[Migration] = [
    Migration(1, "spans table (OTel exporter columns + agentwatch typed columns)", _spans_ddl),
    Migration(2, "trace id -> time range lookup", _trace_lookup_ddl),
    Migration(3, "api keys", _keys_ddl),
    Migration(4, "ingestion health per minute", _ingest_stats_ddl),
    Migration(5, "llm_calls rollup: one row per LLM call (max per field), view + backfill", _llm_calls_ddl),
    Migration(6, "task_rollup: one row per task per hour (idempotent aggregates), view + backfill", _task_rollup_ddl),
    Migration(7, "task_summary: one row per task, kept by the summarizer; spans' IngestedAt index", _task_summary_ddl),
    Migration(8, "call_summary: one row per LLM call with its task's name, kept by the summarizer", _call_summary_ddl),
    Migration(9, "loop_summary: each trace's longest loop of each pattern, kept by the summarizer", _loop_summary_ddl),
    Migration(10, "summaries: TraceHash and SiteHash (a trace's, a call site's hash); LZ4 call ids", _hash_columns_ddl),
    Migration(11, "spans: Compact parts below 128 MiB (inserts and first merges write one stream)", _compact_parts_ddl),
    Migration(20, "alert state and history", alert_schema.state_ddl),
    Migration(21, "alert notification log and delivery log", alert_schema.notification_ddl),
    Migration(22, "alert silences", alert_schema.silences_ddl),
    Migration(23, "alert evaluation lease", alert_schema.lease_ddl),
]


def render(target: Target = Target()) -> list[str]:
    """Every statement, in order, for review or for a DBA to run by hand."""
    return [sql for m in MIGRATIONS for sql in m.statements(target)]


def migrate(store: Store, *, ttl_days: int | None = None) -> list[int]:
    """Apply what is not applied yet; returns the versions applied now. Safe to run at every start."""
    store.command(
        "CREATE TABLE IF NOT EXISTS agentwatch_migrations "
        "(Version UInt32, Name String, AppliedAt DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY Version"
    )
    done = {r["Version"] for r in store.query("SELECT Version FROM agentwatch_migrations")}
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        log.info("applying migration %03d: %s", m.version, m.name)
        for sql in m.statements(Target()):
            store.command(sql)
        store.command(
            "INSERT INTO agentwatch_migrations (Version, Name) VALUES ({v:UInt32}, {n:String})",
            {"v": m.version, "n": m.name},
        )
        applied.append(m.version)
    if ttl_days:
        store.command(f"ALTER TABLE {SPANS_TABLE} MODIFY TTL toDateTime(Timestamp) + toIntervalDay({int(ttl_days)})")
        store.command(f"ALTER TABLE {TRACE_LOOKUP_TABLE} MODIFY TTL Start + toIntervalDay({int(ttl_days)})")
        for rollup in (LLM_CALLS_TABLE, TASK_ROLLUP_TABLE, TASK_SUMMARY_TABLE, CALL_SUMMARY_TABLE, LOOP_SUMMARY_TABLE):
            store.command(f"ALTER TABLE {rollup} MODIFY TTL Hour + toIntervalDay({int(ttl_days)})")
    return applied
