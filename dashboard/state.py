"""The view every page shows: time window and service, kept in the URL so a view is a link to paste.

Bound widgets (``bind="query-params"``) own ``range``, ``service`` and ``refresh``; an absolute window
(``from`` and ``to``, epoch seconds or ISO 8601, as the alert messages link) wins over ``range``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import streamlit as st

RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
RANGE_LABELS = {"15m": "last 15 minutes", "1h": "last hour", "6h": "last 6 hours", "24h": "last 24 hours",
                "7d": "last 7 days", "30d": "last 30 days"}  # fmt: skip
DEFAULT_RANGE = "24h"
REFRESH = {"off": 0, "10s": 10, "30s": 30, "1m": 60, "5m": 300}
ALIGN_S = 10  # relative windows end on a 10 s boundary, so reruns within it hit the cache


@dataclass(frozen=True)
class View:
    """What to read (window, service) and where (api, key). Hashable: cache functions take it."""

    api: str
    key: str
    start: float  # epoch seconds
    end: float
    service: str = ""
    range: str = DEFAULT_RANGE  # preset, or "" for an absolute window

    def params(self) -> dict[str, Any]:
        return {"from": _num(self.start), "to": _num(self.end), "service": self.service or None}

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def previous(self) -> View:
        """The period of the same length just before this one (for the changes on the overview)."""
        return replace(self, start=self.start - self.seconds, end=self.start)

    @property
    def label(self) -> str:
        where = f"service **{self.service}**" if self.service else "all services"
        if self.range:
            return f"{RANGE_LABELS[self.range]}, {where}"
        return f"{fmt_time(self.start)} to {fmt_time(self.end)}, {where}"

    def link(self, page: str, **extra: Any) -> str:
        """A relative URL of a page with this view's filters (and page parameters)."""
        q: dict[str, Any] = {}
        if self.range:
            if self.range != DEFAULT_RANGE:
                q["range"] = self.range
        else:
            q["from"], q["to"] = _num(self.start), _num(self.end)
        if self.service:
            q["service"] = self.service
        q.update({k: v for k, v in extra.items() if v not in (None, "")})
        return f"{page}?{urlencode(q)}" if q else page


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(v, 3)


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_when(value: str | None) -> float | None:
    """Epoch seconds or ISO 8601 (a missing zone is UTC); None when absent or unreadable."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def window(range_key: str, *, now: float | None = None) -> tuple[float, float]:
    now = time.time() if now is None else now
    end = math.ceil(now / ALIGN_S) * ALIGN_S
    return end - RANGES[range_key], end


def sidebar_controls(api: str, key: str, services: Callable[[View], list[str]]) -> tuple[View, int]:
    """The global filters in the sidebar; returns the view and the auto-refresh interval (0: off)."""
    qp = st.query_params
    fixed_from, fixed_to = parse_when(qp.get("from")), parse_when(qp.get("to"))
    fixed = fixed_from is not None and fixed_to is not None and fixed_from < fixed_to
    with st.sidebar:
        st.caption("Filters (kept in the URL: copy it to share this view)")
        # a bound widget writes its *formatted* option to the URL: options stay short and unformatted
        range_key = st.selectbox(
            "Time range (last ...)", list(RANGES), index=list(RANGES).index(DEFAULT_RANGE), key="range",
            bind="query-params", disabled=fixed,
        )  # fmt: skip
        if fixed:
            st.caption(f"Fixed window: {fmt_time(fixed_from)} to {fmt_time(fixed_to)}")
            if st.button("Back to a relative range", key="clear_window"):
                del st.query_params["from"]
                del st.query_params["to"]
                st.rerun()
        if fixed:
            start, end, range_key = fixed_from, fixed_to, ""
        else:
            start, end = window(range_key or DEFAULT_RANGE)
        everywhere = View(api=api, key=key, start=start, end=end, range=range_key or "")
        current = qp.get("service") or st.session_state.get("service") or ""
        options = ["", *sorted(set(services(everywhere)) | ({current} if current else set()))]
        service = st.selectbox(
            "Service", options, key="service", bind="query-params", accept_new_options=True,
            format_func=lambda s: s or "All services",
        )  # fmt: skip
        refresh = st.selectbox("Auto-refresh", list(REFRESH), key="refresh", bind="query-params")
    return replace(everywhere, service=service or ""), REFRESH.get(refresh or "off", 0)


def auto_refresh(every_s: int) -> None:
    """Rerun the whole app every ``every_s`` seconds (a timed fragment that triggers an app rerun)."""
    if not every_s:
        return
    st.session_state["_last_full_run"] = time.monotonic()

    @st.fragment(run_every=every_s)
    def _tick() -> None:
        if time.monotonic() - st.session_state.get("_last_full_run", 0) >= every_s * 0.9:
            st.rerun(scope="app")

    _tick()
