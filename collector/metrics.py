"""The collector's own health, as Prometheus metrics (``GET /metrics``, no key, no project data) and as
per-project, per-minute ingestion counts written to the store (``ingest_stats``: ingestion health is
data the read API and alerts can use)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.accepted = Counter("agentwatch_spans_accepted", "Spans accepted (answered 2xx) and spooled", registry=r)
        self.rejected = Counter("agentwatch_spans_rejected", "Spans rejected, by reason", ["reason"], registry=r)
        self.stored = Counter("agentwatch_spans_stored", "Spans written to the store", registry=r)
        self.dropped = Counter(
            "agentwatch_spans_dropped", "Accepted spans that could not be stored, by reason", ["reason"], registry=r
        )
        self.requests = Counter("agentwatch_ingest_requests", "OTLP requests by HTTP status", ["status"], registry=r)
        self.unpriced = Counter("agentwatch_llm_spans_unpriced", "LLM spans with tokens but no known price", registry=r)
        self.spool_bytes = Gauge("agentwatch_spool_bytes", "Bytes in the spool waiting for the store", registry=r)
        self.queue_depth = Gauge("agentwatch_queue_depth", "Spans accepted and not yet stored", registry=r)
        self.store_up = Gauge("agentwatch_store_up", "1 when the last store operation succeeded", registry=r)
        self.insert_seconds = Histogram(
            "agentwatch_insert_seconds",
            "Time of one insert into the store",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.writer_errors = Counter("agentwatch_writer_errors", "Failed insert attempts", registry=r)
        self.decode_seconds = Histogram(
            "agentwatch_decode_seconds",
            "Time to decode, normalise and price one OTLP request",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.summarized = Counter("agentwatch_tasks_summarized", "Task summary rows written", registry=r)
        self.calls_summarized = Counter("agentwatch_calls_summarized", "LLM call summary rows written", registry=r)
        self.loops_summarized = Counter(
            "agentwatch_loops_summarized",
            "Loop summary rows written (one per loop pattern of a trace; one marks a trace of several services)",
            registry=r,
        )
        self.summary_seconds = Histogram(
            "agentwatch_summary_seconds",
            "Time of one summarizer pass's part (compute and write): tasks, calls or loops",
            ["part"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.store_memory = Gauge(
            "agentwatch_store_memory_bytes",
            "Memory the embedded store's engine accounts for: all it holds now (inserts, queries, merges, caches); "
            "stays 0 with a ClickHouse server, whose memory is not the collector's",
            registry=r,
        )
        self.summary_errors = Counter("agentwatch_summary_errors", "Failed task summary passes", registry=r)
        self.summary_watermark = Gauge(
            "agentwatch_summary_watermark_seconds", "Spans ingested up to this time are summarized", registry=r
        )
        self.store_up.set(1)


class IngestStats:
    """Per (minute, project, stage, reason) span counts, flushed to the store by the writer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, str, str, str], int] = defaultdict(int)

    def add(self, project: str, stage: str, reason: str, n: int) -> None:
        if n <= 0:
            return
        minute = int(time.time()) // 60 * 60
        with self._lock:
            self._counts[(minute, project, stage, reason)] += n

    def drain(self) -> dict[tuple[int, str, str, str], int]:
        with self._lock:
            out, self._counts = dict(self._counts), defaultdict(int)
        return out

    def restore(self, counts: dict[tuple[int, str, str, str], int]) -> None:
        with self._lock:
            for k, v in counts.items():
                self._counts[k] += v
