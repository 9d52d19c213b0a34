"""Faults not covered elsewhere (test_durability.py: kill -9 mid-stream, store outage, tiny spool limit, quarantine;
test_alerts.py: Slack 429, PagerDuty 500/400/timeout, hanging channel, in-process restart; tests/sdk: collector
down/hanging for 3000 spans):

- a real ENOSPC on the spool (a 2 MiB tmpfs): 503 + Retry-After, no torn record, nothing earlier lost, resumes;
- the SDK in a separate agent process with the collector down for 50k spans: bounded RSS, drops counted and
  reported once, the agent's loop time against the same loop with the SDK disabled (printed, not asserted);
- kill -9 of a real collector process while its alert engine has a firing alert: no second page after restart;
- Slack slow (longer than the channel timeout) and Slack down (connection refused, then back): delivered later, once.

No timing asserts: every wait is bounded, every figure that depends on the machine is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import test_alerts_support
from harness import KEYS, free_port
from otlp_payloads import Recorder, agent_run, raw_request, raw_span, unique
from test_alerts_support import PD_OK, Receiver, Server, wait

from agentwatch.collector.spool import SUFFIX, read_records


# --- (a) disk full under the spool ------------------------------------------------------------------------
@pytest.fixture
def tmpfs_spool(tmp_path: Path):
    """data/spool on a 2 MiB tmpfs (root only); unmounted after the collector using it has stopped."""
    data = tmp_path / "data"
    spool = data / "spool"
    spool.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(spool)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    yield data
    subprocess.run(["umount", "-l", str(spool)], capture_output=True)


def _big_body(service: str, kib: int) -> bytes:
    blob = os.urandom(kib * 1024 // 2).hex()  # incompressible enough: the spool's IPC record stays ~kib KiB
    span = raw_span(os.urandom(16), os.urandom(8), "invoke_agent big",
                    {"gen_ai.operation.name": "invoke_agent", "blob": blob}, start_ns=time.time_ns())  # fmt: skip
    return raw_request(service, [span]).SerializeToString()


def _small_runs(service: str, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        rec = Recorder(service)
        agent_run(rec, tools=[("t", "{}")])
        out.append(rec.body())
    return out


def _torn_bytes(spool: Path) -> int:
    torn = 0
    for seg in spool.glob(f"*{SUFFIX}"):
        try:
            torn += read_records(seg)[1]
        except FileNotFoundError:  # the writer stored and removed it meanwhile
            pass
    return torn


def test_disk_full_spool_answers_503_leaves_no_torn_record_and_resumes(tmpfs_spool, make_collector):
    data = tmpfs_spool
    spool = data / "spool"
    c = make_collector(data_dir=data)
    service = unique("svc-enospc")
    small = _small_runs(service, 6)
    for b in small[:3]:
        assert c.post_traces(b).status_code == 200
    c.wait_for(lambda: c.api("/api/v1/overview", service=service)["tasks"] == 3, what="3 tasks stored")

    # fill the filesystem, leaving ~48 KiB: a 600 KiB request cannot be written, a 3-span run can
    st = os.statvfs(spool)
    filler = spool / "filler.bin"  # not a segment: the spool ignores it
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 48 * 1024))
    big = _big_body(service, 600)
    r = c.post_traces(big)
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert _torn_bytes(spool) == 0, "a failed write must be cut back, not left half-written"
    # a record appended right after the failed one is readable (a torn record would hide everything after it)
    for b in small[3:5]:
        assert c.post_traces(b).status_code == 200
    assert _torn_bytes(spool) == 0
    c.wait_for(lambda: c.api("/api/v1/overview", service=service)["tasks"] == 5, what="5 tasks stored")
    assert c.get("/healthz").status_code == 200

    filler.unlink()  # space is back: ingest resumes
    r = c.wait_for(lambda: (x := c.post_traces(big)).status_code == 200 and x, what="200 once space is back")
    assert c.post_traces(small[5]).status_code == 200
    ov = c.wait_for(lambda: (o := c.api("/api/v1/overview", service=service))["tasks"] == 7 and o, what="7 tasks")
    assert ov["spans"] == 6 * 3 + 1  # every acknowledged span, once; the refused request stored nothing
    assert not list((spool / "failed").glob("*")), "nothing quarantined"
    dropped = [ln for ln in c.get("/metrics").text.splitlines() if ln.startswith("agentwatch_spans_dropped_total")]
    assert all(float(ln.rsplit(" ", 1)[1]) == 0 for ln in dropped), dropped


# --- (b) the SDK with the collector down for a long stretch -----------------------------------------------
AGENT = textwrap.dedent(
    """
    import hashlib, json, os, sys, threading, time
    import psutil
    import agentwatch
    from agentwatch import AdvancedOptions

    n = int(sys.argv[1])
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.05)

    threading.Thread(target=sample, daemon=True).start()
    agentwatch.init(service_name="agent-down", instrument=False)
    rss_after_init = proc.memory_info().rss
    t0 = time.perf_counter()
    digest = b""
    with agentwatch.task("long-run", loop=False):
        for i in range(n):
            with agentwatch.tool("step", arguments={"i": i, "q": "x" * 200}):
                digest = hashlib.sha256(digest + i.to_bytes(8, "little")).digest()  # the agent's own work
                for _ in range(20):
                    digest = hashlib.sha256(digest).digest()
    loop_s = time.perf_counter() - t0
    rss_end_loop = proc.memory_info().rss
    t1 = time.perf_counter()
    agentwatch.shutdown(timeout_s=2)
    shutdown_s = time.perf_counter() - t1
    stop.set()
    s = agentwatch.delivery_stats()
    print(json.dumps({"loop_s": loop_s, "shutdown_s": shutdown_s, "peak_rss": peak[0], "rss_after_init": rss_after_init,
                      "rss_end_loop": rss_end_loop, "exported": s.exported, "failed": s.failed, "dropped": s.dropped,
                      "digest": digest.hex()}))
    """
)


def _run_agent(tmp_path: Path, n: int, **env: str) -> tuple[dict, str]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
    e.update(env)
    p = subprocess.run([sys.executable, str(script), str(n)], env=e, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def test_sdk_with_the_collector_down_for_50k_spans_keeps_memory_bounded_and_counts_drops(tmp_path):
    n = 50_000
    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    off, _ = _run_agent(tmp_path, n, AGENTWATCH_ENABLED="false")
    down, err = _run_agent(tmp_path, n, AGENTWATCH_ENDPOINT=dead, AGENTWATCH_API_KEY=KEYS["ingest"])
    assert down["digest"] == off["digest"]  # the agent's work is the same work
    mib = 2**20
    print(f"\nSDK, collector down, {n:,} spans: loop {down['loop_s']:.2f} s vs {off['loop_s']:.2f} s with the SDK "
          f"disabled (ratio {down['loop_s'] / off['loop_s']:.2f}x, {(down['loop_s'] - off['loop_s']) / n * 1e6:.1f} "
          f"us a span); peak RSS {down['peak_rss'] / mib:.0f} MiB (after init {down['rss_after_init'] / mib:.0f}, "
          f"SDK disabled peak {off['peak_rss'] / mib:.0f}); shutdown {down['shutdown_s']:.2f} s; "
          f"exported {down['exported']}, failed {down['failed']:,}, dropped {down['dropped']:,}")  # fmt: skip
    # bounded memory: the default queue (16384 spans) caps what is held (~+60 MiB here); the 50k spans held would be
    # ~3x that. The bound is generous, not a benchmark.
    assert down["peak_rss"] - down["rss_after_init"] < 150 * mib
    assert down["exported"] == 0
    assert down["dropped"] > 0  # the bounded queue filled: counted
    assert n + 1 - 16384 - 4 * 512 <= down["dropped"] + down["failed"] <= n + 1
    reports = [line for line in err.splitlines() if "spans not delivered" in line]
    assert 1 <= len(reports) <= 2 + int(down["loop_s"] // 60), err[-2000:]  # once a minute + at shutdown
    assert "Traceback" not in err


def test_sdk_shutdown_with_the_collector_down_accounts_for_every_span(tmp_path):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    n = 5000  # fewer than the queue holds: nothing is dropped on the way in; most are still queued at shutdown
    down, _ = _run_agent(tmp_path, n, AGENTWATCH_ENDPOINT=dead, AGENTWATCH_API_KEY=KEYS["ingest"])
    assert down["exported"] + down["failed"] + down["dropped"] == n + 1, down


# --- (c) kill -9 of the collector with a firing alert ------------------------------------------------------
SLACK_TOKEN = "T0FAKE/B0FAKE/faultsfakeslacksecret"
PD_KEY = "faultsfakeroutingkey0123456789ab"


def test_kill9_of_the_collector_while_an_alert_fires_pages_once(tmp_path, make_collector):
    slack, pd = Receiver((200, "ok", {})), Receiver(PD_OK)
    try:
        rules = tmp_path / "rules.yaml"
        rules.write_text("interval: 0.25s\nrules:\n  - {name: busy, metric: tasks, threshold: 0, window: 10m, "
                         "severity: critical, channels: [slack, pagerduty]}\n")  # fmt: skip
        env = {"AGENTWATCH_SLACK_WEBHOOK_URL": f"{slack.url}/services/{SLACK_TOKEN}",
               "AGENTWATCH_PAGERDUTY_ROUTING_KEY": PD_KEY, "AGENTWATCH_PAGERDUTY_EVENTS_URL": f"{pd.url}/v2/enqueue"}
        data = tmp_path / "data"
        c = make_collector(data_dir=data, args=["--rules", str(rules)], **env)
        service = unique("svc-page")
        rec = Recorder(service)
        agent_run(rec, tools=[("t", "{}")])
        assert c.post_traces(rec.body()).status_code == 200
        wait(lambda: slack.requests and pd.requests, timeout=30, what="the first pages")

        def delivered(view: dict) -> bool:
            ok = {d["channel"] for d in view["deliveries"] if d["outcome"] == "ok"}
            return ok >= {"slack", "pagerduty"} and bool(view["firing"])

        c.wait_for(lambda: delivered(c.api("/api/v1/alerts")), what="deliveries recorded")
        c.kill9()
        c.start()
        n0 = c.api("/api/v1/alerts")["evaluations"]
        rec2 = Recorder(service)
        agent_run(rec2, tools=[("t", "{}")])
        assert c.post_traces(rec2.body()).status_code == 200  # the incident goes on
        c.wait_for(lambda: c.api("/api/v1/alerts")["evaluations"] >= n0 + 8, what="8 evaluations after restart")
        view = c.api("/api/v1/alerts")
        assert view["firing"], "the alert is still firing after the restart"
        assert len(slack.requests) == 1 and len(pd.requests) == 1, "kill -9 and restart must not page again"
        assert [h["event"] for h in view["history"]].count("firing") == 1
        log = c.log()
        assert "faultsfakeslacksecret" not in log and PD_KEY not in log
    finally:
        slack.close()
        pd.close()


# --- (d) Slack slow, Slack down ----------------------------------------------------------------------------
BUSY = "interval: 1h\nchannels:\n  slack: {{type: slack, url_env: AGENTWATCH_SLACK_WEBHOOK_URL, timeout: {t}, " \
       "max_attempts: {a}}}\nrules:\n  - {{name: busy, metric: tasks, threshold: 0, channels: [slack]}}\n"  # fmt: skip


def test_slack_slower_than_its_timeout_is_delivered_later_once(tmp_path):
    slack = Receiver((200, "ok", {}))
    slack.script = [2.5]  # the first answer takes longer than the 0.5 s channel timeout
    env = {"AGENTWATCH_SLACK_WEBHOOK_URL": f"{slack.url}/services/{SLACK_TOKEN}"}
    try:
        with Server(tmp_path, BUSY.format(t=0.5, a=6), env) as s:
            s.run_tasks(unique("svc-slow"), 1)
            s.alerts.engine.evaluate()
            wait(lambda: len(slack.requests) == 2, what="a retry after the timeout")
            before = s.alerts.engine.evaluations
            for _ in range(3):
                s.alerts.engine.evaluate()  # none of these waits for Slack, none sends again
            assert s.alerts.engine.evaluations == before + 3
            wait(lambda: not s.alerts.dispatcher.busy(("proj-a", "slack", "busy")))
            time.sleep(0.5)
            assert len(slack.requests) == 2
            assert slack.requests[0]["body"] == slack.requests[1]["body"]  # the same message, not a new one
            d = [(x["attempt"], x["outcome"]) for x in reversed(s.get("/api/v1/alerts").json()["deliveries"])]
            assert d == [(1, "retry"), (2, "ok")]
    finally:
        slack.close()


def _receiver_on(port: int, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    monkeypatch.setattr(test_alerts_support, "ThreadingHTTPServer",
                        lambda _addr, handler: ThreadingHTTPServer(("127.0.0.1", port), handler))  # fmt: skip
    try:
        return Receiver((200, "ok", {}))
    finally:
        monkeypatch.undo()


def test_slack_down_then_back_is_delivered_once_after_the_holdoff(tmp_path, monkeypatch):
    port = free_port()  # nobody listens: connection refused
    env = {"AGENTWATCH_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{port}/services/{SLACK_TOKEN}"}
    slack = None
    try:
        with Server(tmp_path, BUSY.format(t=1, a=3), env, holdoff=1.0) as s:
            s.run_tasks(unique("svc-down"), 1)
            s.alerts.engine.evaluate()
            view = lambda: s.get("/api/v1/alerts").json()  # noqa: E731
            wait(lambda: any(d["outcome"] == "gave_up" for d in view()["deliveries"]), what="gave up while down")
            assert view()["firing"], "still firing: the page is owed"
            slack = _receiver_on(port, monkeypatch)  # Slack is back
            deadline = time.monotonic() + 20
            while not slack.requests and time.monotonic() < deadline:
                s.alerts.engine.evaluate()  # the engine retries the owed page after the holdoff
                time.sleep(0.2)
            wait(lambda: slack.requests and not s.alerts.dispatcher.busy(("proj-a", "slack", "busy")),
                 what="delivered after the outage")  # fmt: skip
            for _ in range(5):
                s.alerts.engine.evaluate()
                time.sleep(0.1)
            wait(lambda: not s.alerts.dispatcher.busy(("proj-a", "slack", "busy")))
            assert len(slack.requests) == 1, "delivered once when Slack came back"
            assert slack.requests[0]["json"]["text"].startswith("[FIRING (1)] busy")
            outcomes = [d["outcome"] for d in reversed(view()["deliveries"])]
            assert outcomes == ["retry", "retry", "gave_up", "ok"], outcomes
    finally:
        if slack is not None:
            slack.close()


def test_pagerduty_down_then_back_is_delivered_once_after_the_holdoff(tmp_path, monkeypatch):
    port = free_port()
    env = {"AGENTWATCH_PAGERDUTY_ROUTING_KEY": PD_KEY, "AGENTWATCH_PAGERDUTY_EVENTS_URL": f"http://127.0.0.1:{port}/e"}
    rules = ("interval: 1h\nchannels:\n  pagerduty: {type: pagerduty, "
             "routing_key_env: AGENTWATCH_PAGERDUTY_ROUTING_KEY, url_env: AGENTWATCH_PAGERDUTY_EVENTS_URL, "
             "timeout: 1, max_attempts: 2}\n"
             "rules:\n  - {name: busy, metric: tasks, threshold: 0, channels: [pagerduty]}\n")  # fmt: skip
    pd = None
    try:
        with Server(tmp_path, rules, env, holdoff=1.0) as s:
            s.run_tasks(unique("svc-pd-down"), 1)
            s.alerts.engine.evaluate()
            view = lambda: s.get("/api/v1/alerts").json()  # noqa: E731
            wait(lambda: any(d["outcome"] == "gave_up" for d in view()["deliveries"]), what="gave up while down")
            monkeypatch.setattr(test_alerts_support, "ThreadingHTTPServer",
                                lambda _a, h: ThreadingHTTPServer(("127.0.0.1", port), h))  # fmt: skip
            pd = Receiver(PD_OK)
            monkeypatch.undo()
            deadline = time.monotonic() + 20
            while not pd.requests and time.monotonic() < deadline:
                s.alerts.engine.evaluate()
                time.sleep(0.2)
            wait(lambda: pd.requests and not s.alerts.dispatcher.busy(("proj-a", "pagerduty", "busy")))
            for _ in range(5):
                s.alerts.engine.evaluate()
                time.sleep(0.1)
            assert len(pd.requests) == 1
            assert pd.requests[0]["json"]["event_action"] == "trigger"
    finally:
        if pd is not None:
            pd.close()

