"""Overview: what is wrong, since when, where, how much — at a glance, against the previous period."""

from __future__ import annotations

import streamlit as st

from agentwatch.dashboard import data, ui
from agentwatch.dashboard.app import current_view
from agentwatch.dashboard.client import ApiProblem

view = current_view()
ui.header("Overview", view)
data.prefetch(lambda: data.overview(view), lambda: data.overview(view.previous()), lambda: data.alerts(view),
              lambda: data.ingestion(view))  # fmt: skip
ov = ui.require_data(view)
prev = ui.required(data.overview, view.previous())

# --- tasks and outcomes ---
c = st.columns(4)
c[0].metric("Tasks", ui.count(ov["tasks"]), ui.change(ov["tasks"], prev["tasks"]), border=True,
            help="agent runs (traces) that started in the window; the change is against the previous period")
c[1].metric("Completion rate", ui.pct(ov.get("completion_rate")),
            ui.change_pp(ov.get("completion_rate"), prev.get("completion_rate")), border=True)
c[2].metric("Error rate", ui.pct(ov.get("error_rate")), ui.change_pp(ov.get("error_rate"), prev.get("error_rate")),
            delta_color="inverse", border=True)
c[3].metric("Escalation rate", ui.pct(ov.get("escalation_rate")),
            ui.change_pp(ov.get("escalation_rate"), prev.get("escalation_rate")), delta_color="inverse", border=True)

# --- cost and tokens ---
hours = view.seconds / 3600
per_task = ov["cost_usd"] / ov["tasks"] if ov["tasks"] else None
prev_per_task = prev["cost_usd"] / prev["tasks"] if prev["tasks"] else None
c = st.columns(4)
c[0].metric("Cost", ui.usd(ov["cost_usd"]), ui.change(ov["cost_usd"], prev["cost_usd"]), delta_color="inverse",
            border=True, help="priced LLM calls; unpriced calls are counted apart, never as $0")
c[1].metric("Spend rate", f"{ui.usd(ov['cost_usd'] / hours)}/h", border=True,
            help=f"cost over the window's {hours:g} hours")
c[2].metric("Cost per task", ui.usd(per_task), ui.change(per_task, prev_per_task), delta_color="inverse", border=True)
c[3].metric("Unpriced LLM calls", ui.count(ov["unpriced_llm_calls"]), border=True,
            help="calls to models without a known price: their cost is unknown, not zero")
c = st.columns(4)
c[0].metric("Input tokens", ui.count(ov["input_tokens"]), ui.change(ov["input_tokens"], prev["input_tokens"]),
            delta_color="off", border=True, help="including cache reads")
c[1].metric("Output tokens", ui.count(ov["output_tokens"]), ui.change(ov["output_tokens"], prev["output_tokens"]),
            delta_color="off", border=True)
c[2].metric("Cache-read tokens", ui.count(ov.get("cache_read_tokens")), border=True)
c[3].metric("LLM / tool calls", f"{ui.count(ov['llm_calls'])} / {ui.count(ov['tool_calls'])}",
            help=f"{ui.count(ov['spans'])} spans, {ui.count(ov['errors'])} with an error", border=True)

# --- latency percentiles per kind ---
st.subheader("Latency")
kinds = [k for k in ("task", "llm", "tool") if (ov["latency_ms"].get(k) or {}).get("p50") is not None]
if not kinds:
    st.caption("No spans with a duration in this window.")
for kind in kinds:
    cur, old = ov["latency_ms"][kind], (prev["latency_ms"].get(kind) or {})
    c = st.columns([1, 2, 2, 2])
    c[0].markdown(f"**{kind}**")
    for col, p in zip(c[1:], ("p50", "p95", "p99"), strict=True):
        col.metric(f"{kind} {p.upper()}", ui.ms(cur[p]), ui.change(cur[p], old.get(p)), delta_color="inverse",
                   label_visibility="visible")

# --- firing alerts ---
st.subheader("Firing now")
alerts = ui.optional(data.alerts, view, what="Alerting")
if alerts is not None:
    firing = data.items(alerts.get("firing", []))
    if alerts.get("enabled") is False:
        st.info("Alert evaluation is off on this collector (no rules file, no Slack or PagerDuty channel): see the "
                "Alerts page.", icon=":material/notifications_off:")  # fmt: skip
    elif not firing:
        st.success("Nothing is firing.", icon=":material/check_circle:")
    else:
        st.error(f"**{len(firing)} alert(s) firing**: " + "; ".join(
            f"{a.get('rule')}: {a.get('summary') or a.get('labels', {})}" for a in firing[:5]),
            icon=":material/notifications_active:")  # fmt: skip
        st.page_link("page_alerts.py", label="Open the alerts", icon=":material/arrow_forward:")

# --- ingestion health ---
st.subheader("Ingestion health")
try:
    ing = data.ingestion(view)
except ApiProblem:
    ing = None  # older collector: the process-wide counters below
if ing is not None:
    tot, spool = ing.get("totals", {}), ing.get("spool", {})
    c = st.columns(5)
    c[0].metric("Spans accepted", ui.count(tot.get("accepted")), border=True)
    c[1].metric("Stored", ui.count(tot.get("stored")), border=True)
    c[2].metric("Rejected", ui.count(tot.get("rejected")), border=True, delta_color="inverse")
    c[3].metric("Dropped", ui.count(tot.get("dropped")), border=True)
    c[4].metric("Waiting in the spool", ui.count(spool.get("queue_depth", tot.get("pending"))), border=True,
                help=f"{ui.count(spool.get('bytes'))} bytes on disk, waiting for the store")  # fmt: skip
    reasons = tot.get("rejected_by_reason") or {}
    if reasons:
        st.warning("Rejected spans by reason: " + ", ".join(f"{k}: {v:,}" for k, v in reasons.items()),
                   icon=":material/report:")  # fmt: skip
    if spool.get("writer_error"):
        st.error(f"The writer cannot store spans: {spool['writer_error']}", icon=":material/database_off:")
    if tot.get("dropped"):
        st.error(f"{tot['dropped']:,} span(s) could not be stored and were set aside (`spool/failed/`).",
                 icon=":material/delete_forever:")  # fmt: skip
    st.caption("Spans of this project (all services) in the window.")
else:
    m = ui.optional(data.metrics, view, what="Collector metrics")
    if m is not None:
        rejected = sum(v for k, v in m.items() if k.startswith("agentwatch_spans_rejected_total"))
        c = st.columns(4)
        c[0].metric("Spans accepted", ui.count(m.get("agentwatch_spans_accepted_total", 0)), border=True)
        c[1].metric("Stored", ui.count(m.get("agentwatch_spans_stored_total", 0)), border=True)
        c[2].metric("Rejected", ui.count(rejected), border=True)
        c[3].metric("Waiting in the spool", ui.count(m.get("agentwatch_queue_depth", 0)), border=True)
        st.caption("Since the collector started, all projects (from `/metrics`).")
