"""The alert engine's tables (DDL for ``collector/migrations.py``, versions 20-22).

Small tables: alert state and the notification log are ReplacingMergeTree keyed by identity (read with
FINAL: the newest version wins); history and the delivery log are append-only with a TTL. On a cluster
they are Replicated (one shard: every collector sees the same state). When several collectors share the store,
the one holding the lease (``alert_lease``) evaluates and pages; the others stand by and take over when it
lapses.
"""

from __future__ import annotations

from typing import Any

STATE_TABLE = "alert_state"
EVENTS_TABLE = "alert_events"
NFLOG_TABLE = "alert_nflog"
DELIVERIES_TABLE = "alert_deliveries"
SILENCES_TABLE = "alert_silences"
LEASE_TABLE = "alert_lease"


def _oc(t: Any) -> str:
    return t.on_cluster() if t is not None else ""


def _engine(t: Any, name: str, table: str, args: str = "") -> str:
    return t.engine(name, table, args) if t is not None else f"{name}({args})"


def state_ddl(t: Any = None) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE}{_oc(t)} (
    ProjectId LowCardinality(String),
    Fingerprint String,
    Rule String,
    Status LowCardinality(String),
    Body String CODEC(ZSTD(1)),
    UpdatedAt DateTime64(3) DEFAULT now64(3),
    Version UInt64
) ENGINE = {_engine(t, "ReplacingMergeTree", STATE_TABLE, "Version")}
ORDER BY (ProjectId, Fingerprint)""",
        f"""CREATE TABLE IF NOT EXISTS {EVENTS_TABLE}{_oc(t)} (
    Time DateTime64(3),
    ProjectId LowCardinality(String),
    Fingerprint String,
    Rule String,
    Event LowCardinality(String),
    Severity LowCardinality(String),
    Value Nullable(Float64),
    Labels String CODEC(ZSTD(1)),
    Summary String CODEC(ZSTD(1))
) ENGINE = {_engine(t, "MergeTree", EVENTS_TABLE)}
PARTITION BY toYYYYMM(Time)
ORDER BY (ProjectId, Time)
TTL toDateTime(Time) + toIntervalDay(180)
SETTINGS ttl_only_drop_parts = 1""",
    ]


def notification_ddl(t: Any = None) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {NFLOG_TABLE}{_oc(t)} (
    ProjectId LowCardinality(String),
    Channel LowCardinality(String),
    GroupKey String,
    Firing Array(String),
    SentAt Float64,
    Version UInt64
) ENGINE = {_engine(t, "ReplacingMergeTree", NFLOG_TABLE, "Version")}
ORDER BY (ProjectId, Channel, GroupKey)""",
        f"""CREATE TABLE IF NOT EXISTS {DELIVERIES_TABLE}{_oc(t)} (
    Time DateTime64(3),
    ProjectId LowCardinality(String),
    Channel LowCardinality(String),
    GroupKey String,
    Kind LowCardinality(String),
    Attempt UInt16,
    Outcome LowCardinality(String),
    HttpStatus UInt16,
    Error String,
    DurationMs Float64,
    Alerts UInt32
) ENGINE = {_engine(t, "MergeTree", DELIVERIES_TABLE)}
PARTITION BY toYYYYMM(Time)
ORDER BY (ProjectId, Time)
TTL toDateTime(Time) + toIntervalDay(30)
SETTINGS ttl_only_drop_parts = 1""",
    ]


def silences_ddl(t: Any = None) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {SILENCES_TABLE}{_oc(t)} (
    ProjectId LowCardinality(String),
    Id String,
    Matchers Array(String),
    StartsAt Float64,
    EndsAt Float64,
    CreatedBy String,
    Comment String,
    Version UInt64
) ENGINE = {_engine(t, "ReplacingMergeTree", SILENCES_TABLE, "Version")}
ORDER BY (ProjectId, Id)"""
    ]


def lease_ddl(t: Any = None) -> list[str]:
    """Which collector evaluates (one at a time when several share the store): the newest row wins."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {LEASE_TABLE}{_oc(t)} (
    Name LowCardinality(String),
    Holder String,
    ExpiresAt Float64,
    Version UInt64
) ENGINE = {_engine(t, "ReplacingMergeTree", LEASE_TABLE, "Version")}
ORDER BY Name"""
    ]


# (version, name, statements) for collector/migrations.py
MIGRATIONS = [
    (20, "alert state and history", state_ddl),
    (21, "alert notification log and delivery log", notification_ddl),
    (22, "alert silences", silences_ddl),
    (23, "alert evaluation lease", lease_ddl),
]


def ensure(store: Any) -> None:
    """Create the tables if the numbered migrations have not (idempotent: the same DDL, IF NOT EXISTS)."""
    for _, _, ddl in MIGRATIONS:
        for sql in ddl(None):
            store.command(sql)
