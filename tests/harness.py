"""The test harness: a real collector process on 127.0.0.1 with the embedded chDB store, and its keys.

Keys are fixed fake values (never real ones): project ``proj-a`` has ingest/read/admin keys, project
``proj-b`` an ingest and a read key, so isolation can be tested.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

KEYS = {
    "ingest": "test-ingest-key-a",
    "read": "test-read-key-a",
    "admin": "test-admin-key-a",
    "ingest_b": "test-ingest-key-b",
    "read_b": "test-read-key-b",
}
API_KEYS_ENV = ",".join(
    [
        f"{KEYS['ingest']}:proj-a:ingest",
        f"{KEYS['read']}:proj-a:read",
        f"{KEYS['admin']}:proj-a:admin",
        f"{KEYS['ingest_b']}:proj-b:ingest",
        f"{KEYS['read_b']}:proj-b:read",
    ]
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CollectorProc:
    data_dir: Path
    port: int
    env: dict[str, str]
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60) -> CollectorProc:
        self.log_path = self.data_dir.parent / f"collector-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentwatch.collector.cli", "collector", "--data-dir", str(self.data_dir),
             "--port", str(self.port), *self.extra_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"collector did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    # --- HTTP helpers ---
    def post_traces(
        self, body: bytes, *, key: str | None = KEYS["ingest"], content_type: str = "application/x-protobuf",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        h = {"Content-Type": content_type, **(headers or {})}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return httpx.post(self.url + "/v1/traces", content=body, headers=h, timeout=30)

    def get(self, path: str, *, key: str | None = KEYS["read"], **params: Any) -> httpx.Response:
        h = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + path, params=params, headers=h, timeout=30)

    def api(self, path: str, *, key: str = KEYS["read"], **params: Any) -> Any:
        r = self.get(path, key=key, **params)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 20, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last value {last!r}\n{self.log()}")

    def trace(self, trace_id: str, *, spans: int, key: str = KEYS["read"]) -> dict:
        """The trace once it has (at least) ``spans`` spans stored."""

        def ready():
            r = self.get(f"/api/v1/traces/{trace_id}", key=key)
            return r.json() if r.status_code == 200 and len(r.json()["spans"]) >= spans else None

        return self.wait_for(ready, what=f"trace {trace_id} with {spans} spans")


def collector_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
    env.update({"AGENTWATCH_API_KEYS": API_KEYS_ENV, "AGENTWATCH_FLUSH_INTERVAL": "0.1", **extra})
    return env
