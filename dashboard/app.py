"""The dashboard's entry file (``streamlit run app.py``): a router over one file per page.

``run()`` reads the settings, draws the global filters (kept in the URL) and runs the chosen page; each
page reads ``current_view()``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from agentwatch.dashboard import data, ui
from agentwatch.dashboard.client import ApiProblem
from agentwatch.dashboard.settings import API_KEY_ENV, KEYS_FILE_ENV, Settings
from agentwatch.dashboard.state import View, auto_refresh, sidebar_controls

HERE = Path(__file__).resolve().parent
PAGES = [
    # file, title, url path, icon
    ("page_overview.py", "Overview", "overview", ":material/dashboard:"),
    ("page_latency.py", "Latency", "latency", ":material/speed:"),
    ("page_cost.py", "Cost", "cost", ":material/payments:"),
    ("page_loops.py", "Loops and tools", "loops", ":material/repeat:"),
    ("page_drift.py", "Drift", "drift", ":material/timeline:"),
    ("page_traces.py", "Traces", "traces", ":material/account_tree:"),
    ("page_alerts.py", "Alerts", "alerts", ":material/notifications_active:"),
]
VIEW_KEY = "_view"


def current_view() -> View:
    """The view the router built for this run (pages call this)."""
    return st.session_state[VIEW_KEY]


def run() -> None:
    st.set_page_config(page_title="agentwatch", page_icon=":material/monitoring:", layout="wide")
    pages = [
        st.Page(HERE / f, title=title, url_path=url, icon=icon, default=i == 0)
        for i, (f, title, url, icon) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    settings = Settings.from_env()
    st.session_state["_key_source"] = settings.key_source
    with st.sidebar:
        st.caption(f"Collector: `{settings.api}`")
    if settings.problem:
        st.error(f"**No read key**: {settings.problem}.", icon=":material/key_off:")
        st.stop()
    if not settings.key:
        st.error(
            f"**No read key configured.** Set `{API_KEY_ENV}` to a key with the read role, or `{KEYS_FILE_ENV}` to "
            "the `keys.json` the collector wrote to its data directory on first start.",
            icon=":material/key_off:",
        )
        st.stop()
    try:
        view, refresh_s = sidebar_controls(settings.api, settings.key, data.services)
    except ApiProblem as p:
        ui.stop(p, View(api=settings.api, key=settings.key, start=0, end=0))
    with st.sidebar:
        if st.button("Reload data", icon=":material/refresh:", key="reload"):
            data.get_json.clear()
    st.session_state[VIEW_KEY] = view
    auto_refresh(refresh_s)
    page.run()


if __name__ == "__main__":
    run()
