"""The collector's HTTP face: OTLP/HTTP ingest, health, metrics and the read API, on one port.

``create_app`` is a factory (no import-time state): it takes settings and, for tests, the parts.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import pyarrow as pa
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentwatch.alerts import AlertService
from agentwatch.alerts.api import router as alerts_router
from agentwatch.collector import api_analytics, queries
from agentwatch.collector.auth import Keys, Principal, Role
from agentwatch.collector.ingest import JSON, Ingestor, Outcome
from agentwatch.collector.metrics import IngestStats, Metrics
from agentwatch.collector.otlp import Limits, response_body, status_body
from agentwatch.collector.settings import CollectorSettings
from agentwatch.collector.spool import Spool
from agentwatch.collector.store import ChdbStore, Store, StoreError
from agentwatch.collector.summary import Summarizer
from agentwatch.collector.writer import Writer

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 24 * 3600
MAX_WINDOW_S = 400 * 86400


From = Annotated[str | None, Query(alias="from", description="epoch seconds or ISO 8601; default: to - 24h")]
To = Annotated[str | None, Query(description="epoch seconds or ISO 8601; default: now")]
Service = Annotated[str | None, Query(description="only this service.name")]


@dataclass
class Collector:
    """Everything the app needs, built once per process."""

    settings: CollectorSettings
    store: Store
    keys: Keys
    spool: Spool
    writer: Writer
    summarizer: Summarizer
    ingestor: Ingestor
    metrics: Metrics
    stats: IngestStats
    started: float


def use_system_allocator_for_arrow() -> str:
    """Arrow's buffers (each request's columns, each segment's insert stream) from the C library's allocator
    instead of pyarrow's bundled mimalloc, which kept freed memory: measured with bench/ingest.py (three runs
    each, interleaved), peak RSS 962-988 MiB against 1,062-1,136, spans/s the same (34.5-37.9k against
    33.9-37.1k). ``ARROW_DEFAULT_MEMORY_POOL``, if set, wins. Returns the pool's backend."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name


def build(settings: CollectorSettings, store: Store, *, pricer: Any) -> Collector:
    use_system_allocator_for_arrow()
    metrics = Metrics()
    stats = IngestStats()
    spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync)
    writer = Writer(store, spool, metrics, stats, interval=settings.flush_interval)
    ingestor = Ingestor(
        spool=spool,
        pricer=pricer,
        metrics=metrics,
        stats=stats,
        limits=Limits(max_attribute_bytes=settings.max_attribute_bytes),
        max_body_bytes=settings.max_body_bytes,
        max_inflight_bytes=settings.max_inflight_bytes,
    )
    keys = Keys(store)
    summarizer = Summarizer(
        store, interval=settings.summary_interval, lag=settings.summary_lag, metrics=metrics,
        inflight=writer.inflight_since if isinstance(store, ChdbStore) else None,
    )  # fmt: skip
    return Collector(settings, store, keys, spool, writer, summarizer, ingestor, metrics, stats, time.time())


# --- parameters -----------------------------------------------------------------------------------
def parse_time(value: str | None, *, name: str) -> float | None:
    """Epoch seconds (int or float) or ISO 8601; None when absent."""
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except ValueError:
        return _parse_iso(value, name=name)
    if f != f or not 0 <= f < 1e11:
        raise HTTPException(400, f"{name} must be epoch seconds between 1970 and 5138, got {value[:64]!r}")
    return f


def _parse_iso(value: str, *, name: str) -> float:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name} must be epoch seconds or ISO 8601, got {value[:64]!r}") from None
    if dt.tzinfo is None:
        raise HTTPException(400, f"{name} needs a time zone (e.g. 2026-01-01T00:00:00Z), got {value[:64]!r}")
    return dt.timestamp()


def _scope(principal: Principal, start: str | None, end: str | None, service: str | None) -> queries.Scope:
    t_end = parse_time(end, name="to") or time.time()
    t_start = parse_time(start, name="from")
    if t_start is None:
        t_start = t_end - DEFAULT_WINDOW_S
    if t_start >= t_end:
        raise HTTPException(400, "from must be before to")
    if t_end - t_start > MAX_WINDOW_S:
        raise HTTPException(400, f"the window is longer than {MAX_WINDOW_S // 86400} days")
    if service is not None and len(service) > 256:
        raise HTTPException(400, "service is longer than 256 characters")
    return queries.Scope(principal.project, int(t_start * 1000), int(t_end * 1000), service or "")


def _tune_gc() -> None:
    """Decoding allocates ~15 tuples and lists a span, many alive until the request is stored; with the
    default thresholds the cyclic GC runs every 700 allocations and, in its older generations, walks every
    long-lived object (modules, chDB, pyarrow, prices): ~40 % of the decode path's CPU (bench/ingest.py).
    The startup objects are frozen out of the collections and the young generation is collected every
    20,000 allocations; the older generations keep their defaults, so cyclic garbage (request and task
    objects of the HTTP stack) does not pile up: a 50,000 young generation cost ~60 MiB more peak RSS, larger
    gen1/gen2 thresholds ~150 MiB."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 20_000), gen1, gen2)


def create_app(collector: Collector) -> FastAPI:
    c = collector
    alerts = AlertService.for_collector(c)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _tune_gc()
        c.writer.start()
        c.summarizer.start()
        await run_in_threadpool(alerts.start)
        try:
            yield
        finally:
            await run_in_threadpool(alerts.stop)
            await run_in_threadpool(c.summarizer.stop)
            await run_in_threadpool(c.writer.stop)

    app = FastAPI(
        title="agentwatch collector",
        version="0.1.0",
        description="OTLP/HTTP ingest of GenAI agent spans and the agentwatch read API.",
        lifespan=lifespan,
    )
    app.state.collector = c
    app.state.alerts = alerts
    app.include_router(alerts_router)

    def principal(role: Role):
        def dep(authorization: Annotated[str | None, Header()] = None) -> Principal:
            if not authorization:
                raise HTTPException(401, "missing Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
            who = c.keys.authenticate(authorization)
            if who is None:
                raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
            if not who.may(role):
                raise HTTPException(403, f"this key has role {who.role.value}; this endpoint needs {role.value}")
            return who

        return dep

    reader = Depends(principal(Role.READ))
    admin = Depends(principal(Role.ADMIN))

    # --- ingest ---
    @app.post("/v1/traces", include_in_schema=True, summary="OTLP/HTTP trace export (protobuf or JSON)")
    async def ingest(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        json_out = ctype.split(";")[0].strip().lower() == JSON
        out_type = JSON if json_out else "application/x-protobuf"

        def fail(status: int, message: str, headers: dict | None = None) -> Response:
            c.metrics.requests.labels(str(status)).inc()
            return Response(status_body(message, code=status, json_out=json_out), status, headers, out_type)

        auth = request.headers.get("authorization")
        if not auth:
            return fail(401, "missing Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
        who = c.keys.authenticate(auth)
        if who is None:
            return fail(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
        if not who.may(Role.INGEST):
            return fail(403, f"this key has role {who.role.value}; sending spans needs ingest")
        limit = c.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return fail(413, f"the body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return fail(413, f"the body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        res = await run_in_threadpool(
            c.ingestor.process,
            body,
            content_type=ctype,
            encoding=request.headers.get("content-encoding", ""),
            project=who.project,
        )
        if res.outcome is Outcome.OK:
            c.metrics.requests.labels("200").inc()
            return Response(
                response_body(rejected=res.rejected, message=res.message, json_out=json_out), 200, None, out_type
            )
        status = {
            Outcome.BAD_REQUEST: 400,
            Outcome.TOO_LARGE: 413,
            Outcome.UNSUPPORTED: 415,
            Outcome.BUSY: 503,
        }[res.outcome]
        headers = {"Retry-After": str(c.settings.retry_after_seconds)} if status == 503 else None
        return fail(status, res.message, headers)

    # --- health ---
    @app.get("/healthz", summary="alive")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - c.started, 1)}

    @app.get("/readyz", summary="ready: store reachable and room in the spool")
    def readyz() -> JSONResponse:
        store_ok = c.store.ping()
        spool_ok = c.spool.bytes < c.settings.spool_max_bytes * 0.95
        body = {
            "status": "ready" if store_ok and spool_ok else "not ready",
            "store": "up" if store_ok else "down",
            "spool_bytes": c.spool.bytes,
            "queue_depth": c.spool.pending_rows,
            "writer_error": c.writer.last_error,
            "summarizer_error": c.summarizer.last_error,
        }
        return JSONResponse(body, 200 if store_ok and spool_ok else 503)

    @app.get("/metrics", summary="Prometheus metrics (no project data)")
    def metrics() -> Response:
        c.metrics.spool_bytes.set(c.spool.bytes)
        c.metrics.queue_depth.set(c.spool.pending_rows)
        try:
            held = c.store.memory()
        except StoreError:
            held = None  # the store is down: /metrics still answers (agentwatch_store_up says so)
        if held is not None:
            c.metrics.store_memory.set(held)
        return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- read API ---
    def run(fn, *args):
        try:
            return fn(*args)
        except queries.QueryError as e:
            raise HTTPException(400, str(e)) from None
        except StoreError as e:
            log.warning("read API: store error: %s", e)
            raise HTTPException(503, "the store is unavailable; try again shortly", {"Retry-After": "5"}) from None

    @app.get("/api/v1/overview", summary="Tasks, tokens, cost, errors and latency percentiles of a window")
    def overview(who: Principal = reader, start: From = None, to: To = None, service: Service = None) -> dict:
        return run(queries.overview, c.store, _scope(who, start, to, service))

    @app.get("/api/v1/tasks", summary="Tasks (agent runs): filter, sort, page")
    def tasks(
        who: Principal = reader,
        start: From = None,
        to: To = None,
        service: Service = None,
        sort: Annotated[str, Query(description=", ".join(queries.TASK_SORTS))] = "start",
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        outcome: Annotated[str | None, Query(description=", ".join(queries.OUTCOMES))] = None,
        name: Annotated[str | None, Query(max_length=256)] = None,
        loop: bool | None = None,
        min_cost: Annotated[float | None, Query(ge=0)] = None,
        q: Annotated[str | None, Query(max_length=256, description="text in the task name, or a trace id")] = None,
    ) -> dict:
        f = queries.TaskFilter(
            sort=sort, order=order, limit=limit, offset=offset, outcome=outcome or "", name=name or "",
            loop=loop, min_cost=min_cost, q=q or "",
        )  # fmt: skip
        return run(queries.tasks, c.store, _scope(who, start, to, service), f)

    @app.get("/api/v1/traces/{trace_id}", summary="One trace: every span, normalised fields and raw attributes")
    def trace(trace_id: Annotated[str, Path(max_length=64)], who: Principal = reader) -> dict:
        found = run(queries.trace, c.store, who.project, trace_id)
        if found is None:
            raise HTTPException(404, f"no trace {trace_id} in this project")
        return found

    # --- keys (admin) ---
    @app.get("/api/v1/keys", summary="API keys (prefixes only)")
    def list_keys(who: Principal = admin) -> dict:
        return {"items": [k for k in run(c.keys.list) if k["project"] == who.project]}

    @app.post("/api/v1/keys", summary="Create a key in the caller's project; the key is shown once")
    def create_key(
        role: Annotated[Role, Query()], name: Annotated[str, Query(max_length=128)] = "", who: Principal = admin
    ) -> dict:
        key = run(c.keys.create, who.project, role, name)
        return {"key": key, "project": who.project, "role": role.value}

    @app.delete("/api/v1/keys/{prefix}", summary="Revoke keys by prefix")
    def revoke_key(prefix: Annotated[str, Path(min_length=8, max_length=128)], who: Principal = admin) -> dict:
        mine = {k["prefix"] for k in run(c.keys.list) if k["project"] == who.project}
        if prefix[:12] not in mine:
            raise HTTPException(404, "no such key in this project")
        return {"revoked": run(lambda: c.keys.revoke(prefix, project=who.project))}

    app.include_router(api_analytics.router(c, reader))
    return app
