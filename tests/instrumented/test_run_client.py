"""run_client.py against a local OTLP receiver: real instrumentations, real clients, the fake LLM server.

The attribute names asserted here are the table in README.md; if an instrumentation changes what it
emits, this fails and the table (and the collector's normalisation) must follow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import OTLPReceiver, ReceivedSpan

from agentwatch.collector.fakellm import FakeLLMServer

SCRIPT = Path(__file__).with_name("run_client.py")
KEY = "aw-test-key-not-real"
SERVER_KIND_CLIENT, SPAN_KIND_INTERNAL = 3, 1

# instrumentation -> (scope, span kind, {concept: attribute name}, (kind attribute, value))
EXPECTED: dict[str, dict[str, Any]] = {
    "genai-openai": {
        "scope": "opentelemetry.instrumentation.genai.openai",
        "span_kind": SERVER_KIND_CLIENT,
        "kind": ("gen_ai.operation.name", "chat"),
        "provider": ("gen_ai.provider.name", "openai"),
        "model": "gen_ai.request.model",
        "input": "gen_ai.usage.input_tokens",
        "output": "gen_ai.usage.output_tokens",
        "cache_read": "gen_ai.usage.cache_read.input_tokens",
        "reasoning": "gen_ai.usage.reasoning.output_tokens",
        "content": "gen_ai.input.messages",
    },
    "openinference": {
        "scope": "openinference.instrumentation.openai",
        "span_kind": SPAN_KIND_INTERNAL,
        "kind": ("openinference.span.kind", "LLM"),
        "provider": ("llm.system", "openai"),
        "model": "llm.model_name",
        "input": "llm.token_count.prompt",
        "output": "llm.token_count.completion",
        "cache_read": "llm.token_count.prompt_details.cache_read",
        "reasoning": "llm.token_count.completion_details.reasoning",
        "content": "llm.input_messages.1.message.content",
    },
    "openllmetry": {
        "scope": "opentelemetry.instrumentation.openai.v1",
        "span_kind": SERVER_KIND_CLIENT,
        "kind": ("gen_ai.operation.name", "chat"),
        "provider": ("gen_ai.provider.name", "openai"),
        "model": "gen_ai.request.model",
        "input": "gen_ai.usage.input_tokens",
        "output": "gen_ai.usage.output_tokens",
        "cache_read": "gen_ai.usage.cache_read.input_tokens",
        "reasoning": "gen_ai.usage.reasoning_tokens",  # custom name; missing on streamed calls (below)
        "content": "gen_ai.input.messages",
    },
    "genai-anthropic": {
        "scope": "opentelemetry.instrumentation.genai.anthropic",
        "span_kind": SERVER_KIND_CLIENT,
        "kind": ("gen_ai.operation.name", "chat"),
        "provider": ("gen_ai.provider.name", "anthropic"),
        "model": "gen_ai.request.model",
        "input": "gen_ai.usage.input_tokens",
        "output": "gen_ai.usage.output_tokens",
        "cache_read": "gen_ai.usage.cache_read.input_tokens",
        "cache_write": "gen_ai.usage.cache_write.input_tokens",  # not cache_creation
        "content": "gen_ai.input.messages",
    },
}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def run(instrumentation: str, llm: FakeLLMServer) -> tuple[dict[str, Any], list[ReceivedSpan], list[str | None]]:
    with OTLPReceiver() as rx:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--instrumentation", instrumentation, "--otlp-endpoint", rx.endpoint,
             "--api-key", KEY, "--llm-url", llm.url, "--service", f"svc-{instrumentation}"],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        return report, list(rx.spans), list(rx.auth_headers)


@pytest.mark.parametrize("instrumentation", list(EXPECTED))
def test_instrumented_calls_arrive_with_expected_attributes(instrumentation: str, llm: FakeLLMServer) -> None:
    report, spans, auth = run(instrumentation, llm)
    exp = EXPECTED[instrumentation]
    assert report["export"] == {"ok": True, "spans": len(spans), "failed_spans": 0}
    assert auth and set(auth) == {f"Bearer {KEY}"}
    (trace_id,) = report["trace_ids"]
    assert {s.trace_id for s in spans} == {trace_id}
    assert {s.resource["service.name"] for s in spans} == {f"svc-{instrumentation}"}
    root = next(s for s in spans if s.span_id == report["root_span_id"])
    assert root.parent_span_id == "" and root.attributes["gen_ai.operation.name"] == "invoke_agent"

    ours = sorted((s for s in spans if s.scope == exp["scope"]), key=lambda s: s.start_ns)
    chats = [s for s in ours if s.attributes.get(exp["kind"][0]) == exp["kind"][1]]
    calls = [c for c in report["calls"] if c["call"].startswith("chat")]
    assert len(chats) == len(calls) == 3
    for span, call in zip(chats, calls, strict=True):
        a, usage = span.attributes, call["usage"]
        assert span.parent_span_id == root.span_id and span.kind == exp["span_kind"]
        assert a[exp["provider"][0]] == exp["provider"][1]
        assert a[exp["model"]] == call["model"]
        assert a[exp["input"]] == usage["input_tokens"] > usage["cache_read_tokens"] > 0  # input includes cache
        assert a[exp["output"]] == usage["output_tokens"]
        assert a[exp["cache_read"]] == usage["cache_read_tokens"]
        if "cache_write" in exp:
            assert a[exp["cache_write"]] == usage["cache_write_tokens"] > 0
        if "reasoning" in exp:
            if instrumentation == "openllmetry" and call["stream"]:
                assert exp["reasoning"] not in a  # OpenLLMetry 0.62.4 drops reasoning tokens when streaming
            else:
                assert a[exp["reasoning"]] == usage["reasoning_tokens"] > 0
        assert "What is the weather in Paris" in str(a[exp["content"]])  # content capture is on
    tool_span = chats[2]
    assert any("get_weather" in str(v) for k, v in tool_span.attributes.items() if "output" in k)

    if instrumentation == "genai-anthropic":
        # anthropic 2.12 traces itself: one more chat span per call, nested under the instrumentation's
        # span and sharing its response id. The collector must count such a call once.
        sdk = [s for s in spans if s.scope == "com.anthropic.sdk.python"]
        assert len(sdk) == 3
        by_id = {s.span_id: s for s in chats}
        for s in sdk:
            parent = by_id[s.parent_span_id]
            assert s.attributes["gen_ai.response.id"] == parent.attributes["gen_ai.response.id"]
            assert s.attributes["gen_ai.usage.input_tokens"] == parent.attributes["gen_ai.usage.input_tokens"]
    else:
        (emb,) = [c for c in report["calls"] if c["call"] == "embeddings"]
        emb_spans = [s for s in ours if s not in chats]
        assert len(emb_spans) == 1
        a = emb_spans[0].attributes
        model_key = "embedding.model_name" if instrumentation == "openinference" else "gen_ai.request.model"
        assert a[model_key] == emb["model"]
        assert a[exp["input"]] == emb["usage"]["input_tokens"]
