"""What every page shares: banners for API problems, the empty-store guide, number formats, links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import pandas as pd
import streamlit as st

from agentwatch.dashboard import data
from agentwatch.dashboard.client import ApiProblem, Problem
from agentwatch.dashboard.settings import API_KEY_ENV, ENDPOINT_ENV, KEYS_FILE_ENV
from agentwatch.dashboard.state import View

T = TypeVar("T")

INSTRUMENT_GUIDE = """\
pip install agentwatch
export AGENTWATCH_ENDPOINT={api}
export AGENTWATCH_API_KEY=<the "ingest" key in .agentwatch/keys.json>
"""
INSTRUMENT_CODE = """\
import agentwatch

agentwatch.init(service_name="support-agent")


@agentwatch.tool
def search(query: str) -> list[str]: ...


with agentwatch.task("triage"):
    run_agent()
"""


def problem_banner(p: ApiProblem, *, api: str, key_source: str = "") -> None:
    """One clear banner per kind of failure: what is wrong and what to do."""
    if p.problem is Problem.DOWN:
        st.error(
            f"**The collector is not reachable** at `{api}`.\n\n{p.message}.\n\n"
            f"Start it with `agentwatch collector` (or `make run`), or point the dashboard at the right one with "
            f"`agentwatch dashboard --api URL` (or `{ENDPOINT_ENV}`).",
            icon=":material/cloud_off:",
        )
    elif p.problem is Problem.NO_KEY:
        where = f" (key from {key_source})" if key_source and key_source != "none" else ""
        st.error(
            f"**The collector refused the read key**{where}: {p.message}.\n\n"
            f"Set `{API_KEY_ENV}` to a key with the read role, or `{KEYS_FILE_ENV}` to the collector's "
            "`keys.json` (written to its data directory on first start).",
            icon=":material/key_off:",
        )
    elif p.problem is Problem.FORBIDDEN:
        st.error(f"**This key may not read**: {p.message}. Use a key with the read role.", icon=":material/block:")
    elif p.problem is Problem.UNAVAILABLE:
        st.warning(f"**The collector's store is unavailable right now**: {p.message}", icon=":material/hourglass:")
    elif p.problem is Problem.NOT_AVAILABLE:
        st.info(f"`GET {p.path}` is not available on this collector yet.", icon=":material/construction:")
    else:
        what = f"{p.status} " if p.status else ""
        st.error(f"**The collector answered {what}to `{p.path}`**: {p.message}", icon=":material/error:")


def stop(p: ApiProblem, view: View | None = None) -> NoReturn:
    problem_banner(p, api=view.api if view else "", key_source=st.session_state.get("_key_source", ""))
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises


def required(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The page cannot go on without this: any problem is a banner and the page stops."""
    try:
        return fn(*args, **kwargs)
    except ApiProblem as p:
        view = next((a for a in args if isinstance(a, View)), None)
        stop(p, view)


def optional(fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T | None:
    """A section of a page: an endpoint this collector does not serve yet is an info line, not a failure."""
    try:
        return fn(*args, **kwargs)
    except ApiProblem as p:
        if p.problem in (Problem.DOWN, Problem.NO_KEY, Problem.FORBIDDEN):
            view = next((a for a in args if isinstance(a, View)), None)
            stop(p, view)
        if p.problem is Problem.NOT_AVAILABLE:
            st.info(f"{what} is not available on this collector yet (`GET {p.path}` answers 404).",
                    icon=":material/construction:")  # fmt: skip
        else:
            problem_banner(p, api="")
        return None


def header(title: str, view: View, *, caption: str = "") -> None:
    st.title(title)
    st.caption(f"{view.label}" + (f" · {caption}" if caption else ""))


def require_data(view: View) -> dict[str, Any]:
    """The window's overview; when the window holds no spans, the empty state instead of the page."""
    ov = required(data.overview, view)
    if ov.get("spans", 0) == 0:
        empty_state(view)
        st.stop()
    return ov


def empty_state(view: View) -> None:
    everything = View(api=view.api, key=view.key, start=view.end - 30 * 86400, end=view.end, range="30d")
    try:
        store_empty = data.overview(everything).get("spans", 0) == 0
    except ApiProblem:
        store_empty = False
    if not store_empty:
        st.info(
            f"No spans in this window ({view.label.replace('**', '')}). Widen the time range or pick another "
            "service in the sidebar.",
            icon=":material/search_off:",
        )
        with st.expander("How to instrument an agent"):
            _guide(view)
        return
    st.info("No spans yet: this collector has not received anything. Instrument an agent:",
            icon=":material/rocket_launch:")  # fmt: skip
    _guide(view)


def _guide(view: View) -> None:
    st.markdown("**1. Install the SDK and point it at this collector**")
    st.code(INSTRUMENT_GUIDE.format(api=view.api), language="bash")
    st.markdown("**2. One line at start-up, then tasks and tools as you like**")
    st.code(INSTRUMENT_CODE, language="python")
    st.caption(
        "Any OpenTelemetry GenAI instrumentation works too (opentelemetry-instrumentation-genai-*, OpenInference, "
        f"OpenLLMetry): set `OTEL_EXPORTER_OTLP_ENDPOINT={view.api}` and "
        "`OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<ingest key>`."
    )


# --- formats --------------------------------------------------------------------------------------
def usd(v: float | None) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v == 0:
        return "$0"
    if abs(v) >= 100:
        return f"${v:,.2f}"
    if abs(v) >= 0.01:
        return f"${v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1 else f"${v:,.2f}"
    return f"${v:.6f}".rstrip("0")


def ms(v: float | None) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v >= 10_000:
        return f"{v / 1000:,.1f} s"
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 100:
        return f"{v:,.0f} ms"
    return f"{v:,.1f} ms"


def count(v: float | None) -> str:
    return "—" if v is None else f"{int(v):,}"


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}%"


def change(cur: float | None, prev: float | None) -> str | None:
    """Relative change as a metric delta ("+12%"), None when there is nothing to compare with."""
    if cur is None or prev is None or prev == 0:
        return None
    ratio = float(cur) / float(prev)
    if ratio >= 10:
        return f"{ratio:,.0f}x"
    return f"{ratio - 1:+.0%}"


def change_pp(cur: float | None, prev: float | None) -> str | None:
    """Change of a rate in percentage points."""
    if cur is None or prev is None:
        return None
    return f"{100 * (float(cur) - float(prev)):+.1f} pp"


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if columns:
        for c in columns:
            if c not in df.columns:
                df[c] = None
        df = df[columns]
    return df


def trace_links(df: pd.DataFrame, view: View, *, column: str = "trace_id", to: str = "trace") -> pd.DataFrame:
    """Adds a ``to`` column with a link to the Traces page for each trace id."""
    df = df.copy()
    df.insert(0, to, [view.link("traces", trace=t) for t in df[column]])
    return df


def link_column(label: str = "trace") -> Any:
    return st.column_config.LinkColumn(label, display_text=r"trace=([0-9a-f]{8})", width="small")
