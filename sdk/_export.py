"""The export side: our span processor, the batch pipeline, and small wrapper exporters (redact, keep quiet).

Everything expensive (masking, truncation, protobuf, HTTP) runs on the batch processor's thread; the agent's
thread only hands the ended span over, or counts it as dropped when the queue is full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from . import _attributes as A
from ._errors import swallowed
from ._masking import Masker
from ._runtime import CURRENT_TASK, RUNTIME, SCOPE

logger = logging.getLogger("agentwatch")

REPORT_EVERY_S = 60.0


@dataclass(frozen=True)
class DeliveryStats:
    """Spans the SDK handed to the exporter since ``init()``.

    Attributes:
        exported: delivered to the collector (2xx).
        failed: in batches the collector refused or never answered, after the retries.
        dropped: never sent: the export queue was full (the collector too slow or down), or shutdown gave up on
            them.
    """

    exported: int
    failed: int
    dropped: int


class Stats:
    """Counters, and a warning at most once a minute when spans were lost."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._reported_lost = 0
        self._last_report = -REPORT_EVERY_S

    def snapshot(self) -> DeliveryStats:
        return DeliveryStats(self.exported, self.failed, self.dropped)

    def drop(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n
        self.maybe_report()

    def maybe_report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_EVERY_S:
            return
        with self._lock:
            lost = self.failed + self.dropped
            new = lost - self._reported_lost
            if new <= 0 or (not force and now - self._last_report < REPORT_EVERY_S):
                return
            self._last_report, self._reported_lost = now, lost
        logger.warning(
            "agentwatch: %d spans not delivered to %s since the last report (%d dropped: export queue full, or "
            "still waiting at shutdown; %d failed to export: %s); %d delivered in all",
            new,
            self.endpoint,
            self.dropped,
            self.failed,
            self.last_error or "-",
            self.exported,
        )


class _ClientLogger:
    """Stands in for the OTLP HTTP client's logger: its per-retry lines become one report a minute."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def _note(self, message: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._stats.last_error = message % args if args else message
        except (TypeError, ValueError):
            self._stats.last_error = message
        logger.debug(message, *args)

    warning = error = exception = _note

    def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        logger.debug(message, *args)

    debug = info


class QuietExporter(SpanExporter):
    """Cleans each batch, exports it and counts the outcome; never lets an exporter exception out; no log line
    per failed batch.

    The batch in flight is tracked: when shutdown gives up on it (the collector down, the exporter still
    retrying), ``abandon()`` counts it as dropped, and the late outcome of that export is then not counted again.
    """

    def __init__(self, inner: SpanExporter, stats: Stats, *, redactor: Redactor | None = None) -> None:
        self.inner = inner
        self.stats = stats
        self.redactor = redactor
        self._inflight = 0
        self._generation = 0
        client = getattr(inner, "_client", None)
        if client is not None and hasattr(client, "_logger"):
            client._logger = _ClientLogger(stats)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.stats._lock:
            self._inflight = len(spans)
            generation = self._generation
        rejected = 0
        try:
            if self.redactor is not None:
                spans, rejected = self.redactor.clean(spans)
            result = self.inner.export(spans) if spans else SpanExportResult.SUCCESS
        except Exception as error:  # noqa: BLE001 - an exporter bug must not kill the export thread
            self.stats.last_error = repr(error)
            result = SpanExportResult.FAILURE
        with self.stats._lock:
            if generation != self._generation:
                return result  # abandoned at shutdown: counted as dropped already
            self._inflight = 0
            if result is SpanExportResult.SUCCESS:
                self.stats.exported += len(spans)
            else:
                self.stats.failed += len(spans)
            self.stats.failed += rejected
        self.stats.maybe_report()
        return result

    def abandon(self) -> None:
        """Count the batch still being exported, if any, as dropped (shutdown gave up waiting for it)."""
        with self.stats._lock:
            lost, self._inflight = self._inflight, 0
            self._generation += 1
            self.stats.dropped += lost

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Redactor:
    """Masks PII in attribute values, drops content when capture is off, truncates long values.

    Spans that need no change are passed on as they are; the others are copied (a ReadableSpan is immutable).
    """

    def __init__(self, *, masker: Masker | None, capture_content: bool, max_chars: int) -> None:
        self.masker = masker
        self.capture_content = capture_content
        self.max_chars = max_chars
        self.keep = A.NEVER_MASKED

    def _value(self, key: str, value: str) -> str:
        if len(value) > self.max_chars:
            value = f"{value[: self.max_chars]}...[truncated {len(value) - self.max_chars} chars]"
        if self.masker is not None and key not in self.keep:
            value = self.masker.mask(key, value)
        return value

    def _attributes(self, attributes: Any) -> dict[str, Any] | None:
        """The cleaned attributes, or None when nothing changed."""
        if not attributes:
            return None
        if self.masker is None and self.capture_content:
            # nothing to mask or drop: only an over-long string needs work (the common case, kept cheap)
            limit = self.max_chars
            if not any(type(value) is str and len(value) > limit for value in attributes.values()):
                return None
        cleaned: dict[str, Any] | None = None
        for key, value in attributes.items():
            new = value
            if not self.capture_content and key in A.CONTENT_KEYS:
                new = None
            elif isinstance(value, str):
                new = self._value(key, value)
            elif isinstance(value, tuple | list) and value and isinstance(value[0], str):
                items = [self._value(key, item) if isinstance(item, str) else item for item in value]
                if any(a is not b for a, b in zip(items, value, strict=True)):
                    new = tuple(items)
            if new is not value:
                if cleaned is None:
                    cleaned = dict(attributes)
                if new is None:
                    del cleaned[key]
                else:
                    cleaned[key] = new
        return cleaned

    def _span(self, span: ReadableSpan) -> ReadableSpan:
        attributes = self._attributes(span.attributes)
        events: list[Event] | None = None
        for index, event in enumerate(span.events):
            cleaned = self._attributes(event.attributes)
            if cleaned is not None:
                if events is None:
                    events = list(span.events)
                events[index] = Event(event.name, cleaned, event.timestamp)
        status = span.status
        if status.description and self.masker is not None:
            description = self.masker.mask("status", status.description)
            if description is not status.description:
                status = Status(status.status_code, description)
        if attributes is None and events is None and status is span.status:
            return span
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes if attributes is None else attributes,
            events=span.events if events is None else events,
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def clean(self, spans: Sequence[ReadableSpan]) -> tuple[list[ReadableSpan], int]:
        """The cleaned spans, and how many could not be cleaned (those are not exported: fail closed)."""
        cleaned = []
        for span in spans:
            try:
                cleaned.append(self._span(span))
            except Exception:  # noqa: BLE001 - fail closed: a span we could not clean is not exported
                logger.debug("agentwatch: could not redact span %r; not exported", span.name, exc_info=True)
        return cleaned, len(spans) - len(cleaned)


class Pipeline:
    """Where ended spans go: a batch processor with a bounded queue (or, for tests, the exporter directly)."""

    def __init__(
        self,
        exporter: QuietExporter,
        stats: Stats,
        *,
        synchronous: bool,
        max_queue_size: int,
        max_export_batch_size: int,
        schedule_delay_ms: float,
        export_timeout_s: float,
    ) -> None:
        self.exporter = exporter
        self.stats = stats
        self.max_queue_size = max_queue_size
        self.batch: BatchSpanProcessor | None = None
        self._queue: Any = None
        if not synchronous:
            self.batch = BatchSpanProcessor(
                exporter,
                max_queue_size=max_queue_size,
                schedule_delay_millis=schedule_delay_ms,
                max_export_batch_size=min(max_export_batch_size, max_queue_size),
                export_timeout_millis=export_timeout_s * 1000,
            )
            # The stock processor drops the oldest span, and logs, when its queue is full; we look first, so
            # the drop is ours to count and report once a minute.
            self._queue = getattr(getattr(self.batch, "_batch_processor", None), "_queue", None)
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        batch = self.batch
        if batch is None:
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                with self._lock:
                    self.exporter.export([span])
            finally:
                detach(token)
            return
        queue = self._queue
        if queue is not None and len(queue) >= self.max_queue_size:
            self.stats.drop()
            return
        batch.on_end(span)

    def force_flush(self, timeout_s: float) -> bool:
        if self.batch is not None:
            return self.batch.force_flush(int(timeout_s * 1000))
        return True

    def shutdown(self, timeout_s: float) -> None:
        if self.batch is not None:
            inner = getattr(self.batch, "_batch_processor", None)  # the stock shutdown() waits up to 30 s
            if inner is not None and hasattr(inner, "shutdown"):
                inner.shutdown(timeout_millis=int(timeout_s * 1000))
            else:
                self.batch.shutdown()
            left = len(self._queue) if self._queue is not None else 0
            if left:  # shutdown gave up on these (collector down or slow): never sent, and counted as such
                self.stats.drop(left)
            self.exporter.abandon()  # and on the batch an export may still be retrying
        else:
            self.exporter.shutdown()
        self.stats.maybe_report(force=True)


def _attributes_of(span: ReadableSpan) -> Any:
    """A span's attributes for reading on the agent's thread: the SDK span's own dict when it has one (a plain
    dict lookup; ``span.attributes`` is a read-only proxy over a Python mapping, ~3-7x slower per ``get``, and the
    guards look up a dozen keys, most of them absent, per LLM span); else the public view."""
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    return inner if type(inner) is dict else span.attributes


class AgentwatchProcessor(SpanProcessor):
    """The one processor we add to the tracer provider: the guards' hooks, then our export pipeline.

    ``on_start``: before an LLM call inside a task whose budget is spent, raise ``BudgetExceeded`` (the call is
    not made). ``on_end``: add an LLM span's tokens (and cost) to its task. The pipeline can be swapped by a new
    ``init()`` without touching the provider.
    """

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.shutdown_timeout_s = 5.0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name == SCOPE:
            return  # our own spans ran the guards already
        task = CURRENT_TASK.get()
        if task is None and not RUNTIME.tasks_by_trace:
            return
        error = None
        try:
            attributes = _attributes_of(span)
            if not attributes or attributes.get(A.GEN_AI_OPERATION_NAME) not in A.LLM_OPERATIONS:
                return
            if task is None:
                task = RUNTIME.tasks_by_trace.get(span.get_span_context().trace_id)
            if task is not None:
                error = task.admit_llm()
        except Exception as internal:
            if not swallowed(internal):
                raise
        if error is not None:
            raise error

    def on_end(self, span: ReadableSpan) -> None:
        # Called for every span of the provider, on the thread that ends it: kept to a few dict lookups.
        try:
            attributes = _attributes_of(span)
            if attributes and attributes.get(A.GEN_AI_OPERATION_NAME) in A.LLM_OPERATIONS:
                task = CURRENT_TASK.get() or RUNTIME.tasks_by_trace.get(span.context.trace_id)
                if task is not None:
                    task.account_llm(attributes)
        except Exception as internal:
            if not swallowed(internal):
                raise
        pipeline = self.pipeline
        if pipeline is not None:
            try:  # apart from the accounting: a bug there must not cost the span its export
                pipeline.on_end(span)
            except Exception as internal:
                if not swallowed(internal):
                    raise

    def shutdown(self) -> None:
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            pipeline.shutdown(self.shutdown_timeout_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        pipeline = self.pipeline
        return pipeline.force_flush(timeout_millis / 1000) if pipeline is not None else True
