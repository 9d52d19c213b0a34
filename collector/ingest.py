"""The ingest pipeline of one OTLP request: decompress (bounded) -> decode -> price -> spool.

HTTP-free so it can be tested and benchmarked alone; ``app.py`` maps its outcomes to status codes.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

from agentwatch.collector.metrics import IngestStats, Metrics
from agentwatch.collector.normalize import COST, INPUT_TOKENS, OUTPUT_TOKENS, llm_usage, sent_cost
from agentwatch.collector.otlp import BadRequest, Batch, Limits, new_columns, parse_json, parse_protobuf, walk
from agentwatch.collector.spool import Spool, SpoolFull
from agentwatch.collector.writer import to_ipc

log = logging.getLogger(__name__)

# a span is priced only when it carries one of these (sent_cost and llm_usage return None otherwise)
_PRICE_TRIGGER = pa.array(sorted({*COST, *INPUT_TOKENS, *OUTPUT_TOKENS}), pa.string())

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class Outcome(Enum):
    OK = "ok"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    BUSY = "busy"


@dataclass
class Result:
    outcome: Outcome
    accepted: int = 0
    rejected: int = 0
    message: str = ""


class TooLarge(ValueError):
    pass


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip/deflate with the size limit checked while inflating: a gzip bomb stops at ``limit`` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity", "none"):
        if len(body) > limit:
            raise TooLarge(f"the body is {len(body)} bytes; the limit is {limit}")
        return body
    if enc not in ("gzip", "deflate"):
        raise ValueError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    out = []
    size = 0
    data = body
    try:
        while data:
            chunk = d.decompress(data, 1 << 20)
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body inflates to more than {limit} bytes (the limit, after decompression)")
            out.append(chunk)
            data = d.unconsumed_tail
            if d.eof:
                break
        tail = d.flush()
        size += len(tail)
        if size > limit:
            raise TooLarge(f"the body inflates to more than {limit} bytes (the limit, after decompression)")
        out.append(tail)
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {enc} data: {e}") from None
    if not d.eof:
        raise BadRequest(f"the {enc} body is truncated")
    return b"".join(out)


class Ingestor:
    def __init__(
        self,
        *,
        spool: Spool,
        pricer,
        metrics: Metrics,
        stats: IngestStats,
        limits: Limits,
        max_body_bytes: int,
        max_inflight_bytes: int,
    ) -> None:
        self.spool = spool
        self.pricer = pricer
        self.metrics = metrics
        self.stats = stats
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self._inflight = 0
        self._lock = threading.Lock()

    def process(self, body: bytes, *, content_type: str, encoding: str, project: str) -> Result:
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype not in (PROTOBUF, JSON):
            return Result(
                Outcome.UNSUPPORTED, message=f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}"
            )
        with self._lock:
            if self._inflight + len(body) > self.max_inflight_bytes and self._inflight:
                return Result(Outcome.BUSY, message="the collector is busy decoding other requests; retry later")
            self._inflight += len(body)
        try:
            return self._process(body, ctype, encoding, project)
        finally:
            with self._lock:
                self._inflight -= len(body)

    def _process(self, body: bytes, ctype: str, encoding: str, project: str) -> Result:
        t0 = time.perf_counter()
        try:
            raw = decompress(body, encoding, self.max_body_bytes)
        except TooLarge as e:
            return Result(Outcome.TOO_LARGE, message=str(e))
        except BadRequest as e:
            return Result(Outcome.BAD_REQUEST, message=str(e))
        except ValueError as e:
            return Result(Outcome.UNSUPPORTED, message=str(e))
        batch = Batch(new_columns())
        try:
            req = parse_protobuf(raw) if ctype == PROTOBUF else parse_json(raw, batch)
            walk(req, batch, limits=self.limits, body_bytes=len(raw))
        except BadRequest as e:
            return Result(Outcome.BAD_REQUEST, message=str(e))
        if batch.spans:
            self._price(batch, project)
            payload = to_ipc(batch.arrow_columns())
            try:
                self.spool.append(payload, batch.spans)
            except SpoolFull as e:
                log.warning("ingest: %s; answering 503", e)
                return Result(Outcome.BUSY, message="the collector cannot store more right now; retry later")
        self.metrics.decode_seconds.observe(time.perf_counter() - t0)
        self.metrics.accepted.inc(batch.spans)
        self.stats.add(project, "accepted", "", batch.spans)
        for reason, n in batch.reasons.items():
            self.metrics.rejected.labels(reason).inc(n)
            self.stats.add(project, "rejected", reason, n)
        return Result(Outcome.OK, accepted=batch.spans, rejected=batch.rejected, message=batch.error_message())

    def _price(self, batch: Batch, project: str) -> None:
        cols = batch.columns
        n = batch.spans
        costs: list[float | None] = [None] * n
        sources = [""] * n
        unpriced = 0
        timestamps = cols["Timestamp"]
        # only spans with a cost or token count are priced (sent_cost and llm_usage return None otherwise)
        for i in batch.spans_with_keys(_PRICE_TRIGGER):
            attrs = batch.span_attrs(i)
            known = sent_cost(attrs)
            if known is not None:
                costs[i], sources[i] = known, "span"
                continue
            usage = llm_usage(attrs)
            if usage is None:
                continue
            try:
                priced = self.pricer.price(
                    provider=usage.provider or None,
                    model=usage.model or None,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    reasoning_tokens=usage.reasoning_tokens,
                    timestamp_ns=timestamps[i],
                )
            except Exception:  # noqa: BLE001 - pricing never drops a span
                log.exception("pricing failed for model %r; stored unpriced", usage.model)
                priced = None
            if priced is None or priced.cost_usd is None:
                unpriced += 1
                sources[i] = "unpriced"
            else:
                costs[i], sources[i] = priced.cost_usd, priced.source
        cols["ProjectId"] = [project] * n
        cols["CostUsd"] = costs
        cols["PriceSource"] = sources
        if unpriced:
            self.metrics.unpriced.inc(unpriced)
            self.stats.add(project, "unpriced", "", unpriced)
