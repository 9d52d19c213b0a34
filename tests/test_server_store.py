"""Server mode: the same migrations, inserts and queries through clickhouse-connect against a real
ClickHouse server. Runs when AGENTWATCH_TEST_CLICKHOUSE_URL points at one (e.g.
http://default:@127.0.0.1:8123/agentwatch_test); this machine has no server recent enough, so CI here
exercises the identical SQL through chDB in the other tests."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from otlp_payloads import Recorder, agent_run

from agentwatch.collector import queries
from agentwatch.collector.auth import Keys, Role
from agentwatch.collector.ingest import Ingestor, Outcome
from agentwatch.collector.metrics import IngestStats, Metrics
from agentwatch.collector.migrations import migrate
from agentwatch.collector.otlp import Limits
from agentwatch.collector.pricing import Pricer
from agentwatch.collector.spool import Spool
from agentwatch.collector.store import ClickHouseServerStore
from agentwatch.collector.writer import Writer

URL = os.environ.get("AGENTWATCH_TEST_CLICKHOUSE_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="set AGENTWATCH_TEST_CLICKHOUSE_URL to a ClickHouse server")


def test_server_store_end_to_end(tmp_path):
    base = URL.rsplit("/", 1)[0] if URL.count("/") > 2 else URL
    store = ClickHouseServerStore(f"{base}/aw_test_{uuid.uuid4().hex[:8]}")
    try:
        migrate(store)
        keys = Keys(store)
        key = keys.create("srv", Role.READ)
        assert keys.authenticate(f"Bearer {key}").project == "srv"
        metrics, stats = Metrics(), IngestStats()
        spool = Spool(tmp_path / "spool")
        ing = Ingestor(spool=spool, pricer=Pricer(), metrics=metrics, stats=stats, limits=Limits(),
                       max_body_bytes=1 << 20, max_inflight_bytes=1 << 24)  # fmt: skip
        rec = Recorder("srv-svc")
        tid = agent_run(rec, tools=[("t", "{}")])
        body = rec.body()
        for _ in range(2):  # re-sent: counts once
            assert ing.process(body, content_type="application/x-protobuf", encoding="", project="srv").outcome \
                is Outcome.OK
        Writer(store, spool, metrics, stats).drain_once()
        now = int(time.time() * 1000)
        scope = queries.Scope("srv", now - 3600_000, now + 60_000)
        ov = queries.overview(store, scope)
        assert (ov["tasks"], ov["spans"], ov["llm_calls"], ov["input_tokens"]) == (1, 3, 1, 1000)
        assert queries.tasks(store, scope, queries.TaskFilter())["items"][0]["trace_id"] == tid
        assert len(queries.trace(store, "srv", tid)["spans"]) == 3
    finally:
        store.command(f"DROP DATABASE IF EXISTS `{store.database}`")
        store.close()
