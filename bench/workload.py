"""Agent-like OTLP trace payloads for benchmarks (MEASUREMENTS.md's workload): about 10 spans a trace
(an invoke_agent root, 3-5 chat spans with gen_ai.* attributes and ~500 B of messages, 3-5
execute_tool spans, a decision span), 512 spans a request. Deterministic per seed."""

from __future__ import annotations

import json
import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku-20241022")]
TOOLS = ["search_web", "fetch_page", "lookup_order", "send_email", "query_db"]


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def make_trace(rng: random.Random, service_spans, start_ns: int) -> list[Span]:
    """One agent run: returns its spans (root last, as an SDK exports them)."""
    tid = rng.randbytes(16)
    root_id = rng.randbytes(8)
    spans = []
    t = start_ns
    n_llm, n_tool = rng.randint(3, 5), rng.randint(3, 5)
    provider, model = rng.choice(MODELS)
    for i in range(n_llm + n_tool + 1):
        sid = rng.randbytes(8)
        dur = rng.randint(5, 900) * 1_000_000
        if i < n_llm + n_tool and i % 2 == 0 and n_llm:
            n_llm -= 1
            inp, out = rng.randint(200, 3000), rng.randint(20, 600)
            msg = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "x" * 400}]}])
            attrs = [
                _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", provider),
                _kv("gen_ai.request.model", model), _kv("gen_ai.response.model", model),
                _kv("gen_ai.usage.input_tokens", inp), _kv("gen_ai.usage.output_tokens", out),
                _kv("gen_ai.response.id", f"resp-{sid.hex()}"), _kv("gen_ai.response.finish_reasons", "stop"),
                _kv("gen_ai.input.messages", msg),
            ]
            name, kind = f"chat {model}", Span.SPAN_KIND_CLIENT
        elif i < n_llm + n_tool + (0 if n_tool else 1) and i != n_llm + n_tool:
            tool = rng.choice(TOOLS)
            args = json.dumps({"q": f"query {rng.randint(0, 50)}"})
            attrs = [
                _kv("gen_ai.operation.name", "execute_tool"), _kv("gen_ai.tool.name", tool),
                _kv("gen_ai.tool.call.arguments", args), _kv("gen_ai.tool.call.result", "ok " * 40),
                _kv("gen_ai.tool.call.id", f"call_{sid.hex()}"),
            ]
            name, kind = f"execute_tool {tool}", Span.SPAN_KIND_INTERNAL
        else:
            attrs = [
                _kv("gen_ai.operation.name", "decision"), _kv("agentwatch.decision.name", "route"),
                _kv("agentwatch.decision.choice", "answer"), _kv("agentwatch.decision.confidence", 0.8),
            ]
            name, kind = "decision route", Span.SPAN_KIND_INTERNAL
        spans.append(Span(trace_id=tid, span_id=sid, parent_span_id=root_id, name=name, kind=kind,
                          start_time_unix_nano=t, end_time_unix_nano=t + dur, attributes=attrs))
        t += dur
    spans.append(Span(
        trace_id=tid, span_id=root_id, name="invoke_agent support", kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start_ns, end_time_unix_nano=t,
        attributes=[_kv("gen_ai.operation.name", "invoke_agent"), _kv("gen_ai.agent.name", "support"),
                    _kv("agentwatch.task.outcome", "ok"), _kv("gen_ai.provider.name", provider)],
        status=Status(code=Status.STATUS_CODE_OK)))
    return spans


def make_requests(n_requests: int, *, spans_per_request: int = 512, seed: int = 1,
                  services: int = 3, now_ns: int | None = None) -> list[bytes]:
    """Serialized ExportTraceServiceRequests of about `spans_per_request` spans each."""
    rng = random.Random(seed)
    now_ns = now_ns or time.time_ns()
    out = []
    for _ in range(n_requests):
        req = ExportTraceServiceRequest()
        by_service: dict[int, list[Span]] = {}
        count = 0
        while count < spans_per_request:
            svc = rng.randrange(services)
            spans = make_trace(rng, None, now_ns - rng.randint(0, 600) * 1_000_000_000)
            by_service.setdefault(svc, []).extend(spans)
            count += len(spans)
        for svc, spans in by_service.items():
            rs = req.resource_spans.add()
            rs.resource.attributes.append(_kv("service.name", f"agent-{svc}"))
            rs.resource.attributes.append(_kv("deployment.environment", "bench"))
            ss = rs.scope_spans.add()
            ss.scope.name = "agentwatch"
            ss.scope.version = "0.1.0"
            ss.spans.extend(spans)
        out.append(req.SerializeToString())
    return out
