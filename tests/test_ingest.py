"""OTLP/HTTP ingest against a real collector process (chDB store) on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import os
import time

import pytest
from harness import KEYS
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from otlp_payloads import Recorder, agent_run, gz, json_body, new_ids, raw_request, raw_span, unique

from agentwatch.collector.pricing import Pricer

NOW = time.time_ns


def _overview(collector, service: str, **params) -> dict:
    return collector.api("/api/v1/overview", service=service, **params)


def test_official_exporter_roundtrip_prices_and_types_every_span(collector):
    service = unique("svc-exporter")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(
                endpoint=collector.url + "/v1/traces", headers={"Authorization": f"Bearer {KEYS['ingest']}"}
            )
        )
    )
    rec = Recorder(service)
    rec.provider = provider
    rec.tracer = provider.get_tracer("t")
    usage = {
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.cache_read.input_tokens": 200,
        "gen_ai.usage.output_tokens": 100,
    }
    tid = agent_run(rec, usage=usage, tools=[("search", '{"q": "a"}'), ("fetch", '{"url": "x"}')])
    provider.shutdown()

    trace = collector.trace(tid, spans=4)
    by_kind = {}
    for s in trace["spans"]:
        by_kind.setdefault(s["kind"], []).append(s)
    assert sorted(by_kind) == ["llm", "task", "tool"]
    llm = by_kind["llm"][0]
    assert (llm["model"], llm["provider"]) == ("gpt-4o-mini", "openai")
    assert (llm["input_tokens"], llm["cache_read_tokens"], llm["output_tokens"]) == (1000, 200, 100)
    # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output; cache not counted twice
    assert llm["cost_usd"] == pytest.approx((800 * 0.15 + 200 * 0.075 + 100 * 0.60) / 1e6, rel=1e-9)
    expected = Pricer().price(
        provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100, cache_read_tokens=200
    )
    assert llm["cost_usd"] == pytest.approx(expected.cost_usd, rel=1e-9)
    assert llm["price_source"].startswith("genai-prices")
    assert {t["tool_name"] for t in by_kind["tool"]} == {"search", "fetch"}
    assert all(len(t["tool_args_hash"]) == 16 for t in by_kind["tool"])
    root = by_kind["task"][0]
    assert root["parent_span_id"] is None and root["outcome"] == "ok" and root["agent_name"] == "support"
    assert root["resource"]["service.name"] == service

    tasks = collector.api("/api/v1/tasks", service=service)["items"]
    assert len(tasks) == 1
    t = tasks[0]
    assert (t["trace_id"], t["name"], t["llm_calls"], t["tool_calls"], t["outcome"]) == (tid, "support", 1, 2, "ok")
    assert t["cost_usd"] == pytest.approx(llm["cost_usd"], rel=1e-9)
    assert (t["input_tokens"], t["output_tokens"]) == (1000, 100)


def test_json_body_with_uppercase_hex_ids_and_gzip(collector):
    service = unique("svc-json")
    tid, sid = os.urandom(16).hex().upper(), os.urandom(8).hex().upper()
    now = NOW()
    spans = [
        {"traceId": tid, "spanId": sid, "name": "invoke_agent jsonbot", "kind": 1,
         "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 5_000_000),
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
                        {"key": "gen_ai.agent.name", "value": {"stringValue": "jsonbot"}},
                        {"key": "retries", "value": {"intValue": "3"}},
                        {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}}],
         "status": {"code": 2, "message": "failed"}, "unknownField": {"ignored": True}},
    ]  # fmt: skip
    r = collector.post_traces(gz(json_body(service, spans)), content_type="application/json",
                              headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {}  # full success: partial_success unset
    trace = collector.trace(tid.lower(), spans=1)
    s = trace["spans"][0]
    assert s["span_id"] == sid.lower()
    assert s["attributes"]["retries"] == "3"
    assert json.loads(s["attributes"]["tags"]) == ["a", 2]
    assert (s["kind"], s["status"], s["outcome"], s["error_type"]) == ("task", "Error", "error", "_OTHER")


def test_one_bad_span_is_rejected_alone_with_partial_success(collector):
    service = unique("svc-partial")
    good_t, good_s = new_ids()
    now = NOW()
    req = raw_request(
        service,
        [
            raw_span(good_t, good_s, "root", {"gen_ai.operation.name": "invoke_agent"}, start_ns=now),
            raw_span(b"\x01" * 15, os.urandom(8), "bad trace id", {}, start_ns=now),
            raw_span(os.urandom(16), b"\0" * 8, "zero span id", {}, start_ns=now),
            raw_span(os.urandom(16), os.urandom(8), "far future", {}, start_ns=now + 10 * 86400 * 10**9),
        ],
    )
    r = collector.post_traces(req.SerializeToString())
    assert r.status_code == 200
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 3
    assert "trace_id" in resp.partial_success.error_message and "span_id" in resp.partial_success.error_message
    collector.trace(good_t.hex(), spans=1)
    collector.wait_for(lambda: _overview(collector, service)["spans"] == 1, what="one stored span")

    bad_json = json_body(service, [{"traceId": "zz" * 16, "spanId": "ab" * 8, "name": "x",
                                    "startTimeUnixNano": str(now)}])  # fmt: skip
    r = collector.post_traces(bad_json, content_type="application/json")
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "not hex" in r.json()["partialSuccess"]["errorMessage"]


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"\xff\xff\xff not protobuf", "application/x-protobuf", "not a valid protobuf"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"resourceSpans": 5}', "application/json", "resourceSpans must be an array"),
    ],
)
def test_undecodable_bodies_get_400_with_a_reason(collector, body, ctype, needle):
    r = collector.post_traces(body, content_type=ctype)
    assert r.status_code == 400
    if ctype == "application/json":
        assert needle in r.json()["message"]
    else:
        from google.rpc.status_pb2 import Status

        assert needle in Status.FromString(r.content).message


def test_content_type_and_encoding_are_checked(collector):
    assert collector.post_traces(b"{}", content_type="text/plain").status_code == 415
    r = collector.post_traces(b"x", headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and b"Content-Encoding" in r.content
    r = collector.post_traces(b"\x1f\x8b\x08garbage", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    # an empty request is a success (OTLP spec)
    assert collector.post_traces(b"").status_code == 200


def test_keys_roles_and_projects(collector):
    rec = Recorder(unique("svc-auth"))
    tid = agent_run(rec)
    body = rec.body()
    assert collector.post_traces(body, key=None).status_code == 401
    assert collector.post_traces(body, key="not-a-key-at-all").status_code == 401
    assert collector.post_traces(body, key=KEYS["read"]).status_code == 403
    assert collector.post_traces(body, key=KEYS["admin"]).status_code == 200  # admin may ingest
    collector.trace(tid, spans=2)
    assert collector.get("/api/v1/overview", key=None).status_code == 401
    assert collector.get("/api/v1/overview", key=KEYS["ingest"]).status_code == 403
    # project B sees nothing of project A, and its own spans land in B
    assert collector.get(f"/api/v1/traces/{tid}", key=KEYS["read_b"]).status_code == 404
    rec_b = Recorder(unique("svc-auth-b"))
    tid_b = agent_run(rec_b)
    assert collector.post_traces(rec_b.body(), key=KEYS["ingest_b"]).status_code == 200
    collector.trace(tid_b, spans=2, key=KEYS["read_b"])
    assert collector.get(f"/api/v1/traces/{tid_b}").status_code == 404
    assert collector.api("/api/v1/tasks", key=KEYS["read_b"])["total"] == 1


def test_resent_spans_count_once(collector):
    service = unique("svc-dedup")
    rec = Recorder(service)
    tid = agent_run(rec, tools=[("t", "{}")])
    body = rec.body()
    for _ in range(3):
        assert collector.post_traces(body).status_code == 200
    collector.trace(tid, spans=3)
    time.sleep(0.5)  # let every copy reach the store
    trace = collector.api(f"/api/v1/traces/{tid}")
    assert len(trace["spans"]) == 3 == len({s["span_id"] for s in trace["spans"]})
    ov = _overview(collector, service)
    assert (ov["spans"], ov["tasks"], ov["llm_calls"], ov["input_tokens"]) == (3, 1, 1, 1000)


def test_other_conventions_and_deprecated_names_are_understood(collector):
    service = unique("svc-dialects")
    t, root = new_ids()
    now = NOW()
    spans = [
        raw_span(t, root, "workflow", {"traceloop.span.kind": "workflow", "traceloop.entity.name": "triage"},
                 start_ns=now, dur_ns=50_000_000),
        # deprecated GenAI names (gen_ai.system, prompt/completion tokens, underscore cache names)
        raw_span(t, os.urandom(8), "openai.chat", {"llm.request.type": "chat", "gen_ai.system": "openai",
                 "gen_ai.request.model": "gpt-4o", "gen_ai.usage.prompt_tokens": 500,
                 "gen_ai.usage.completion_tokens": 50, "gen_ai.usage.cache_read_input_tokens": 100},
                 parent=root, start_ns=now + 1),
        # OpenInference
        raw_span(t, os.urandom(8), "ChatCompletion", {"openinference.span.kind": "LLM", "llm.provider": "anthropic",
                 "llm.model_name": "claude-3-5-haiku-20241022", "llm.token_count.prompt": 300,
                 "llm.token_count.completion": 30, "llm.token_count.prompt_details.cache_write": 100},
                 parent=root, start_ns=now + 2),
        raw_span(t, os.urandom(8), "lookup", {"openinference.span.kind": "TOOL", "tool.name": "lookup",
                 "input.value": '{"id": 7}'}, parent=root, start_ns=now + 3),
        # OpenLLMetry tool decorator
        raw_span(t, os.urandom(8), "fetch.tool", {"traceloop.span.kind": "tool", "traceloop.entity.name": "fetch",
                 "traceloop.entity.input": '{"args": [], "kwargs": {}}'}, parent=root, start_ns=now + 4),
        raw_span(t, os.urandom(8), "decision route", {"gen_ai.operation.name": "decision",
                 "agentwatch.decision.name": "route", "agentwatch.decision.choice": "refund"},
                 parent=root, start_ns=now + 5),
        raw_span(t, os.urandom(8), "mystery", {"http.method": "GET"}, parent=root, start_ns=now + 6),
    ]  # fmt: skip
    assert collector.post_traces(raw_request(service, spans).SerializeToString()).status_code == 200
    trace = collector.trace(t.hex(), spans=len(spans))
    by_name = {s["name"]: s for s in trace["spans"]}
    assert by_name["workflow"]["kind"] == "task" and by_name["workflow"]["agent_name"] == "triage"
    legacy = by_name["openai.chat"]
    assert (legacy["kind"], legacy["provider"], legacy["model"]) == ("llm", "openai", "gpt-4o")
    assert (legacy["input_tokens"], legacy["output_tokens"], legacy["cache_read_tokens"]) == (500, 50, 100)
    assert legacy["cost_usd"] == pytest.approx((400 * 2.5 + 100 * 1.25 + 50 * 10) / 1e6, rel=1e-9)
    oi = by_name["ChatCompletion"]
    assert (oi["kind"], oi["provider"], oi["model"]) == ("llm", "anthropic", "claude-3-5-haiku-20241022")
    assert (oi["input_tokens"], oi["cache_write_tokens"]) == (300, 100)
    assert oi["cost_usd"] is not None and oi["cost_usd"] > 0
    assert (by_name["lookup"]["kind"], by_name["lookup"]["tool_name"]) == ("tool", "lookup")
    assert by_name["lookup"]["tool_args_hash"]
    assert (by_name["fetch.tool"]["kind"], by_name["fetch.tool"]["tool_name"]) == ("tool", "fetch")
    assert by_name["decision route"]["kind"] == "decision"
    assert by_name["mystery"]["kind"] == "other"


def test_unknown_model_is_unpriced_never_zero(collector):
    service = unique("svc-unpriced")
    rec = Recorder(service)
    tid = agent_run(rec, model="my-private-model-v9", provider="acme")
    assert collector.post_traces(rec.body()).status_code == 200
    trace = collector.trace(tid, spans=2)
    llm = next(s for s in trace["spans"] if s["kind"] == "llm")
    assert llm["cost_usd"] is None and llm["price_source"] == "unpriced"
    ov = _overview(collector, service)
    assert ov["unpriced_llm_calls"] == 1 and ov["cost_usd"] == 0
    assert collector.api("/api/v1/tasks", service=service)["items"][0]["unpriced_llm_calls"] == 1


def test_a_cost_sent_with_the_span_is_kept(collector):
    service = unique("svc-sentcost")
    t, s = new_ids()
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
             "llm.cost.total": 0.5}  # fmt: skip
    span = raw_span(t, s, "chat x", attrs, start_ns=NOW())
    assert collector.post_traces(raw_request(service, [span]).SerializeToString()).status_code == 200
    got = collector.trace(t.hex(), spans=1)["spans"][0]
    assert (got["cost_usd"], got["price_source"]) == (0.5, "span")


def test_huge_attribute_values_are_cut_and_flagged(collector):
    service = unique("svc-huge")
    t, s = new_ids()
    span = raw_span(t, s, "big", {"blob": "x" * (3 << 20), "small": "ok"}, start_ns=NOW())
    body = gzip.compress(raw_request(service, [span]).SerializeToString())
    r = collector.post_traces(body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    got = collector.trace(t.hex(), spans=1)["spans"][0]
    assert len(got["attributes"]["blob"]) == 1 << 20
    assert got["attributes"]["small"] == "ok" and got["attributes"]["agentwatch.truncated"] == "true"


def test_read_api_rejects_bad_parameters(collector):
    assert collector.get("/api/v1/overview", **{"from": "yesterday"}).status_code == 400
    assert collector.get("/api/v1/overview", **{"from": "2026-01-01T00:00:00"}).status_code == 400  # no zone
    assert collector.get("/api/v1/overview", **{"from": "200", "to": "100"}).status_code == 400
    assert collector.get("/api/v1/overview", **{"from": "nan"}).status_code == 400
    assert collector.get("/api/v1/tasks", sort="name; DROP TABLE otel_traces").status_code == 400
    assert collector.get("/api/v1/tasks", limit="0").status_code == 422
    assert collector.get("/api/v1/traces/not-hex").status_code == 400
    assert collector.get("/api/v1/traces/" + "0" * 32).status_code == 404
    r = collector.get("/api/v1/tasks", service="x' OR '1'='1", q="' OR 1=1 --")
    assert r.status_code == 200 and r.json()["items"] == []
    assert collector.get("/openapi.json", key=None).status_code == 200


def test_health_and_metrics(collector):
    assert collector.get("/healthz", key=None).json()["status"] == "ok"
    assert collector.get("/readyz", key=None).json()["store"] == "up"
    text = collector.get("/metrics", key=None).text
    for name in ("agentwatch_spans_accepted_total", "agentwatch_spans_stored_total", "agentwatch_spool_bytes",
                 "agentwatch_queue_depth", "agentwatch_insert_seconds_bucket"):  # fmt: skip
        assert name in text
    assert _metric(collector, "agentwatch_store_memory_bytes") > 0  # the embedded engine's own accounting
    assert "proj-a" not in text  # no project data


def _metric(collector, name: str) -> float:
    for line in collector.get("/metrics", key=None).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_summarizer_writes_tasks_in_the_background_and_reads_stay_the_same(collector):
    service = unique("svc-summary")
    rec = Recorder(service)
    tid = agent_run(rec, tools=[("search", "{}"), ("search", "{}")])
    assert collector.post_traces(rec.body()).status_code == 200
    collector.trace(tid, spans=4)
    stored_at = time.time()
    live = collector.api("/api/v1/tasks", service=service)
    assert [t["trace_id"] for t in live["items"]] == [tid]
    overview = collector.api("/api/v1/overview", service=service)
    assert overview["llm_calls"] == 1 and overview["input_tokens"] == live["items"][0]["input_tokens"]
    loops = collector.api("/api/v1/loops", service=service, repeats=2)
    assert [(i["trace_id"], i["repeats"]) for i in loops["items"]] == [(tid, 2)]
    # the summarizer's watermark passes the trace's ingest time: its rows are what the reads serve now
    collector.wait_for(lambda: _metric(collector, "agentwatch_summary_watermark_seconds") > stored_at,
                       what="the summarizer's watermark")  # fmt: skip
    assert _metric(collector, "agentwatch_tasks_summarized_total") >= 1
    assert _metric(collector, "agentwatch_calls_summarized_total") >= 1
    assert _metric(collector, "agentwatch_loops_summarized_total") >= 1
    assert _metric(collector, 'agentwatch_summary_seconds_count{part="loops"}') >= 1
    assert collector.api("/api/v1/tasks", service=service) == live
    assert collector.api("/api/v1/loops", service=service, repeats=2) == loops
    now = collector.api("/api/v1/overview", service=service)
    assert {k: v for k, v in now.items() if k not in ("from", "to")} == {
        k: v for k, v in overview.items() if k not in ("from", "to")}  # the default window moved on
    assert collector.get("/readyz", key=None).json()["summarizer_error"] is None


def test_arrow_buffers_come_from_the_system_allocator_unless_the_user_chose(monkeypatch):
    import pyarrow as pa

    from agentwatch.collector.app import use_system_allocator_for_arrow

    before = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
        assert use_system_allocator_for_arrow() == "system"  # mimalloc kept what the collector freed
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
        assert use_system_allocator_for_arrow() == "mimalloc"  # an explicit choice is kept
    finally:
        pa.set_memory_pool(before)
