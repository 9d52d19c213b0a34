"""Every read the pages make: cached functions over the read API client (``st.cache_data`` with a TTL).

Failures are raised as ``ApiProblem`` and never cached; the pages turn them into banners (see ``ui``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from agentwatch.dashboard.client import ApiProblem, Client, parse_prometheus
from agentwatch.dashboard.state import View

TTL_S = 10  # seconds; relative windows move on a 10 s grid too (state.ALIGN_S)
TASK_PAGE = 1000  # the read API's largest page
MAX_TASKS = 5000  # tasks read for client-side charts (cost over time, distributions)


@st.cache_resource(show_spinner=False, max_entries=8)
def _client(api: str, key: str) -> Client:
    return Client(api, key)


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=1000)
def get_json(api: str, key: str, path: str, params: tuple[tuple[str, Any], ...] = ()) -> Any:
    return _client(api, key).get(path, dict(params))


def prefetch(*calls: Callable[[], Any]) -> None:
    """Warm the cache with a page's reads in parallel (the collector answers them concurrently); the page then
    makes the same calls in order and gets cache hits. Failures are left for those calls to raise."""
    if len(calls) < 2:
        return
    ctx = get_script_run_ctx()

    def one(call: Callable[[], Any]) -> None:
        if ctx is not None:
            add_script_run_ctx(threading.current_thread(), ctx)
        try:
            call()
        except ApiProblem:
            pass

    with ThreadPoolExecutor(max_workers=min(6, len(calls)), thread_name_prefix="agentwatch-prefetch") as pool:
        list(pool.map(one, calls))


def _get(view: View, path: str, **params: Any) -> Any:
    merged = {**view.params(), **params}
    return get_json(view.api, view.key, path, tuple(sorted((k, v) for k, v in merged.items() if v is not None)))


def overview(view: View) -> dict[str, Any]:
    return _get(view, "/api/v1/overview")


def tasks(view: View, **filters: Any) -> dict[str, Any]:
    """One page of tasks (``sort``, ``order``, ``limit``, ``offset``, ``outcome``, ``name``, ``loop``, ...)."""
    return _get(view, "/api/v1/tasks", **filters)


def all_tasks(view: View, *, limit: int = MAX_TASKS, **filters: Any) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` tasks of the window (newest first) and the total, for client-side charts."""
    items: list[dict[str, Any]] = []
    total = 0
    while len(items) < limit:
        page = tasks(view, limit=min(TASK_PAGE, limit - len(items)), offset=len(items), **filters)
        items += page["items"]
        total = int(page.get("total", len(items)))
        if not page["items"] or len(items) >= total:
            break
    return items, total


def services(view: View) -> list[str]:
    """Services seen in the window (from its newest tasks; the filter also accepts a typed name)."""
    unfiltered = View(api=view.api, key=view.key, start=view.start, end=view.end, range=view.range)
    page = tasks(unfiltered, limit=TASK_PAGE, sort="start", order="desc")
    return sorted({t["service"] for t in page["items"] if t.get("service")})


def trace(view: View, trace_id: str) -> dict[str, Any]:
    return get_json(view.api, view.key, f"/api/v1/traces/{trace_id}")


def latency(view: View, *, kind: str | None, group_by: str, interval: str | None) -> dict[str, Any]:
    return _get(view, "/api/v1/latency", kind=kind, group_by=group_by, interval=interval)


def loops(view: View) -> dict[str, Any]:
    return _get(view, "/api/v1/loops")


def cost_anomalies(view: View) -> dict[str, Any]:
    return _get(view, "/api/v1/anomalies/cost")


def drift(view: View, *, baseline_hours: str | None = None) -> dict[str, Any]:
    return _get(view, "/api/v1/drift", baseline_hours=baseline_hours)


def unit_economics(view: View, *, group_by: str) -> dict[str, Any]:
    return _get(view, "/api/v1/unit-economics", group_by=group_by)


def outcomes(view: View, *, interval: str = "auto") -> dict[str, Any]:
    return _get(view, "/api/v1/outcomes", interval=interval)


def tools(view: View) -> dict[str, Any]:
    return _get(view, "/api/v1/tools")


def ingestion(view: View) -> dict[str, Any]:
    return _get(view, "/api/v1/ingestion")


def alerts(view: View) -> dict[str, Any]:
    return _get(view, "/api/v1/alerts")


def metrics(view: View) -> dict[str, float]:
    """The collector's own counters (``/metrics``: process-wide, no project data)."""
    return parse_prometheus(get_json(view.api, view.key, "/metrics"))


def items(payload: Any) -> list[dict[str, Any]]:
    """``{"items": [...]}`` or a bare list, as a list."""
    if isinstance(payload, dict):
        payload = payload.get("items", [])
    return [x for x in payload if isinstance(x, dict)] if isinstance(payload, list) else []
