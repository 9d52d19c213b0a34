"""Soak and burst: a bounded run at a sustained rate, then 5x the rate for 30 s, then recovery.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 9000] [--burst-factor 5] [--burst-seconds 30]

Starts ``agentwatch collector`` (embedded chDB, temporary data dir, free port; bench/ingest.py's
``Collector``) and drives it with the same agent-like 512-span requests as bench/ingest.py, paced to
``--rate`` spans/s. Every sender uses the official OpenTelemetry exporter's HTTP client
(opentelemetry-exporter-otlp-proto-http: ``OTLPSpanExporter``), which retries 429/502/503/504 and
honours Retry-After; the requests are pre-serialized, so the senders call the exporter's transport
(``OTLPSpanExporter._client.export``, what ``export()`` calls after encoding) instead of re-encoding SDK
spans in Python, which would cap a sender at ~15k spans/s a core on this machine.

Phases: ``soak`` (``--minutes`` at ``--rate``), ``burst`` (``--burst-factor`` x the rate for
``--burst-seconds``), ``recovery`` (``--recovery-seconds`` at ``--rate``). Every ``--sample`` seconds it
records the collector's RSS and /metrics (queue depth, spool bytes, 503s, accepted, stored, dropped);
a probe trace every ~0.5 s measures freshness (sent -> visible in /api/v1/tasks). At the end it waits
for the drain and checks the totals: spans the exporters got a 2xx for == spans the read API counts ==
the collector's stored counter, and nothing dropped. It reports per-minute freshness p99, the slope of
RSS and queue depth over the second half of the soak, the burst's 503s, and the recovery time (burst
end -> queue depth back to the soak's level and probes fresh again). It stops by itself, stops the
collector and removes its temporary directory. ``--json-out`` writes every sample and the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import INGEST_KEY, MARKER, Collector, build_bodies, pct, probe_freshness, read_get  # noqa: E402

PHASES = {"soak": 0, "burst": 1, "recovery": 2}
SERVICES = [f"agent-{i}" for i in range(3)]  # bench/workload.py's service names


# --- senders: the official exporter, paced ---------------------------------------------------------------
def _sender_thread(phase: int, idx: int, th: int, url: str, bodies: list[bytes], spans: list[int],
                   rate: float, t_end: float, res: dict) -> None:  # fmt: skip
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exp = OTLPSpanExporter(endpoint=url + "/v1/traces", headers={"Authorization": f"Bearer {INGEST_KEY}"},
                           timeout=120)  # fmt: skip
    seq = 0
    i = idx * 7 + th
    t_next = time.monotonic()
    res["t_first"] = min(res.get("t_first", math.inf), time.time())
    while time.time() < t_end:
        seq += 1
        n = spans[i % len(bodies)]
        body = bodies[i % len(bodies)].replace(MARKER, struct.pack(">BBHI", 0xB0 + phase, idx, th, seq))
        t0 = time.monotonic()
        r = exp._client.export(body)  # retries 503 honouring Retry-After, up to its 120 s deadline / 6 tries
        res["latencies"].append(time.monotonic() - t0)
        if r.success:
            res["accepted"] += n
        else:
            res["failed"] += n
            res["fail_status"][str(r.status_code)] = res["fail_status"].get(str(r.status_code), 0) + 1
        i += 1
        t_next += n / rate
        now = time.monotonic()
        if t_next > now:
            time.sleep(t_next - now)
        elif now - t_next > 2.0:  # more than 2 s behind (503s, a slow collector): do not try to catch up
            res["behind_s"] += now - t_next
            t_next = now
    exp.shutdown()


def sender(phase: int, idx: int, threads: int, url: str, bodies: list[bytes], spans: list[int], rate: float,
           t_end: float, out: mp.Queue) -> None:  # fmt: skip
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # a WARNING per retry otherwise
    results = [{"accepted": 0, "failed": 0, "fail_status": {}, "behind_s": 0.0, "latencies": []}
               for _ in range(threads)]  # fmt: skip
    ts = [threading.Thread(target=_sender_thread, args=(phase, idx, t, url, bodies, spans, rate / threads,
                                                        t_end, results[t]))
          for t in range(threads)]  # fmt: skip
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    fail_status: dict[str, int] = {}
    for r in results:
        for k, v in r["fail_status"].items():
            fail_status[k] = fail_status.get(k, 0) + v
    out.put({"phase": phase, "idx": idx, "accepted": sum(r["accepted"] for r in results),
             "failed": sum(r["failed"] for r in results), "fail_status": fail_status,
             "behind_s": sum(r["behind_s"] for r in results),
             "t_first": min(r.get("t_first", math.inf) for r in results),
             "latencies": [x for r in results for x in r["latencies"]]})  # fmt: skip


def run_phase(name: str, c: Collector, procs: int, threads: int, rate: float, seconds: float,
              bodies: list[bytes], spans: list[int]) -> dict:  # fmt: skip
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    t_end = time.time() + seconds
    ps = [ctx.Process(target=sender, args=(PHASES[name], i, threads, c.url, bodies, spans, rate / procs, t_end, q),
                      daemon=True) for i in range(procs)]  # fmt: skip
    for p in ps:
        p.start()
    try:
        res = [q.get(timeout=seconds + 300) for _ in ps]
    finally:
        for p in ps:
            p.join(10)
            if p.is_alive():
                p.kill()
    lat = [x for r in res for x in r["latencies"]]
    fail_status: dict[str, int] = {}
    for r in res:
        for k, v in r["fail_status"].items():
            fail_status[k] = fail_status.get(k, 0) + v
    return {"phase": name, "offered_rate": rate, "seconds": seconds, "accepted": sum(r["accepted"] for r in res),
            "failed": sum(r["failed"] for r in res), "fail_status": fail_status,
            "behind_s": sum(r["behind_s"] for r in res), "t_end": time.time(),
            "t_first": min(r["t_first"] for r in res),
            "export_p50_ms": pct(lat, 0.5) * 1000, "export_p99_ms": pct(lat, 0.99) * 1000,
            "export_max_ms": max(lat, default=math.nan) * 1000}  # fmt: skip


# --- sampling ---------------------------------------------------------------------------------------------
class TimedList(list):
    """probe_freshness appends each delay; this also records when."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, v) -> None:  # noqa: ANN001
        super().append(v)
        self.times.append(time.time())


def _metric_sum(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(prefix))


def sample(c: Collector, t0: float, phase: list[str]) -> dict:
    m = c.metrics()
    return {
        "t": round(time.time() - t0, 1), "phase": phase[0], "rss_mib": round(c.ps.memory_info().rss / 2**20, 1),
        "queue_depth": m.get("agentwatch_queue_depth", math.nan),
        "spool_mib": m.get("agentwatch_spool_bytes", 0) / 2**20,
        "http_503": m.get('agentwatch_ingest_requests_total{status="503"}', 0.0),
        "accepted": m.get("agentwatch_spans_accepted_total", 0.0),
        "stored": m.get("agentwatch_spans_stored_total", 0.0),
        "dropped": _metric_sum(m, "agentwatch_spans_dropped_total"),
        "writer_errors": _metric_sum(m, "agentwatch_writer_errors_total"),
    }  # fmt: skip


def sampler(c: Collector, t0: float, every: float, phase: list[str], out: list[dict], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            s = sample(c, t0, phase)
        except Exception as e:  # noqa: BLE001 - a slow /metrics under load is a data point, not a crash
            print(f"  sample failed: {e!r}", flush=True)
        else:
            out.append(s)
            print(f"  t={s['t']:6.0f}s {s['phase']:8s} rss {s['rss_mib']:6.0f} MiB  queue {s['queue_depth']:8.0f}  "
                  f"spool {s['spool_mib']:7.1f} MiB  503s {s['http_503']:5.0f}  accepted {s['accepted']:11,.0f}  "
                  f"stored {s['stored']:11,.0f}  dropped {s['dropped']:.0f}", flush=True)  # fmt: skip
        stop.wait(every)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second)."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else math.nan


# --- main -------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    ap.add_argument("--rate", type=float, default=9000.0, help="sustained spans/s (~60%% of bench/ingest.py's)")
    ap.add_argument("--senders", type=int, default=2, help="sender processes (soak and recovery; 2 threads each)")
    ap.add_argument("--burst-factor", type=float, default=5.0)
    ap.add_argument("--burst-seconds", type=float, default=30.0)
    ap.add_argument("--burst-senders", type=int, default=3, help="sender processes for the burst (4 threads each)")
    ap.add_argument("--recovery-seconds", type=float, default=60.0, help="back at --rate after the burst")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--spool-max-mib", type=int, default=64,
                    help="AGENTWATCH_SPOOL_MAX_BYTES for the run (the default 2 GiB would absorb the whole burst "
                         "without a 503; 64 MiB is ~5x the spool's peak at the sustained rate)")  # fmt: skip
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--json-out", help="write samples and summary here")
    args = ap.parse_args()

    bodies, spans = build_bodies(24, seed=7)
    print(f"workload: {len(bodies)} requests of ~{sum(spans) / len(bodies):.0f} spans, "
          f"{sum(map(len, bodies)) / sum(spans):.0f} B a span; soak {args.minutes:g} min at {args.rate:,.0f} spans/s, "
          f"burst {args.burst_seconds:g} s at {args.rate * args.burst_factor:,.0f} spans/s, "
          f"spool limit {args.spool_max_mib} MiB", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-soak-"))
    c: Collector | None = None
    stop = threading.Event()
    try:
        c = Collector(tmp, None, {"AGENTWATCH_SPOOL_MAX_BYTES": str(args.spool_max_mib << 20)}, [])
        t0 = time.time()
        phase = ["soak"]
        samples: list[dict] = []
        delays = TimedList()
        misses: list[str] = []
        query_s: list[float] = []
        threads = [
            threading.Thread(target=sampler, args=(c, t0, args.sample, phase, samples, stop), daemon=True),
            threading.Thread(target=probe_freshness, args=(c, stop, delays, misses, query_s), daemon=True),
        ]
        for t in threads:
            t.start()
        phases = []
        bounds = {}
        for name, procs, thr, rate, secs in [
            ("soak", args.senders, 2, args.rate, args.minutes * 60),
            ("burst", args.burst_senders, 4, args.rate * args.burst_factor, args.burst_seconds),
            ("recovery", args.senders, 2, args.rate, args.recovery_seconds),
        ]:
            phase[0] = name
            ts = time.time()
            print(f"phase {name}: {secs:.0f} s at {rate:,.0f} spans/s ({procs} processes x {thr} threads)", flush=True)
            res = run_phase(name, c, procs, thr, rate, secs, bodies, spans)
            bounds[name] = (ts - t0, res["t_end"] - t0)
            res["achieved_rate"] = res["accepted"] / (res["t_end"] - res["t_first"])  # from the first send
            phases.append(res)
            print(f"phase {name}: accepted {res['accepted']:,} spans ({res['achieved_rate']:,.0f}/s), "
                  f"exporter gave up on {res['failed']:,} {res['fail_status'] or ''}, behind schedule "
                  f"{res['behind_s']:.0f} s, export p50 {res['export_p50_ms']:.0f} ms "
                  f"p99 {res['export_p99_ms']:.0f} ms max {res['export_max_ms']:.0f} ms", flush=True)  # fmt: skip
        phase[0] = "drain"
        accepted = sum(p["accepted"] for p in phases)
        t_load_end = time.time()
        deadline = t_load_end + args.drain_timeout
        while time.time() < deadline and c.metrics().get("agentwatch_spans_stored_total", 0) < accepted:
            time.sleep(0.5)
        persisted = -1
        while time.time() < deadline:
            persisted = sum(read_get(c, "/api/v1/overview", service=s).json()["spans"] for s in SERVICES)
            if persisted >= accepted:
                break
            time.sleep(1)
        drain_s = time.time() - t_load_end
        stop.set()
        threads[1].join(35)
        final = sample(c, t0, ["final"])
        # the collector's counters also count the freshness probes (one small trace each, sent once, honouring 503)
        probe_spans = read_get(c, "/api/v1/overview").json()["spans"] - persisted  # every service, less the agents
        samples.append(final)

        # --- figures ---
        soak_lo, soak_hi = bounds["soak"]
        half = [s for s in samples if s["phase"] == "soak" and s["t"] >= (soak_lo + soak_hi) / 2]
        rss_slope = slope([(s["t"], s["rss_mib"]) for s in half]) * 60
        q_slope = slope([(s["t"], s["queue_depth"]) for s in half]) * 60
        soak_s = [s for s in samples if s["phase"] == "soak" and s["t"] > soak_lo + 30]
        rss_mean = sum(s["rss_mib"] for s in half) / len(half) if half else math.nan
        q_max_soak = max((s["queue_depth"] for s in soak_s), default=0)
        rss_flat = abs(rss_slope) * (soak_hi - soak_lo) / 2 / 60 < 0.10 * rss_mean
        q_flat = q_slope * (soak_hi - soak_lo) / 2 / 60 < 2 * args.rate
        per_min = []
        for k in range(int(math.ceil((time.time() - t0) / 60))):
            d = [v for v, t in zip(delays, delays.times, strict=True) if k * 60 <= t - t0 < (k + 1) * 60]
            if d:
                per_min.append((k, len(d), pct(d, 0.5), pct(d, 0.99)))
        soak_d = [v for v, t in zip(delays, delays.times, strict=True) if soak_lo <= t - t0 < soak_hi]
        b_lo, b_hi = bounds["burst"]
        pre_503 = max((s["http_503"] for s in samples if s["phase"] == "soak"), default=0.0)
        total_503 = final["http_503"]
        # recovery: first sample after the burst with queue depth back at the soak's level and a fresh probe
        rec_t = math.nan
        for s in samples:
            if s["t"] >= b_hi and s["queue_depth"] <= max(q_max_soak, 2 * args.rate):
                later = [v for v, t in zip(delays, delays.times, strict=True) if t - t0 >= s["t"] - 5]
                if later and later[0] < 2.0:
                    rec_t = s["t"] - b_hi
                    break
        rec_d = [v for v, t in zip(delays, delays.times, strict=True) if b_hi + 30 <= t - t0 < bounds["recovery"][1]]
        summary = {
            "rate_target": args.rate, "soak_minutes": args.minutes, "phases": phases,
            "soak_rate_achieved": phases[0]["achieved_rate"], "accepted_by_exporters": accepted,
            "stored_metric": final["stored"], "accepted_metric": final["accepted"], "persisted_read_api": persisted,
            "dropped": final["dropped"], "writer_errors": final["writer_errors"], "drain_s": drain_s,
            "probe_spans": probe_spans,
            "totals_exact": persisted == accepted and final["stored"] == final["accepted"] == accepted + probe_spans
            and final["dropped"] == 0,
            "rss_mib_second_half_mean": rss_mean, "rss_slope_mib_per_min": rss_slope,
            "queue_slope_spans_per_min": q_slope, "rss_flat": rss_flat, "queue_flat": q_flat,
            "rss_peak_mib": max(s["rss_mib"] for s in samples), "queue_max_soak": q_max_soak,
            "queue_max_burst": max((s["queue_depth"] for s in samples if s["phase"] in ("burst", "recovery")),
                                   default=math.nan),
            "spool_max_mib": max(s["spool_mib"] for s in samples),
            "fresh_soak_p50": pct(soak_d, 0.5), "fresh_soak_p99": pct(soak_d, 0.99), "probes": len(delays),
            "probe_misses": len(misses), "fresh_per_minute": per_min, "fresh_recovery_p99": pct(rec_d, 0.99),
            "http_503_soak": pre_503, "http_503_burst_and_after": total_503 - pre_503,
            "recovery_s": rec_t, "burst_bounds_s": [b_lo, b_hi], "read_query_p99_ms": pct(query_s, 0.99) * 1000,
        }  # fmt: skip
        print("\nfreshness by minute (probes, p50, p99 s): "
              + "; ".join(f"m{k}: {n}, {a:.2f}, {b:.2f}" for k, n, a, b in per_min))  # fmt: skip
        print(f"SOAK: target {args.rate:,.0f} spans/s, achieved {summary['soak_rate_achieved']:,.0f}/s for "
              f"{args.minutes:g} min; 503s during the soak {pre_503:.0f}")  # fmt: skip
        print(f"RSS second half: mean {rss_mean:,.0f} MiB, slope {rss_slope:+.2f} MiB/min -> "
              f"{'flat' if rss_flat else 'GROWING'}; peak {summary['rss_peak_mib']:,.0f} MiB")  # fmt: skip
        print(f"QUEUE second half: slope {q_slope:+,.0f} spans/min -> {'flat' if q_flat else 'GROWING'}; "
              f"max during soak {q_max_soak:,.0f} spans")  # fmt: skip
        print(f"FRESHNESS soak: p50 {summary['fresh_soak_p50']:.2f} s, p99 {summary['fresh_soak_p99']:.2f} s "
              f"({len(soak_d)} probes; {len(misses)} probes never seen in 30 s over the whole run)")  # fmt: skip
        b = phases[1]
        print(f"BURST: offered {b['offered_rate']:,.0f} spans/s for {args.burst_seconds:g} s, accepted "
              f"{b['accepted']:,} ({b['achieved_rate']:,.0f}/s); 503s from the burst on {total_503 - pre_503:.0f}; "
              f"queue max {summary['queue_max_burst']:,.0f}, spool max {summary['spool_max_mib']:.0f} MiB; "
              f"exporter gave up on {b['failed']:,} spans {b['fail_status'] or ''}")  # fmt: skip
        print(f"RECOVERY: {rec_t:.0f} s after the burst the queue was back to the soak's level with a fresh probe "
              f"(sampled every {args.sample:g} s); freshness p99 in the recovery phase from +30 s: "
              f"{summary['fresh_recovery_p99']:.2f} s")  # fmt: skip
        print(f"TOTALS: exporters got 2xx for {accepted:,} spans; collector accepted {final['accepted']:,.0f}, "
              f"stored {final['stored']:,.0f} (incl. {probe_spans} probe spans); "
              f"read API counts {persisted:,}; dropped {final['dropped']:.0f} -> "
              f"{'EXACT' if summary['totals_exact'] else 'MISMATCH'} (drain {drain_s:.0f} s)")  # fmt: skip
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
        return 0 if summary["totals_exact"] else 1
    finally:
        stop.set()
        if c is not None:
            c.stop()
            if c.proc.returncode not in (0, -signal.SIGTERM, None):
                print(f"collector exit code {c.proc.returncode}:\n{c.log()}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
