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

from agentwatch.collector.normalize import typed_columns
from agentwatch.collector.store import Store

log = logging.getLogger(__name__)

SPANS_TABLE = "otel_traces"
TRACE_LOOKUP_TABLE = "otel_traces_trace_id_ts"
KEYS_TABLE = "api_keys"
INGEST_STATS_TABLE = "ingest_stats"

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
    return applied
