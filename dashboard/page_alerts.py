"""Alerts: what is firing now, the rules, the history of alerts, the delivery log and the silences."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from agentwatch.dashboard import data, ui
from agentwatch.dashboard.app import current_view

TIME_KEYS = ("active_since", "fired_at", "resolved_at", "last_eval", "starts_at", "ends_at", "time", "at", "sent_at")
FIRING_COLUMNS = ["rule", "severity", "summary", "value", "threshold", "active_since", "fired_at", "muted_by", "link"]


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """Alert records as a table: times as datetimes, nested values as compact JSON."""
    df = ui.frame(rows, columns)
    for c in df.columns:
        if c in TIME_KEYS:
            df[c] = pd.to_datetime(pd.to_numeric(df[c], errors="coerce"), unit="s", utc=True)
        elif df[c].map(lambda v: isinstance(v, dict | list)).any():
            df[c] = df[c].map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
    return df


def first_link(alert: dict[str, Any]) -> str | None:
    links = alert.get("links") or []
    return links[0].get("url") if links and isinstance(links[0], dict) else None


view = current_view()
ui.header("Alerts", view, caption="alerts are per project: the time range and service filters do not apply here")
res = ui.optional(data.alerts, view, what="Alerting")
if res is None:
    st.caption("Alerts run inside the collector (`agentwatch collector --rules FILE`, or a Slack, PagerDuty or webhook "
               "channel in the environment for the built-in rules).")  # fmt: skip
    st.stop()

firing = data.items(res.get("firing", []))
pending = data.items(res.get("pending", []))
rules = data.items(res.get("rules", []))
history = data.items(res.get("history", []))
deliveries = data.items(res.get("deliveries", []))
silences = data.items(res.get("silences", []))
channels = data.items(res.get("channels", []))

if res.get("enabled") is False:
    st.info("Alert evaluation is off on this collector: no rules file and no Slack or PagerDuty channel configured. "
            "Set `AGENTWATCH_SLACK_WEBHOOK_URL` or `AGENTWATCH_PAGERDUTY_ROUTING_KEY` for the built-in rules, or pass "
            "`--rules FILE`.", icon=":material/notifications_off:")  # fmt: skip
for err in res.get("rule_errors") or []:
    st.error(f"Rule error: {err if isinstance(err, str) else json.dumps(err)}", icon=":material/rule:")

c = st.columns(5)
c[0].metric("Firing", len(firing), border=True)
c[1].metric("Pending", len(pending), border=True, help="active, waiting for the rule's `for` duration")
c[2].metric("Rules", len(rules), border=True)
c[3].metric("Active silences", sum(1 for s in silences if s.get("active", True)), border=True)
failed = sum(1 for d in deliveries if d.get("outcome") in ("failed", "gave_up"))
c[4].metric("Failed deliveries", failed, border=True)
last = res.get("last_evaluation")
st.caption(f"Rules from {res.get('source', '?')}, evaluated every {res.get('interval_s', '?')} s; "
           f"{res.get('evaluations', 0)} evaluation(s), the last "
           f"{pd.to_datetime(last, unit='s', utc=True).strftime('%H:%M:%S UTC') if last else 'never'}. Channels: "
           f"{', '.join(ch.get('name', '?') for ch in channels) or 'none'}.")  # fmt: skip

st.subheader("Firing now")
if not firing:
    st.success("Nothing is firing.", icon=":material/check_circle:")
else:
    for a in firing:
        a["link"] = first_link(a)
    st.dataframe(table(firing, FIRING_COLUMNS), hide_index=True,
                 column_config={"link": st.column_config.LinkColumn("link", display_text="open")})  # fmt: skip

if pending:
    st.markdown(f"**Pending** ({len(pending)})")
    st.dataframe(table(pending, FIRING_COLUMNS[:-1]), hide_index=True)

tabs = st.tabs([f"Rules ({len(rules)})", f"History ({len(history)})", f"Deliveries ({len(deliveries)})",
                f"Silences ({len(silences)})"])  # fmt: skip
with tabs[0]:
    if rules:
        st.dataframe(table(rules), hide_index=True)
    else:
        st.caption("No rules: configure a channel or pass a rules file.")
for tab, rows, empty in ((tabs[1], history, "No alert has fired yet."), (tabs[2], deliveries, "Nothing was sent yet."),
                         (tabs[3], silences, "No silences.")):  # fmt: skip
    with tab:
        if rows:
            st.dataframe(table(rows), hide_index=True)
        else:
            st.caption(empty)
