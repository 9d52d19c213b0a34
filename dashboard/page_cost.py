"""Cost: spend over time by service, task name or model; cost per task with the anomalies marked; unit
economics; the costliest tasks; models without a price; tokens by type (cache reads apart)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from agentwatch.dashboard import charts, data, ui
from agentwatch.dashboard.app import current_view

BY = {"service": "service", "task": "name", "model": "model"}  # the choice -> the API's group_by and task field

view = current_view()
ui.header("Cost", view)
choice = st.segmented_control("Split by", list(BY), default="service", key="cost_by", bind="query-params",
                              required=True) or "service"  # fmt: skip
by = BY[choice]
data.prefetch(
    lambda: data.overview(view), lambda: data.all_tasks(view), lambda: data.unit_economics(view, group_by=by),
    lambda: data.cost_anomalies(view), lambda: data.tasks(view, sort="cost", order="desc", limit=10),
)
ov = ui.require_data(view)
tasks, total = ui.required(data.all_tasks, view)
c = st.columns(4)
c[0].metric("Cost", ui.usd(ov["cost_usd"]), border=True)
c[1].metric("Cost per task", ui.usd(ov["cost_usd"] / ov["tasks"]) if ov["tasks"] else "—", border=True)
c[2].metric("Spend rate", f"{ui.usd(ov['cost_usd'] / (view.seconds / 3600))}/h", border=True)
c[3].metric("Unpriced LLM calls", ui.count(ov["unpriced_llm_calls"]), border=True,
            help="calls to models without a known price: their cost is unknown, not zero")  # fmt: skip

# --- cost over time (from the tasks: exact per task; "model" is the set of models a task called) ---
left, right = st.columns([1, 1])
with left:
    st.markdown(f"**Cost over time by {choice}**")
    if tasks:
        df = ui.frame(tasks, ["start", "service", "name", "models", "cost_usd"])
        df["model"] = df["models"].map(lambda m: " + ".join(m) if m else "(no LLM call)")
        df["start"] = pd.to_datetime(df["start"])
        step = max(60, int(view.seconds / 48))
        df["bucket"] = df["start"].dt.floor(f"{step}s")
        per = df.groupby(["bucket", by], as_index=False)["cost_usd"].sum()
        st.altair_chart(
            charts.time_series(per, x="bucket", y="cost_usd", color=by, y_title="USD", stacked=True, y_format="$,.4f"),
            width="stretch",
        )
        if total > len(tasks):
            st.caption(f"From the newest {len(tasks):,} of {total:,} tasks.")
with right:
    st.markdown(f"**Unit economics by {choice}**")
    econ = ui.optional(data.unit_economics, view, group_by=by, what="Unit economics")
    if econ is not None:
        edf = ui.frame(data.items(econ), ["group", "tasks", "success_rate", "cost_usd", "cost_per_task_usd",
                                          "cost_per_successful_task_usd", "unpriced_llm_calls"])  # fmt: skip
        st.dataframe(
            edf, hide_index=True,
            column_config={
                "group": choice, "success_rate": st.column_config.NumberColumn("success", format="percent"),
                "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
                "cost_per_task_usd": st.column_config.NumberColumn("per task", format="$%.5f"),
                "cost_per_successful_task_usd": st.column_config.NumberColumn("per successful task", format="$%.5f"),
                "unpriced_llm_calls": "unpriced calls",
            },
        )  # fmt: skip

# --- cost per task, anomalies marked ---
st.subheader("Cost per task")
anomalies = ui.optional(data.cost_anomalies, view, what="Cost anomaly detection")
found = data.items(anomalies) if anomalies else []
left, right = st.columns([1, 1])
with left:
    if tasks:
        marks = pd.DataFrame(
            [{"value": a["cost_usd"], "label": f"{a.get('name') or a['trace_id'][:8]}: {ui.usd(a['cost_usd'])}, "
              f"{a.get('ratio') or 0:.1f}x baseline"} for a in found if a.get("cost_usd") is not None]
        )  # fmt: skip
        costs = pd.Series([t["cost_usd"] for t in tasks], dtype=float)
        st.altair_chart(charts.histogram(costs, title="cost per task (USD)", marks=marks, x_format="$,.4f"),
                        width="stretch")  # fmt: skip
        st.caption("Red lines: tasks far above their robust baseline (median and MAD of the same service and task).")
with right:
    st.markdown("**Costliest tasks**")
    top = ui.required(data.tasks, view, sort="cost", order="desc", limit=10)["items"]
    tdf = ui.trace_links(ui.frame(top, ["trace_id", "service", "name", "cost_usd"]), view)
    st.dataframe(tdf.drop(columns=["trace_id"]), hide_index=True,
                 column_config={"trace": ui.link_column(), "cost_usd": st.column_config.NumberColumn(
                     "cost", format="$%.5f")})  # fmt: skip

if anomalies is not None:
    st.markdown(f"**Cost anomalies** ({len(found)})")
    if found:
        adf = ui.trace_links(ui.frame(found, ["trace_id", "service", "name", "start", "cost_usd", "baseline_usd",
                                              "ratio", "score"]), view)  # fmt: skip
        st.dataframe(adf.drop(columns=["trace_id"]), hide_index=True,
                     column_config={"trace": ui.link_column(),
                                    "cost_usd": st.column_config.NumberColumn("cost", format="$%.5f"),
                                    "baseline_usd": st.column_config.NumberColumn("baseline", format="$%.5f")})
    else:
        st.caption("No task far above its baseline in this window.")
    bombs = data.items(anomalies.get("token_bombs", []))
    spikes = data.items(anomalies.get("spend_spikes", []))
    if bombs:
        st.markdown(f"**Token bombs** ({len(bombs)}): one call's input far above the norm")
        st.dataframe(ui.trace_links(ui.frame(bombs, ["trace_id", "service", "model", "time", "input_tokens",
                                                     "baseline_input_tokens", "ratio", "cost_usd"]), view)
                     .drop(columns=["trace_id"]), hide_index=True,
                     column_config={"trace": ui.link_column()})  # fmt: skip
    if spikes:
        st.markdown(f"**Spend spikes** ({len(spikes)}): an hour far above the service's hourly baseline")
        st.dataframe(ui.frame(spikes, ["service", "hour", "cost_usd", "baseline_usd", "ratio"]), hide_index=True)

# --- tokens by type, unpriced models ---
left, right = st.columns(2)
with left:
    st.subheader("Tokens by type")
    cache_r, cache_w = ov.get("cache_read_tokens", 0), ov.get("cache_write_tokens", 0)
    tok = pd.DataFrame([
        {"type": "input (uncached)", "tokens": max(0, ov["input_tokens"] - cache_r - cache_w)},
        {"type": "cache read", "tokens": cache_r},
        {"type": "cache write", "tokens": cache_w},
        {"type": "output", "tokens": ov["output_tokens"] - ov.get("reasoning_tokens", 0)},
        {"type": "reasoning", "tokens": ov.get("reasoning_tokens", 0)},
    ])  # fmt: skip
    st.altair_chart(charts.bars(tok, x="tokens", y="type", x_title="tokens", color="type"), width="stretch")
    st.caption("Input tokens include cache reads and writes, priced at their own rates; reasoning is part of output.")
with right:
    st.subheader("Unpriced models")
    unpriced = data.items((econ or {}).get("unpriced_models", [])) if econ is not None else []
    if unpriced:
        st.warning(f"{len(unpriced)} model(s) without a price: their calls count as unpriced, never as $0. Add them "
                   "to a price file (`--price-file`).", icon=":material/money_off:")  # fmt: skip
        st.dataframe(ui.frame(unpriced, ["provider", "model", "calls", "input_tokens", "output_tokens"]),
                     hide_index=True)  # fmt: skip
    elif ov["unpriced_llm_calls"]:
        st.warning(f"{ov['unpriced_llm_calls']} LLM call(s) could not be priced.", icon=":material/money_off:")
    else:
        st.success("Every LLM call in this window has a price.", icon=":material/check_circle:")
