"""The command line: keys, migrations SQL, clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from harness import collector_env, free_port


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentwatch.collector.cli", *args], capture_output=True, text=True,
                          env=env or collector_env(), timeout=timeout)  # fmt: skip


def test_keys_create_list_revoke_and_use(tmp_path, make_collector):
    d = tmp_path / "data"
    created = run("keys", "create", "--project", "team-x", "--role", "read", "--name", "grafana", "--data-dir", str(d))
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    assert key.startswith("aw_read_") and "not shown again" in created.stderr
    listed = [json.loads(line) for line in run("keys", "list", "--data-dir", str(d)).stdout.splitlines()]
    mine = [k for k in listed if k["project"] == "team-x"]
    assert len(mine) == 1 and mine[0]["prefix"] == key[:12] and key not in json.dumps(listed)

    c = make_collector(data_dir=d)
    assert c.get("/api/v1/overview", key=key).status_code == 200
    assert c.get("/api/v1/overview", key=key).json()["tasks"] == 0  # team-x sees only its own (empty) project
    c.stop()
    assert run("keys", "revoke", key[:12], "--data-dir", str(d)).returncode == 0
    c.start()
    assert c.get("/api/v1/overview", key=key).status_code == 401
    assert run("keys", "revoke", "nosuchprefix", "--data-dir", str(d)).returncode == 2


def test_keys_admin_api(collector):
    from harness import KEYS

    r = collector.get("/api/v1/keys", key=KEYS["read"])
    assert r.status_code == 403
    import httpx

    h = {"Authorization": f"Bearer {KEYS['admin']}"}
    new = httpx.post(collector.url + "/api/v1/keys", params={"role": "ingest", "name": "ci"}, headers=h).json()
    assert new["project"] == "proj-a" and new["key"].startswith("aw_ingest_")
    prefixes = [k["prefix"] for k in httpx.get(collector.url + "/api/v1/keys", headers=h).json()["items"]]
    assert new["key"][:12] in prefixes and all(len(p) <= 12 for p in prefixes)
    assert collector.post_traces(b"", key=new["key"]).status_code == 200
    assert httpx.delete(collector.url + f"/api/v1/keys/{new['key'][:12]}", headers=h).json() == {"revoked": 1}
    assert collector.post_traces(b"", key=new["key"]).status_code == 401


def test_second_process_on_the_same_data_dir_and_busy_port_fail_in_one_line(make_collector):
    c = make_collector()
    same_dir = run("collector", "--data-dir", str(c.data_dir), "--port", str(free_port()))
    assert same_dir.returncode == 2 and "another agentwatch process holds it" in same_dir.stderr
    busy = run("collector", "--data-dir", str(c.data_dir.parent / "other"), "--port", str(c.port))
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{c.port}" in busy.stderr


def test_bad_settings_fail_fast(tmp_path):
    env = collector_env(AGENTWATCH_CLICKHOUSE_URL="tcp://db:9000")
    r = run("collector", "--data-dir", str(tmp_path), "--port", str(free_port()), env=env)
    assert r.returncode == 2 and "clickhouse_url" in r.stderr and "http://" in r.stderr
    bad_prices = tmp_path / "prices.yaml"
    bad_prices.write_text("models:\n  - match: 'x'\n    input_per_mtok: -1\n")
    r = run("collector", "--data-dir", str(tmp_path), "--port", str(free_port()), "--price-file", str(bad_prices))
    assert r.returncode == 2 and "prices.yaml" in r.stderr


def test_migrate_prints_single_node_and_cluster_sql():
    single = run("migrate", "--print-sql").stdout
    assert "ENGINE = ReplacingMergeTree()" in single and "ON CLUSTER" not in single
    cluster = run("migrate", "--print-sql", "--cluster", "prod").stdout
    assert "CREATE TABLE IF NOT EXISTS otel_traces_local ON CLUSTER `prod`" in cluster
    zk = "'/clickhouse/tables/{shard}/{database}/otel_traces_local', '{replica}'"
    assert f"ReplicatedReplacingMergeTree({zk})" in cluster
    assert "ENGINE = Distributed(`prod`, currentDatabase(), otel_traces_local, cityHash64(TraceId))" in cluster
    assert "ReplicatedAggregatingMergeTree" in cluster
    # the materialized view reads the local table on each shard
    assert "FROM otel_traces_local" in cluster
