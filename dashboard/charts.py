"""Altair charts the pages share. Colours follow the span kind everywhere."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

KIND_COLORS = {"task": "#4c78a8", "llm": "#f58518", "tool": "#54a24b", "decision": "#b279a2", "other": "#9d9d9d"}
KIND_SCALE = alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values()))
# Streamlit's default autosize ("fit") squeezes axes, legend and rows into the height; charts with one row per
# category size the plot area instead and only fit the width.
FIT_X = alt.AutoSizeParams(type="fit-x", contains="padding")


def time_series(
    df: pd.DataFrame, *, x: str, y: str, color: str | None, y_title: str, height: int = 280, stacked: bool = False,
    y_format: str = ",.0f",
) -> alt.Chart:  # fmt: skip
    base = alt.Chart(df)
    few = df[x].nunique() <= 40
    mark = base.mark_area(opacity=0.8, interpolate="step-after") if stacked else base.mark_line(point=few)
    enc: dict[str, Any] = {
        "x": alt.X(f"{x}:T", title=None),
        "y": alt.Y(f"{y}:Q", title=y_title, stack="zero" if stacked else None, axis=alt.Axis(format=y_format)),
        "tooltip": [alt.Tooltip(f"{x}:T", format="%Y-%m-%d %H:%M"), alt.Tooltip(f"{y}:Q", format=y_format)],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=None, scale=alt.Scale(scheme="tableau10"),
                                 legend=alt.Legend(orient="bottom", columns=2, labelLimit=320))
        enc["tooltip"].insert(0, alt.Tooltip(f"{color}:N"))
    return mark.encode(**enc).properties(height=height)


def bars(df: pd.DataFrame, *, x: str, y: str, x_title: str, color: str | None = None, x_format: str = ",.0f",
         height: int | None = None, rule: float | None = None) -> alt.Chart:  # fmt: skip
    """Horizontal bars: ``y`` categories, ``x`` values (optionally a threshold rule)."""
    h = height or 24 * len(df)
    enc: dict[str, Any] = {
        "y": alt.Y(f"{y}:N", title=None, sort="-x"),
        "x": alt.X(f"{x}:Q", title=x_title, axis=alt.Axis(format=x_format)),
        "tooltip": [alt.Tooltip(f"{y}:N"), alt.Tooltip(f"{x}:Q", format=x_format)],
    }
    if color:
        legend = None if color == y else alt.Legend(orient="bottom")
        enc["color"] = alt.Color(f"{color}:N", title=None, legend=legend)
    chart: alt.Chart | alt.LayerChart = alt.Chart(df).mark_bar().encode(**enc)
    if rule is not None:
        line = alt.Chart(pd.DataFrame({"v": [rule]})).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(x="v:Q")
        chart = chart + line
    return chart.properties(height=h, autosize=FIT_X)


def histogram(values: pd.Series, *, title: str, marks: pd.DataFrame | None = None, mark_field: str = "value",
              x_format: str = ",.2f", bins: int = 30, height: int = 240) -> alt.Chart:  # fmt: skip
    """A histogram; ``marks`` (rows with ``mark_field`` and ``label``) drawn as red rules (anomalies)."""
    df = pd.DataFrame({"value": values.astype(float)})
    hist = (
        alt.Chart(df)
        .mark_bar(color="#4c78a8", opacity=0.85)
        .encode(
            x=alt.X("value:Q", bin=alt.Bin(maxbins=bins), title=title, axis=alt.Axis(format=x_format)),
            y=alt.Y("count():Q", title="tasks"),
            tooltip=[alt.Tooltip("count():Q", title="tasks")],
        )
    )
    if marks is not None and not marks.empty:
        rules = (
            alt.Chart(marks)
            .mark_rule(color="#d62728", strokeWidth=2)
            .encode(x=alt.X(f"{mark_field}:Q"), tooltip=[alt.Tooltip("label:N", title="anomaly")])
        )
        return (hist + rules).properties(height=height)
    return hist.properties(height=height)


def overlaid(df: pd.DataFrame, *, x: str, y: str, series: str, x_title: str, height: int = 220) -> alt.Chart:
    """Two distributions (baseline and current) over the same bins."""
    return (
        alt.Chart(df)
        .mark_bar(opacity=0.5)
        .encode(
            x=alt.X(f"{x}:O", title=x_title, sort=None),
            y=alt.Y(f"{y}:Q", title="share", stack=None, axis=alt.Axis(format="%")),
            color=alt.Color(f"{series}:N", title=None, scale=alt.Scale(range=["#9d9d9d", "#f58518"])),
            tooltip=[f"{series}:N", f"{x}:O", alt.Tooltip(f"{y}:Q", format=".1%")],
        )
        .properties(height=height)
    )


def waterfall(spans: pd.DataFrame, *, height_per_span: int = 24) -> alt.Chart:
    """One bar per span from its start to its end (ms since the trace began), in start order, by kind."""
    return (
        alt.Chart(spans)
        .mark_bar(cornerRadius=2)
        .encode(
            y=alt.Y("label:N", sort=list(spans["label"]), title=None, axis=alt.Axis(labelLimit=360)),
            x=alt.X("offset_ms:Q", title="ms since the task started"),
            x2="end_ms:Q",
            color=alt.Color("kind:N", scale=KIND_SCALE, legend=alt.Legend(orient="top", title=None)),
            tooltip=["name:N", "kind:N", alt.Tooltip("duration_ms:Q", format=",.1f"), "status:N", "span_id:N"],
        )
        .properties(height=height_per_span * len(spans), autosize=FIT_X)
    )
