"""Loops and tools: tasks that looped (tool, repeats, wasted calls, tokens and cost), what each tool costs in
errors and latency, and the guards of the SDK that fired (loop breaker, budgets, circuit breakers)."""

from __future__ import annotations

import streamlit as st

from agentwatch.dashboard import charts, data, ui
from agentwatch.dashboard.app import current_view

view = current_view()
ui.header("Loops and tools", view)
GUARDS = (("loop_stopped", "Stopped by the loop breaker"), ("budget_exceeded", "Over budget"), ("timeout", "Timed out"))
data.prefetch(lambda: data.overview(view), lambda: data.loops(view), lambda: data.tools(view),
              *[lambda o=o: data.tasks(view, outcome=o, limit=20, sort="start") for o, _ in GUARDS])  # fmt: skip
ui.require_data(view)

# --- loops ---
st.subheader("Tasks that looped")
loops = ui.optional(data.loops, view, what="Loop detection")
if loops is not None:
    found = data.items(loops)
    n_total = int(loops.get("total", len(found)))
    wasted = sum(float(x.get("wasted_cost_usd") or 0) for x in found)
    c = st.columns(4)
    c[0].metric("Looping tasks", ui.count(n_total), border=True)
    c[1].metric("Wasted tool calls", ui.count(sum(int(x.get("wasted_tool_calls") or 0) for x in found)), border=True)
    c[2].metric("Wasted tokens", ui.count(sum(int(x.get("wasted_tokens") or 0) for x in found)), border=True)
    c[3].metric("Wasted cost", ui.usd(wasted), border=True, help="LLM calls made after the loop had started")
    if found:
        df = ui.trace_links(ui.frame(found, ["trace_id", "service", "name", "pattern", "tool", "repeats",
                                             "wasted_tool_calls", "wasted_tokens", "wasted_cost_usd", "start"]),
                            view)  # fmt: skip
        st.dataframe(
            df.drop(columns=["trace_id"]), hide_index=True,
            column_config={"trace": ui.link_column(),
                           "wasted_cost_usd": st.column_config.NumberColumn("wasted cost", format="$%.5f")},
        )  # fmt: skip
    else:
        st.success(f"No task repeated a tool call {loops.get('repeats', 3)} times in a row in this window.",
                   icon=":material/check_circle:")  # fmt: skip
else:
    flagged = ui.required(data.tasks, view, loop="true", sort="start", limit=100)
    if flagged["items"]:
        df = ui.trace_links(ui.frame(flagged["items"], ["trace_id", "service", "name", "max_repeats", "cost_usd"]),
                            view)  # fmt: skip
        st.dataframe(df.drop(columns=["trace_id"]), hide_index=True, column_config={"trace": ui.link_column()})

# --- tools ---
st.subheader("Tools")
tools = ui.optional(data.tools, view, what="Tool statistics")
if tools is not None:
    rows = data.items(tools)
    if not rows:
        st.caption("No tool calls in this window.")
    else:
        df = ui.frame(rows, ["tool", "calls", "errors", "error_rate", "latency_ms", "max_ms", "retries",
                             "repeated_identical"])  # fmt: skip
        df["p50_ms"] = df["latency_ms"].map(lambda p: (p or {}).get("p50"))
        df["p95_ms"] = df["latency_ms"].map(lambda p: (p or {}).get("p95"))
        df = df.drop(columns=["latency_ms"])[["tool", "calls", "errors", "error_rate", "p50_ms", "p95_ms", "max_ms",
                                                "retries", "repeated_identical"]]
        left, right = st.columns([1, 2])
        with left:
            st.markdown("**Error rate by tool**")
            st.altair_chart(charts.bars(df.fillna({"error_rate": 0}), x="error_rate", y="tool", x_title="error rate",
                                        x_format="%"), width="stretch")  # fmt: skip
        with right:
            st.dataframe(
                df, hide_index=True,
                column_config={"error_rate": st.column_config.NumberColumn("error rate", format="percent"),
                               "p50_ms": st.column_config.NumberColumn("P50 ms", format="%.1f"),
                               "p95_ms": st.column_config.NumberColumn("P95 ms", format="%.1f"),
                               "max_ms": st.column_config.NumberColumn("max ms", format="%.1f"),
                               "repeated_identical": "repeated identical"},
            )  # fmt: skip

# --- guards ---
st.subheader("Guards that stopped tasks")
c = st.columns(3)
stopped = []
for col, (outcome, label) in zip(c, GUARDS, strict=True):
    got = ui.required(data.tasks, view, outcome=outcome, limit=20, sort="start")
    col.metric(label, ui.count(got.get("total", len(got["items"]))), border=True)
    stopped += got["items"]
if stopped:
    gdf = ui.trace_links(ui.frame(stopped, ["trace_id", "outcome", "service", "name", "error_type", "max_repeats",
                                            "cost_usd", "start"]), view)  # fmt: skip
    st.dataframe(gdf.drop(columns=["trace_id"]), hide_index=True,
                 column_config={"trace": ui.link_column(), "max_repeats": "max repeats",
                                "cost_usd": st.column_config.NumberColumn("cost", format="$%.5f")})  # fmt: skip
st.caption("The newest 20 of each. Circuit-breaker openings are span events (`agentwatch.circuit.open`) on the tool "
           "spans: open a trace to see them.")  # fmt: skip
