"""Security promises against real collector processes: the auth matrix (every route of ``/openapi.json`` x every
kind of caller), project isolation, keys and channel secrets never in responses, logs or metrics, loopback bind."""

from __future__ import annotations

import time

import httpx
import pytest
from harness import KEYS
from otlp_payloads import Recorder, agent_run, unique

from agentwatch.collector.cli import parser
from agentwatch.collector.settings import CollectorSettings

PUBLIC = {"/healthz", "/readyz", "/metrics"}
ADMIN_ONLY = {("GET", "/api/v1/keys"), ("POST", "/api/v1/keys"), ("DELETE", "/api/v1/keys/{prefix}"),
              ("POST", "/api/v1/alerts/silences"), ("DELETE", "/api/v1/alerts/silences/{silence_id}")}  # fmt: skip
INGEST_ONLY = {("POST", "/v1/traces")}


def _need(method: str, path: str) -> str | None:
    if path in PUBLIC:
        return None
    if (method, path) in ADMIN_ONLY:
        return "admin"
    if (method, path) in INGEST_ONLY:
        return "ingest"
    return "read"


def _may(role: str, need: str) -> bool:
    return role == "admin" or role == need


def _routes(c) -> list[tuple[str, str]]:
    spec = httpx.get(c.url + "/openapi.json").json()
    return sorted((m.upper(), p) for p, ops in spec["paths"].items() for m in ops)


def _call(c, method: str, path: str, authorization: str | None, tid: str) -> httpx.Response:
    url = path.replace("{trace_id}", tid).replace("{prefix}", "zz-no-such-key").replace("{silence_id}", "no-such")
    headers = {"Authorization": authorization} if authorization is not None else {}
    kw: dict = {}
    if path == "/v1/traces":
        headers["Content-Type"] = "application/x-protobuf"
        kw["content"] = b""
    elif path == "/api/v1/alerts/silences" and method == "POST":
        kw["json"] = {"matchers": ["alertname=matrix-test"], "duration": "1m", "comment": "auth matrix"}
    elif path == "/api/v1/keys" and method == "POST":
        kw["params"] = {"role": "read", "name": "auth-matrix"}
    return httpx.request(method, c.url + url, headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def revoked_key(collector) -> str:
    r = httpx.post(collector.url + "/api/v1/keys", params={"role": "read", "name": "to-revoke"},
                   headers={"Authorization": f"Bearer {KEYS['admin']}"})  # fmt: skip
    assert r.status_code == 200, r.text
    key = r.json()["key"]
    assert collector.get("/api/v1/overview", key=key).status_code == 200
    r = httpx.delete(collector.url + f"/api/v1/keys/{key[:12]}", headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert r.status_code == 200 and r.json()["revoked"] == 1, r.text
    return key


def test_auth_matrix_every_route_every_caller(collector, revoked_key):
    rec = Recorder(unique("svc-matrix"))
    tid = agent_run(rec)
    assert collector.post_traces(rec.body()).status_code == 200
    collector.trace(tid, spans=2)
    routes = _routes(collector)
    assert len(routes) >= 20, routes
    callers = {
        "none": None, "empty": "", "scheme only": "Bearer", "no scheme": KEYS["read"],
        "basic": f"Basic {KEYS['read']}", "wrong": "Bearer not-a-key-of-anyone", "revoked": f"Bearer {revoked_key}",
        "key prefix": f"Bearer {KEYS['read'][:12]}", "key + junk": f"Bearer {KEYS['read']}x",
        "ingest": f"Bearer {KEYS['ingest']}", "read": f"Bearer {KEYS['read']}", "admin": f"Bearer {KEYS['admin']}",
        "ingest_b": f"Bearer {KEYS['ingest_b']}", "read_b": f"Bearer {KEYS['read_b']}",
    }  # fmt: skip
    wrong, texts = [], []
    for method, path in routes:
        need = _need(method, path)
        for who, auth in callers.items():
            r = _call(collector, method, path, auth, tid)
            texts.append(r.text)
            role = who.removesuffix("_b") if who in ("ingest", "read", "admin", "ingest_b", "read_b") else None
            if need is None:
                ok = r.status_code == 200
            elif role is None:
                ok = r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
            elif not _may(role, need):
                ok = r.status_code == 403
            else:  # the right role: success, or 404 for what this project does not have
                ok = 200 <= r.status_code < 300 or r.status_code == 404
                if who.endswith("_b") and r.status_code == 200:
                    ok = ok and tid not in r.text  # project B never sees project A's trace
                if path == "/api/v1/traces/{trace_id}":
                    ok = ok and r.status_code == (404 if who.endswith("_b") else 200)
            if not ok:
                wrong.append((method, path, who, r.status_code, r.text[:120]))
    print(f"\nauth matrix: {len(routes)} routes x {len(callers)} callers = {len(routes) * len(callers)} requests")
    assert not wrong, wrong
    created = [t for t in texts if '"key":"aw_' in t.replace(" ", "")]
    everything_else = "\n".join(t for t in texts if t not in created)
    for key in (*KEYS.values(), revoked_key):
        assert key not in everything_else


def test_project_b_lists_are_empty_of_project_a(collector):
    service = unique("svc-iso")
    rec = Recorder(service)
    tid = agent_run(rec, tools=[("search", "{}")] * 4)
    assert collector.post_traces(rec.body()).status_code == 200
    collector.trace(tid, spans=6)
    for path in ("/api/v1/overview", "/api/v1/tasks", "/api/v1/latency", "/api/v1/tools", "/api/v1/loops",
                 "/api/v1/unit-economics", "/api/v1/outcomes", "/api/v1/anomalies/cost", "/api/v1/alerts"):  # fmt: skip
        a = collector.get(path, service=service)
        b = collector.get(path, service=service, key=KEYS["read_b"])
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        echoed = b.text.replace(f'"service":"{service}"', "")  # the filter itself is echoed back
        assert service not in echoed and tid not in b.text, path
    assert service in collector.get("/api/v1/tasks", service=service).text
    assert collector.api("/api/v1/overview", service=service, key=KEYS["read_b"])["spans"] == 0


def test_keys_are_listed_by_prefix_and_never_in_logs_or_metrics(collector, revoked_key):
    r = collector.get("/api/v1/keys", key=KEYS["admin"])
    assert r.status_code == 200
    items = r.json()["items"]
    assert items and all(len(k["prefix"]) <= 12 for k in items)
    assert {k["project"] for k in items} == {"proj-a"}  # the caller's project only
    for key in KEYS.values():
        assert key not in r.text
    metrics = httpx.get(collector.url + "/metrics").text
    log = collector.log_path.read_text(errors="replace")
    for key in (*KEYS.values(), revoked_key):
        assert key not in metrics and key not in log
    assert "proj-a" not in metrics and "proj-b" not in metrics  # no project data in /metrics


def test_an_admin_revokes_only_keys_of_its_own_project(make_collector):
    """The bootstrap keys ``test-ingest-key-a`` (proj-a) and ``test-ingest-key-b`` (proj-b) share their 12-character
    prefix; revoking proj-a's must leave proj-b's working (generated ingest keys share a prefix 1 time in 4096)."""
    c = make_collector()
    assert c.post_traces(b"", key=KEYS["ingest_b"]).status_code == 200
    r = httpx.delete(c.url + f"/api/v1/keys/{KEYS['ingest']}", headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert r.status_code == 200 and r.json()["revoked"] == 1, r.text
    assert c.post_traces(b"", key=KEYS["ingest"]).status_code == 401
    assert c.post_traces(b"", key=KEYS["ingest_b"]).status_code == 200  # another project's key survives


SECRET_HOOK = "http://127.0.0.1:9/secret-hook/T000/B000/notarealhooksecret42"
SECRET_PD = "pd-routing-key-notarealsecret-77"
RULES = """
interval: 1s
channels:
  slack: {type: slack, url_env: AGENTWATCH_SLACK_WEBHOOK_URL, max_attempts: 2}
  pagerduty: {type: pagerduty, routing_key_env: AGENTWATCH_PAGERDUTY_ROUTING_KEY, url: "http://127.0.0.1:9/v2/enqueue",
              max_attempts: 2}
rules:
  - {name: busy, metric: tasks, threshold: 0, channels: [slack, pagerduty]}
"""


def test_channel_secrets_never_in_alerts_api_logs_or_metrics(make_collector, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    c = make_collector(AGENTWATCH_SLACK_WEBHOOK_URL=SECRET_HOOK, AGENTWATCH_PAGERDUTY_ROUTING_KEY=SECRET_PD,
                       AGENTWATCH_RULES=str(rules))  # fmt: skip
    rec = Recorder(unique("svc-secret"))
    tid = agent_run(rec)
    assert c.post_traces(rec.body()).status_code == 200
    c.trace(tid, spans=2)

    def gave_up() -> bool:  # both channels tried (nothing listens on port 9) and gave up
        d = c.api("/api/v1/alerts")["deliveries"]
        return {x["channel"] for x in d if x["outcome"] == "gave_up"} >= {"slack", "pagerduty"}

    c.wait_for(gave_up, timeout=60, what="both channels to give up")
    time.sleep(0.5)  # the last log lines
    views = [c.get("/api/v1/alerts").text, c.get("/api/v1/alerts", key=KEYS["admin"]).text]
    log = c.log_path.read_text(errors="replace")
    metrics = httpx.get(c.url + "/metrics").text
    assert "slack" in views[0] and "pagerduty" in views[0]
    for secret in (SECRET_HOOK, "notarealhooksecret42", "/secret-hook/T000", SECRET_PD, "notarealsecret"):
        for where, text in (("alerts API", views[0]), ("alerts API (admin)", views[1]), ("log", log),
                            ("metrics", metrics)):  # fmt: skip
            assert secret not in text, f"{secret!r} in the {where}"


def test_default_bind_is_loopback(monkeypatch, collector):
    for name in ("AGENTWATCH_HOST", "AGENTWATCH_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert CollectorSettings().host == "127.0.0.1"
    assert parser().parse_args(["collector"]).host is None  # no flag: the setting's default
    assert parser().parse_args(["up"]).host is None
    log = collector.log_path.read_text(errors="replace")
    assert "on http://127.0.0.1:" in log and "TLS" not in log  # loopback: no clear-text warning
