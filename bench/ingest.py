"""Ingest benchmark: OTLP/HTTP protobuf load of agent-like traces against a real collector process.

    .venv/bin/python bench/ingest.py [--seconds 30] [--senders 2] [--profile-out prof.svg]

Starts ``agentwatch collector`` (embedded chDB, a temporary data dir, a free port) as a subprocess,
runs ``--senders`` sender processes that POST pre-serialized 512-span requests (~850 B a span, about
10 spans a trace; each request gets fresh trace ids so nothing is deduplicated away) over keep-alive
connections for ``--seconds``, honouring 503 + Retry-After. Meanwhile it sends a small probe trace
with its own service name every ~0.5 s and polls the API until it is visible (freshness): the trace by id
with all its spans (``--probe trace``, the default), or its task in its service's task list (``--probe tasks``,
which loads the collector more: each poll is a task-list query),
and samples the collector's RSS. After the load it waits until the read API counts every accepted span
(``/api/v1/overview``), so "persisted/s" covers the whole run including the drain. In the same run it
measures the ceiling of merely decoding the same requests in Python (protobuf ``ParseFromString`` and
a walk reading every span field and attribute into Python values) as spans per CPU-second on one core; the
ratio's headline is against that hand-written walk, the strictest ceiling. It also prints the ratio against the
generic way of doing the same, ``json_format.MessageToDict`` (every field of every message into Python values:
22-34k spans per CPU-second here, the order of the "40-55k per core" the ingest issue quotes).
It stops by itself, stops the collector it started and removes its temporary directory.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import make_requests, make_trace  # noqa: E402

INGEST_KEY = "bench-ingest-key"
READ_KEY = "bench-read-key"
API_KEYS = f"{INGEST_KEY}:bench:ingest,{READ_KEY}:bench:read"
MARKER = b"\xa5BENCH\x5a\xc3"  # the first 8 bytes of every trace id in the base bodies; replaced per send
ROOT = Path(__file__).resolve().parent.parent


# --- the workload -----------------------------------------------------------------------------------
def _kv(key: str, value) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _enrich(req: ExportTraceServiceRequest, rng: random.Random) -> int:
    """bench/workload.py's spans are ~475 B; add what real agent spans carry (output messages, request
    parameters, server address, tool results, agent input/output) to reach ~850 B a span. Returns spans."""
    n = 0
    for rs in req.resource_spans:
        rs.resource.attributes.extend([_kv("service.version", "1.4.2"), _kv("telemetry.sdk.language", "python")])
        for ss in rs.scope_spans:
            for span in ss.spans:
                n += 1
                span.trace_id = MARKER + span.trace_id[8:]
                op = next((kv.value.string_value for kv in span.attributes if kv.key == "gen_ai.operation.name"), "")
                if op == "chat":
                    out = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "y" * 330}],
                                       "finish_reason": "stop"}])  # fmt: skip
                    span.attributes.extend([
                        _kv("gen_ai.output.messages", out), _kv("gen_ai.request.temperature", 0.2),
                        _kv("gen_ai.request.max_tokens", 1024), _kv("server.address", "api.example.com"),
                        _kv("server.port", 443), _kv("gen_ai.output.type", "text"),
                        _kv("gen_ai.usage.cache_read.input_tokens", rng.randint(0, 100)),
                    ])  # fmt: skip
                elif op == "execute_tool":
                    span.attributes.extend([
                        _kv("gen_ai.tool.type", "function"), _kv("gen_ai.tool.description", "d" * 120),
                        _kv("agentwatch.tool.result_bytes", 120),
                    ])  # fmt: skip
                elif op == "invoke_agent":
                    span.attributes.extend([
                        _kv("gen_ai.conversation.id", f"conv-{rng.randrange(10**9)}"),
                        _kv("agentwatch.user.id", f"user-{rng.randrange(1000)}"),
                        _kv("agentwatch.task.input", "q" * 300), _kv("agentwatch.task.output", "a" * 300),
                    ])  # fmt: skip
                else:
                    span.attributes.extend([
                        _kv("agentwatch.decision.options", '["answer","search","escalate"]'),
                        _kv("agentwatch.decision.reason", "r" * 150),
                    ])  # fmt: skip
    return n


def build_bodies(count: int, seed: int) -> tuple[list[bytes], list[int]]:
    bodies, spans = [], []
    rng = random.Random(seed)
    for raw in make_requests(count, spans_per_request=512, seed=seed):
        req = ExportTraceServiceRequest()
        req.ParseFromString(raw)
        spans.append(_enrich(req, rng))
        body = req.SerializeToString()
        assert body.count(MARKER) == sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        bodies.append(body)
    return bodies, spans


def probe_body(service: str, seed: int) -> tuple[bytes, str, int]:
    rng = random.Random(seed)
    spans = make_trace(rng, None, time.time_ns() - 5 * 1_000_000_000)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", service))
    rs.scope_spans.add().spans.extend(spans)
    return req.SerializeToString(), spans[-1].trace_id.hex(), len(spans)


# --- the ceiling: decode and walk in Python, one core --------------------------------------------------
def _value(v):
    k = v.WhichOneof("value")
    if k == "array_value":
        return [_value(x) for x in v.array_value.values]
    if k == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, k) if k else None


def plain_walk(body: bytes) -> int:
    """protobuf ParseFromString + every span field and attribute read into a Python dict per span."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    n = 0
    for rs in req.resource_spans:
        res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            scope = (ss.scope.name, ss.scope.version)
            for s in ss.spans:
                d = {
                    "trace_id": s.trace_id, "span_id": s.span_id, "parent": s.parent_span_id, "name": s.name,
                    "kind": s.kind, "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                    "attrs": {kv.key: _value(kv.value) for kv in s.attributes},
                    "events": [(e.time_unix_nano, e.name, {kv.key: _value(kv.value) for kv in e.attributes})
                               for e in s.events],
                    "status": (s.status.code, s.status.message), "res": res, "scope": scope,
                }  # fmt: skip
                n += len(d)
    return n


def ceilings(bodies: list[bytes], spans: list[int], repeat: int = 3) -> dict[str, float]:
    """Spans per CPU-second on one core: the plain walk, and the collector's own decode path for reference."""
    from agentwatch.collector.otlp import Batch, Limits, new_columns, parse_protobuf, walk

    total = sum(spans)

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            for b in bodies:
                fn(b)
            times.append(time.process_time() - t0)
        return total / min(times)

    limits = Limits()

    def ours(b: bytes) -> None:
        walk(parse_protobuf(b), Batch(new_columns()), limits=limits, body_bytes=len(b))

    def parse_only(b: bytes) -> None:
        ExportTraceServiceRequest().ParseFromString(b)

    def generic(b: bytes) -> None:  # the generic way: every field of every message into Python values
        req = ExportTraceServiceRequest()
        req.ParseFromString(b)
        MessageToDict(req)

    return {"plain_walk": best(plain_walk), "collector_walk": best(ours), "parse_only": best(parse_only),
            "generic_walk": best(generic)}  # fmt: skip


# --- senders -----------------------------------------------------------------------------------------
def sender(idx: int, nsend: int, port: int, bodies: list[bytes], spans: list[int], t_end: float, out: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {INGEST_KEY}"}
    accepted = requests = busy = errors = 0
    latencies = []
    seq = 0
    i = idx
    while time.time() < t_end:
        seq += 1
        body = bodies[i % len(bodies)].replace(MARKER, struct.pack(">II", 0xB0000000 + idx, seq))
        while True:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/traces", body, headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                time.sleep(0.2)
                if time.time() > t_end + 30:
                    break
                continue
            requests += 1
            if resp.status == 503:
                busy += 1
                time.sleep(float(resp.getheader("Retry-After") or 1))
                continue
            latencies.append(time.perf_counter() - t0)
            if resp.status == 200:
                accepted += spans[i % len(bodies)]
            else:
                errors += 1
            break
        i += nsend
    conn.close()
    out.put({"idx": idx, "accepted": accepted, "requests": requests, "busy": busy, "errors": errors,
             "latencies": latencies})  # fmt: skip


# --- the collector ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    def __init__(self, tmp: Path, profile_out: str | None, extra_env: dict[str, str], spy_args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
        env.update({"AGENTWATCH_API_KEYS": API_KEYS, **extra_env})
        cmd = [sys.executable, "-m", "agentwatch.collector.cli", "collector", "--data-dir", str(tmp / "data"),
               "--port", str(self.port)]  # fmt: skip
        if profile_out:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            fmt = "speedscope" if profile_out.endswith(".json") else "flamegraph"
            cmd = [spy, "record", "--threads", "--rate", "100", *spy_args, "--format", fmt, "-o", profile_out,
                   "--", *cmd]  # fmt: skip
        self.log_path = tmp / "collector.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"collector did not start:\n{self.log()}")
            time.sleep(0.1)
        self.ps = self._python_process()

    def _python_process(self) -> psutil.Process:
        p = psutil.Process(self.proc.pid)
        for _ in range(50):  # under py-spy, the collector is its child
            kids = [k for k in p.children(recursive=True) if "agentwatch.collector.cli" in " ".join(k.cmdline())]
            if "agentwatch.collector.cli" in " ".join(p.cmdline()) or kids:
                return p if not kids else kids[0]
            time.sleep(0.1)
        return p

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            m = re.match(r"^(agentwatch_\w+?)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
            if m and "le=" not in (m.group(2) or ""):
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            target = self.ps if self.ps.pid != self.proc.pid else None
            (target.send_signal if target else self.proc.send_signal)(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def read_get(c: Collector, path: str, **params) -> httpx.Response:
    return httpx.get(c.url + path, params=params, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=60)


# --- side threads: RSS and freshness -------------------------------------------------------------------------
def sample_rss(c: Collector, stop: threading.Event, peak: list[int], at_peak: dict[str, int]) -> None:
    """The peak RSS every 0.1 s, and at the peak its parts (Linux: /proc/PID/smaps_rollup): anonymous memory (the
    heaps: Python's and the engine's) and file-backed pages (chiefly the engine's mapped library)."""
    while not stop.is_set():
        try:
            rss = c.ps.memory_info().rss
        except psutil.Error:
            return
        if rss > peak[0]:
            peak[0] = rss
            try:
                text = Path(f"/proc/{c.ps.pid}/smaps_rollup").read_text()
            except OSError:
                text = ""
            for key in ("Anonymous", "Rss"):
                m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
                if m:
                    at_peak[key] = int(m.group(1)) * 1024
        stop.wait(0.1)


def sample_store_memory(c: Collector, stop: threading.Event, peak: list[float]) -> None:
    """The peak of the embedded engine's own accounting (``agentwatch_store_memory_bytes``), every 0.5 s: what of
    the RSS the engine holds (inserts, queries, merges, caches)."""
    while not stop.is_set():
        try:
            m = c.metrics()
        except httpx.HTTPError:
            m = {}
        peak[0] = max(peak[0], m.get("agentwatch_store_memory_bytes", 0.0))
        stop.wait(0.5)


def probe_freshness(
    c: Collector, stop: threading.Event, delays: list[float], misses: list[str], query_s: list[float], how: str
) -> None:
    """A probe trace every ~0.5 s, polled until the API shows it: ``trace``, all its spans by id (what a link
    from an alert opens); ``tasks``, its task in the task list of its service (heavier: the poll loads the
    collector like ~5 dashboards refreshing at once, and takes CPU from ingest)."""
    client = httpx.Client(timeout=30)
    hdr = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {INGEST_KEY}"}
    read = {"Authorization": f"Bearer {READ_KEY}"}
    n = 0
    while not stop.is_set():
        n += 1
        t_next = time.monotonic() + 0.5
        service = f"probe-{os.getpid()}-{n}"
        body, tid, n_spans = probe_body(service, seed=10_000 + n)
        t0 = time.monotonic()
        while True:  # honour 503 like any sender
            r = client.post(c.url + "/v1/traces", content=body, headers=hdr)
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("retry-after", 1)))
        seen = False
        while time.monotonic() - t0 < 30:
            tq = time.monotonic()
            if how == "tasks":
                r = client.get(c.url + "/api/v1/tasks", params={"service": service, "limit": 1}, headers=read)
                visible = r.status_code == 200 and r.json()["items"]
            else:
                r = client.get(c.url + f"/api/v1/traces/{tid}", headers=read)
                visible = r.status_code == 200 and len(r.json()["spans"]) == n_spans
            query_s.append(time.monotonic() - tq)
            if visible:
                delays.append(time.monotonic() - t0)
                seen = True
                break
            time.sleep(0.2)  # each query costs the collector CPU
        if not seen:
            misses.append(tid)
        stop.wait(max(0.0, t_next - time.monotonic()))
    client.close()


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by OS thread name: Python threads are all "python" (event loop, decode workers, and the
    writer thread, which runs chDB's insert pipeline itself); chDB's own pools have their names."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def hist(m: dict[str, float], name: str) -> str:
    total, count = m.get(f"{name}_sum", 0.0), m.get(f"{name}_count", 0.0)
    mean = total / count * 1000 if count else math.nan
    return f"{name}: count {count:.0f}, sum {total:.2f} s, mean {mean:.1f} ms"


# --- main -------------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of the load")
    ap.add_argument("--senders", type=int, default=2, help="sender processes")
    ap.add_argument("--bodies", type=int, default=24, help="distinct base requests (512 spans each)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max seconds to wait for the drain")
    ap.add_argument("--profile-out", help="run the collector under py-spy and write this flamegraph (.svg/.json)")
    ap.add_argument("--profile-gil", action="store_true", help="py-spy: only samples of the thread holding the GIL")
    ap.add_argument("--no-probes", action="store_true", help="no freshness probes (no read queries during the load)")
    ap.add_argument("--probe", choices=("trace", "tasks"), default="trace",
                    help="what a freshness probe polls: the trace by id (default) or the service's task list")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("--collector-env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for the collector, e.g. AGENTWATCH_SUMMARY_INTERVAL=3600 (repeatable)")
    args = ap.parse_args()

    bodies, spans = build_bodies(args.bodies, seed=7)
    total_bytes = sum(map(len, bodies))
    print(f"workload: {len(bodies)} requests, {sum(spans) / len(bodies):.0f} spans a request, "
          f"{total_bytes / sum(spans):.0f} B a span (uncompressed protobuf)", flush=True)  # fmt: skip
    ceil = ceilings(bodies, spans)
    print(f"ceiling before the load (one core, spans per CPU-s): plain decode+walk {ceil['plain_walk']:,.0f}, "
          f"collector otlp.walk {ceil['collector_walk']:,.0f}, ParseFromString only {ceil['parse_only']:,.0f}, "
          f"generic (MessageToDict) {ceil['generic_walk']:,.0f}",
          flush=True)  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-ingest-"))
    c: Collector | None = None
    procs: list[mp.Process] = []
    stop = threading.Event()
    try:
        extra = dict(kv.split("=", 1) for kv in args.collector_env)
        c = Collector(tmp, args.profile_out, extra, ["--gil"] if args.profile_gil else [])
        peak = [0]
        engine_peak = [0.0]
        at_peak: dict[str, int] = {}
        delays: list[float] = []
        misses: list[str] = []
        query_s: list[float] = []
        threads = [
            threading.Thread(target=sample_rss, args=(c, stop, peak, at_peak), daemon=True),
            threading.Thread(target=probe_freshness, args=(c, stop, delays, misses, query_s, args.probe), daemon=True),
        ]
        memory = threading.Thread(target=sample_store_memory, args=(c, stop, engine_peak), daemon=True)
        cpu0 = c.ps.cpu_times()
        host0 = psutil.cpu_times()
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        t_start = time.time()
        t_end = t_start + args.seconds
        procs = [ctx.Process(target=sender, args=(i, args.senders, c.port, bodies, spans, t_end, q), daemon=True)
                 for i in range(args.senders)]  # fmt: skip
        for p in procs:
            p.start()
        for t in threads[: 1 if args.no_probes else 2]:
            t.start()
        memory.start()
        results = [q.get(timeout=args.seconds + 120) for _ in procs]
        for p in procs:
            p.join(10)
        t_load = time.time()
        stop.set()
        if not args.no_probes:
            threads[1].join(35)
        accepted = sum(r["accepted"] for r in results)
        services = sorted({f"agent-{i}" for i in range(3)})

        # the drain: wait for the writer (cheap), then confirm through the read API
        deadline = time.time() + args.drain_timeout
        while time.time() < deadline and c.metrics().get("agentwatch_spans_stored_total", 0) < accepted:
            time.sleep(0.1)
        persisted = 0
        t_done = math.nan
        while time.time() < deadline:
            t_q = time.time()
            persisted = sum(read_get(c, "/api/v1/overview", service=s).json()["spans"] for s in services)
            if persisted >= accepted:
                t_done = t_q
                break
            time.sleep(0.2)
        threads[0].join(1)
        cpu1, host1 = c.ps.cpu_times(), psutil.cpu_times()
        by_thread = thread_cpu(c.ps.pid)
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        host_busy = sum(host1) - host1.idle - host1.iowait - (sum(host0) - host0.idle - host0.iowait)
        m = c.metrics()
        ceil_after = ceilings(bodies, spans)  # the machine is shared: average the ceiling before and after
        ceil = {k: (v + ceil_after[k]) / 2 for k, v in ceil.items()}
        elapsed = t_done - t_start
        rate = persisted / elapsed if elapsed == elapsed else math.nan
        lat = [x for r in results for x in r["latencies"]]
        out = {
            "seconds": args.seconds, "senders": args.senders, "accepted": accepted, "persisted": persisted,
            "load_s": t_load - t_start, "drain_s": t_done - t_load, "persisted_per_s": rate,
            "accepted_per_s": accepted / (t_load - t_start), "ceiling_per_core": ceil["plain_walk"],
            "ratio": rate / ceil["plain_walk"], "collector_walk_per_core": ceil["collector_walk"],
            "generic_walk_per_core": ceil["generic_walk"],
            "fresh_p50": pct(delays, 0.5), "fresh_p99": pct(delays, 0.99), "probes": len(delays),
            "probe_misses": len(misses), "peak_rss_mib": peak[0] / 2**20,
            "peak_rss_anonymous_mib": at_peak.get("Anonymous", 0) / 2**20,
            "engine_peak_mib": engine_peak[0] / 2**20,
            "busy_503": sum(r["busy"] for r in results), "errors": sum(r["errors"] for r in results),
            "collector_cpu_s": cpu_s, "spans_per_collector_cpu_s": persisted / cpu_s if cpu_s else math.nan,
            "host_busy_cores": host_busy / (t_done - t_start) if elapsed == elapsed else math.nan,
            "req_p50_ms": pct(lat, 0.5) * 1000, "req_p99_ms": pct(lat, 0.99) * 1000,
        }  # fmt: skip
        print(f"ceiling, mean of before and after the load: plain decode+walk {ceil['plain_walk']:,.0f}, "
              f"collector otlp.walk {ceil['collector_walk']:,.0f}, generic (MessageToDict) "
              f"{ceil['generic_walk']:,.0f} spans per CPU-s")  # fmt: skip
        print(f"load: {out['load_s']:.1f} s, {args.senders} senders, {accepted:,} spans accepted "
              f"({out['accepted_per_s']:,.0f}/s), 503s {out['busy_503']}, errors {out['errors']}, "
              f"request latency p50 {out['req_p50_ms']:.0f} ms p99 {out['req_p99_ms']:.0f} ms")  # fmt: skip
        print(f"drain: {out['drain_s']:.1f} s after the load; persisted (queryable) {persisted:,} spans")
        probe_path = "/api/v1/tasks" if args.probe == "tasks" else "/api/v1/traces/{id}"
        print(f"PERSISTED: {rate:,.0f} spans/s   CEILING: {ceil['plain_walk']:,.0f} spans/s per core   "
              f"RATIO: {out['ratio']:.2f}x (against the collector's own otlp.walk: "
              f"{rate / ceil['collector_walk']:.2f}x; against the generic decode, MessageToDict: "
              f"{rate / ceil['generic_walk']:.2f}x)")  # fmt: skip
        print(f"FRESHNESS: p50 {out['fresh_p50']:.2f} s, p99 {out['fresh_p99']:.2f} s "
              f"({len(delays)} probes, {len(misses)} not seen in 30 s; polled every 0.2 s, {probe_path} answered "
              f"in p50 {pct(query_s, 0.5) * 1000:.0f} ms, p99 {pct(query_s, 0.99) * 1000:.0f} ms)")  # fmt: skip
        anon = at_peak.get("Anonymous", 0)
        engine = engine_peak[0] / 2**20
        print(f"PEAK RSS: {out['peak_rss_mib']:,.0f} MiB: anonymous (heaps) {anon / 2**20:,.0f} MiB, file-backed "
              f"(mapped libraries) {(at_peak.get('Rss', 0) - anon) / 2**20:,.0f} MiB; the engine's own accounting "
              f"at its peak (sampled every 0.5 s): {engine:,.0f} MiB")  # fmt: skip
        print(
            f"collector CPU: {cpu_s:.1f} s = {out['spans_per_collector_cpu_s']:,.0f} spans per CPU-second; "
            f"host busy {out['host_busy_cores']:.2f} of {psutil.cpu_count()} cores (senders, probes, others)"
        )
        print(
            "collector CPU by thread name (s, whole life): "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1])[:8])
        )
        print("collector /metrics: " + hist(m, "agentwatch_decode_seconds"))
        print("collector /metrics: " + hist(m, "agentwatch_insert_seconds"))
        parts = []
        for part in ("tasks", "calls", "loops"):
            label = '{part="' + part + '"}'
            took = m.get(f"agentwatch_summary_seconds_sum{label}", 0.0)
            n = m.get(f"agentwatch_summary_seconds_count{label}", 0)
            parts.append(f"{part} {took:.2f} s in {n:.0f} passes")
        print("collector /metrics: summarizer " + ", ".join(parts))
        checks = [
            ("persisted >= 30,000 spans/s", rate >= 30_000), ("ratio >= 0.5x", out["ratio"] >= 0.5),
            ("freshness p99 < 2 s", out["fresh_p99"] < 2), ("peak RSS < 1 GiB", peak[0] < 2**30),
        ]  # fmt: skip
        print("targets: " + ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in checks))
        if args.json:
            print(json.dumps(out))
        return 0
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
        if c is not None:
            c.stop()
            if c.proc.returncode not in (0, -signal.SIGTERM, None):
                print(f"collector exit code {c.proc.returncode}:\n{c.log()}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
