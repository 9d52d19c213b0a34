"""Test your agent's instrumentation: spans captured in memory, through the same masking and content rules as export.

As a pytest plugin (installed with agentwatch) it gives the ``agentwatch_spans`` fixture:

    def test_triage_records_its_tool(agentwatch_spans):
        run_triage("where is my order?")
        tool = agentwatch_spans.one("execute_tool lookup_order")
        assert tool.attributes["gen_ai.tool.name"] == "lookup_order"

Elsewhere, ``with capture_spans() as spans: ...``. Both call ``agentwatch.init()`` with an in-memory exporter
(synchronous: every span is there as soon as it ends) and ``agentwatch.shutdown()`` afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from ._options import Redaction

__all__ = ["CapturedSpans", "capture_spans", "agentwatch_spans"]


class CapturedSpans:
    """The spans that ended while capturing, in the order they ended (masked as they would be exported)."""

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    # the SpanExporter protocol (duck-typed so importing this module does not import the OpenTelemetry SDK)
    def export(self, spans: Sequence[ReadableSpan]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # what tests use
    @property
    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def names(self) -> list[str]:
        return [span.name for span in self.spans]

    def find(
        self, name: str | None = None, *, operation: str | None = None, scope: str | None = None
    ) -> list[ReadableSpan]:
        """Spans by name, ``gen_ai.operation.name`` and/or instrumentation scope name."""
        found = []
        for span in self.spans:
            if name is not None and span.name != name:
                continue
            if operation is not None and (span.attributes or {}).get("gen_ai.operation.name") != operation:
                continue
            if scope is not None and (span.instrumentation_scope is None or span.instrumentation_scope.name != scope):
                continue
            found.append(span)
        return found

    def one(self, name: str | None = None, *, operation: str | None = None, scope: str | None = None) -> ReadableSpan:
        """The one span that matches; an AssertionError listing what was captured otherwise."""
        found = self.find(name, operation=operation, scope=scope)
        if len(found) != 1:
            raise AssertionError(
                f"expected one span (name={name!r}, operation={operation!r}, scope={scope!r}), found {len(found)}; "
                f"captured: {self.names()}"
            )
        return found[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        parent_id = parent.context.span_id if parent.context else None
        return [span for span in self.spans if span.parent is not None and span.parent.span_id == parent_id]


@contextmanager
def capture_spans(
    *,
    capture_content: bool = True,
    redact: bool | Redaction = True,
    instrument: bool | Sequence[str] = False,
    **advanced: Any,
) -> Iterator[CapturedSpans]:
    """Capture agentwatch spans (and instrumented LLM clients' spans) in memory for the block.

    Args:
        capture_content, redact, instrument: as for ``agentwatch.init()``. Instrumentation is off by default
            here; pass ``instrument=True`` to capture the OpenAI / Anthropic clients' spans too.
        advanced: more ``AdvancedOptions`` fields (e.g. ``loop=LoopGuard(threshold=5)``).
    """
    import agentwatch

    captured = CapturedSpans()
    options = agentwatch.AdvancedOptions(span_exporter=captured, synchronous_export=True, **advanced)  # type: ignore[arg-type]
    agentwatch.init(
        service_name="agentwatch-test",
        capture_content=capture_content,
        redact=redact,
        instrument=instrument,
        enabled=True,
        advanced=options,
    )
    try:
        yield captured
    finally:
        agentwatch.shutdown()


try:
    import pytest
except ImportError:  # pragma: no cover - the plugin is only loaded by pytest
    pass
else:

    @pytest.fixture
    def agentwatch_spans() -> Iterator[CapturedSpans]:
        """In-memory capture of the spans agentwatch would export during the test."""
        with capture_spans() as captured:
            yield captured
