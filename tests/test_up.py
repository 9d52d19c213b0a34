"""`agentwatch up --demo` as a newcomer runs it: the URLs printed, live data, a loop alert, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from harness import free_port


@pytest.mark.parametrize(
    "stop",
    [
        "ctrl-c",  # SIGINT to the whole foreground process group, as a terminal sends it: every child gets it too
        "sigterm",  # SIGTERM to the supervisor alone (systemd, docker stop)
    ],
)
def test_up_with_demo_shows_data_fires_a_loop_alert_and_stops_cleanly(tmp_path, stop):
    port, dash = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
    env["AGENTWATCH_ALERT_INTERVAL"] = "2"
    out = open(tmp_path / "up.log", "w+")  # noqa: SIM115 - read after the process ends
    p = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.collector.cli", "up", "--demo", "--rate", "6", "--port", str(port),
         "--dashboard-port", str(dash), "--data-dir", str(tmp_path / "data")],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        keys = tmp_path / "data" / "keys.json"
        while time.monotonic() < deadline and not keys.exists():
            assert p.poll() is None, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        read = {"Authorization": f"Bearer {json.loads(keys.read_text())['read']}"}
        api = f"http://127.0.0.1:{port}"
        firing = []
        while time.monotonic() < deadline and not firing:
            time.sleep(1)
            r = httpx.get(api + "/api/v1/alerts", headers=read, timeout=10)
            if r.status_code == 200:
                firing = [a for a in r.json()["firing"] if a.get("rule") == "agent-loop"]
        assert firing, (tmp_path / "up.log").read_text()[-3000:]
        assert httpx.get(api + "/api/v1/overview", headers=read, timeout=10).json()["tasks"] > 0
        assert httpx.get(f"http://127.0.0.1:{dash}/_stcore/health", timeout=10).text == "ok"
        log = (tmp_path / "up.log").read_text()
        assert f"dashboard   http://127.0.0.1:{dash}" in log and str(keys) in log
        assert "FIRING [critical] agent-loop" in log
        children = psutil.Process(p.pid).children(recursive=True)
        assert len(children) >= 5  # collector, dashboard, demo fleet and its agents
    finally:
        if stop == "ctrl-c":
            os.killpg(p.pid, signal.SIGINT)
        else:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            raise
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [c.cmdline() for c in alive]  # nothing orphaned
    assert p.returncode == 0
    assert "Traceback" not in (tmp_path / "up.log").read_text()
