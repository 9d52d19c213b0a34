"""The store adapter's own behaviour: what it sets on a connection, which servers it accepts, how it writes the spans
and what it says of its memory."""

from __future__ import annotations

import pytest

from agentwatch.collector.migrations import SPANS_TABLE, WIDE_PART_BYTES, migrate
from agentwatch.collector.store import MATERIALIZED_CTE_SETTING, ChdbStore, StoreError, server_settings


def test_embedded_reads_evaluate_a_materialized_cte_once(tmp_path):
    store = ChdbStore(tmp_path)
    try:
        # rand64() differs per evaluation: a self-join matches its rows only if the CTE ran once
        sql = (
            "WITH a AS {}(SELECT number AS n, rand64() AS r FROM numbers(10)) "
            "SELECT count() AS c FROM a AS x INNER JOIN a AS y ON x.n = y.n WHERE x.r = y.r"
        )
        assert store.query(sql.format("MATERIALIZED "))[0]["c"] == 10
        assert store.query(sql.format(""))[0]["c"] == 0  # inlined: each reference re-runs (the test can tell)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("version", "settings"),
    [("26.9.2.1", {MATERIALIZED_CTE_SETTING: 1}), ("27.1.1", {MATERIALIZED_CTE_SETTING: 1}), ("26.3.5.12", {})],
)
def test_server_settings_by_version(version, settings):
    assert server_settings(version, "ch:8123") == settings


@pytest.mark.parametrize("version", ["25.8.3.1", "18.16.1"])
def test_a_server_too_old_for_the_queries_is_a_clear_error(version):
    with pytest.raises(StoreError, match=rf"ClickHouse at ch:8123 is {version}; agentwatch needs 26.3 or newer"):
        server_settings(version, "ch:8123")


def test_an_unreadable_server_version_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot read the version 'weird' of ClickHouse at ch:8123"):
        server_settings("weird", "ch:8123")


def _insert_wide_enough(store: ChdbStore, rows: int = 30_000) -> None:
    """~18 MiB of span rows in one insert (an insert of a 32 MB spool segment is about that): over the engine's
    default 10 MiB threshold for a Wide part, under migration 11's 128 MiB."""
    store.command(
        f"INSERT INTO {SPANS_TABLE} (Timestamp, TraceId, SpanId, ServiceName, SpanName, SpanAttributes)"
        " SELECT now64(9), lower(hex(cityHash64(number, 't'))), lower(hex(cityHash64(number))), 'svc', 'chat',"
        f" map('gen_ai.input.messages', repeat(toString(number), 120)) FROM numbers({rows})"
    )


def _part_types(store: ChdbStore) -> list[str]:
    sql = f"SELECT part_type FROM system.parts WHERE table = '{SPANS_TABLE}' AND active ORDER BY name"
    return [r["part_type"] for r in store.query(sql)]


def test_spans_are_written_as_compact_parts_up_to_128_mib(tmp_path):
    store = ChdbStore(tmp_path)
    try:
        migrate(store)
        store.command(f"SYSTEM STOP MERGES {SPANS_TABLE}")
        _insert_wide_enough(store)
        size = store.query(
            f"SELECT sum(data_uncompressed_bytes) AS b FROM system.parts WHERE table = '{SPANS_TABLE}' AND active"
        )[0]["b"]
        assert 10 << 20 < size < WIDE_PART_BYTES  # the case migration 11 changes
        assert _part_types(store) == ["Compact"]
        # the engine's default, as before migration 11: the same insert writes a Wide part (a file per column)
        store.command(f"ALTER TABLE {SPANS_TABLE} MODIFY SETTING min_bytes_for_wide_part = {10 << 20}")
        _insert_wide_enough(store)
        assert _part_types(store) == ["Compact", "Wide"]
    finally:
        store.close()


def test_the_embedded_store_reports_its_memory(tmp_path):
    store = ChdbStore(tmp_path)
    try:
        migrate(store)
        assert store.memory() > 0
    finally:
        store.close()
