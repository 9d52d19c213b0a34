"""Drift: per service and metric, the current window against the baseline before it (PSI and a KS or
chi-square test), the distributions side by side, and model changes on a timeline."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from agentwatch.dashboard import charts, data, ui
from agentwatch.dashboard.app import current_view

BASELINES = {"24h": 24, "3d": 72, "7d": 168, "30d": 720}  # the baseline: this long before the window

view = current_view()
ui.header("Drift", view)
baseline = st.selectbox("Baseline (before the window)", list(BASELINES), index=2, key="baseline",
                        bind="query-params")  # fmt: skip
baseline_h = str(BASELINES[baseline or "7d"])
data.prefetch(lambda: data.overview(view), lambda: data.drift(view, baseline_hours=baseline_h))
ui.require_data(view)
res = ui.optional(data.drift, view, baseline_hours=baseline_h, what="Drift detection")
if res is None:
    st.stop()
rows = data.items(res)
th = res.get("thresholds", {})
base = res.get("baseline") or {}
st.caption(f"Baseline {base.get('from', '?')} to {base.get('to', '?')}; drifted when PSI >= {th.get('psi', 0.2)} "
           f"and the test's corrected p-value < {th.get('alpha', 0.05)}.")  # fmt: skip

if not rows:
    st.info(f"Not enough tasks to compare (at least {th.get('min_samples', 30)} in the window and in the baseline, "
            "per service).", icon=":material/hourglass_empty:")  # fmt: skip
else:
    df = ui.frame(rows, ["service", "metric", "psi", "test", "statistic", "p_adjusted", "drifted", "baseline_median",
                         "current_median", "baseline_n", "current_n"])  # fmt: skip
    drifted = df[df["drifted"].astype(bool)]
    if len(drifted):
        st.error(f"**{len(drifted)} metric(s) drifted**: "
                 + ", ".join(f"{r.service} {r.metric} (PSI {r.psi:.2f})" for r in drifted.itertuples()),
                 icon=":material/trending_up:")  # fmt: skip
    else:
        st.success("No drift in this window.", icon=":material/check_circle:")
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Highest PSI by metric and service** (red line: threshold)")
        df["label"] = df["metric"] + " · " + df["service"]
        top = df.nlargest(12, "psi")
        st.altair_chart(charts.bars(top, x="psi", y="label", x_title="PSI", color="drifted", x_format=".2f",
                                    rule=float(th.get("psi", 0.2))), width="stretch")  # fmt: skip
    with right:
        st.dataframe(df.drop(columns=["label"]), hide_index=True,
                     column_config={"psi": st.column_config.NumberColumn("PSI", format="%.3f"),
                                    "p_adjusted": st.column_config.NumberColumn("p (corrected)", format="%.2g")})

    st.subheader("Baseline vs current")
    options = [f"{r['service']} · {r['metric']}" for r in rows]
    pick = st.selectbox("Metric", options, key="drift_metric")
    r = rows[options.index(pick)]
    if r.get("baseline_shares") is not None:
        shares = [{"category": k, "period": "baseline", "share": v} for k, v in r["baseline_shares"].items()]
        shares += [{"category": k, "period": "current", "share": v} for k, v in r.get("current_shares", {}).items()]
        st.altair_chart(charts.overlaid(pd.DataFrame(shares), x="category", y="share", series="period",
                                        x_title=r["metric"]), width="stretch")  # fmt: skip
    elif r.get("baseline_value") is not None:
        c = st.columns(2)
        c[0].metric("Baseline", ui.pct(r["baseline_value"]))
        c[1].metric("Current", ui.pct(r["current_value"]), ui.change_pp(r["current_value"], r["baseline_value"]),
                    delta_color="inverse")  # fmt: skip
    else:
        c = st.columns(2)
        c[0].metric("Baseline median", f"{r.get('baseline_median'):,.4g}")
        c[1].metric("Current median", f"{r.get('current_median'):,.4g}",
                    ui.change(r.get("current_median"), r.get("baseline_median")), delta_color="off")  # fmt: skip

st.subheader("Model changes")
changes = data.items(res.get("model_changes", []))
if not changes:
    st.caption("No new model or model version in this window.")
else:
    mdf = ui.frame(changes, ["time", "service", "type", "request_model", "model", "previous_models", "calls"])
    mdf["time"] = pd.to_datetime(mdf["time"])
    chart = (
        alt.Chart(mdf)
        .mark_point(size=120, filled=True)
        .encode(x=alt.X("time:T", title=None, scale=alt.Scale(domain=[view.start * 1000, view.end * 1000])),
                y=alt.Y("service:N", title=None), color=alt.Color("model:N"),
                shape="type:N", tooltip=["time:T", "service:N", "model:N", "type:N", "calls:Q"])
        .properties(height=max(80, 40 * mdf["service"].nunique()))
    )  # fmt: skip
    st.altair_chart(chart, width="stretch")
    mdf["previous_models"] = mdf["previous_models"].map(lambda m: ", ".join(m or []))
    st.dataframe(mdf, hide_index=True)
