"""Make a fixed set of LLM calls through a real instrumentation and export the spans over OTLP/HTTP.

Run as its own process, one instrumentation per process (they patch the same client classes)::

    python tests/instrumented/run_client.py --instrumentation genai-openai \\
        --otlp-endpoint http://127.0.0.1:4318 --api-key KEY --llm-url http://127.0.0.1:8900 --service demo

``--otlp-endpoint`` is the collector's base URL (``/v1/traces`` is appended unless present),
``--llm-url`` the fake LLM server's base URL (``agentwatch.collector.fakellm``).
Prints one JSON line: the trace id, the root span id, and per call the model, whether it streamed,
and the usage the fake server returned, in OTel terms (input includes cache, output includes reasoning),
plus how the export went. Exit status 0 when every export succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

INSTRUMENTATIONS = ("genai-openai", "openinference", "openllmetry", "genai-anthropic")
OPENAI_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
ANTHROPIC_MODEL = "claude-haiku-4-5"
# Make the fake server report cache and reasoning tokens so their attributes show up on the spans.
FAKE_HEADERS = {"x-fake-cached-tokens": "8", "x-fake-reasoning-tokens": "3", "x-fake-cache-write-tokens": "4"}
QUESTION = "What is the weather in Paris today? Answer in one short sentence."
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
        },
    }
]
TOOLS_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    }
]


def _enable_content_capture() -> None:
    # Before the instrumentations are imported: some read these at import time.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    os.environ.setdefault("TRACELOOP_TRACE_CONTENT", "true")  # OpenLLMetry (its default too)
    # OpenInference captures content unless OPENINFERENCE_HIDE_* say otherwise.


def _instrument(name: str, provider: Any) -> None:
    if name == "genai-openai":
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OIOpenAIInstrumentor

        OIOpenAIInstrumentor().instrument(tracer_provider=provider)
    elif name == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TLOpenAIInstrumentor

        TLOpenAIInstrumentor().instrument(tracer_provider=provider)
    elif name == "genai-anthropic":
        from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(tracer_provider=provider)
    else:  # argparse restricts the choices
        raise ValueError(name)


def _openai_usage(usage: Any) -> dict[str, int]:
    details = usage.prompt_tokens_details
    out_details = usage.completion_tokens_details
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_tokens": (details.cached_tokens or 0) if details else 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": (out_details.reasoning_tokens or 0) if out_details else 0,
    }


def _anthropic_usage(usage: Any) -> dict[str, int]:
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    return {
        "input_tokens": usage.input_tokens + read + write,  # Anthropic reports input without the cache
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "reasoning_tokens": 0,
    }


def _openai_calls(llm_url: str) -> list[dict[str, Any]]:
    import openai

    calls: list[dict[str, Any]] = []
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTION}]
    with openai.OpenAI(
        base_url=llm_url.rstrip("/") + "/v1", api_key="fake-llm-key", max_retries=0, default_headers=FAKE_HEADERS
    ) as client:
        r = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, temperature=0.2, max_tokens=64)
        calls.append(
            {"call": "chat", "model": r.model, "stream": False, "response_id": r.id, "usage": _openai_usage(r.usage)}
        )

        usage, ident = None, None
        stream = client.chat.completions.create(
            model=OPENAI_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            ident = chunk.id
            usage = chunk.usage or usage
        calls.append(
            {
                "call": "chat_stream",
                "model": OPENAI_MODEL,
                "stream": True,
                "response_id": ident,
                "usage": _openai_usage(usage),
            }
        )

        r = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=TOOLS_OPENAI)
        tool_call = r.choices[0].message.tool_calls[0]
        calls.append(
            {
                "call": "chat_tool_call",
                "model": r.model,
                "stream": False,
                "response_id": r.id,
                "tool": tool_call.function.name,
                "usage": _openai_usage(r.usage),
            }
        )

        e = client.embeddings.create(model=EMBEDDING_MODEL, input=QUESTION)
        calls.append(
            {
                "call": "embeddings",
                "model": e.model,
                "stream": False,
                "response_id": None,
                "usage": {
                    "input_tokens": e.usage.prompt_tokens,
                    "output_tokens": 0,
                    "cache_read_tokens": 0,
                    "cache_write_tokens": 0,
                    "reasoning_tokens": 0,
                },
            }
        )
    return calls


def _anthropic_calls(llm_url: str) -> list[dict[str, Any]]:
    import anthropic

    calls: list[dict[str, Any]] = []
    messages = [{"role": "user", "content": QUESTION}]
    with anthropic.Anthropic(
        base_url=llm_url.rstrip("/"), api_key="fake-llm-key", max_retries=0, default_headers=FAKE_HEADERS
    ) as client:
        m = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, system="You are terse.", messages=messages)
        calls.append(
            {"call": "chat", "model": m.model, "stream": False, "response_id": m.id, "usage": _anthropic_usage(m.usage)}
        )

        with client.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, system="You are terse.", messages=messages
        ) as stream:
            for _ in stream.text_stream:
                pass
            m = stream.get_final_message()
        calls.append(
            {
                "call": "chat_stream",
                "model": m.model,
                "stream": True,
                "response_id": m.id,
                "usage": _anthropic_usage(m.usage),
            }
        )

        m = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=messages, tools=TOOLS_ANTHROPIC)
        tool = next(b for b in m.content if b.type == "tool_use")
        calls.append(
            {
                "call": "chat_tool_call",
                "model": m.model,
                "stream": False,
                "response_id": m.id,
                "tool": tool.name,
                "usage": _anthropic_usage(m.usage),
            }
        )
    return calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instrumentation", required=True, choices=INSTRUMENTATIONS)
    parser.add_argument("--otlp-endpoint", required=True, help="collector base URL, e.g. http://127.0.0.1:4318")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--llm-url", required=True, help="fake LLM server base URL")
    parser.add_argument("--service", default="instrumented-client")
    args = parser.parse_args(argv)

    _enable_content_capture()
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        """Delegates to the OTLP exporter and remembers how each export went."""

        def __init__(self, inner: SpanExporter) -> None:
            self.inner, self.exported, self.failed = inner, 0, 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            result = self.inner.export(spans)
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return self.inner.force_flush(timeout_millis)

    endpoint = args.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    exporter = CountingExporter(
        OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": f"Bearer {args.api_key}"}, timeout=10)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument(args.instrumentation, provider)

    tracer = trace.get_tracer("agentwatch.tests.run_client")
    with tracer.start_as_current_span(
        "invoke_agent run_client",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "run_client"},
    ) as root:
        if args.instrumentation == "genai-anthropic":
            calls = _anthropic_calls(args.llm_url)
        else:
            calls = _openai_calls(args.llm_url)
        ctx = root.get_span_context()

    provider.force_flush()
    provider.shutdown()
    report = {
        "instrumentation": args.instrumentation,
        "service": args.service,
        "trace_ids": [format(ctx.trace_id, "032x")],
        "root_span_id": format(ctx.span_id, "016x"),
        "calls": calls,
        "export": {
            "ok": exporter.failed == 0 and exporter.exported > 0,
            "spans": exporter.exported,
            "failed_spans": exporter.failed,
        },
    }
    print(json.dumps(report), flush=True)
    return 0 if report["export"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
