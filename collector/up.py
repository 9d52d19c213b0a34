"""``agentwatch up``: the collector (with alert evaluation), the dashboard and, with ``--demo``, the demo
fleet, as supervised child processes on the embedded store. A child that dies is restarted (and said
so); Ctrl-C stops everything cleanly; data stays in the data directory across restarts."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("agentwatch.up")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = 1.0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


DEMO_LINE = "  demo fleet  running: agents with the real openai and anthropic clients on a built-in fake LLM\n"


class UpError(RuntimeError):
    pass


def _wait_healthy(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            code = child.proc.returncode if child.proc else "?"
            raise UpError(f"the {child.name} exited during start (code {code}); its error is above")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise UpError(f"the {child.name} did not answer {url} within {timeout:.0f}s")


def _keys(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """The keys the dashboard and the demo use: the first-start file, else the bootstrap variable."""
    path = data_dir / "keys.json"
    if path.exists():
        return json.loads(path.read_text())
    found: dict[str, str] = {}
    for item in (env.get("AGENTWATCH_API_KEYS") or "").split(","):
        parts = item.strip().rsplit(":", 2)
        if len(parts) == 3:
            found.setdefault(parts[2], parts[0])
            if parts[2] == "admin":
                found.setdefault("read", parts[0])
                found.setdefault("ingest", parts[0])
    return found


def run_up(
    *,
    data_dir: Path,
    host: str,
    port: int,
    dashboard_port: int,
    rules: Path | None,
    demo: bool,
    demo_rate: float | None = None,
    start_timeout: float = 90,
) -> int:
    py = sys.executable
    env = dict(os.environ)
    # alerts show up in the collector's log even with no Slack or PagerDuty; a demo wants them quickly
    env.setdefault("AGENTWATCH_ALERT_LOG", "true")
    env.setdefault("AGENTWATCH_DASHBOARD_URL", f"http://127.0.0.1:{dashboard_port}")
    if demo:
        env.setdefault("AGENTWATCH_ALERT_INTERVAL", "10")
    data_dir = data_dir.resolve()
    api = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    col_argv = [py, "-m", "agentwatch.collector.cli", "collector", "--data-dir", str(data_dir), "--host", host,
                "--port", str(port)]  # fmt: skip
    if rules:
        col_argv += ["--rules", str(rules)]
    collector = Child("collector", col_argv, env)
    children = [collector]
    stopping = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        collector.start()
        _wait_healthy(api + "/healthz", collector, start_timeout)
        keys = _keys(data_dir, env)
        if "read" not in keys:
            raise UpError(
                f"no read key: {data_dir / 'keys.json'} is missing and AGENTWATCH_API_KEYS has no read or admin key"
            )
        child_env = {**env, "AGENTWATCH_ENDPOINT": api}
        dash = Child(
            "dashboard",
            [py, "-m", "agentwatch.dashboard", "--api", api, "--port", str(dashboard_port)],
            {**child_env, "AGENTWATCH_API_KEY": keys["read"]},
        )
        dash.start()
        children.append(dash)
        if demo:
            demo_argv = [py, "-m", "agentwatch.collector.demo", "--endpoint", api]
            if demo_rate:
                demo_argv += ["--rate", str(demo_rate)]
            fleet = Child("demo fleet", demo_argv, {**child_env, "AGENTWATCH_API_KEY": keys.get("ingest", "")})
            fleet.start()
            children.append(fleet)
        keys_where = data_dir / "keys.json" if (data_dir / "keys.json").exists() else "AGENTWATCH_API_KEYS"
        print(
            f"\nagentwatch is up\n"
            f"  dashboard   http://127.0.0.1:{dashboard_port}\n"
            f"  collector   {api}  (OTLP/HTTP: {api}/v1/traces, API: {api}/docs)\n"
            f"  keys        {keys_where}\n"
            f"  data        {data_dir}\n"
            f"{DEMO_LINE if demo else ''}"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            time.sleep(0.5)
            for ch in children:
                if stopping or ch.alive():
                    continue
                now = time.monotonic()
                if ch.next_start == 0.0:
                    code = ch.proc.returncode if ch.proc else "?"
                    ch.backoff = 1.0 if now - ch.started_at > 60 else min(ch.backoff * 2, 30.0)
                    ch.next_start = now + ch.backoff
                    log.warning("%s exited (code %s); restarting in %.0fs", ch.name, code, ch.backoff)
                    print(f"agentwatch: {ch.name} exited (code {code}); restarting in {ch.backoff:.0f}s", flush=True)
                elif now >= ch.next_start:
                    ch.next_start = 0.0
                    ch.restarts += 1
                    ch.start()
                    print(f"agentwatch: {ch.name} restarted", flush=True)
        return 0
    except UpError as e:
        print(f"agentwatch: {e}", file=sys.stderr)
        return 2
    finally:
        print("agentwatch: stopping…", flush=True)
        for ch in reversed(children):
            ch.stop()
