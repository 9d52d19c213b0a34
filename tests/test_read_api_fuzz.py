"""The read API against hostile parameters, on the session's real collector:

- schemathesis generates requests for every GET ``/api/...`` operation of the collector's own ``/openapi.json``
  (positive and negative data) with a read key: never a 5xx;
- every query and path parameter of every GET endpoint gets SQL injection strings, ClickHouse parameter
  syntax, unicode, control characters and 10 KB strings: only 200/400/404/422, and afterwards the data of
  project A is intact and project B's key never sees any of it.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from harness import KEYS
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from otlp_payloads import Recorder, agent_run, unique
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode


def test_schemathesis_read_api_never_5xx(collector):
    """schemathesis' pytest loader (``from_fixture``) does not run under pytest 9, so the operations are walked
    here: for each GET operation, schema-valid and schema-violating cases, each checked by ``not_a_server_error``."""
    schema = schemathesis.openapi.from_url(collector.url + "/openapi.json").include(method="GET", path_regex="^/api/")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 12
    seen: dict[str, int] = {}
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=8, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
                case.headers = {**headers, "Authorization": f"Bearer {KEYS['read']}"}
                response = case.call(base_url=collector.url, timeout=30)
                seen[case.operation.path] = seen.get(case.operation.path, 0) + 1
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except Unsatisfiable:  # nothing in this operation can be made invalid (e.g. only free-form strings)
                assert mode is GenerationMode.NEGATIVE, op.path
    print(f"\nschemathesis: {sum(seen.values())} cases over {len(seen)} GET operations")


INJECTIONS = [
    "' OR 1=1 --",
    "'; DROP TABLE otel_traces; --",
    "\\'",  # backslash-quote (bound values are escaped for chDB, so it arrives as itself)
    "{project:String}",
    "' UNION SELECT KeyHash FROM api_keys --",
    "ünïcødé ☃ 𝔘 \u202e",
    "\x01\x1f\x7f",
    "A" * 10_240,
]
CORE = INJECTIONS[:4] + INJECTIONS[-1:]  # on every parameter of every endpoint; the rest once per parameter name
# for project B's key, on every parameter a string can reach a query through: what would widen an unbound query
CROSS = ["' OR 1=1 --", "{project:String}"]
SAFE_STATUSES = {200, 400, 404, 422}


def _get_operations(collector) -> list[tuple[str, list[tuple[str, str]], set[str]]]:
    """(path, [(parameter, where)], names of the string-typed parameters) of every GET /api/ operation."""
    spec = httpx.get(collector.url + "/openapi.json").json()
    ops = []
    for path, methods in spec["paths"].items():
        if "get" in methods and path.startswith("/api/"):
            params = [p for p in methods["get"].get("parameters", []) if p["in"] in ("query", "path")]
            strings = {p["name"] for p in params if '"string"' in json.dumps(p.get("schema", {}))
                       and "enum" not in json.dumps(p.get("schema", {}))}  # fmt: skip
            ops.append((path, [(p["name"], p["in"]) for p in params], strings))
    return ops


def _fingerprint(collector, key: str) -> dict:
    w = {"from": str(int(time.time()) - 3 * 86400), "to": str(int(time.time()) + 3600)}
    ov = collector.api("/api/v1/overview", key=key, **w)
    tasks = collector.api("/api/v1/tasks", key=key, limit=1000, **w)
    return {"spans": ov["spans"], "tasks": ov["tasks"], "ids": sorted(t["trace_id"] for t in tasks["items"])}


def test_every_get_parameter_with_injection_strings(collector):
    rec = Recorder(unique("svc-inject"))
    tid = agent_run(rec, tools=[("search", '{"q": "x"}')])
    assert collector.post_traces(rec.body()).status_code == 200
    collector.trace(tid, spans=3)
    collector.wait_for(lambda: collector.get("/readyz", key=None).json()["queue_depth"] == 0, what="drain")
    before_a, before_b = _fingerprint(collector, KEYS["read"]), _fingerprint(collector, KEYS["read_b"])
    assert tid in before_a["ids"] and tid not in before_b["ids"]

    ops = _get_operations(collector)
    assert len(ops) >= 12, ops
    jobs, names = [], set()
    for path, params, strings in ops:
        for name, where in params:
            full = name not in names
            names.add(name)
            jobs += [(path, name, where, v, KEYS["read"]) for v in (INJECTIONS if full else CORE)]
            if name in strings:
                jobs += [(path, name, where, v, KEYS["read_b"]) for v in CROSS]

    def one(job):
        path, name, where, value, key = job
        url, query = path, {}
        if where == "path":
            url = path.replace("{" + name + "}", quote(value, safe=""))
        else:
            query[name] = value
        r = httpx.get(collector.url + url, params=query, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        return job, r.status_code, r.text

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, jobs))
    bad = [(p, n, v[:40], status, text[:200])
           for (p, n, _, v, _), status, text in results if status not in SAFE_STATUSES]  # fmt: skip
    leaks = [(p, n, v[:40]) for (p, n, _, v, k), status, text in results if k == KEYS["read_b"] and tid in text]
    n_params = sum(len(params) for _, params, _ in ops)
    print(f"\ninjection: {len(jobs)} requests over {n_params} parameters of {len(ops)} GET endpoints: each parameter "
          f"{len(CORE)} strings ({len(INJECTIONS)} once per parameter name) with A's read key, "
          f"{len(CROSS)} with B's on each string parameter")  # fmt: skip
    assert not bad, bad
    assert not leaks, leaks  # project B never sees project A's trace
    assert collector.get("/healthz", key=None).status_code == 200
    # the tables are all there and hold what they held
    assert _fingerprint(collector, KEYS["read"])["ids"] == before_a["ids"]
    assert _fingerprint(collector, KEYS["read_b"]) == before_b
    assert len(collector.api(f"/api/v1/traces/{tid}")["spans"]) == 3


def test_service_filter_is_a_bound_value_not_sql(collector):
    """A service name that is SQL, stored and then read back through the filter, matches itself only."""
    evil = "x' OR '1'='1"
    rec = Recorder(evil)
    tid = agent_run(rec)
    assert collector.post_traces(rec.body()).status_code == 200
    collector.trace(tid, spans=2)
    assert collector.api("/api/v1/overview", service=evil)["spans"] == 2
    items = collector.api("/api/v1/tasks", service=evil)["items"]
    assert [t["trace_id"] for t in items] == [tid]
    assert collector.api("/api/v1/tasks", service=evil, key=KEYS["read_b"])["items"] == []
    assert collector.get(f"/api/v1/traces/{tid}", key=KEYS["read_b"]).status_code == 404


@pytest.mark.parametrize("trace_id", ["' OR 1=1 --", "%", "_" * 32, "*", os.urandom(16).hex() + "' OR '1'='1"])
def test_trace_id_patterns_do_not_match_other_traces(collector, trace_id):
    r = collector.get("/api/v1/traces/" + quote(trace_id, safe=""))
    assert r.status_code in (400, 404, 422), r.text


@pytest.mark.parametrize("value", ["ends with \\", "tab\there", "line\nbreak", "a\\b"])
def test_backslashes_and_control_characters_in_a_bound_value(collector, value):
    rec = Recorder(value)
    tid = agent_run(rec)
    assert collector.post_traces(rec.body()).status_code == 200
    collector.trace(tid, spans=2)
    r = collector.get("/api/v1/tasks", service=value)
    assert r.status_code == 200, r.text
    assert [t["trace_id"] for t in r.json()["items"]] == [tid]
