"""The real dashboard (``python -m agentwatch.dashboard``, i.e. ``streamlit run``) against a real collector, every
page opened in headless Chromium: screenshots in tests/screenshots/, and no Streamlit exception box anywhere.

Chromium is required (``make test`` installs Debian's ``chromium`` when missing): this test fails without it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dashboard_seed
import httpx
import pytest
from dashboard_browser import Chromium, find_chromium
from harness import KEYS, collector_env, free_port

SHOTS = Path(__file__).parent / "screenshots"
BAD = ("stException", "Traceback (most recent call last)", "Page not found")


@pytest.fixture
def dashboard_url(make_collector, tmp_path):
    col = make_collector()
    seeded = dashboard_seed.seed(col)
    dashboard_seed.seed_fleet(col, tasks=300, hours=48)
    port = free_port()
    env = collector_env(AGENTWATCH_API_KEY=KEYS["read"])
    log = open(tmp_path / "dashboard.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "agentwatch.dashboard", "--api", col.url, "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                if httpx.get(url + "/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the dashboard did not start in 60 s")
        yield url, seeded
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_every_page_renders_in_chromium(dashboard_url, tmp_path):
    exe = find_chromium()
    assert exe, "Chromium is needed: apt-get install -y chromium (make test installs it), or AGENTWATCH_TEST_CHROMIUM"
    url, seeded = dashboard_url
    SHOTS.mkdir(exist_ok=True)
    pages = [
        ("overview", "", "Overview"),
        ("latency", "latency", "Latency"),
        ("cost", "cost", "Cost"),
        ("loops", "loops", "Loops and tools"),
        ("drift", "drift?baseline=24h", "Drift"),
        ("traces", "traces", "Traces"),
        ("trace", f"traces?range=1h&service={seeded.support}&trace={seeded.traces['triage_ok']}", "Traces"),
        ("alerts", "alerts", "Alerts"),
        ("overview-service", f"?service={seeded.support}&range=1h", "Overview"),
        ("empty-window", "?service=no-such-service&range=15m", "Overview"),
    ]
    browser = Chromium(exe, tmp_path)
    timings = []
    try:
        for name, path, title in pages:
            seconds = browser.open(f"{url}/{path}", timeout=60)
            browser.screenshot(SHOTS / f"{name}.png")
            dom = browser.dom()
            timings.append(f"{name:18} {seconds:5.2f} s")
            for bad in BAD:
                assert bad not in dom, f"{name}: {bad!r} on the page; see {SHOTS / (name + '.png')}"
            assert browser.eval("document.querySelector('h1').textContent").startswith(title), name
            text = browser.text()
            assert "not available on this collector yet" not in text, name
            if name == "overview-service":
                assert "$0.035" in text and "33.3%" in text
            if name == "trace":
                assert "triage" in text and "1.20 s" in text
            if name == "empty-window":
                assert "No spans in this window" in text
    finally:
        browser.close()
        (SHOTS / "timings.txt").write_text("\n".join(timings) + "\n")
