"""``GET /api/v1/alerts`` (rules, firing, pending, history, deliveries, silences) and silences.

Reads need a read key, silence changes an admin key; everything is scoped to the key's project. The
service is ``request.app.state.alerts`` (an ``AlertService``), the keys ``request.app.state.collector.keys``.
Channel secrets never appear: channels are shown by type and the *names* of their variables.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from agentwatch.collector.auth import Principal, Role
from agentwatch.collector.store import StoreError


def _principal(role: Role):
    def dep(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        if not authorization:
            raise HTTPException(401, "missing Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
        who = request.app.state.collector.keys.authenticate(authorization)
        if who is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if not who.may(role):
            raise HTTPException(403, f"this key has role {who.role.value}; this endpoint needs {role.value}")
        return who

    return Depends(dep)


def _service(request: Request) -> Any:
    svc = getattr(request.app.state, "alerts", None)
    if svc is None:
        raise HTTPException(503, "the alert engine is not running in this collector")
    return svc


class SilenceIn(BaseModel):
    matchers: list[Annotated[str, Field(max_length=512)]] = Field(min_length=1, max_length=20,
                                                                  description="label=value or label=~regex")
    duration: str = Field("2h", max_length=32, description="how long: 30m, 2h, 1d")
    comment: str = Field("", max_length=1000)
    created_by: str = Field("", max_length=128)


router = APIRouter(prefix="/api/v1", tags=["alerts"])
READER = _principal(Role.READ)
ADMIN = _principal(Role.ADMIN)


@router.get("/alerts", summary="Alert rules, firing and pending alerts, history, deliveries and silences")
def alerts(
    request: Request, who: Principal = READER,
    history: Annotated[int, Query(ge=0, le=1000)] = 100, deliveries: Annotated[int, Query(ge=0, le=1000)] = 100,
) -> dict:  # fmt: skip
    svc = _service(request)
    try:
        return svc.view(who.project, history=history, deliveries=deliveries)
    except StoreError:
        raise HTTPException(503, "the store is unavailable; try again shortly", {"Retry-After": "5"}) from None


@router.post("/alerts/silences", summary="Silence alerts matching labels for a while", status_code=201)
def add_silence(body: SilenceIn, request: Request, who: Principal = ADMIN) -> dict:
    from agentwatch.alerts.model import parse_duration

    svc = _service(request)
    try:
        d = parse_duration(body.duration)
        s = svc.add_silence(who.project, body.matchers, duration_s=d, created_by=body.created_by or who.key_prefix,
                            comment=body.comment)  # fmt: skip
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return s.describe(time.time())


@router.delete("/alerts/silences/{silence_id}", summary="Expire a silence now")
def expire_silence(silence_id: str, request: Request, who: Principal = ADMIN) -> dict:
    s = _service(request).expire_silence(who.project, silence_id)
    if s is None:
        raise HTTPException(404, f"no silence {silence_id[:32]!r} in this project")
    return s.describe(time.time())
