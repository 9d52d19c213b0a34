"""A small client of the collector's read API. Every failure becomes an ``ApiProblem`` of a known kind,
which the pages turn into a banner (never a traceback)."""

from __future__ import annotations

import enum
import re
from typing import Any

import httpx

TIMEOUT_S = 15.0


class Problem(enum.Enum):
    DOWN = "down"  # connection refused, DNS, timeout
    NO_KEY = "no_key"  # 401
    FORBIDDEN = "forbidden"  # 403
    NOT_AVAILABLE = "not_available"  # 404 of the route: this collector does not serve the endpoint (yet)
    NOT_FOUND = "not_found"  # 404 of a thing (a trace id)
    BAD_REQUEST = "bad_request"  # 400 / 422
    UNAVAILABLE = "unavailable"  # 503: store down, spool full
    SERVER = "server"  # any other status


class ApiProblem(Exception):
    def __init__(self, problem: Problem, message: str, *, status: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.status = status
        self.path = path


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return str(detail if detail is not None else body)[:300]


class Client:
    """``get(path, params) -> JSON``; one pooled connection per (api, key)."""

    def __init__(self, api: str, key: str | None, *, timeout: float = TIMEOUT_S) -> None:
        self.api = api.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            r = self._http.get(path, params=clean)
        except httpx.TimeoutException:
            raise ApiProblem(Problem.DOWN, f"the collector at {self.api} did not answer in time", path=path) from None
        except httpx.HTTPError as e:
            raise ApiProblem(Problem.DOWN, f"cannot reach the collector at {self.api}: {e}", path=path) from None
        if r.status_code == 200:
            try:
                return r.json() if path.startswith("/api/") or path.endswith(".json") else r.text
            except ValueError:
                raise ApiProblem(Problem.SERVER, f"{path} answered something that is not JSON", path=path) from None
        detail = _detail(r)
        kind = {401: Problem.NO_KEY, 403: Problem.FORBIDDEN, 503: Problem.UNAVAILABLE}.get(r.status_code)
        if kind is None and r.status_code == 404:
            # FastAPI's own 404 for an unknown route says just "Not Found"; ours name the thing
            kind = Problem.NOT_AVAILABLE if detail == "Not Found" else Problem.NOT_FOUND
        if kind is None and r.status_code in (400, 422):
            kind = Problem.BAD_REQUEST
        raise ApiProblem(kind or Problem.SERVER, detail, status=r.status_code, path=path)


_PROM_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for the few agentwatch_* series the ingestion panel shows."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("agentwatch_"):
            continue
        m = _PROM_LINE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                continue
    return out
