"""The per-task and per-call rollups (migrations 5 and 6: ``task_rollup``, ``llm_calls``) against a reference
computed in Python from the raw spans of a generated fleet (bench/fleet.py), with the cases that break naive
rollups: spans re-sent in another insert (exporter retry), one LLM call reported by two spans with different
token values (max per field, counted once), a trace's spans spread over many insert blocks, and a task still
running (its root not arrived yet), then completed."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import random
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fleet as F  # noqa: E402

from agentwatch.collector import (  # noqa: E402
    analytics_anomalies,
    analytics_drift,
    analytics_loops,
    analytics_stats,
    queries,
    rollups,
    summary,
)
from agentwatch.collector.migrations import (  # noqa: E402
    CALL_SUMMARY_TABLE,
    INSERT_COLUMNS,
    LLM_CALLS_TABLE,
    SPANS_TABLE,
    SUMMARY_WATERMARK_TABLE,
    TASK_ROLLUP_TABLE,
    TASK_SUMMARY_TABLE,
    Target,
    migrate,
    render,
)
from agentwatch.collector.store import ChdbStore  # noqa: E402
from agentwatch.collector.writer import to_ipc  # noqa: E402

CFG = F.FleetConfig(seed=11, baseline_hours=24, current_hours=6, baseline_tasks=150, current_tasks=80)
SCOPE = queries.Scope(CFG.project, CFG.current_start_ms, CFG.current_end_ms)
KIND = {"chat": "llm", "execute_tool": "tool", "invoke_agent": "task"}


def _rows(cols: dict[str, list]) -> list[dict]:
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def _cols(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in INSERT_COLUMNS}


def _second_spans(rows: list[dict], rng: random.Random) -> list[dict]:
    """For a third of the LLM calls, a second span of the same call (same response id), nested, with other token
    values and sometimes no cost: the call must count once, with the max of each field."""
    out = []
    for r in rows:
        attrs = dict(r["SpanAttributes"])
        if attrs.get("gen_ai.operation.name") != "chat" or rng.random() > 0.33:
            continue
        a2 = dict(attrs)
        a2["gen_ai.usage.input_tokens"] = str(max(0, int(attrs["gen_ai.usage.input_tokens"]) + rng.randint(-50, 50)))
        a2["gen_ai.usage.output_tokens"] = str(int(attrs["gen_ai.usage.output_tokens"]) + rng.randint(0, 20))
        cost = None if rng.random() < 0.5 else (r["CostUsd"] or 0) * rng.uniform(0.5, 1.5)
        out.append({**r, "SpanId": rng.randbytes(8).hex(), "ParentSpanId": r["SpanId"],
                    "Timestamp": r["Timestamp"] + 1000, "SpanAttributes": list(a2.items()), "CostUsd": cost,
                    "ScopeName": "client-sdk"})  # fmt: skip
    return out


def _median_exact(values) -> float:
    """ClickHouse's ``medianExact``: the sorted values' element at n // 2 (the upper middle for an even n)."""
    return float(np.sort(np.asarray(values, dtype=float))[len(values) // 2])


def reference(rows: list[dict], lo_ms: int, hi_ms: int, service: str = "") -> dict[str, dict]:
    """Tasks whose root starts in [lo, hi), from deduplicated spans: one call per response id, max per field."""
    spans = {(r["TraceId"], r["SpanId"]): r for r in rows}
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for r in spans.values():
        by_trace[r["TraceId"]].append(r)
    out = {}
    for tid, ss in by_trace.items():
        roots = [s for s in ss if not s["ParentSpanId"]]
        if not roots:
            continue
        root = roots[0]
        if not lo_ms * 1_000_000 <= root["Timestamp"] < hi_ms * 1_000_000 or service not in ("", root["ServiceName"]):
            continue
        calls: dict[str, list] = {}
        tools = []
        errors = 0
        for s in ss:
            a = dict(s["SpanAttributes"])
            kind = KIND[a["gen_ai.operation.name"]]
            errors += bool(a.get("error.type"))
            if kind == "llm":
                c = calls.setdefault(a.get("gen_ai.response.id") or s["SpanId"], [0, 0, None, ""])
                c[0] = max(c[0], int(a["gen_ai.usage.input_tokens"]))
                c[1] = max(c[1], int(a["gen_ai.usage.output_tokens"]))
                if s["CostUsd"] is not None:
                    c[2] = max(c[2] or 0.0, s["CostUsd"])
                c[3] = max(c[3], a["gen_ai.response.model"])
            elif kind == "tool":
                tools.append((s["Timestamp"], f"{a['gen_ai.tool.name']}#{a['agentwatch.tool.args_hash']}"))
        run = best = 0
        prev = None
        for _, k in sorted(tools):
            run = run + 1 if k == prev else 1
            best, prev = max(best, run), k
        ra = dict(root["SpanAttributes"])
        out[tid] = {
            "service": root["ServiceName"], "name": ra["agentwatch.task.name"],
            "outcome": ra["agentwatch.task.outcome"],
            "duration_ms": round(root["Duration"] / 1e6, 3), "steps": len(ss), "tool_calls": len(tools),
            "errors": errors, "llm_calls": len(calls), "input_tokens": sum(c[0] for c in calls.values()),
            "output_tokens": sum(c[1] for c in calls.values()),
            "cost_usd": sum(c[2] for c in calls.values() if c[2] is not None),
            "unpriced_llm_calls": sum(1 for c in calls.values() if c[2] is None),
            "models": sorted({c[3] for c in calls.values()}), "max_repeats": best, "loop": best >= 3,
        }  # fmt: skip
    return out


def _api_tasks(store, scope=SCOPE) -> dict[str, dict]:
    got = queries.tasks(store, scope, queries.TaskFilter(limit=1000))
    assert got["total"] <= 1000
    return {t["trace_id"]: t for t in got["items"]}


def _check_tasks(store, rows, scope=SCOPE) -> None:
    want = reference(rows, scope.start_ms, scope.end_ms, scope.service)
    got = _api_tasks(store, scope)
    assert set(got) == set(want)
    for tid, w in want.items():
        g = got[tid]
        for k, v in w.items():
            if k == "cost_usd":
                assert g[k] == pytest.approx(v, abs=1e-9), (tid, k)
            else:
                assert g[k] == v, (tid, k, g[k], v)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    store = ChdbStore(tmp_path_factory.mktemp("rollups"))
    migrate(store)
    fleet = F.generate(CFG)
    rng = random.Random(5)
    rows = _rows(fleet.columns)
    rows += _second_spans(rows, rng)
    # hold back one finished task's root: it is inserted mid-test (the task is "running" until then)
    held = next(r for r in rows if not r["ParentSpanId"] and r["TraceId"] in fleet.truth.current_tasks
                and r["TraceId"] not in fleet.truth.loops)  # fmt: skip
    rest = [r for r in rows if r is not held]
    rng.shuffle(rest)  # a trace's spans land in many insert blocks
    resent = rng.sample(rest, len(rest) // 5)  # exporter retries: the same spans again, in later inserts
    for i in range(0, len(rest), 1500):
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(rest[i : i + 1500])))
    for i in range(0, len(resent), 700):
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(resent[i : i + 700])))
    yield store, fleet, rest, held
    store.close()


def test_rollups_are_filled_by_the_views_and_each_call_is_one_row(env):
    store, _, rest, _ = env
    raw = store.query(f"SELECT uniqExact(TraceId, CallKey) AS n FROM {SPANS_TABLE} WHERE Kind = 'llm'")[0]["n"]
    rolled = store.query(f"SELECT count() AS n FROM (SELECT DISTINCT TraceId, CallKey FROM {LLM_CALLS_TABLE})")[0]["n"]
    assert rolled == raw
    traces = store.query(f"SELECT uniqExact(TraceId) AS n FROM {TASK_ROLLUP_TABLE}")[0]["n"]
    assert traces == len({r["TraceId"] for r in rest})


def test_tasks_equal_the_raw_span_reference_while_a_task_runs_and_after_its_root_arrives(env):
    store, _, rest, held = env
    _check_tasks(store, rest)
    assert held["TraceId"] not in _api_tasks(store)  # running: no root yet, not a task
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([held])))
    _check_tasks(store, [*rest, held])
    assert held["TraceId"] in _api_tasks(store)
    # per service too
    _check_tasks(store, [*rest, held], queries.Scope(CFG.project, CFG.current_start_ms, CFG.current_end_ms,
                                                      "svc-billing"))  # fmt: skip


def test_overview_unit_economics_and_anomaly_inputs_equal_the_reference(env):
    store, fleet, rest, held = env
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([held])))  # again if an earlier test did: no change
    rows = [*rest, held]
    want = reference(rows, SCOPE.start_ms, SCOPE.end_ms)
    ov = queries.overview(store, SCOPE)
    assert ov["tasks"] == len(want)
    econ = analytics_stats.unit_economics(store, SCOPE)
    assert sum(i["tasks"] for i in econ["items"]) == len(want)
    assert sum(i["llm_calls"] for i in econ["items"]) == sum(w["llm_calls"] for w in want.values())
    assert sum(i["input_tokens"] for i in econ["items"]) == sum(w["input_tokens"] for w in want.values())
    # the anomaly query's per-task inputs: the window's tasks ...
    base_ms = SCOPE.start_ms - 24 * 3_600_000
    params = {**SCOPE.params(), "base_ms": base_ms, "bend_ms": SCOPE.start_ms, "base": "[]", "min_samples": 20,
              "wm_ms": summary.watermark(store)}  # fmt: skip
    head = analytics_anomalies.TASK_ANOMALIES_SQL.rsplit("SELECT 'task' AS kind", 1)[0]
    got = store.query(f"{head} SELECT TraceId, cost, i, llm_calls AS n FROM roots WHERE n > 0", params)
    got = {r["TraceId"]: r for r in got}
    assert set(got) == {t for t, w in want.items() if w["llm_calls"]}
    for tid, r in got.items():
        assert (r["i"], r["n"]) == (want[tid]["input_tokens"], want[tid]["llm_calls"])
        assert (r["cost"] or 0) == pytest.approx(want[tid]["cost_usd"], rel=1e-9, abs=1e-12)
    # ... and the cached baseline: n, median and MAD of log cost per (service, task name) over the baseline's tasks
    base = reference(rows, base_ms, SCOPE.start_ms)
    by_key = defaultdict(list)
    for w in base.values():
        if w["cost_usd"] > 0:
            by_key[(w["service"], w["name"])].append(math.log(w["cost_usd"]))
    stats = {(r["service"], r["name"]): r for r in store.query(analytics_anomalies.BASELINE_SQL, params)
             if r["kind"] == "task"}  # fmt: skip
    assert set(stats) == set(by_key)
    for key, xs in by_key.items():
        med = _median_exact(xs)
        assert stats[key]["n"] == len(xs)
        assert stats[key]["med"] == pytest.approx(med, rel=1e-9)
        assert stats[key]["mad"] == pytest.approx(_median_exact(np.abs(np.array(xs) - med)), rel=1e-9, abs=1e-12)
    # the planted token bombs in the window are found (one call, its first span)
    an = analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24)
    bombs = {(b["trace_id"], b["span_id"]) for b in an["token_bombs"]}
    planted = {(t, s) for t, s in fleet.truth.bombs.items() if t in fleet.truth.current_tasks}
    assert planted <= bombs


def _drift_samples_equal_the_reference(store, rest, held) -> None:
    """All the tasks, then half of them by the trace id's hash, equal the reference's: the summary rows (sampled by
    the stored TraceHash) and the dirty tasks (by cityHash64(TraceId), computed) are sampled alike."""
    base_ms = SCOPE.start_ms - 24 * 3_600_000
    params = {"project": SCOPE.project, "service": "", "max_samples": 200_000,  # fewer tasks: all kept
              "wm_ms": summary.watermark(store)}  # fmt: skip
    bucket = {r["TraceId"]: r["b"] for r in store.query(
        f"SELECT DISTINCT TraceId, cityHash64(TraceId) % 1000000 AS b FROM {SPANS_TABLE}")}  # fmt: skip
    for lo, hi in ((base_ms, SCOPE.start_ms), (SCOPE.start_ms, SCOPE.end_ms)):
        ref = reference([*rest, held], lo, hi)
        assert analytics_drift.read_side(store, params, lo, hi).keep == 1_000_000
        n_calls = {}
        for keep in (1_000_000, 500_000):
            rows = store.query(analytics_drift.TASKS_SAMPLED_SQL, {**params, "lo_ms": lo, "hi_ms": hi, "keep": keep})
            kept = [w for t, w in ref.items() if bucket[t] < keep]
            assert 0 < len(kept) and (keep == 1_000_000 or len(kept) < len(ref))
            got = sorted((r["service"], r["tokens_per_task"], r["steps_per_task"], round(r["cost_per_task"], 9))
                         for r in rows)  # fmt: skip
            want = sorted((w["service"], w["input_tokens"] + w["output_tokens"], w["steps"], round(w["cost_usd"], 9))
                          for w in kept)  # fmt: skip
            assert got == want
            # the calls' sample (summary rows by TraceHash, computed calls by cityHash64) against the rollups' calls
            q = {**params, "lo_ms": lo, "hi_ms": hi, "keep_calls": keep}
            got_calls = sorted((r["service"], r["output_tokens"]) for r in store.query(analytics_drift.CALLS_SQL, q))
            ref_calls = sorted((r["service"], r["o"]) for r in store.query(
                f"SELECT service, o FROM ({rollups.calls('ProjectId = {project:String}')})"
                f" WHERE ts >= {rollups.ms('lo_ms')} AND ts < {rollups.ms('hi_ms')}"
                " AND cityHash64(TraceId) % 1000000 < {keep_calls:UInt32}", q))  # fmt: skip
            assert ref_calls and got_calls == ref_calls
            n_calls[keep] = len(ref_calls)
        assert n_calls[500_000] < n_calls[1_000_000]


def test_drift_task_samples_equal_the_reference(env):
    store, _, rest, held = env
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([held])))  # again if an earlier test did: no change
    _drift_samples_equal_the_reference(store, rest, held)


def test_reinserting_everything_and_merging_changes_nothing(env):
    store, _, rest, held = env
    before = (_api_tasks(store), queries.overview(store, SCOPE),
              analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24))  # fmt: skip
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([*rest, held])))
    for table in (SPANS_TABLE, LLM_CALLS_TABLE, TASK_ROLLUP_TABLE):
        store.command(f"OPTIMIZE TABLE {table} FINAL")
    after = (_api_tasks(store), queries.overview(store, SCOPE),
             analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24))  # fmt: skip
    assert after == before


def test_backfill_builds_the_same_rollups_from_existing_spans(env):
    """Migrations 5 and 6 on a store that already holds spans: the backfill gives the same answers."""
    main, _, rest, held = env
    store = ChdbStore(main.path.parent, database="backfill")  # chDB: one data path per process
    try:
        from agentwatch.collector import migrations as M

        early = [m for m in M.MIGRATIONS if m.version < 5]
        for m in early:
            for sql in m.statements(Target()):
                store.command(sql)
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([*rest, held])))
        store.command(
            "CREATE TABLE IF NOT EXISTS agentwatch_migrations "
            "(Version UInt32, Name String, AppliedAt DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY Version"
        )
        for m in early:
            store.command(f"INSERT INTO agentwatch_migrations (Version, Name) VALUES ({m.version}, 'x')")
        assert {5, 6} <= set(migrate(store))
        _check_tasks(store, [*rest, held])
    finally:
        store.close()


@contextlib.contextmanager
def _store_of_an_earlier_release(main: ChdbStore, version: int, rows: list[dict]):
    """A store of its own (database ``upgrade<version>``) as a collector of an earlier release left it: migrations up
    to ``version`` applied, ``rows`` stored."""
    store = ChdbStore(main.path.parent, database=f"upgrade{version}")
    try:
        _migrate_to(store, version)
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(rows)))
        yield store
    finally:
        store.close()


def _migrate_to(store: ChdbStore, version: int) -> None:
    """The store as a collector of an earlier release left it: migrations up to ``version`` applied."""
    from agentwatch.collector import migrations as M

    store.command(
        "CREATE TABLE IF NOT EXISTS agentwatch_migrations "
        "(Version UInt32, Name String, AppliedAt DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY Version"
    )
    for m in (m for m in M.MIGRATIONS if m.version <= version):
        for sql in m.statements(Target()):
            store.command(sql)
        store.command(f"INSERT INTO agentwatch_migrations (Version, Name) VALUES ({m.version}, 'x')")


def test_upgrading_a_summarized_store_resets_the_watermark_so_calls_are_summarized_too(env):
    """Migration 8 on a store the summarizer of migration 7 kept: its watermark covered tasks, not calls."""
    main, _, rest, held = env
    with _store_of_an_earlier_release(main, 7, [*rest, held]) as store:
        store.command(f"INSERT INTO {SUMMARY_WATERMARK_TABLE} (Watermark) VALUES (now64(3))")
        assert summary.watermark(store) > 0
        assert 8 in migrate(store)
        assert summary.watermark(store) == 0  # every read computes from the rollups until the summarizer caught up
        computed = queries.overview(store, SCOPE)
        summary.Summarizer(store, lag=0.0, chunk=3600).catch_up()
        assert queries.overview(store, SCOPE) == computed and computed["llm_calls"] > 0
        n = store.query(f"SELECT count() AS n FROM {CALL_SUMMARY_TABLE} FINAL")[0]["n"]
        raw = f"SELECT uniqExact(TraceId, CallKey) AS n FROM {SPANS_TABLE} WHERE Kind = 'llm'"
        assert n == store.query(raw)[0]["n"]


def test_upgrade_to_migration_10_hashes_the_summaries_written_before(env):
    """The hashes of the rows written before the migration equal what a read computes for an unsummarized call."""
    main, _, rest, held = env
    with _store_of_an_earlier_release(main, 9, [*rest, held]) as store:
        summary.Summarizer(store, lag=0.0).catch_up()
        assert migrate(store)[0] == 10
        for table, same in ((TASK_SUMMARY_TABLE, "TraceHash = cityHash64(TraceId)"),
                            (CALL_SUMMARY_TABLE, "TraceHash = cityHash64(TraceId) AND SiteHash = cityHash64("
                                                 "toString(RootService), RootName, toString(Model))")):  # fmt: skip
            rows = store.query(f"SELECT count() AS n, countIf({same}) AS ok FROM {table}")
            assert rows[0]["n"] > 0 and rows[0]["ok"] == rows[0]["n"]
        before = analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24)
        assert before["token_bombs"] and before["items"]
        store.command(f"TRUNCATE TABLE {SUMMARY_WATERMARK_TABLE}")  # every read computes from the rollups
        assert analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24) == before
        _drift_samples_equal_the_reference(store, rest, held)


def test_cluster_render_reads_the_local_spans_table():
    sql = "\n".join(render(Target("c1")))
    assert f"TO {LLM_CALLS_TABLE}_local" in sql and f"TO {TASK_ROLLUP_TABLE}_local" in sql
    assert "FROM otel_traces_local" in sql
    assert f"CREATE TABLE IF NOT EXISTS {TASK_ROLLUP_TABLE} ON CLUSTER `c1` AS {TASK_ROLLUP_TABLE}_local" in sql


def test_the_cost_baseline_is_reused_until_new_rows_land_in_its_hours(env):
    # a project of its own in the module's store (one chDB store a process): the other tests' data are untouched
    store = env[0]
    cfg = F.FleetConfig(
        seed=3, project="cache", baseline_hours=24, current_hours=6, baseline_tasks=60, current_tasks=30
    )
    F.generate(cfg).insert(store)
    scope = queries.Scope(cfg.project, cfg.current_start_ms, cfg.current_end_ms)
    sent: list[tuple[str, dict]] = []
    query = store.query
    store.query = lambda sql, params=None: (sent.append((sql, params)), query(sql, params))[1]
    try:
        _check_baseline_cache(store, cfg, scope, sent)
    finally:
        del store.query  # the instance attribute: the class's method again


def _check_baseline_cache(store, cfg, scope, sent) -> None:
    def run() -> tuple[dict, dict[tuple, int]]:
        before = len(sent)
        out = analytics_anomalies.cost_anomalies(store, scope, baseline_hours=24)
        base = next(p["base"] for sql, p in sent[before:] if sql == analytics_anomalies.TASK_ANOMALIES_SQL)
        return out, {tuple(b[:4]): b[4] for b in json.loads(base)}

    first, n1 = run()
    again, n2 = run()
    assert again == first and n2 == n1
    assert sum(sql == analytics_anomalies.BASELINE_SQL for sql, _ in sent) == 1  # the second call reused it
    assert n1[("task", "svc-support", "support", "")] >= 20
    # more tasks in the baseline's hours (another fleet, other trace ids): computed again, with them
    F.generate(dataclasses.replace(cfg, seed=4, current_tasks=0)).insert(store)
    _, n3 = run()
    assert sum(sql == analytics_anomalies.BASELINE_SQL for sql, _ in sent) == 2
    assert all(n3[k] > n for k, n in n1.items() if k[0] != "spike")


def test_the_drift_baseline_is_read_once_and_again_when_its_hours_change(env):
    store = env[0]
    cfg = F.FleetConfig(seed=6, project="dcache", baseline_hours=24, current_hours=6, baseline_tasks=60,
                        current_tasks=45)  # fmt: skip
    F.generate(cfg).insert(store)
    scope = queries.Scope(cfg.project, cfg.current_start_ms, cfg.current_end_ms)
    base_ms = cfg.current_start_ms - 24 * 3_600_000
    sides: list[int] = []  # the lo_ms of each side read
    query_arrow = store.query_arrow

    def spy(sql, params=None):
        if sql == analytics_drift.TASKS_SAMPLED_SQL:
            sides.append(params["lo_ms"])
        return query_arrow(sql, params)

    store.query_arrow = spy
    try:
        first = analytics_drift.drift(store, scope, baseline_hours=24)
        assert sides == [base_ms, scope.start_ms]
        assert analytics_drift.drift(store, scope, baseline_hours=24) == first
        assert sides == [base_ms, scope.start_ms, scope.start_ms]  # the window only
        assert first["baseline"] == {"from": queries.iso(base_ms * 10**6), "to": queries.iso(scope.start_ms * 10**6)}
        n_before = {i["metric"]: i["baseline_n"] for i in first["items"] if i["service"] == "svc-support"}
        # more tasks in the baseline's hours: read again, with them
        F.generate(dataclasses.replace(cfg, seed=7, current_tasks=0)).insert(store)
        again = analytics_drift.drift(store, scope, baseline_hours=24)
        assert sides[3:] == [base_ms, scope.start_ms]
        n_after = {i["metric"]: i["baseline_n"] for i in again["items"] if i["service"] == "svc-support"}
        assert n_after["tokens_per_task"] > n_before["tokens_per_task"]
    finally:
        del store.query_arrow


def test_spend_spikes_equal_hourly_spend_computed_over_the_spans(env):
    """Every window hour at or above its service's median (z 0, ratio 1): the same hours, costs and scores as the
    hourly spend of the deduplicated calls read from the spans, against the 24 whole hours before the window."""
    store = env[0]
    base_ms = SCOPE.start_ms - 24 * 3_600_000
    per_hour = store.query(
        "SELECT service, toUnixTimestamp(toStartOfHour(ts)) AS hour, sum(ifNull(c, 0)) AS cost FROM ("
        f"  SELECT TraceId, CallKey, any(ServiceName) AS service, min(Timestamp) AS ts, max(CostUsd) AS c"
        f"  FROM {SPANS_TABLE} FINAL WHERE ProjectId = {{p:String}} AND Kind = 'llm' GROUP BY TraceId, CallKey"
        ") WHERE ts >= fromUnixTimestamp64Milli({lo:Int64}) AND ts < fromUnixTimestamp64Milli({hi:Int64})"
        " GROUP BY service, hour",
        {"p": SCOPE.project, "lo": base_ms, "hi": SCOPE.end_ms},
    )
    want = {}
    for service in {r["service"] for r in per_hour}:
        base = np.array([r["cost"] for r in per_hour if r["service"] == service and r["hour"] * 1000 < SCOPE.start_ms])
        if len(base) < 24:
            continue
        med = _median_exact(base)
        spread = max(1.4826 * _median_exact(np.abs(base - med)), 0.05 * med, 1e-9)
        for r in per_hour:
            if r["service"] == service and r["hour"] * 1000 >= SCOPE.start_ms and r["cost"] >= med:
                want[(service, r["hour"])] = (r["cost"], (r["cost"] - med) / spread)
    assert want  # the window has hours at or above the median
    got = analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24, spike_z=0, spike_ratio=1)
    spikes = {(s["service"], s["hour"]): s for s in got["spend_spikes"]}
    assert set(spikes) == {(svc, queries.iso(h * 1_000_000_000)) for svc, h in want}
    for (svc, h), (cost, score) in want.items():
        s = spikes[(svc, queries.iso(h * 1_000_000_000))]
        assert s["cost_usd"] == pytest.approx(cost, abs=1e-9) and s["score"] == pytest.approx(score, abs=1e-3)
        assert s["baseline_hours"] == 24


# --- per-task summaries (migration 7, collector/summary.py) -------------------------------------------------------
def _loops(store) -> list:
    """Loops as every read asks for them: a window whose edges cut tasks, one service (each fleet service), another
    threshold and pattern, a page further on."""
    one = dataclasses.replace(SCOPE, service=sorted(CFG.services)[0])
    cut = dataclasses.replace(SCOPE, start_ms=SCOPE.start_ms + 1_234_567, end_ms=SCOPE.end_ms - 7_654_321)
    loops = analytics_loops.loops
    return [loops(store, SCOPE, limit=1000), loops(store, one, limit=1000), loops(store, cut, repeats=2, limit=1000),
            loops(store, SCOPE, pattern="cycle"), loops(store, SCOPE, limit=5, offset=7)]  # fmt: skip


def _answers(store) -> tuple:
    return (_api_tasks(store), queries.overview(store, SCOPE), _loops(store),
            analytics_stats.unit_economics(store, SCOPE, group_by="name"),
            analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24),
            analytics_drift.drift(store, SCOPE, baseline_hours=24))  # fmt: skip


def _same(a, b, path: str = "") -> None:
    """Equal, floats to 1e-5 (a task's cost is a sum of its calls' costs in another order: the last bits differ,
    and a 6-digit rounding of a median can flip)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=2e-6), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _summary_rows(store, project: str, tid: str) -> list[dict]:
    return store.query(
        f"SELECT toUnixTimestamp(Hour) AS hour, CostUsd, LlmCalls, Version FROM {summary.TASK_SUMMARY_TABLE} FINAL"
        " WHERE ProjectId = {p:String} AND TraceId = {t:String}",
        {"p": project, "t": tid},
    )


def test_summaries_give_the_same_answers_and_are_what_reads_serve(env):
    store, _, rest, held = env
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([held])))  # again if an earlier test did: no change
    rows = [*rest, held]
    assert summary.watermark(store) == 0  # never ran: every read computes from the rollups
    before = _answers(store)
    written = summary.Summarizer(store, lag=0.0, chunk=3600).catch_up()
    tasks_in_store = len({r["TraceId"] for r in rows if not r["ParentSpanId"] and r["ProjectId"] == CFG.project})
    assert written >= tasks_in_store and summary.watermark(store) > 0
    _same(_answers(store), before)
    _check_tasks(store, rows)
    # the reads serve the summary row: a doctored row (newer version) shows in the task list ...
    tid = next(iter(_api_tasks(store)))
    store.command(
        f"INSERT INTO {summary.TASK_SUMMARY_TABLE} SELECT * REPLACE (12345.0 AS CostUsd, Version + 1 AS Version)"
        f" FROM {summary.TASK_SUMMARY_TABLE} FINAL WHERE ProjectId = {{p:String}} AND TraceId = {{t:String}}",
        {"p": CFG.project, "t": tid},
    )
    assert _api_tasks(store)[tid]["cost_usd"] == 12345.0
    # ... until a span of that task arrives: computed from the rollups again (exact, with the new call), and the
    # next pass writes the task anew
    root = next(r for r in rows if r["TraceId"] == tid and not r["ParentSpanId"])
    call = next(r for r in rows if r["TraceId"] == tid and r["SpanId"] != root["SpanId"]
                and dict(r["SpanAttributes"]).get("gen_ai.operation.name") == "chat")  # fmt: skip
    late = {**call, "SpanId": "feed" * 4, "Timestamp": call["Timestamp"] + 5_000_000,
            "SpanAttributes": [(k, v) for k, v in call["SpanAttributes"] if k != "gen_ai.response.id"]}  # fmt: skip
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([late])))
    _check_tasks(store, [*rows, late])
    summary.Summarizer(store, lag=0.0).catch_up()
    (row,) = _summary_rows(store, CFG.project, tid)
    assert row["Version"] == summary.watermark(store)
    assert row["LlmCalls"] == reference([*rows, late], SCOPE.start_ms, SCOPE.end_ms)[tid]["llm_calls"]
    _check_tasks(store, [*rows, late])


def test_the_overview_and_token_bombs_serve_the_call_summaries_until_the_trace_gets_new_spans(env):
    store, fleet, rest, held = env
    summary.Summarizer(store, lag=0.0).catch_up()
    before = queries.overview(store, SCOPE)
    calls = store.query(
        f"SELECT count() AS n FROM {summary.CALL_SUMMARY_TABLE} FINAL WHERE ProjectId = {{p:String}}"
        " AND Ts >= fromUnixTimestamp64Milli({lo:Int64}) AND Ts < fromUnixTimestamp64Milli({hi:Int64})",
        {"p": CFG.project, "lo": SCOPE.start_ms, "hi": SCOPE.end_ms},
    )[0]["n"]
    assert calls == before["llm_calls"] > 0
    # a planted bomb's call row, doctored (newer version): the overview and the bombs read it ...
    tid, sid = next((t, s) for t, s in fleet.truth.bombs.items() if t in fleet.truth.current_tasks)
    doctor = (
        f"INSERT INTO {summary.CALL_SUMMARY_TABLE} SELECT * REPLACE ({{i:UInt64}} AS InputTokens,"
        f" Version + 1 AS Version) FROM {summary.CALL_SUMMARY_TABLE} FINAL WHERE ProjectId = {{p:String}}"
        " AND TraceId = {t:String} AND SpanId = {s:String}"
    )
    (row,) = store.query(
        f"SELECT InputTokens FROM {summary.CALL_SUMMARY_TABLE} FINAL"
        " WHERE TraceId = {t:String} AND SpanId = {s:String}",
        {"t": tid, "s": sid},
    )
    store.command(doctor, {"p": CFG.project, "t": tid, "s": sid, "i": row["InputTokens"] + 1_000_000})
    assert queries.overview(store, SCOPE)["input_tokens"] == before["input_tokens"] + 1_000_000
    bomb = next(b for b in analytics_anomalies.cost_anomalies(store, SCOPE, baseline_hours=24)["token_bombs"]
                if (b["trace_id"], b["span_id"]) == (tid, sid))  # fmt: skip
    assert bomb["input_tokens"] == row["InputTokens"] + 1_000_000
    # ... until a span of that trace arrives (here one re-sent: it changes no figure): its calls are computed from
    # the rollups again, then summarized anew
    span = next(r for r in rest if r["TraceId"] == tid and r["ParentSpanId"])
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([span])))
    assert queries.overview(store, SCOPE)["input_tokens"] == before["input_tokens"]
    summary.Summarizer(store, lag=0.0).catch_up()
    assert queries.overview(store, SCOPE) == before


def test_a_call_whose_first_span_moves_to_another_hour_keeps_one_summary_row(env):
    store, _, rest, _ = env
    project, tid = "call-moves", "cd" * 16
    call = next(r for r in rest if dict(r["SpanAttributes"]).get("gen_ai.operation.name") == "chat")
    t0 = CFG.current_start_ms * 1_000_000 + 90 * 60 * 10**9  # hh:30, an hour and a half into the window
    span = {**call, "ProjectId": project, "TraceId": tid, "Timestamp": t0}
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([span])))
    s = summary.Summarizer(store, lag=0.0)
    s.catch_up()
    # a second span of the same call (same response id) an hour earlier: the call's first span is now that one
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([{**span, "SpanId": "beef" * 4,
                                                                   "Timestamp": t0 - 3600 * 10**9}])))  # fmt: skip
    s.catch_up()
    rows = store.query(
        f"SELECT toUnixTimestamp(Hour) AS hour FROM {summary.CALL_SUMMARY_TABLE} FINAL WHERE ProjectId = {{p:String}}",
        {"p": project},
    )
    assert [r["hour"] for r in rows] == [(t0 - 3600 * 10**9) // 10**9 // 3600 * 3600]
    scope = queries.Scope(project, CFG.current_start_ms, CFG.current_end_ms)
    assert queries.overview(store, scope)["llm_calls"] == 1


def test_a_task_whose_root_moves_to_another_hour_keeps_one_summary_row(env):
    store, _, rest, _ = env
    project, tid = "moves", "ab" * 16
    spans = [r for r in rest if r["TraceId"] == rest[0]["TraceId"]]
    root = next(r for r in spans if not r["ParentSpanId"])
    t0 = CFG.current_start_ms * 1_000_000 + 30 * 60 * 10**9  # hh:30
    shift = t0 - root["Timestamp"]
    moved = [{**r, "ProjectId": project, "TraceId": tid, "Timestamp": r["Timestamp"] + shift} for r in spans]
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(moved)))
    s = summary.Summarizer(store, lag=0.0)
    s.catch_up()
    (first,) = _summary_rows(store, project, tid)
    # a second root span an hour later: the task's root (the latest of its roots) moves to the next hour
    second = {**root, "ProjectId": project, "TraceId": tid, "SpanId": "beef" * 4, "Timestamp": t0 + 3600 * 10**9}
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([second])))
    s.catch_up()
    (now,) = _summary_rows(store, project, tid)
    assert now["hour"] - first["hour"] == 3600
    scope = queries.Scope(project, CFG.current_start_ms, CFG.current_start_ms + 3 * 3_600_000)
    got = queries.tasks(store, scope, queries.TaskFilter())
    assert [t["trace_id"] for t in got["items"]] == [tid] and got["total"] == 1


def test_after_a_slow_pass_the_summarizer_pauses_twice_as_long(env):
    """Under heavy ingest a pass takes long; the summarizer then backs off (bigger, fewer passes) instead of taking
    the collector's CPU from ingest."""
    starts: list[float] = []

    class Slow(summary.Summarizer):
        def _pass(self) -> bool:
            starts.append(time.monotonic())
            time.sleep(0.2)
            return False

    s = Slow(env[0], interval=0.01)
    s.start()
    deadline = time.monotonic() + 10
    while len(starts) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    s.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 2 and min(gaps) >= 0.2 + 2 * 0.2 - 0.02, gaps  # the pass, then twice its length


def test_the_summarizer_waits_out_the_lag_and_catches_up_in_chunks(env):
    store = env[0]
    cfg = F.FleetConfig(seed=8, project="lagged", baseline_hours=2, current_hours=1, baseline_tasks=10,
                        current_tasks=5)  # fmt: skip
    fleet = F.generate(cfg)
    for i in range(0, fleet.spans, fleet.spans // 3 + 1):  # three inserts, the watermark moves between them
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc({k: v[i : i + fleet.spans // 3 + 1]
                                                                for k, v in fleet.columns.items()}))  # fmt: skip
    scope = queries.Scope(cfg.project, cfg.current_start_ms - 2 * 3_600_000, cfg.current_end_ms)
    want = queries.tasks(store, scope, queries.TaskFilter(limit=1000))
    wm = summary.watermark(store)
    assert summary.Summarizer(store, lag=3600).catch_up() == 0  # every span is younger than an hour: not yet
    assert summary.watermark(store) == wm
    # the embedded store's limit: an insert in flight since before these spans holds them back, whatever the lag
    assert summary.Summarizer(store, lag=0.0, inflight=lambda: time.time() - 3600).catch_up() == 0
    assert summary.watermark(store) == wm
    s = summary.Summarizer(store, lag=0.0, chunk=0.001)  # one millisecond of ingest a pass
    assert s.catch_up() >= want["total"] and s.passes >= 2
    got = store.query(
        f"SELECT count() AS n FROM {summary.TASK_SUMMARY_TABLE} FINAL WHERE ProjectId = {{p:String}}",
        {"p": cfg.project},
    )[0]["n"]
    assert got == want["total"]
    assert queries.tasks(store, scope, queries.TaskFilter(limit=1000)) == want


def test_a_project_with_no_spans_gets_empty_answers_not_errors(env):
    """A new install: the dashboard's first reads, with and without summaries, over a project with nothing in it."""
    store = env[0]
    scope = queries.Scope("nothing-here", CFG.current_start_ms, CFG.current_end_ms)
    assert queries.tasks(store, scope, queries.TaskFilter()) == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert queries.overview(store, scope)["tasks"] == 0
    an = analytics_anomalies.cost_anomalies(store, scope, baseline_hours=24)
    assert (an["items"], an["token_bombs"], an["spend_spikes"]) == ([], [], [])
    dr = analytics_drift.drift(store, scope, baseline_hours=24)
    assert (dr["items"], dr["model_changes"]) == ([], [])
    assert dr["sampled"] == {"baseline_ppm": 1_000_000, "current_ppm": 1_000_000, "baseline_calls_ppm": 1_000_000,
                             "current_calls_ppm": 1_000_000}  # fmt: skip
    for repeats in (2, 3):
        assert analytics_loops.loops(store, scope, repeats=repeats) == {"repeats": repeats, "total": 0, "items": []}
    assert analytics_stats.tools(store, scope) == {"items": []}


# --- loop summaries (migration 9) ----------------------------------------------------------------------------------
def _looping_task(rest, project: str, tid: str, t0: int, steps: list[tuple[str, str, str]]) -> list[dict]:
    """A task of ``steps`` (tool, arguments, service), one a second after its root at ``t0`` (ns), of the first
    step's service."""
    root = next(r for r in rest if not r["ParentSpanId"])
    tool = next(r for r in rest if dict(r["SpanAttributes"]).get("gen_ai.operation.name") == "execute_tool")
    out = [{**root, "ProjectId": project, "TraceId": tid, "SpanId": f"{1:016x}", "Timestamp": t0,
            "Duration": 60 * 10**9, "ServiceName": steps[0][2]}]  # fmt: skip
    for i, (name, args, service) in enumerate(steps):
        out.append(_tool_span(tool, project, tid, i + 2, t0 + (i + 1) * 10**9, name, args, service))
    return out


def _tool_span(tool: dict, project: str, tid: str, n: int, ts: int, name: str, args: str, service: str) -> dict:
    attrs = {**dict(tool["SpanAttributes"]), "gen_ai.tool.name": name, "agentwatch.tool.args_hash": args}
    attrs.pop("error.type", None)
    return {**tool, "ProjectId": project, "TraceId": tid, "SpanId": f"{n:016x}", "ParentSpanId": f"{1:016x}",
            "Timestamp": ts, "ServiceName": service, "SpanAttributes": list(attrs.items()),
            "StatusCode": "Ok"}  # fmt: skip


def _loop_rows(store, project: str) -> list[dict]:
    return store.query(
        f"SELECT toUnixTimestamp(Hour) AS hour, TraceId, Pattern, Repeats FROM {analytics_loops.LOOP_SUMMARY_TABLE}"
        " FINAL WHERE ProjectId = {p:String} ORDER BY TraceId, Pattern",
        {"p": project},
    )


def test_loops_serve_the_loop_summary_until_the_trace_gets_new_spans_and_a_gone_loop_leaves_no_row(env):
    store, _, rest, _ = env
    project, tid, svc = "loop-summary", "aa" * 16, "svc-a"
    t0 = (CFG.current_start_ms + 2 * 3_600_000) * 1_000_000
    tool = next(r for r in rest if dict(r["SpanAttributes"]).get("gen_ai.operation.name") == "execute_tool")
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS,
                       to_ipc(_cols(_looping_task(rest, project, tid, t0, [("search", "q1", svc)] * 3))))  # fmt: skip
    scope = queries.Scope(project, CFG.current_start_ms, CFG.current_end_ms)
    live = analytics_loops.loops(store, scope)
    assert [(i["pattern"], i["repeats"], i["running"]) for i in live["items"]] == [("repeat", 3, False)]
    s = summary.Summarizer(store, lag=0.0)
    s.catch_up()
    assert [(r["Pattern"], r["Repeats"]) for r in _loop_rows(store, project)] == [("repeat", 3)]
    assert analytics_loops.loops(store, scope) == live
    # the read serves the summary row: a doctored one (newer version) shows ...
    store.command(
        f"INSERT INTO {analytics_loops.LOOP_SUMMARY_TABLE} SELECT * REPLACE (9 AS Repeats, Version + 1 AS Version)"
        f" FROM {analytics_loops.LOOP_SUMMARY_TABLE} FINAL WHERE ProjectId = {{p:String}}",
        {"p": project},
    )
    assert [i["repeats"] for i in analytics_loops.loops(store, scope)["items"]] == [9]
    # ... but not to a window that cuts the task (from its second call on: computed from the spans) ...
    cut = dataclasses.replace(scope, start_ms=t0 // 1_000_000 + 1500)
    assert [i["repeats"] for i in analytics_loops.loops(store, cut, repeats=2)["items"]] == [2]
    # ... and not once a span of the trace arrives: a late call between the first two breaks the run
    late = [_tool_span(tool, project, tid, 10, t0 + 1_500_000_000, "fetch", "u1", svc)]
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(late)))
    assert analytics_loops.loops(store, scope)["total"] == 0
    assert [i["repeats"] for i in analytics_loops.loops(store, scope, repeats=2)["items"]] == [2]
    s.catch_up()
    assert [(r["Pattern"], r["Repeats"]) for r in _loop_rows(store, project)] == [("repeat", 2)]
    # another breaks the last run: no loop of any pattern is left, nor a row
    late = [_tool_span(tool, project, tid, 11, t0 + 2_500_000_000, "fetch", "u2", svc)]
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(late)))
    s.catch_up()
    assert _loop_rows(store, project) == []
    assert analytics_loops.loops(store, scope, repeats=2)["total"] == 0


def test_a_loop_whose_first_span_moves_to_another_hour_keeps_one_summary_row(env):
    store, _, rest, _ = env
    project, tid = "loop-moves", "ae" * 16
    t0 = (CFG.current_start_ms + 2 * 3_600_000 + 1_800_000) * 1_000_000  # hh:30
    tool = next(r for r in rest if dict(r["SpanAttributes"]).get("gen_ai.operation.name") == "execute_tool")
    spans = _looping_task(rest, project, tid, t0, [("search", "q1", "svc-a")] * 4)
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(spans[1:])))  # the root comes last
    s = summary.Summarizer(store, lag=0.0)
    s.catch_up()
    scope = queries.Scope(project, CFG.current_start_ms, CFG.current_end_ms)
    assert [(i["repeats"], i["running"]) for i in analytics_loops.loops(store, scope)["items"]] == [(4, True)]
    early = _tool_span(tool, project, tid, 20, t0 - 3600 * 10**9, "plan", "p", "svc-a")
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([spans[0], early])))
    s.catch_up()
    assert [(r["hour"], r["Repeats"]) for r in _loop_rows(store, project)] == [
        ((t0 - 3600 * 10**9) // 10**9 // 3600 * 3600, 4)
    ]
    assert [(i["repeats"], i["running"]) for i in analytics_loops.loops(store, scope)["items"]] == [(4, False)]


def test_one_service_of_a_trace_of_several_is_computed_from_its_spans(env):
    """Tool calls of two services, interleaved: the trace cycles (A, X) twice, and svc-a's calls alone repeat A three
    times, which only a read of svc-a sees."""
    store, _, rest, _ = env
    project, tid = "loop-services", "ac" * 16
    t0 = (CFG.current_start_ms + 3_600_000) * 1_000_000
    steps = [("a", "1", "svc-a"), ("x", "1", "svc-x")] * 2 + [("a", "1", "svc-a")]
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(_looping_task(rest, project, tid, t0, steps))))
    scope = queries.Scope(project, CFG.current_start_ms, CFG.current_end_ms)
    want = [analytics_loops.loops(store, dataclasses.replace(scope, service=svc), repeats=n)
            for svc in ("", "svc-a", "svc-x") for n in (2, 3)]  # fmt: skip
    summary.Summarizer(store, lag=0.0).catch_up()
    assert {r["Pattern"] for r in _loop_rows(store, project)} == {"", "cycle"}  # "": a trace of several services
    got = [analytics_loops.loops(store, dataclasses.replace(scope, service=svc), repeats=n)
           for svc in ("", "svc-a", "svc-x") for n in (2, 3)]  # fmt: skip
    assert got == want
    assert [(i["pattern"], i["repeats"]) for i in want[0]["items"]] == [("cycle", 2)]
    assert [(i["pattern"], i["repeats"], i["running"]) for i in want[3]["items"]] == [("repeat", 3, False)]
    assert want[1]["total"] == 0 and [(i["repeats"], i["running"]) for i in want[4]["items"]] == [(2, True)]


def test_a_loop_whose_spans_start_within_one_second_is_summarized(env):
    """The trace lookup keeps seconds: a trace whose spans all start in one second has first == last, and the pass
    must still read its spans (a DateTime bound against the spans' DateTime64 once skipped them)."""
    store, _, rest, _ = env
    project, tid = "loop-one-second", "af" * 16
    t0 = (CFG.current_start_ms + 3_600_000 + 100) * 1_000_000
    spans = _looping_task(rest, project, tid, t0, [("search", "q1", "svc-a")] * 3)
    spans = [{**s, "Timestamp": t0 + i * 1_000_000} for i, s in enumerate(spans)]  # a millisecond apart
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(spans)))
    scope = queries.Scope(project, CFG.current_start_ms, CFG.current_end_ms)
    live = analytics_loops.loops(store, scope)
    assert [i["repeats"] for i in live["items"]] == [3]
    summary.Summarizer(store, lag=0.0).catch_up()
    assert [(r["Pattern"], r["Repeats"]) for r in _loop_rows(store, project)] == [("repeat", 3)]
    assert analytics_loops.loops(store, scope) == live


def test_a_span_arriving_between_the_summary_read_and_the_span_read_counts_its_loop_once(env):
    """Loops read the summary and the spans in two statements; a trace touched between them must not be taken from
    both (nor from neither): both take the traces touched up to the same moment as not summarized."""
    store, _, rest, _ = env
    project, tid = "loop-race", "b0" * 16
    t0 = (CFG.current_start_ms + 2 * 3_600_000) * 1_000_000
    spans = _looping_task(rest, project, tid, t0, [("search", "q1", "svc-a")] * 3)
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(spans)))
    summary.Summarizer(store, lag=0.0).catch_up()
    inserted = threading.Event()

    class Racing:
        """The store, with one of the trace's spans sent again right after the summary's statement."""

        def query(self, sql, params=None):
            if sql is analytics_loops.LIVE_SQL:
                assert inserted.wait(10)
            out = store.query(sql, params)
            if sql is analytics_loops.SUMMARY_TOP_SQL:
                store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols(spans[-1:])))
                inserted.set()
            return out

        def __getattr__(self, name):
            return getattr(store, name)

    got = analytics_loops.loops(Racing(), queries.Scope(project, CFG.current_start_ms, CFG.current_end_ms))
    assert got["total"] == 1 and [i["trace_id"] for i in got["items"]] == [tid]


def test_drift_task_samples_equal_the_reference_with_summaries(env):
    """The same with the tasks summarized, then with one trace touched again (its task computed, the rest read), in a
    store of their own (this module's other tests add spans)."""
    main, _, rest, held = env
    store = ChdbStore(main.path.parent, database="drift_samples")
    try:
        migrate(store)
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([*rest, held])))
        summary.Summarizer(store, lag=0.0).catch_up()
        _drift_samples_equal_the_reference(store, rest, held)
        store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(_cols([held])))
        touched = {"wm": summary.watermark(store), "project": SCOPE.project}
        assert store.query(f"SELECT count() AS n FROM ({summary.dirty('wm')})", touched) == [{"n": 1}]
        _drift_samples_equal_the_reference(store, rest, held)
    finally:
        store.close()


def test_a_statement_takes_one_snapshot_of_the_traces_it_computes(env, monkeypatch):
    """The dirty traces and the traces to compute are read once per statement: the scalars that bound the reads
    (the set's size, the traces' extent) and the statement's body see the same traces. A source that differs at
    every evaluation (rand64) tells one read from two: ClickHouse evaluates scalar subqueries apart from the body,
    and a MATERIALIZED CTE used by both was read in each, so a span ingested in between left a task out."""
    store = env[0]
    monkeypatch.setattr(summary, "dirty", lambda *a: "SELECT rand64() AS h FROM numbers(5)")
    sql = (
        f"WITH {summary.dirty_ctes('d')}\n"
        "SELECT (SELECT sum(h) FROM d) AS in_scalar, sum(h) AS in_body, any(d_n) AS n FROM d"
    )
    r = store.query(sql, {"wm_ms": 0})[0]
    assert r["n"] == 5 and r["in_scalar"] == r["in_body"]
    cand = "SELECT toString(rand64()) AS TraceId FROM numbers(5)"
    sql = (
        f"WITH {summary.cand_ctes(cand).strip()}\nSELECT (SELECT groupArray(TraceId) FROM s_cand) AS in_scalar,"
        " groupArray(TraceId) AS in_body, any(s_bounds_v) AS bounds FROM s_cand"
    )
    r = store.query(sql, {"project": "p"})[0]
    assert len(r["in_body"]) == 5 and r["in_scalar"] == r["in_body"]
