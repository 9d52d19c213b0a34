"""Spans from real instrumentation libraries around the real openai and anthropic clients, exported by the
official OTLP exporter into the real collector: model, kind, tokens and exact cost per span and per task.

Each instrumentation runs in its own process (they patch the same client; -genai-openai and -openai-v2
pin conflicting opentelemetry-util-genai versions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import KEYS
from otlp_payloads import unique

from agentwatch.collector.fakellm import FakeLLMServer
from agentwatch.collector.pricing import Pricer

SCRIPT = Path(__file__).parent / "instrumented" / "run_client.py"
PROVIDER = {
    "genai-openai": "openai", "openinference": "openai", "openllmetry": "openai", "genai-anthropic": "anthropic",
}  # fmt: skip


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLLMServer() as srv:
        yield srv


@pytest.mark.parametrize("instrumentation", list(PROVIDER))
def test_real_instrumentation_spans_are_typed_and_priced(collector, fake_llm, instrumentation):
    service = unique(f"svc-{instrumentation}")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--instrumentation", instrumentation, "--otlp-endpoint", collector.url,
         "--api-key", KEYS["ingest"], "--llm-url", fake_llm.url, "--service", service],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = report["calls"]
    tid = report["trace_ids"][0]
    trace = collector.trace(tid, spans=report["export"]["spans"])

    # one LLM call may be reported by two spans (anthropic's own + the instrumentation's): group by call
    llm_spans = [s for s in trace["spans"] if s["kind"] == "llm"]
    groups: dict[str, list[dict]] = {}
    for s in sorted(llm_spans, key=lambda s: s["start_ns"]):
        groups.setdefault(s["response_id"] or s["span_id"], []).append(s)
    assert len(groups) == len(calls), [s["name"] for s in llm_spans]

    pricer = Pricer()
    provider = PROVIDER[instrumentation]
    total_cost = 0.0
    for call, spans in zip(calls, groups.values(), strict=True):
        u = call["usage"]
        expected = pricer.price(
            provider=provider, model=call["model"], input_tokens=u["input_tokens"], output_tokens=u["output_tokens"],
            cache_read_tokens=u["cache_read_tokens"], cache_write_tokens=u["cache_write_tokens"],
        ).cost_usd  # fmt: skip
        assert expected is not None and expected > 0, call
        total_cost += expected
        for s in spans:
            assert s["provider"] == provider
            assert s["model"] == call["model"] or s["model"].startswith(call["model"]), (s["model"], call)
            assert (s["input_tokens"], s["output_tokens"]) == (u["input_tokens"], u["output_tokens"]), s["name"]
            assert s["cache_read_tokens"] == u["cache_read_tokens"]
            assert s["cache_write_tokens"] == u["cache_write_tokens"]
            assert s["cost_usd"] == pytest.approx(expected, rel=1e-9), (s["name"], call)

    root = next(s for s in trace["spans"] if s["parent_span_id"] is None)
    assert (root["kind"], root["agent_name"]) == ("task", "run_client")
    task = collector.api("/api/v1/tasks", service=service)["items"][0]
    assert task["trace_id"] == tid and task["llm_calls"] == len(calls)
    assert task["input_tokens"] == sum(c["usage"]["input_tokens"] for c in calls)
    assert task["output_tokens"] == sum(c["usage"]["output_tokens"] for c in calls)
    assert task["cost_usd"] == pytest.approx(total_cost, rel=1e-9)
    assert task["unpriced_llm_calls"] == 0
