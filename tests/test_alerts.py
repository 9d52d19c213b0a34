"""The alert engine end to end: spans in through OTLP, the real chDB store, local HTTP receivers standing in
for Slack, PagerDuty and a webhook. One page per incident, a resolve when it clears, nothing twice across a
restart, retries per channel, silences, inhibition, secrets kept."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time

import pytest
from harness import KEYS
from otlp_payloads import unique
from test_alerts_support import PD_OK, Receiver, Server, wait

SLACK_TOKEN = "T0FAKE/B0FAKE/notarealslacksecret123"
PD_KEY = "fakeroutingkey0123456789abcdef01"
HOOK_SECRET = "fake-hmac-secret-for-tests"


@pytest.fixture
def slack():
    r = Receiver((200, "ok", {}))
    yield r
    r.close()


@pytest.fixture
def pd():
    r = Receiver(PD_OK)
    yield r
    r.close()


def env_for(slack: Receiver | None = None, pd: Receiver | None = None, **extra: str) -> dict[str, str]:
    env = dict(extra)
    if slack:
        env["AGENTWATCH_SLACK_WEBHOOK_URL"] = f"{slack.url}/services/{SLACK_TOKEN}"
    if pd:
        env["AGENTWATCH_PAGERDUTY_ROUTING_KEY"] = PD_KEY
        env["AGENTWATCH_PAGERDUTY_EVENTS_URL"] = f"{pd.url}/v2/enqueue"
    return env


LOOP_RULES = """
interval: {interval}
rules:
  - name: agent-loop
    detector: loop
    window: {window}
    severity: critical
    labels: {{category: loop}}
    channels: [slack, pagerduty]
"""


def test_loop_pages_once_resolves_once_and_a_restart_sends_nothing_twice(tmp_path, slack, pd, caplog):
    caplog.set_level(logging.DEBUG)
    service = unique("svc-loop")
    env = env_for(slack, pd)
    rules = LOOP_RULES.format(interval="0.25s", window="4s")
    with Server(tmp_path, rules, env) as s:
        t0 = time.monotonic()
        s.run_tasks(service, 2, loop=True)
        wait(lambda: slack.requests and pd.requests, what="the first pages")
        latency = min(slack.requests[0]["time"], pd.requests[0]["time"]) - t0
        print(f"\ndetection latency (loop spans sent -> first receiver request): {latency:.2f}s "
              f"(interval {s.config.interval}s)")  # fmt: skip
        s.run_tasks(service, 1, loop=True)  # the loop goes on: still one incident
        wait(lambda: s.alerts.engine.evaluations >= 6)
        assert len(slack.requests) == 1 and len(pd.requests) == 1

        # Slack: Block Kit, says what, where, since when, the figure, with links
        msg = slack.requests[0]["json"]
        assert slack.requests[0]["path"] == f"/services/{SLACK_TOKEN}"
        assert msg["text"].startswith("[FIRING (1)] agent-loop")
        assert msg["blocks"][0]["type"] == "header" and len(msg["blocks"][0]["text"]["text"]) <= 150
        section = next(b for b in msg["blocks"] if b["type"] == "section")["text"]["text"]
        assert f"service={service}" in section and "task=support" in section and "*Since:*" in section
        buttons = next(b for b in msg["blocks"] if b["type"] == "actions")["elements"]
        assert any("trace_id=" in b["url"] for b in buttons)
        # PagerDuty: Events API v2 trigger
        ev = pd.requests[0]["json"]
        assert pd.requests[0]["path"] == "/v2/enqueue"
        assert ev["routing_key"] == PD_KEY and ev["event_action"] == "trigger"
        dedup = ev["dedup_key"]
        assert 0 < len(dedup) <= 255
        p = ev["payload"]
        assert p["severity"] == "critical" and p["source"] == service and len(p["summary"]) <= 1024
        assert p["custom_details"]["looping_tasks"] >= 2 and p["custom_details"]["trace_ids"]
        assert ev["links"] and ev["client"] == "agentwatch"

    # restart while firing: state and notification log come back from the store
    with Server(tmp_path, rules, env) as s:
        s.run_tasks(service, 1, loop=True)
        wait(lambda: s.alerts.engine.evaluations >= 4)
        assert len(slack.requests) == 1 and len(pd.requests) == 1, "a restart must not page again"
        # the loop stops: once the looping tasks leave the window, one resolve each
        s.run_tasks(service, 2, loop=False)
        wait(lambda: len(slack.requests) == 2 and len(pd.requests) == 2, timeout=30, what="the resolves")
        n = s.alerts.engine.evaluations
        wait(lambda: s.alerts.engine.evaluations >= n + 4)  # a few more evaluations: nothing else may be sent
        assert len(slack.requests) == 2 and len(pd.requests) == 2
        assert slack.requests[1]["json"]["text"].startswith("[RESOLVED (1)] agent-loop")
        assert pd.requests[1]["json"] == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": dedup}

        view = s.get("/api/v1/alerts").json()
        assert view["firing"] == [] and view["rules"][0]["name"] == "agent-loop"
        events = [h["event"] for h in view["history"]]
        assert events.count("firing") == 1 and events.count("resolved") == 1
        assert {d["channel"] for d in view["deliveries"]} == {"slack", "pagerduty"}
        assert all(d["outcome"] == "ok" for d in view["deliveries"])
        # secrets: named, never shown; never logged
        text = s.get("/api/v1/alerts").text
        assert "notarealslacksecret123" not in text and PD_KEY not in text
        assert {"name": "slack", "type": "slack", "url_env": "AGENTWATCH_SLACK_WEBHOOK_URL", "url_set": True} in \
            view["channels"]  # fmt: skip
    logs = caplog.text
    assert "notarealslacksecret123" not in logs and PD_KEY not in logs


def test_two_collectors_on_one_store_page_once_and_the_standby_takes_over(tmp_path, slack, pd):
    from agentwatch.alerts import AlertService
    from agentwatch.alerts.channels import Backoff

    service = unique("svc-pair")
    rules = LOOP_RULES.format(interval="0.25s", window="4s")
    with Server(tmp_path, rules, env_for(slack, pd)) as s:
        wait(lambda: s.alerts.leader == s.alerts.holder, what="the first collector holding the lease")
        other = AlertService(s.config, store=s.store, backoff=Backoff(base=0.05, cap=0.2))  # a second collector
        other.start()
        try:
            s.run_tasks(service, 2, loop=True)
            wait(lambda: slack.requests and pd.requests, what="the first pages")
            wait(lambda: s.alerts.engine.evaluations >= 6)
            assert len(slack.requests) == 1 and len(pd.requests) == 1  # one page, not one per collector
            assert s.alerts.leader == other.leader == s.alerts.holder  # the first to start holds the lease
            assert other.engine.evaluations == 0 and not other.view("proj-a")["evaluator"]["evaluating"]

            s.alerts.stop()  # the evaluating collector goes away; the standby takes over at its next tick
            wait(lambda: other.engine.evaluations >= 4, what="the standby evaluating")
            assert other.leader == other.holder
            s.run_tasks(service, 1, loop=True)  # the incident goes on: the new evaluator knows it was paged
            n = other.engine.evaluations
            wait(lambda: other.engine.evaluations >= n + 4)
            assert len(slack.requests) == 1 and len(pd.requests) == 1, "a takeover must not page again"
            s.run_tasks(service, 2, loop=False)  # the loop stops: the new evaluator resolves it, once
            wait(lambda: len(slack.requests) == 2 and len(pd.requests) == 2, timeout=30, what="the resolves")
            assert pd.requests[1]["json"]["event_action"] == "resolve"
            assert pd.requests[1]["json"]["dedup_key"] == pd.requests[0]["json"]["dedup_key"]
        finally:
            other.stop()


def test_slack_429_honours_retry_after_then_delivers_once(tmp_path, slack):
    slack.script = [(429, "rate_limited", {"Retry-After": "1"})]
    service = unique("svc-429")
    rules = "interval: 1h\nrules:\n  - {name: busy, metric: tasks, threshold: 0, channels: [slack]}\n"
    with Server(tmp_path, rules, env_for(slack)) as s:
        s.run_tasks(service, 1)
        s.alerts.engine.evaluate()
        wait(lambda: len(slack.requests) == 2, what="the retry after 429")
        gap = slack.requests[1]["time"] - slack.requests[0]["time"]
        assert gap >= 0.9, "Retry-After: 1 must be honoured"
        wait(lambda: not s.alerts.dispatcher.busy(("proj-a", "slack", "busy")))
        for _ in range(3):
            s.alerts.engine.evaluate()
        time.sleep(0.3)
        assert len(slack.requests) == 2  # delivered once; no further sends
        assert slack.requests[0]["body"] == slack.requests[1]["body"]
        outcomes = [(d["attempt"], d["outcome"], d["http_status"]) for d in
                    reversed(s.get("/api/v1/alerts").json()["deliveries"])]  # fmt: skip
        assert outcomes == [(1, "retry", 429), (2, "ok", 200)]


def test_pagerduty_500_is_retried_400_is_not_and_a_timeout_is_retried(tmp_path, pd):
    bad = Receiver((400, '{"status":"invalid event","message":"Event object is invalid"}', {}))
    slow = Receiver((200, "ok", {}))
    slow.script = [3.0]  # the first answer takes longer than the channel's timeout
    pd.script = [(500, "oops", {}), (503, "busy", {})]
    rules = f"""
interval: 1h
channels:
  pd-bad: {{type: pagerduty, routing_key_env: AGENTWATCH_PAGERDUTY_ROUTING_KEY, url: "{bad.url}/v2/enqueue"}}
  hook: {{type: webhook, url: "{slow.url}/hook", secret_env: HOOK_SECRET, timeout: 0.5}}
rules:
  - {{name: busy, metric: tasks, threshold: 0, severity: error, channels: [pagerduty, pd-bad, hook]}}
"""
    try:
        with Server(tmp_path, rules, env_for(pd=pd, HOOK_SECRET=HOOK_SECRET), holdoff=300) as s:
            s.run_tasks(unique("svc-pd"), 1)
            s.alerts.engine.evaluate()
            wait(lambda: len(pd.requests) == 3, what="two retries then 202")
            wait(lambda: len(slow.requests) == 2, what="a retry after the timeout")
            wait(lambda: len(bad.requests) == 1)
            for _ in range(3):
                s.alerts.engine.evaluate()
            time.sleep(0.5)
            assert len(bad.requests) == 1, "a 400 is never retried"
            assert len(pd.requests) == 3 and len(slow.requests) == 2
            assert [r["json"]["event_action"] for r in pd.requests] == ["trigger"] * 3
            assert len({r["json"]["dedup_key"] for r in pd.requests}) == 1
            assert pd.requests[0]["json"]["payload"]["severity"] == "error"
            # the webhook is signed: HMAC-SHA256 over "<timestamp>.<body>"
            h = slow.requests[-1]["headers"]
            expected = hmac.new(HOOK_SECRET.encode(), h["X-Agentwatch-Timestamp"].encode() + b"." +
                                slow.requests[-1]["body"], hashlib.sha256).hexdigest()  # fmt: skip
            assert h["X-Agentwatch-Signature"] == f"sha256={expected}"
            assert slow.requests[-1]["json"]["status"] == "firing"
            d = s.get("/api/v1/alerts").json()["deliveries"]
            by = {(x["channel"], x["attempt"]): (x["outcome"], x["http_status"]) for x in d}
            assert by[("pd-bad", 1)] == ("failed", 400) and ("pd-bad", 2) not in by
            assert by[("pagerduty", 1)] == ("retry", 500) and by[("pagerduty", 3)] == ("ok", 202)
            assert by[("hook", 1)][0] == "retry" and by[("hook", 2)] == ("ok", 200)
            assert HOOK_SECRET not in str(d)
    finally:
        bad.close()
        slow.close()


def test_a_channel_that_hangs_delays_neither_evaluation_nor_other_channels(tmp_path, slack, pd):
    slack.gate = threading.Event()  # Slack accepts the connection and never answers (until released)
    rules = """
interval: 1h
channels:
  slack: {type: slack, url_env: AGENTWATCH_SLACK_WEBHOOK_URL, timeout: 30}
rules:
  - {name: busy, metric: tasks, threshold: 0, channels: [slack, pagerduty]}
"""
    with Server(tmp_path, rules, env_for(slack, pd)) as s:
        s.run_tasks(unique("svc-hang"), 1)
        s.alerts.engine.evaluate()
        wait(lambda: pd.requests and slack.requests, what="both channels called")
        assert not slack.gate.is_set()  # Slack still hanging, PagerDuty already paged
        before = s.alerts.engine.evaluations
        for _ in range(3):
            s.alerts.engine.evaluate()  # returns while Slack hangs
        assert s.alerts.engine.evaluations == before + 3
        assert len(pd.requests) == 1 and len(slack.requests) == 1
        slack.gate.set()
        wait(lambda: not s.alerts.dispatcher.busy(("proj-a", "slack", "busy")))


COST_RULES = """
interval: 1h
channels:
  hook: {type: webhook, url_env: HOOK_URL, secret_env: HOOK_SECRET}
rules:
  - {name: project-cost, metric: cost_usd, threshold: 0, window: 10m, labels: {category: cost, scope: project},
     channels: [hook]}
  - {name: task-cost, metric: cost_usd, threshold: 0, window: 10m, group_by: [task],
     labels: {category: cost, scope: task}, channels: [hook]}
  - {name: busy, metric: tasks, threshold: 0, window: 10m, repeat_interval: 1s, channels: [hook]}
"""


def test_inhibition_silences_and_repeat_interval(tmp_path):
    hook = Receiver((204, "", {}))
    try:
        env = {"HOOK_URL": f"{hook.url}/hook", "HOOK_SECRET": HOOK_SECRET}
        with Server(tmp_path, COST_RULES, env) as s:
            admin = KEYS["admin"]
            import httpx

            url = f"http://127.0.0.1:{s.port}/api/v1/alerts/silences"
            r = httpx.post(url, json={"matchers": ["alertname=busy"], "duration": "1h", "comment": "deploy"},
                           headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            assert httpx.post(url, json={"matchers": ["x=y"]}, headers={"Authorization": f"Bearer {KEYS['read']}"}
                              ).status_code == 403  # fmt: skip
            s.run_tasks(unique("svc-cost"), 2, task="checkout")
            s.alerts.engine.evaluate()
            wait(lambda: hook.requests)
            time.sleep(0.3)
            s.alerts.engine.evaluate()
            time.sleep(0.3)
            rules_paged = [b["rule"] for b in hook.bodies()]
            assert rules_paged == ["project-cost"], "task-cost is inhibited, busy is silenced"
            view = s.get("/api/v1/alerts").json()
            muted = {a["rule"]: a["muted_by"] for a in view["firing"]}
            assert muted["task-cost"].startswith("inhibited by project-cost")
            assert muted["busy"] == f"silence {sid}" and muted["project-cost"] is None
            assert view["silences"][0]["active"] and view["silences"][0]["comment"] == "deploy"

            # the silence ends: busy pages; its repeat interval (1 s) re-sends it while it fires
            r = httpx.delete(f"{url}/{sid}", headers={"Authorization": f"Bearer {admin}"})
            assert r.status_code == 200 and r.json()["active"] is False
            s.alerts.engine.evaluate()
            wait(lambda: [b["rule"] for b in hook.bodies()].count("busy") == 1)
            s.alerts.engine.evaluate()
            assert [b["rule"] for b in hook.bodies()].count("busy") == 1, "not before the repeat interval"
            time.sleep(1.1)
            s.alerts.engine.evaluate()
            wait(lambda: [b["rule"] for b in hook.bodies()].count("busy") == 2, what="the repeat")
            assert [b["rule"] for b in hook.bodies()].count("project-cost") == 1
    finally:
        hook.close()


def test_unreachable_channel_errors_never_show_the_secret(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    rules = ("interval: 1h\nchannels:\n  slack: {type: slack, url_env: AGENTWATCH_SLACK_WEBHOOK_URL, max_attempts: 2}\n"
             "rules:\n  - {name: busy, metric: tasks, threshold: 0, channels: [slack]}\n")
    env = {"AGENTWATCH_SLACK_WEBHOOK_URL": f"http://127.0.0.1:9/services/{SLACK_TOKEN}"}  # nothing listens
    with Server(tmp_path, rules, env) as s:
        s.run_tasks(unique("svc-down"), 1)
        s.alerts.engine.evaluate()
        wait(lambda: any(d["outcome"] == "gave_up" for d in s.get("/api/v1/alerts").json()["deliveries"]),
             what="the retries to give up")  # fmt: skip
        text = s.get("/api/v1/alerts").text
    assert "ConnectError" in text
    assert "notarealslacksecret123" not in text and "notarealslacksecret123" not in caplog.text


def test_alerts_check_through_the_read_api_prints_each_rule(tmp_path, capsys):
    import argparse

    from agentwatch.alerts.cli import register

    rules = "rules:\n  - {name: busy, metric: tasks, threshold: 0, group_by: [service], channels: [log]}\n"
    with Server(tmp_path, rules, {}) as s:
        service = unique("svc-check")
        s.run_tasks(service, 1)
        p = argparse.ArgumentParser()
        register(p.add_subparsers(dest="cmd"))
        args = p.parse_args(["alerts", "check", "--rules", str(tmp_path / "rules.yaml"),
                             "--api", f"http://127.0.0.1:{s.port}", "--key", KEYS["read"]])  # fmt: skip
        assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert "busy [warning]: 1 active of 1 group(s)" in out
    assert f"ACTIVE service={service}: 1 > 0, 1 samples" in out
