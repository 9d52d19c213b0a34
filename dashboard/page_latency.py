"""Latency: P50/P95/P99 series by kind, model, tool or service (each bucket's own percentiles, never an
average of percentiles), the per-group table, the distribution of task durations and the slowest tasks."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from agentwatch.dashboard import charts, data, ui
from agentwatch.dashboard.app import current_view

KINDS = ["llm", "tool", "task", "decision", "all"]
GROUPS = {"none": "nothing", "model": "model", "tool": "tool", "service": "service", "task": "task name",
          "kind": "kind", "provider": "provider"}  # fmt: skip
INTERVAL_S = {"auto": 0, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
NICE_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)

view = current_view()
ui.header("Latency", view)

c = st.columns(4)
kind = c[0].selectbox("Span kind", KINDS, key="kind", bind="query-params")
group_by = c[1].selectbox("Group by", list(GROUPS), index=1, key="group_by", bind="query-params")
pct = c[2].segmented_control("Percentile", ["p50", "p95", "p99"], default="p95", key="pct", bind="query-params",
                             required=True)  # fmt: skip
bucket = c[3].selectbox("Bucket", list(INTERVAL_S), key="bucket", bind="query-params")
pct = pct or "p95"
# "auto": about 50 points, readable, and percentiles over enough spans each
interval = str(INTERVAL_S.get(bucket or "auto") or next((s for s in NICE_S if view.seconds / s <= 60), NICE_S[-1]))
data.prefetch(
    lambda: data.overview(view), lambda: data.latency(view, kind=kind, group_by=group_by, interval="window"),
    lambda: data.latency(view, kind=kind, group_by=group_by, interval=interval), lambda: data.all_tasks(view),
    lambda: data.tasks(view, sort="duration", order="desc", limit=10),
)
ov = ui.require_data(view)

whole = ui.optional(data.latency, view, kind=kind, group_by=group_by, interval="window", what="Latency percentiles")
if whole is not None:
    rows = data.items(whole)
    if not rows:
        st.info(f"No {kind} spans in this window.", icon=":material/search_off:")
    else:
        table = ui.frame(rows, ["group", "count", "p50", "p95", "p99", "max"]).sort_values("p95", ascending=False)
        table["group"] = table["group"].fillna("(all)").replace("", "(none)")
        series = data.items(ui.required(data.latency, view, kind=kind, group_by=group_by, interval=interval))
        left, right = st.columns([1, 1])
        with left:
            by = "" if group_by == "none" else f" by {GROUPS[group_by]}"
            st.markdown(f"**{pct.upper()} of {kind} spans{by}, ms**")
            df = ui.frame(series, ["group", "bucket", "count", "p50", "p95", "p99"])
            df["group"] = df["group"].fillna("(all)").replace("", "(none)")
            df["bucket"] = pd.to_datetime(df["bucket"])
            st.altair_chart(
                charts.time_series(df, x="bucket", y=pct, color="group", y_title=f"{pct} ms", y_format=",.0f"),
                width="stretch",
            )
        with right:
            st.markdown("**Over the whole window**")
            st.dataframe(
                table, hide_index=True, height=min(38 + 35 * len(table), 360),
                column_config={p: st.column_config.NumberColumn(f"{p} ms", format="%.0f") for p in
                               ("p50", "p95", "p99", "max")},
            )  # fmt: skip

st.subheader("Task durations")
tasks, total = ui.required(data.all_tasks, view)
if tasks:
    d = pd.Series([t["duration_ms"] for t in tasks], dtype=float)
    lat = ov["latency_ms"].get("task") or {}
    marks = pd.DataFrame(
        [{"value": lat[p], "label": f"{p.upper()} {ui.ms(lat[p])}"} for p in ("p50", "p95", "p99") if lat.get(p)]
    )
    st.altair_chart(charts.histogram(d, title="task duration (ms)", marks=marks, x_format=",.0f", height=200),
                    width="stretch")  # fmt: skip
    note = f" (the newest {len(tasks):,} of {total:,})" if total > len(tasks) else ""
    st.caption(f"{len(tasks):,} tasks{note}; red lines: the window's P50, P95 and P99.")
    st.markdown("**Slowest tasks**")
    slow = ui.required(data.tasks, view, sort="duration", order="desc", limit=10)["items"]
    sdf = ui.trace_links(ui.frame(slow, ["trace_id", "service", "name", "outcome", "duration_ms", "llm_calls",
                                         "tool_calls", "cost_usd", "start"]), view)  # fmt: skip
    st.dataframe(
        sdf.drop(columns=["trace_id"]), hide_index=True,
        column_config={"trace": ui.link_column(), "duration_ms": st.column_config.NumberColumn("ms", format="%.0f"),
                       "cost_usd": st.column_config.NumberColumn("cost", format="$%.5f")},
    )  # fmt: skip
