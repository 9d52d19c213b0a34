"""Read API for the analytics: latency, tools, outcomes, unit economics, loops, cost anomalies, drift and
ingestion health. Mounted by ``create_app``::

    app.include_router(api_analytics.router(c, reader))

``reader`` is the app's read-key dependency (one place for auth); without it the router builds the same check
from ``collector.keys``. Every endpoint takes ``from``, ``to`` and ``service`` like the rest of ``/api/v1``.
"""

# no `from __future__ import annotations`: the endpoints are defined inside `router()` with parameter types
# read from app.py at that point, and FastAPI resolves string annotations in module globals only
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query

from agentwatch.collector import analytics_anomalies, analytics_drift, analytics_loops, analytics_stats, queries
from agentwatch.collector.auth import Principal, Role
from agentwatch.collector.store import StoreError

if TYPE_CHECKING:
    from agentwatch.collector.app import Collector

log = logging.getLogger(__name__)


def _read_dependency(c: "Collector") -> Any:
    def dep(authorization: Annotated[str | None, Header()] = None) -> Principal:
        if not authorization:
            raise HTTPException(401, "missing Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
        who = c.keys.authenticate(authorization)
        if who is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if not who.may(Role.READ):
            raise HTTPException(403, f"this key has role {who.role.value}; this endpoint needs read")
        return who

    return Depends(dep)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except queries.QueryError as e:
        raise HTTPException(400, str(e)) from None
    except StoreError as e:
        log.warning("read API: store error: %s", e)
        raise HTTPException(503, "the store is unavailable; try again shortly", {"Retry-After": "5"}) from None


def router(collector: "Collector", reader: Any = None) -> APIRouter:
    # app.py imports this module; its helpers are read here, when the app is built, not at import
    from agentwatch.collector.app import From, Service, To, _scope

    c = collector
    reader = reader if reader is not None else _read_dependency(c)
    r = APIRouter(prefix="/api/v1", tags=["analytics"])
    Interval = Annotated[
        str | None, Query(max_length=16, description="bucket seconds, `auto` (default, <= ~300 buckets) or `window`")
    ]
    BaselineH = Annotated[float, Query(ge=1, le=24 * 90, description="baseline: this many hours before `from`")]

    @r.get("/latency", summary="P50/P95/P99/max latency (ms) per group and time bucket, over the bucket's spans")
    def latency(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None,
        kind: Annotated[str, Query(description=", ".join(analytics_stats.LATENCY_KINDS))] = "llm",
        group_by: Annotated[str, Query(description=", ".join(analytics_stats.GROUP_BY))] = "none",
        interval: Interval = "auto",
    ) -> dict:  # fmt: skip
        scope = _scope(who, start, to, service)
        return _run(analytics_stats.latency, c.store, scope, kind=kind, group_by=group_by, interval=interval)

    @r.get("/tools", summary="Per tool: calls, errors, latency, retries, repeated identical calls")
    def tools(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict:  # fmt: skip
        return _run(analytics_stats.tools, c.store, _scope(who, start, to, service), limit=limit)

    @r.get("/outcomes", summary="Tasks by outcome per time bucket: completion, error and escalation rates")
    def outcomes(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None, interval: Interval = "auto"
    ) -> dict:
        return _run(analytics_stats.outcomes, c.store, _scope(who, start, to, service), interval=interval)

    @r.get("/unit-economics", summary="Cost per task and per successful task by service, task name or model")
    def unit_economics(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None,
        group_by: Annotated[str, Query(description=", ".join(analytics_stats.ECONOMICS_GROUPS))] = "service",
    ) -> dict:  # fmt: skip
        return _run(analytics_stats.unit_economics, c.store, _scope(who, start, to, service), group_by=group_by)

    @r.get("/ingestion", summary="Spans accepted, rejected by reason, stored, unpriced per time bucket (project)")
    def ingestion(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None, interval: Interval = "auto"
    ) -> dict:
        out = _run(analytics_stats.ingestion, c.store, _scope(who, start, to, service), interval=interval)
        out["spool"] = {
            "bytes": c.spool.bytes,
            "queue_depth": c.spool.pending_rows,
            "writer_error": c.writer.last_error,
        }
        return out

    @r.get("/loops", summary="Tasks looping: same tool and arguments N times in a row, repeated errors, cycles")
    def loops(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None,
        repeats: Annotated[int, Query(ge=2, le=100)] = queries.DEFAULT_LOOP_REPEATS,
        pattern: Annotated[str | None, Query(description=", ".join(analytics_loops.PATTERNS))] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> dict:  # fmt: skip
        return _run(
            analytics_loops.loops, c.store, _scope(who, start, to, service), repeats=repeats, pattern=pattern or "",
            limit=limit, offset=offset,
        )  # fmt: skip

    @r.get("/anomalies/cost", summary="Tasks far above their robust cost baseline; token bombs; spend spikes")
    def cost_anomalies(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None,
        baseline_hours: BaselineH = analytics_anomalies.DEFAULT_BASELINE_H,
        z: Annotated[float, Query(ge=0, le=1000)] = 4.0,
        ratio: Annotated[float, Query(ge=1, le=1e6)] = 3.0,
        min_samples: Annotated[int, Query(ge=3, le=100_000)] = 20,
        bomb_z: Annotated[float, Query(ge=0, le=1000)] = 4.5,
        bomb_ratio: Annotated[float, Query(ge=1, le=1e6)] = 5.0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    ) -> dict:  # fmt: skip
        return _run(
            analytics_anomalies.cost_anomalies, c.store, _scope(who, start, to, service),
            baseline_hours=baseline_hours, z=z, ratio=ratio, min_samples=min_samples, bomb_z=bomb_z,
            bomb_ratio=bomb_ratio, limit=limit,
        )  # fmt: skip

    @r.get("/drift", summary="Per service and metric: PSI and a corrected KS/chi-square test against a baseline")
    def drift(
        who: Principal = reader, start: From = None, to: To = None, service: Service = None,
        baseline_hours: BaselineH = analytics_drift.DEFAULT_BASELINE_H,
        psi: Annotated[float, Query(gt=0, le=10)] = 0.2,
        alpha: Annotated[float, Query(gt=0, le=0.5)] = 0.05,
        min_samples: Annotated[int, Query(ge=5, le=100_000)] = 30,
    ) -> dict:  # fmt: skip
        return _run(
            analytics_drift.drift, c.store, _scope(who, start, to, service), baseline_hours=baseline_hours,
            psi_threshold=psi, alpha=alpha, min_samples=min_samples,
        )  # fmt: skip

    return r
