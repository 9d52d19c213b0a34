"""The writer: a daemon thread that moves spooled segments into the store.

Each segment becomes one INSERT (Arrow IPC stream, deduplication token = the segment's unique name),
and is deleted only after the store accepted it. A store that is down is retried with backoff while
segments pile up on disk; a segment the store keeps refusing while it answers other queries is moved
to ``spool/failed`` and counted as dropped (kept for a human, never silently lost).
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agentwatch.collector.metrics import IngestStats, Metrics
from agentwatch.collector.migrations import INGEST_STATS_TABLE, INSERT_COLUMNS, SPANS_TABLE
from agentwatch.collector.spool import Segment, Spool, read_records
from agentwatch.collector.store import ChdbStore, Store, StoreError

log = logging.getLogger(__name__)

_M = pa.map_(pa.string(), pa.string())
_NS = pa.timestamp("ns")
ARROW_SCHEMA = pa.schema(
    [
        ("Timestamp", _NS),
        ("TraceId", pa.string()),
        ("SpanId", pa.string()),
        ("ParentSpanId", pa.string()),
        ("TraceState", pa.string()),
        ("SpanName", pa.string()),
        ("SpanKind", pa.string()),
        ("ServiceName", pa.string()),
        ("ResourceAttributes", _M),
        ("ScopeName", pa.string()),
        ("ScopeVersion", pa.string()),
        ("SpanAttributes", _M),
        ("Duration", pa.uint64()),
        ("StatusCode", pa.string()),
        ("StatusMessage", pa.string()),
        ("Events.Timestamp", pa.list_(_NS)),
        ("Events.Name", pa.list_(pa.string())),
        ("Events.Attributes", pa.list_(_M)),
        ("Links.TraceId", pa.list_(pa.string())),
        ("Links.SpanId", pa.list_(pa.string())),
        ("Links.TraceState", pa.list_(pa.string())),
        ("Links.Attributes", pa.list_(_M)),
        ("ProjectId", pa.string()),
        ("CostUsd", pa.float64()),
        ("PriceSource", pa.string()),
    ]
)
assert ARROW_SCHEMA.names == INSERT_COLUMNS


# a drain that stored at least this many rows is followed by the next one at once, without the interval
BUSY_ROWS = 5_000


def to_ipc(columns: dict[str, Any]) -> bytes:
    """One Arrow IPC stream of the spans table's insert columns: Python lists (map columns as lists of
    (key, value) pairs) or Arrow arrays."""
    res = columns["ResourceAttributes"]
    if isinstance(res, list) and len(res) > 16:
        # every span of a resource holds the same pairs object: convert each resource once, then repeat it
        # by index (Arrow builds a map from Python pairs at ~0.2 us a pair; a take is a memcpy)
        ids = list(map(id, res))
        by_id = dict(zip(ids, res, strict=True))  # objects in the column are alive: their ids are distinct
        if len(by_id) * 4 < len(res):
            idx = pc.index_in(pa.array(ids, pa.int64()), value_set=pa.array(list(by_id), pa.int64()))
            columns = {**columns, "ResourceAttributes": pa.array(list(by_id.values()), _M).take(idx)}
    table = pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)
    return _ipc(table)


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, ARROW_SCHEMA) as w:
        w.write_table(table)
    return sink.getvalue()


def segment_table(records: list[bytes] | list[memoryview]) -> pa.Table:
    """The records of a segment as one table (zero-copy: its columns point into the records)."""
    tables = [pa.ipc.open_stream(r).read_all() for r in records]
    return pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table()


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an IPC stream's end-of-stream marker
_SCHEMA_MESSAGE = _ipc(ARROW_SCHEMA.empty_table())[: -len(_EOS)]  # what every stream of to_ipc starts with


def segment_stream(records: list[bytes] | list[memoryview], table: pa.Table) -> bytes:
    """One IPC stream of a segment's records, for one INSERT. Each record is a whole stream (schema message,
    record batches, end marker) of the same schema: the streams are spliced (one schema message, every
    record batch, one end marker), a copy of bytes instead of decoding and re-encoding ~30 MB of columns.
    A record that does not have that form (a spool written with another schema) takes the slow way."""
    head, tail = len(_SCHEMA_MESSAGE), len(_EOS)
    if not all(r[:head] == _SCHEMA_MESSAGE and r[-tail:] == _EOS for r in records):
        return _ipc(table)
    parts: list[bytes | memoryview] = [_SCHEMA_MESSAGE]
    parts += [memoryview(r)[head:-tail] for r in records]
    parts.append(_EOS)
    return b"".join(parts)


class Writer:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        metrics: Metrics,
        stats: IngestStats,
        *,
        interval: float = 0.25,
        max_attempts: int = 5,
        on_stored: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.store, self.spool, self.metrics, self.stats = store, spool, metrics, stats
        self.interval = interval
        self.max_attempts = max_attempts
        self.on_stored = on_stored
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}
        self._backoff = 0.0
        self.last_error: str | None = None
        self._last_stats_flush = 0.0
        self._inflight_since: float | None = None

    def start(self) -> None:
        self._tune_inserts()
        self._thread = threading.Thread(target=self._run, name="agentwatch-writer", daemon=True)
        self._thread.start()

    def _tune_inserts(self) -> None:
        """Embedded chDB: skip the insert-time collapse of equal sort keys within one block
        (``optimize_on_insert``, on by default for ReplacingMergeTree). Every read deduplicates re-sent
        spans anyway (FINAL), as it must across blocks; the collapse merges every row of every insert
        (10-25 % of the insert's CPU with the workload of bench/ingest.py). Settings are per connection
        in chDB; the write connection only runs our statements."""
        if not isinstance(self.store, ChdbStore):
            return
        try:
            self.store.command("SET optimize_on_insert = 0")
        except StoreError as e:
            log.warning("agentwatch writer: cannot set optimize_on_insert=0 (%s); inserts are slower", e)

    def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Stop after one last drain (bounded): what is left stays spooled for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=drain_timeout + 5)
        self.spool.close()

    def inflight_since(self) -> float | None:
        """When the spans insert in progress started (epoch seconds), None between inserts: its rows are stamped
        ``IngestedAt`` after this and are visible once it returns (the task summarizer's safe limit)."""
        return self._inflight_since

    def flush(self) -> None:
        """Ask for a drain now (tests and shutdown)."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            stored = 0
            try:
                stored = self.drain_once()
                self._flush_stats(force=stopping)
            except Exception:  # noqa: BLE001 - the writer must never die
                log.exception("agentwatch writer: unexpected error; retrying")
                self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
            if stopping:
                return
            if stored >= BUSY_ROWS and not self._backoff:
                # under sustained load an insert takes longer than the interval and the next batch is already
                # big: start it now (waiting would only add to the time a span takes to become queryable)
                continue
            self._wake.wait(self.interval + self._backoff)
            self._wake.clear()

    def drain_once(self) -> int:
        """Store every closed segment; returns rows stored. Stops at the first store failure."""
        segments = self.spool.take()
        stored = 0
        for i, seg in enumerate(segments):
            try:
                stored += self._store_segment(seg)
            except StoreError as e:
                self._on_failure(seg, e)
                rest = segments[i:] if seg.path.exists() else segments[i + 1 :]
                self.spool.give_back(rest)
                break
        self._update_gauges()
        return stored

    def _store_segment(self, seg: Segment) -> int:
        try:
            records, torn = read_records(seg.path)
        except FileNotFoundError:
            return 0
        if torn:
            log.warning(
                "spool segment %s: %d trailing bytes torn or corrupt (a crash mid-write); ignored", seg.name, torn
            )
        table = segment_table(records)
        rows = table.num_rows
        projects = _value_counts(table, "ProjectId") if rows else []
        if rows:
            stream = segment_stream(records, table)
            hooked = table if self.on_stored else None
            del records, table  # the stream is a copy: free the segment's bytes before the insert takes memory
            t0 = time.perf_counter()
            self._inflight_since = time.time()
            try:
                self.store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, stream, dedup_token=seg.name)
            finally:
                self._inflight_since = None
            self.metrics.insert_seconds.observe(time.perf_counter() - t0)
            del stream
        self.spool.done(seg)
        self._failures.pop(seg.name, None)
        self._backoff = 0.0
        self.last_error = None
        self.metrics.store_up.set(1)
        self.metrics.stored.inc(rows)
        for project, n in projects:
            self.stats.add(project, "stored", "", n)
        if rows and self.on_stored:
            try:
                self.on_stored(hooked)
            except Exception:  # noqa: BLE001
                log.exception("agentwatch writer: on_stored hook failed")
        return rows

    def _on_failure(self, seg: Segment, err: StoreError) -> None:
        self.metrics.writer_errors.inc()
        self.last_error = str(err)[:500]
        n = self._failures[seg.name] = self._failures.get(seg.name, 0) + 1
        store_answers = self.store.ping()
        self.metrics.store_up.set(1 if store_answers else 0)
        if store_answers and n >= self.max_attempts:
            records, _ = read_records(seg.path)
            rows = segment_table(records).num_rows
            target = self.spool.quarantine(seg)
            self._failures.pop(seg.name, None)
            self.metrics.dropped.labels("store_refused").inc(rows)
            log.error(
                "agentwatch writer: the store refused segment %s %d times (%s); %d spans moved to %s",
                seg.name, n, self.last_error, rows, target,
            )  # fmt: skip
            return
        self._backoff = min(max(self._backoff * 2, 0.5), 30.0) * random.uniform(0.8, 1.2)
        log.warning(
            "agentwatch writer: insert failed (attempt %d, store %s): %s; retrying in %.1fs",
            n, "up" if store_answers else "down", self.last_error, self._backoff,
        )  # fmt: skip

    def _update_gauges(self) -> None:
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.metrics.queue_depth.set(self.spool.pending_rows)

    def _flush_stats(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_stats_flush < 10:
            return
        self._last_stats_flush = now
        counts = self.stats.drain()
        if not counts:
            return
        cols: dict[str, list] = {"Minute": [], "ProjectId": [], "Stage": [], "Reason": [], "Spans": []}
        for (minute, project, stage, reason), n in counts.items():
            for k, v in zip(cols, (minute, project, stage, reason, n), strict=True):
                cols[k].append(v)
        table = pa.table(
            {
                "Minute": pa.array(cols["Minute"], pa.timestamp("s")),
                "ProjectId": cols["ProjectId"],
                "Stage": cols["Stage"],
                "Reason": cols["Reason"],
                "Spans": pa.array(cols["Spans"], pa.uint64()),
            }
        )
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        try:
            self.store.insert_arrow(INGEST_STATS_TABLE, list(cols), sink.getvalue())
        except StoreError:
            self.stats.restore(counts)


def _value_counts(table: pa.Table, column: str) -> list[tuple[str, int]]:
    vc = table.column(column).value_counts()
    return [(d["values"], d["counts"]) for d in vc.to_pylist()]
