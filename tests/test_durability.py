"""What a 2xx promises: spans survive kill -9 of the collector and an outage of the store; a full
spool answers 503 + Retry-After; limits hold against bombs."""

from __future__ import annotations

import gzip
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from harness import KEYS, free_port
from otlp_payloads import Recorder, agent_run, raw_request, raw_span, unique

from agentwatch.collector.app import build, create_app
from agentwatch.collector.auth import parse_bootstrap
from agentwatch.collector.migrations import migrate
from agentwatch.collector.pricing import Pricer
from agentwatch.collector.settings import CollectorSettings
from agentwatch.collector.store import ChdbStore, StoreError


def _runs(n: int, service: str) -> tuple[list[bytes], list[str]]:
    bodies, tids = [], []
    for _ in range(n):
        rec = Recorder(service)
        tids.append(agent_run(rec, tools=[("t", "{}")]))
        bodies.append(rec.body())
    return bodies, tids


def test_kill9_mid_stream_loses_no_acknowledged_span_and_duplicates_none(make_collector):
    c = make_collector()
    service = unique("svc-kill")
    bodies, tids = _runs(150, service)
    acked: list[str] = []
    sender_done = threading.Event()

    def send():
        for body, tid in zip(bodies, tids, strict=True):
            try:
                r = httpx.post(c.url + "/v1/traces", content=body, timeout=5,
                               headers={"Authorization": f"Bearer {KEYS['ingest']}",
                                        "Content-Type": "application/x-protobuf"})  # fmt: skip
            except httpx.HTTPError:
                break
            if r.status_code == 200:
                acked.append(tid)
        sender_done.set()

    th = threading.Thread(target=send)
    th.start()
    c.wait_for(lambda: len(acked) >= 40, what="40 acknowledged requests")
    c.kill9()
    th.join(30)
    assert sender_done.is_set()
    assert 40 <= len(acked) < len(bodies), "the kill must land mid-stream"

    c.start()  # same data dir: replays the spool
    def stored():
        ov = c.api("/api/v1/overview", service=service, **{"from": time.time() - 3600})
        return ov if ov["tasks"] >= len(acked) else None

    ov = c.wait_for(stored, timeout=60, what="acknowledged tasks after restart")
    # every acknowledged trace is whole; nothing is counted twice
    assert ov["spans"] == 3 * ov["tasks"] and ov["llm_calls"] == ov["tasks"]
    tasks = c.api("/api/v1/tasks", service=service, limit=1000)["items"]
    assert set(acked) <= {t["trace_id"] for t in tasks}
    assert len(tasks) == len({t["trace_id"] for t in tasks}) == ov["tasks"]
    for tid in acked[-3:]:
        spans = c.api(f"/api/v1/traces/{tid}")["spans"]
        assert len(spans) == 3 == len({s["span_id"] for s in spans})


class FlakyStore(ChdbStore):
    """The real chDB store, with an outage switch (the embedded store cannot be stopped separately)."""

    down = False

    def insert_arrow(self, *a, **kw):
        if self.down:
            raise StoreError("connection refused (simulated outage)")
        return super().insert_arrow(*a, **kw)

    def query_arrow(self, *a, **kw):
        if self.down:
            raise StoreError("connection refused (simulated outage)")
        return super().query_arrow(*a, **kw)


class Server:
    def __init__(self, tmp: Path, **settings) -> None:
        self.settings = CollectorSettings(data_dir=tmp, flush_interval=0.1, **settings)
        self.store = FlakyStore(tmp)
        migrate(self.store)
        self.c = build(self.settings, self.store, pricer=Pricer())
        self.c.keys.load()
        for key, project, role in parse_bootstrap(f"{KEYS['ingest']}:proj-a:ingest,{KEYS['read']}:proj-a:read"):
            self.c.keys.add(key, project, role)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.c), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)
        self.store.close()

    def post(self, body: bytes) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}/v1/traces", content=body, timeout=10,
                          headers={"Authorization": f"Bearer {KEYS['ingest']}",
                                   "Content-Type": "application/x-protobuf"})  # fmt: skip

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=10,
                         headers={"Authorization": f"Bearer {KEYS['read']}"})  # fmt: skip


def _wait(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_store_outage_spools_then_drains(tmp_path):
    service = unique("svc-outage")
    bodies, tids = _runs(20, service)
    with Server(tmp_path, summary_interval=0.2) as s:
        s.store.down = True
        for b in bodies:
            assert s.post(b).status_code == 200  # accepted into the spool while the store is down
        assert _wait(lambda: s.get("/readyz").status_code == 503)
        ready = s.get("/readyz").json()
        assert ready["store"] == "down" and ready["queue_depth"] == 60 and ready["spool_bytes"] > 0
        assert s.get("/api/v1/overview").status_code == 503  # a clear "unavailable", not a 500
        assert "agentwatch_writer_errors_total" in s.get("/metrics").text
        assert _wait(lambda: s.get("/readyz").json()["summarizer_error"])  # its passes fail too, and say so
        s.store.down = False
        assert _wait(lambda: s.get("/readyz").status_code == 200 and s.c.spool.pending_rows == 0)
        ov = s.get("/api/v1/overview", service=service).json()
        assert (ov["tasks"], ov["spans"]) == (20, 60)
        assert not list((tmp_path / "spool").glob("*.seg"))
        # the summarizer resumes: the tasks get their summary rows, and its error clears
        assert _wait(lambda: s.c.summarizer.rows_written >= 20 and s.get("/readyz").json()["summarizer_error"] is None)
        assert s.get("/api/v1/tasks", service=service).json()["total"] == 20


def test_full_spool_answers_503_with_retry_after_and_loses_nothing(tmp_path):
    service = unique("svc-full")
    now = time.time_ns()
    bodies = [  # one task of ~100 KB each: the 1 MiB spool fills after about ten
        raw_request(service, [raw_span(os.urandom(16), os.urandom(8), "invoke_agent big",
                                       {"gen_ai.operation.name": "invoke_agent", "blob": os.urandom(50_000).hex()},
                                       start_ns=now)]).SerializeToString()
        for _ in range(30)
    ]  # fmt: skip
    with Server(tmp_path, spool_max_bytes=1 << 20) as s:
        s.store.down = True
        statuses = [s.post(b) for b in bodies]
        codes = [r.status_code for r in statuses]
        assert 200 in codes and 503 in codes
        assert codes.index(503) > 0 and all(c == 503 for c in codes[codes.index(503):])
        assert statuses[-1].headers["Retry-After"] == "5"
        accepted = codes.count(200)
        s.store.down = False
        assert _wait(lambda: s.c.spool.pending_rows == 0)
        assert s.get("/api/v1/overview", service=service).json()["tasks"] == accepted
        assert s.post(bodies[-1]).status_code == 200  # room again


def test_store_refusing_a_segment_quarantines_it_and_counts_the_drop(tmp_path):
    service = unique("svc-refused")
    bodies, _ = _runs(2, service)

    class Refusing(FlakyStore):
        def insert_arrow(self, table, *a, **kw):
            if table == "otel_traces":
                raise StoreError("Code: 53. Type mismatch (simulated)")
            return super().insert_arrow(table, *a, **kw)

    with Server(tmp_path) as s:
        s.store.__class__ = Refusing
        s.c.writer.max_attempts = 2
        s.c.writer._backoff = 0
        assert s.post(bodies[0]).status_code == 200
        assert _wait(lambda: list((tmp_path / "spool" / "failed").glob("*.seg")), timeout=30)
        assert 'agentwatch_spans_dropped_total{reason="store_refused"} 3.0' in s.get("/metrics").text


def test_body_limit_and_gzip_bomb_get_413(make_collector):
    c = make_collector(AGENTWATCH_MAX_BODY_BYTES="200000")
    assert c.post_traces(b"\0" * 300_000).status_code == 413
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MiB of zeros in ~50 KB
    assert len(bomb) < 200_000
    r = c.post_traces(bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    t, sid = b"\x11" * 16, b"\x22" * 8
    ok = raw_request("svc", [raw_span(t, sid, "fine", {}, start_ns=time.time_ns())])
    assert c.post_traces(gzip.compress(ok.SerializeToString()), headers={"Content-Encoding": "gzip"}).status_code == 200
    assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize("bad", ["key-without-parts", "k3y-long-enough:proj:superuser", "k:proj:read"])
def test_bad_bootstrap_keys_fail_fast_with_a_clear_error(tmp_path, bad):
    import subprocess
    import sys

    from harness import collector_env

    env = collector_env(AGENTWATCH_API_KEYS=bad)
    p = subprocess.run([sys.executable, "-m", "agentwatch.collector.cli", "collector", "--data-dir",
                        str(tmp_path / "d"), "--port", str(free_port())],
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 2
    assert "AGENTWATCH_API_KEYS entry 1" in p.stderr
