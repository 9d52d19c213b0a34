"""The dashboard, page by page, through Streamlit's AppTest against a real collector with seeded data.

Seeded figures are asserted exactly (tokens, costs carried on the spans, durations, outcomes); the service and
the time range come from the URL (query parameters), as a pasted link would give them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dashboard_seed
import pandas as pd
import pytest
import streamlit as st
from harness import KEYS, free_port
from streamlit.testing.v1 import AppTest

import agentwatch.dashboard as dashboard
from agentwatch.dashboard.settings import Settings

ENTRY = str(Path(dashboard.__file__).parent / "app.py")
PAGES = ("overview", "latency", "cost", "loops", "drift", "traces", "alerts")


@pytest.fixture(scope="module")
def seeded(collector) -> dashboard_seed.Seeded:
    return dashboard_seed.seed(collector)


@pytest.fixture
def env(monkeypatch, collector):
    """The dashboard's settings for the shared collector (and a clean cache: data is seeded per test module)."""
    for var in ("AGENTWATCH_API_KEY", "AGENTWATCH_KEYS_FILE", "AGENTWATCH_ENDPOINT", "AGENTWATCH_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AGENTWATCH_ENDPOINT", collector.url)
    monkeypatch.setenv("AGENTWATCH_API_KEY", KEYS["read"])
    st.cache_data.clear()
    return monkeypatch


def open_page(page: str = "overview", **query: str) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page != "overview":
        at.switch_page(f"page_{page}.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}; metrics: {[m.label for m in at.metric]}"
    return found[0]


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    found = [f for f in frames(at) if column in f.columns]
    assert found, f"no table with a {column!r} column: {[list(f.columns) for f in frames(at)]}"
    return found[0]


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader")
             for e in getattr(at, kind)]  # fmt: skip
    return "\n".join(str(p) for p in parts)


def serves(collector, path: str) -> bool:
    return path in collector.get("/openapi.json").json().get("paths", {})


# --- pages with the seeded figures ------------------------------------------------------------------
def test_overview_shows_the_seeded_figures(env, seeded):
    at = open_page(service=seeded.support, range="1h")
    assert metric(at, "Tasks") == "3"
    assert metric(at, "Completion rate") == "33.3%"
    assert metric(at, "Error rate") == "33.3%"
    assert metric(at, "Escalation rate") == "33.3%"
    assert metric(at, "Cost") == "$0.035"
    assert metric(at, "Cost per task") == "$0.0117"
    assert metric(at, "Spend rate") == "$0.035/h"
    assert metric(at, "Input tokens") == "3,500"
    assert metric(at, "Output tokens") == "550"
    assert metric(at, "LLM / tool calls") == "3 / 6"
    assert metric(at, "Unpriced LLM calls") == "0"
    # task durations 1200, 3000 and 5000 ms: the median is the middle one
    assert metric(at, "task P50") == "3.00 s"
    assert f"last hour, service **{seeded.support}**" in texts(at)


def test_the_service_and_range_filters_change_what_is_shown(env, seeded):
    at = open_page(service=seeded.support, range="24h")  # the task of 3 h ago is in
    assert metric(at, "Tasks") == "4"
    assert metric(at, "Cost") == "$0.036"
    assert metric(at, "Input tokens") == "3,600"
    at.selectbox(key="service").set_value(seeded.research).run()
    assert_clean(at)
    assert metric(at, "Tasks") == "1"
    assert metric(at, "Cost") == "$0.05"
    assert metric(at, "Unpriced LLM calls") == "1"
    assert metric(at, "Input tokens") == "3,100"
    at.selectbox(key="range").set_value("15m").run()
    assert metric(at, "Tasks") == "1"
    at = open_page(service=seeded.support, range="15m")
    assert metric(at, "Tasks") == "3"


def test_a_fixed_window_from_the_url(env, seeded, collector):
    tasks = collector.api("/api/v1/tasks", service=seeded.support, sort="start", order="asc")["items"]
    old = next(t for t in tasks if t["trace_id"] == seeded.traces["old"])
    start = pd.Timestamp(old["start"]).timestamp()
    at = open_page(service=seeded.support, **{"from": str(int(start) - 60), "to": str(int(start) + 60)})
    assert metric(at, "Tasks") == "1"
    assert metric(at, "Cost") == "$0.001"
    assert "Fixed window" in "\n".join(c.value for c in at.caption)


def test_traces_search_filters_and_one_trace(env, seeded, collector):
    at = open_page("traces", service=seeded.support, range="1h")
    table = frame_with(at, "trace_id")
    assert sorted(table["name"]) == ["refund", "triage", "triage"]
    assert set(table["trace_id"]) == {seeded.traces[k] for k in ("triage_ok", "refund", "loop")}
    assert sorted(table["duration_ms"]) == [1200, 3000, 5000]

    at.selectbox(key="outcome").set_value("error").run()
    assert_clean(at)
    table = frame_with(at, "trace_id")
    assert list(table["trace_id"]) == [seeded.traces["refund"]]
    assert list(table["cost_usd"]) == [0.02]

    at = open_page("traces", service=seeded.support, range="1h", loop="true")
    assert list(frame_with(at, "trace_id")["trace_id"]) == [seeded.traces["loop"]]

    at = open_page("traces", service=seeded.support, range="1h", q="refund")
    assert list(frame_with(at, "trace_id")["name"]) == ["refund"]

    # one trace: summary, waterfall, span details with the decision, the prompt and the export
    at = open_page("traces", service=seeded.support, range="1h", trace=seeded.traces["triage_ok"])
    assert metric(at, "Outcome") == "ok"
    assert metric(at, "Duration") == "1.20 s"
    assert metric(at, "Spans") == "4"
    assert metric(at, "LLM calls") == "1"
    assert metric(at, "Cost") == "$0.01"
    assert metric(at, "Input tokens") == "1,000"
    assert metric(at, "Output tokens") == "200"
    assert len(at.get("vega_lite_chart")) == 1
    assert len(at.get("download_button")) == 1
    spans = {s["name"]: s["span_id"] for s in collector.api(f"/api/v1/traces/{seeded.traces['triage_ok']}")["spans"]}
    at.selectbox(key="span").set_value(spans["decision route"]).run()
    assert_clean(at)
    assert metric(at, "Choice") == "lookup"
    assert metric(at, "Confidence") == "82%"
    assert "the message names an order id" in texts(at)
    at.selectbox(key="span").set_value(spans["chat gpt-4o"]).run()
    assert_clean(at)
    shown = json.dumps([j.value for j in at.json])
    assert "Where is order A-1001?" in shown and "It shipped yesterday." in shown

    at = open_page("traces", service=seeded.support, trace="0" * 32)
    assert "No trace" in texts(at)


def test_latency_page(env, seeded, collector):
    at = open_page("latency", service=seeded.support, range="1h", kind="task", group_by="task")
    slowest = frame_with(at, "duration_ms")
    assert list(slowest["duration_ms"])[:3] == [5000, 3000, 1200]
    if not serves(collector, "/api/v1/latency"):
        assert "not available on this collector yet" in texts(at)
        return
    table = frame_with(at, "p95").set_index("group")
    assert table.loc["refund", "count"] == 1 and table.loc["refund", "p50"] == 3000
    assert table.loc["triage", "count"] == 2
    assert table.loc["triage", "max"] == 5000
    at.selectbox(key="kind").set_value("tool").run()
    at.selectbox(key="group_by").set_value("tool").run()
    assert_clean(at)
    table = frame_with(at, "p95").set_index("group")
    assert table.loc["search_orders", "count"] == 5
    assert table.loc["refund_api", "p99"] == 250


def test_cost_page(env, seeded, collector):
    at = open_page("cost", service=seeded.support, range="1h")
    assert metric(at, "Cost") == "$0.035"
    costliest = [f for f in frames(at) if list(f.columns) == ["trace", "service", "name", "cost_usd"]][0]
    assert list(costliest["cost_usd"]) == [0.02, 0.01, 0.005]
    assert "Every LLM call in this window has a price." in texts(at)
    if serves(collector, "/api/v1/unit-economics"):
        econ = frame_with(at, "cost_per_task_usd")
        assert list(econ["group"]) == [seeded.support]
        assert list(econ["tasks"]) == [3] and list(econ["cost_usd"]) == [0.035]
    at = open_page("cost", service=seeded.research, range="1h", cost_by="model")
    assert metric(at, "Unpriced LLM calls") == "1"
    if serves(collector, "/api/v1/unit-economics"):
        assert "mystery-model-x" in list(frame_with(at, "output_tokens")["model"])
    else:
        assert "could not be priced" in texts(at)


def test_loops_and_tools_page(env, seeded, collector):
    at = open_page("loops", service=seeded.support, range="1h")
    if not serves(collector, "/api/v1/loops"):
        assert "not available on this collector yet" in texts(at)
        assert list(frame_with(at, "max_repeats")["max_repeats"]) == [4]
        return
    assert metric(at, "Looping tasks") == "1"
    loops = frame_with(at, "repeats")
    assert list(loops["tool"]) == ["search_orders"] and list(loops["repeats"]) == [4]
    assert list(loops["trace"]) == [f"traces?range=1h&service={seeded.support}&trace={seeded.traces['loop']}"]
    tools = frame_with(at, "error_rate").set_index("tool")
    assert tools.loc["search_orders", "calls"] == 5 and tools.loc["search_orders", "errors"] == 0
    assert tools.loc["refund_api", "errors"] == 1 and tools.loc["refund_api", "error_rate"] == 1.0
    assert metric(at, "Stopped by the loop breaker") == "0"


def test_drift_and_alerts_pages_render(env, seeded, collector):
    at = open_page("drift", service=seeded.support, range="1h")
    if serves(collector, "/api/v1/drift"):
        assert "Not enough tasks to compare" in texts(at)  # 3 tasks: no verdict on so few
    else:
        assert "not available on this collector yet" in texts(at)
    at = open_page("alerts", service=seeded.support)
    if serves(collector, "/api/v1/alerts"):
        assert any(m.label == "Firing" for m in at.metric)
    else:
        assert "Alerting is not available on this collector yet" in texts(at)


# --- empty store, collector down, keys ----------------------------------------------------------------
def test_an_empty_store_shows_how_to_instrument(env, make_collector):
    empty = make_collector()
    env.setenv("AGENTWATCH_ENDPOINT", empty.url)
    for page in PAGES[:-1]:  # alerts are not about spans
        at = open_page(page)
        assert "No spans yet" in texts(at), page
        assert any("agentwatch.init(" in c.value for c in at.code), page
    at = open_page("overview", service="no-such-service", range="1h")
    assert "No spans yet" in texts(at)


def test_a_window_without_data_says_so(env, seeded):
    at = open_page("cost", service=f"{seeded.support}-nothing", range="15m")
    assert "No spans in this window" in texts(at)
    assert not [m for m in at.metric]


def test_collector_down_is_a_banner_on_every_page(env):
    env.setenv("AGENTWATCH_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    at = open_page()
    for page in PAGES:
        if page != "overview":
            at.switch_page(f"page_{page}.py").run()
        assert_clean(at)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "The collector is not reachable" in errors[0], (page, errors)


def test_a_bad_or_missing_key_is_a_banner(env, tmp_path):
    env.setenv("AGENTWATCH_API_KEY", "not-a-real-key")
    at = open_page()
    assert "The collector refused the read key" in at.error[0].value
    env.delenv("AGENTWATCH_API_KEY")
    env.setenv("AGENTWATCH_DATA_DIR", str(tmp_path))  # no keys.json there
    at = open_page()
    assert "No read key configured" in at.error[0].value
    env.setenv("AGENTWATCH_API_KEY", KEYS["ingest"])  # a key of the wrong role
    at = open_page()
    assert "This key may not read" in at.error[0].value


def test_the_read_key_from_a_keys_file(env, seeded, tmp_path):
    env.delenv("AGENTWATCH_API_KEY")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"admin": "x", "ingest": "y", "read": KEYS["read"]}))
    env.setenv("AGENTWATCH_KEYS_FILE", str(keys))
    at = open_page(service=seeded.support, range="1h")
    assert metric(at, "Tasks") == "3"
    keys.write_text("{not json")
    at = open_page()
    assert "cannot read the keys file" in at.error[0].value


# --- settings and the launcher --------------------------------------------------------------------------
def test_settings_precedence(tmp_path):
    (tmp_path / "keys.json").write_text(json.dumps({"read": "from-data-dir"}))
    s = Settings.from_env({"AGENTWATCH_DATA_DIR": str(tmp_path)})
    assert (s.api, s.key) == ("http://127.0.0.1:4318", "from-data-dir")
    s = Settings.from_env({"AGENTWATCH_DATA_DIR": str(tmp_path), "AGENTWATCH_API_KEY": "k",
                           "AGENTWATCH_ENDPOINT": "collector.internal:4318/"})  # fmt: skip
    assert (s.api, s.key, s.key_source) == ("http://collector.internal:4318", "k", "AGENTWATCH_API_KEY")
    s = Settings.from_env({"AGENTWATCH_KEYS_FILE": str(tmp_path / "missing.json")})
    assert s.key is None and "cannot read the keys file" in (s.problem or "")


def test_the_launcher_runs_streamlit_on_the_entry_file():
    p = argparse.ArgumentParser()
    dashboard.add_arguments(p)
    env: dict[str, str] = {}
    cmd = dashboard.command(p.parse_args(["--api", "http://10.0.0.5:4318", "--port", "8600"]), environ=env)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == ENTRY
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert env == {"AGENTWATCH_ENDPOINT": "http://10.0.0.5:4318"}
