"""Traces: find tasks (service, outcome, cost, duration, loop, text), then one trace as a waterfall with
the details of each span — prompt and completion (masked by the SDK), tool arguments and results,
decisions, errors — and its export as JSON."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from agentwatch.dashboard import charts, data, ui
from agentwatch.dashboard.app import current_view
from agentwatch.dashboard.client import ApiProblem, Problem

OUTCOMES = ["", "ok", "error", "escalated", "budget_exceeded", "loop_stopped", "timeout"]
SORTS = {"newest": "start", "slowest": "duration", "costliest": "cost", "most tokens": "tokens",
         "most tool calls": "tool_calls"}  # fmt: skip
PAGE_SIZE = 50
TASK_COLUMNS = ["trace", "start", "service", "name", "outcome", "duration_ms", "cost_usd", "input_tokens",
                "output_tokens", "llm_calls", "tool_calls", "loop", "trace_id"]  # fmt: skip

view = current_view()
ui.header("Traces", view)


def _pick_trace() -> None:
    """A row clicked in the task table opens that trace (the ``trace`` URL parameter)."""
    sel = st.session_state.get("task_table")
    ids = st.session_state.get("_task_ids", [])
    rows = sel.selection.rows if sel is not None else []
    if rows and rows[0] < len(ids):
        st.session_state["trace"] = ids[rows[0]]


# --- search ---
f = st.columns([2, 1.2, 1, 1.2, 0.8])
q = f[0].text_input("Search", key="q", bind="query-params", placeholder="task name or trace id")
outcome = f[1].selectbox("Outcome", OUTCOMES, key="outcome", bind="query-params", format_func=lambda o: o or "any")
min_cost = f[2].number_input("Min cost (USD)", min_value=0.0, value=0.0, step=0.01, format="%.4f", key="min_cost",
                             bind="query-params")  # fmt: skip
sort = f[3].selectbox("Sort", list(SORTS), key="sort", bind="query-params")
loop_only = f[4].checkbox("Loops only", key="loop", bind="query-params")
filters: dict[str, Any] = {"q": q or None, "outcome": outcome or None, "min_cost": min_cost or None,
                           "loop": "true" if loop_only else None, "sort": SORTS[sort or "newest"],
                           "order": "desc"}  # fmt: skip

page_no = int(st.session_state.get("task_page", 1))
page_args = {"limit": PAGE_SIZE, "offset": (page_no - 1) * PAGE_SIZE, **filters}
opened = (st.session_state.get("trace") or st.query_params.get("trace") or "").strip().lower()
data.prefetch(lambda: data.overview(view), lambda: data.tasks(view, **page_args),
              *([lambda: data.trace(view, opened)] if opened else []))  # fmt: skip
ui.require_data(view)
found = ui.required(data.tasks, view, **page_args)
items, total = found["items"], int(found.get("total", 0))
if not items:
    st.info("No task matches these filters in this window.", icon=":material/filter_alt_off:")
else:
    df = ui.trace_links(ui.frame(items), view)
    df["start"] = pd.to_datetime(df["start"])
    st.session_state["_task_ids"] = list(df["trace_id"])
    st.dataframe(
        df[TASK_COLUMNS], hide_index=True, key="task_table", on_select=_pick_trace, selection_mode="single-row",
        column_config={
            "trace": ui.link_column(),
            "start": st.column_config.DatetimeColumn("start (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "duration_ms": st.column_config.NumberColumn("duration ms", format="%.0f"),
            "cost_usd": st.column_config.NumberColumn("cost USD", format="$%.6f"),
            "trace_id": st.column_config.TextColumn("trace id", width="medium"),
        },
        height=min(38 + 35 * len(df), 420),
    )  # fmt: skip
    pages = max(1, -(-total // PAGE_SIZE))
    c = st.columns([1, 5])
    if pages > 1:
        c[0].number_input("Page", min_value=1, max_value=pages, key="task_page")
    c[1].caption(f"{total:,} task(s) match; click a row to open its trace.")


# --- one trace ---
def _depths(spans: list[dict[str, Any]]) -> dict[str, int]:
    parent = {s["span_id"]: s.get("parent_span_id") for s in spans}
    out: dict[str, int] = {}
    for sid in parent:
        d, cur, seen = 0, parent[sid], {sid}
        while cur and cur in parent and cur not in seen:
            seen.add(cur)
            d, cur = d + 1, parent[cur]
        out[sid] = d
    return out


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _show_value(label: str, value: Any) -> None:
    st.markdown(f"**{label}**")
    v = _maybe_json(value)
    if isinstance(v, dict | list):
        st.json(v, expanded=2)
    else:
        st.code(str(v), language=None, wrap_lines=True)


def _span_detail(s: dict[str, Any]) -> None:
    a = s.get("attributes") or {}
    facts = {
        "kind": s.get("kind"), "service": s.get("service"), "status": s.get("status"),
        "duration": ui.ms(s.get("duration_ms")), "model": s.get("model"), "provider": s.get("provider"),
        "tool": s.get("tool_name"), "input tokens": s.get("input_tokens"), "output tokens": s.get("output_tokens"),
        "cache-read tokens": s.get("cache_read_tokens"), "cost": ui.usd(s.get("cost_usd")) if s.get("kind") == "llm"
        and s.get("cost_usd") is not None else ("unpriced" if s.get("kind") == "llm" else None),
        "error": s.get("error_type"), "span id": s.get("span_id"), "parent": s.get("parent_span_id"),
    }  # fmt: skip
    st.dataframe(
        pd.DataFrame([(k, str(v)) for k, v in facts.items() if v not in (None, "", 0) or k.endswith("tokens")],
                     columns=["field", "value"]),
        hide_index=True, width="stretch",
    )  # fmt: skip
    if s.get("status_message") or s.get("error_type"):
        st.error(f"**{s.get('error_type') or 'error'}**: {s.get('status_message') or ''}", icon=":material/error:")
    shown = False
    for key, label in (("gen_ai.system_instructions", "System instructions"), ("gen_ai.input.messages", "Prompt"),
                       ("gen_ai.output.messages", "Completion"), ("gen_ai.tool.call.arguments", "Tool arguments"),
                       ("gen_ai.tool.call.result", "Tool result")):  # fmt: skip
        if key in a:
            _show_value(label, a[key])
            shown = True
    decision = {k.removeprefix("agentwatch.decision."): _maybe_json(v) for k, v in a.items()
                if k.startswith("agentwatch.decision.")}  # fmt: skip
    if decision:
        st.markdown("**Decision**")
        c = st.columns(3)
        c[0].metric("Choice", str(decision.get("choice", "—")))
        conf = decision.get("confidence")
        c[1].metric("Confidence", f"{float(conf):.0%}" if conf not in (None, "") else "—")
        c[2].metric("Options", str(len(decision["options"])) if isinstance(decision.get("options"), list) else "—")
        if decision.get("options") is not None:
            st.write("Options considered:", decision["options"])
        if decision.get("reasoning"):
            st.markdown(f"Reasoning: {decision['reasoning']}")
        shown = True
    events = s.get("events") or []
    if events:
        st.markdown("**Events**")
        st.dataframe(pd.DataFrame([{"time": e.get("time"), "name": e.get("name"),
                                    "attributes": json.dumps(e.get("attributes") or {})} for e in events]),
                     hide_index=True)  # fmt: skip
    if not shown and s.get("kind") in ("llm", "tool"):
        st.caption("No content captured for this span (content capture off, or masked at the source).")
    with st.expander("All attributes"):
        st.json({"attributes": a, "resource": s.get("resource") or {}}, expanded=1)


st.divider()
trace_id = st.text_input("Trace id", key="trace", bind="query-params", placeholder="open a trace: 32 hex digits")
if trace_id:
    trace_id = trace_id.strip().lower()
    try:
        tr = data.trace(view, trace_id)
    except ApiProblem as p:
        if p.problem in (Problem.NOT_FOUND, Problem.BAD_REQUEST):
            st.warning(f"No trace `{trace_id}` in this project: {p.message}", icon=":material/search_off:")
            st.stop()
        ui.stop(p, view)
    spans = tr["spans"]
    t0 = min(s["start_ns"] for s in spans)
    depth = _depths(spans)
    root = next((s for s in spans if not s.get("parent_span_id")), spans[0])
    calls = {(s.get("response_id") or s["span_id"]): s for s in spans if s.get("kind") == "llm"}
    cost = sum(float(s["cost_usd"] or 0) for s in calls.values())
    st.subheader(f"{root.get('task_name') or root['name']}")
    c = st.columns(7)
    c[0].metric("Outcome", root.get("outcome") or root.get("status") or "—")
    c[1].metric("Duration", ui.ms(root.get("duration_ms")))
    c[2].metric("Spans", len(spans))
    c[3].metric("LLM calls", len(calls))
    c[4].metric("Cost", ui.usd(cost))
    c[5].metric("Input tokens", ui.count(sum(s["input_tokens"] or 0 for s in calls.values())))
    c[6].metric("Output tokens", ui.count(sum(s["output_tokens"] or 0 for s in calls.values())))
    st.caption(f"service `{root.get('service')}` · trace `{tr['trace_id']}` · started {root.get('start')}")
    rows = []
    for s in spans:
        off = (s["start_ns"] - t0) / 1e6
        rows.append({"label": f"{'· ' * depth[s['span_id']]}{s['name']}  [{s['span_id'][:6]}]", "name": s["name"],
                     "kind": s.get("kind") or "other", "offset_ms": off, "end_ms": off + (s["duration_ms"] or 0),
                     "duration_ms": s["duration_ms"], "status": s.get("status"), "span_id": s["span_id"]})  # fmt: skip
    wf = pd.DataFrame(rows)
    st.altair_chart(charts.waterfall(wf), width="stretch")
    labels = {r["span_id"]: r["label"].replace("· ", "  ") for r in rows}
    chosen = st.selectbox("Span", list(labels), format_func=labels.get, key="span")
    _span_detail(next(s for s in spans if s["span_id"] == chosen))
    st.download_button("Export trace as JSON", json.dumps(tr, indent=2), file_name=f"trace-{tr['trace_id']}.json",
                       mime="application/json", icon=":material/download:")  # fmt: skip
