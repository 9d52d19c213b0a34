"""The store adapter's own behaviour: what it sets on a connection, and which servers it accepts."""

from __future__ import annotations

import pytest

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
