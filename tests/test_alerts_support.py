"""Helpers for the alert tests: local HTTP receivers standing in for Slack, PagerDuty and webhooks, and an
in-process collector (real chDB store, real OTLP ingest over HTTP) with the alert engine attached."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from harness import KEYS, free_port
from otlp_payloads import Recorder, agent_run

from agentwatch.alerts import AlertService, load
from agentwatch.alerts.api import router as alerts_router
from agentwatch.alerts.channels import Backoff
from agentwatch.collector.app import build, create_app
from agentwatch.collector.auth import parse_bootstrap
from agentwatch.collector.migrations import migrate
from agentwatch.collector.pricing import Pricer
from agentwatch.collector.settings import CollectorSettings
from agentwatch.collector.store import ChdbStore


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers from a script, then a default.
    ``gate``: when set to an Event, each request waits for it (a channel that hangs)."""

    def __init__(self, default: tuple[int, str, dict[str, str]] = (200, "ok", {})) -> None:
        self.default = default
        self.script: list[tuple[int, str, dict[str, str]] | float] = []
        self.requests: list[dict[str, Any]] = []
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    try:
                        parsed = json.loads(body)
                    except ValueError:
                        parsed = None
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                           "json": parsed, "time": time.monotonic()})  # fmt: skip
                    step = outer.script.pop(0) if outer.script else outer.default
                if outer.gate is not None:
                    outer.gate.wait(30)
                if isinstance(step, float | int):  # a slow answer (the client times out)
                    time.sleep(step)
                    step = outer.default
                status, text, headers = step
                data = text.encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r["json"] for r in self.requests]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


PD_OK = (202, json.dumps({"status": "success", "message": "Event processed", "dedup_key": "x"}),
         {"Content-Type": "application/json"})  # fmt: skip


def wait(pred, timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    """An in-process collector on the real chDB store, with the alert engine attached (as app.py will)."""

    def __init__(self, tmp: Path, rules_yaml: str, env: dict[str, str], *, holdoff: float = 300.0) -> None:
        self.tmp = tmp
        self.settings = CollectorSettings(data_dir=tmp, flush_interval=0.05)
        self.store = ChdbStore(tmp)
        migrate(self.store)
        self.c = build(self.settings, self.store, pricer=Pricer())
        self.c.keys.load()
        for key, project, role in parse_bootstrap(
            f"{KEYS['ingest']}:proj-a:ingest,{KEYS['read']}:proj-a:read,{KEYS['admin']}:proj-a:admin"
        ):
            self.c.keys.add(key, project, role)
        rules = tmp / "rules.yaml"
        rules.write_text(rules_yaml)
        self.config = load(rules, env=env)
        self.alerts = AlertService(self.config, store=self.store, backoff=Backoff(base=0.05, cap=0.2),
                                   failure_holdoff=holdoff)  # fmt: skip
        app = create_app(self.c)
        app.state.alerts = self.alerts
        if not any(getattr(r, "path", "") == "/api/v1/alerts" for r in app.routes):
            app.include_router(alerts_router)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait(lambda: self.server.started, what="collector start")
        self.alerts.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.alerts.stop()
        self.server.should_exit = True
        self.thread.join(20)
        self.store.close()

    def post(self, body: bytes) -> None:
        r = httpx.post(f"http://127.0.0.1:{self.port}/v1/traces", content=body, timeout=10,
                       headers={"Authorization": f"Bearer {KEYS['ingest']}",
                                "Content-Type": "application/x-protobuf"})  # fmt: skip
        assert r.status_code == 200, r.text

    def get(self, path: str, key: str = KEYS["read"], **params: Any) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=10,
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip

    def tasks(self, service: str) -> int:
        return self.get("/api/v1/overview", service=service, **{"from": time.time() - 3600}).json()["tasks"]

    def run_tasks(self, service: str, n: int = 1, *, loop: bool = False, task: str = "support",
                  cost_tokens: int = 1000) -> None:  # fmt: skip
        """``n`` agent runs through OTLP; with ``loop`` each calls the same tool with the same arguments 4 times."""
        before = self.tasks(service)
        rec = Recorder(service)
        tools = [("search", '{"q": "same"}')] * 4 if loop else [("search", '{"q": "a"}'), ("fetch", '{"u": 1}')]
        for _ in range(n):
            agent_run(rec, task=task, tools=tools,
                      usage={"gen_ai.usage.input_tokens": cost_tokens, "gen_ai.usage.output_tokens": 100})  # fmt: skip
        self.post(rec.body())
        wait(lambda: self.tasks(service) >= before + n, what=f"{n} tasks stored")
