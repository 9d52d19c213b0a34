"""Build OTLP payloads for tests: with the real OpenTelemetry SDK (spans encoded by the official OTLP
encoder), or by hand for the hostile cases the SDK would never produce."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Recorder:
    """A real TracerProvider whose finished spans we encode ourselves."""

    def __init__(self, service: str) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("agentwatch-tests", "1.0")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def request(self) -> ExportTraceServiceRequest:
        return encode_spans(self.spans())

    def body(self) -> bytes:
        return self.request().SerializeToString()


def agent_run(
    rec: Recorder,
    *,
    task: str = "support",
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    usage: dict[str, int] | None = None,
    tools: list[tuple[str, str]] | None = None,
    outcome: str = "ok",
    error: bool = False,
) -> str:
    """An invoke_agent root with one chat span and tool spans; returns the trace id (hex)."""
    usage = usage or {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    t = rec.tracer
    with t.start_as_current_span(
        f"invoke_agent {task}",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": task,
                    "gen_ai.provider.name": provider, "agentwatch.task.outcome": outcome},
    ) as root:  # fmt: skip
        with t.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                        "gen_ai.request.model": model, "gen_ai.response.model": model,
                        "gen_ai.response.id": f"resp-{uuid.uuid4().hex[:12]}", **usage},
        ):  # fmt: skip
            pass
        for name, args in tools or []:
            with t.start_as_current_span(
                f"execute_tool {name}",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                            "gen_ai.tool.call.arguments": args},
            ):  # fmt: skip
                pass
        if error:
            root.set_status(Status(StatusCode.ERROR, "boom"))
            root.set_attribute("error.type", "ValueError")
        return format(root.get_span_context().trace_id, "032x")


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def raw_request(service: str, spans: list[PbSpan]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "hand-made"
    ss.spans.extend(spans)
    return req


def raw_span(
    trace_id: bytes, span_id: bytes, name: str, attrs: dict[str, Any], *, parent: bytes = b"", start_ns: int,
    dur_ns: int = 1_000_000,
) -> PbSpan:  # fmt: skip
    return PbSpan(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
        start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + dur_ns,
        attributes=[kv(k, v) for k, v in attrs.items()],
    )  # fmt: skip


def new_ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def json_body(service: str, spans: list[dict]) -> bytes:
    return json.dumps(
        {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                            "scopeSpans": [{"scope": {"name": "json-test"}, "spans": spans}]}]}
    ).encode()  # fmt: skip


def gz(data: bytes) -> bytes:
    return gzip.compress(data)
