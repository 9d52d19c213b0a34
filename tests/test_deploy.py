"""Server mode as far as this machine can run it (no Docker engine here): the compose file and the
Dockerfile reference what exists, their commands are valid `agentwatch` command lines, and the image's
entry command runs as a plain process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import yaml
from harness import collector_env, free_port

from agentwatch.collector.cli import parser
from agentwatch.collector.settings import CollectorSettings

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_is_consistent():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"clickhouse", "collector", "dashboard"}
    ch = services["clickhouse"]
    assert re.fullmatch(r"clickhouse/clickhouse-server:\d+\.\d+", ch["image"]), "pin the ClickHouse version"
    for vol in ch["volumes"]:
        src = vol.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).exists(), src
    for name in ("collector", "dashboard"):
        svc = services[name]
        cmd = svc["command"]
        assert cmd[0] == "agentwatch"
        parser().parse_args(cmd[1:])  # a valid command line of ours (raises SystemExit otherwise)
        assert "healthcheck" in svc or name == "dashboard"
    env = services["collector"]["environment"]
    url = env["AGENTWATCH_CLICKHOUSE_URL"]
    assert url.startswith("http://") and "@clickhouse:8123/" in url
    known = {f"AGENTWATCH_{n.upper()}" for n in CollectorSettings.model_fields} | {
        "AGENTWATCH_SLACK_WEBHOOK_URL", "AGENTWATCH_PAGERDUTY_ROUTING_KEY", "AGENTWATCH_ALERT_INTERVAL",
    }  # fmt: skip
    assert set(env) <= known, set(env) - known
    assert services["collector"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    ET.parse(ROOT / "deploy/clickhouse/system-logs.xml")  # well-formed server config


def test_dockerfile_copies_what_exists_and_runs_our_command():
    text = (ROOT / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / src).exists(), src
    cmd = re.search(r'^CMD \[(.*)\]', text, re.M).group(1)
    argv = [a.strip().strip('"') for a in cmd.split(",")]
    assert argv[:2] == ["agentwatch", "collector"]
    parser().parse_args(argv[1:])


def test_image_entry_command_runs_as_a_plain_process(tmp_path):
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.collector.cli", "collector", "--host", "0.0.0.0", "--port", str(port)],
        env=collector_env(AGENTWATCH_DATA_DIR=str(tmp_path / "data")), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        ok = False
        deadline = time.monotonic() + 120  # a loaded 2-core machine can take a while to start chDB
        while not ok and time.monotonic() < deadline and p.poll() is None:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ok, "the collector did not become ready"
        assert (tmp_path / "data" / "clickhouse").is_dir()  # AGENTWATCH_DATA_DIR honoured
    finally:
        p.terminate()
        out = p.communicate(timeout=30)[0]
    assert "TLS" in out  # bound beyond loopback: the warning says so
