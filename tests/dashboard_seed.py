"""Seed data for the dashboard tests: a few hand-built agent traces with known figures (exact tokens, costs
carried on the spans, durations, outcomes, a loop, a decision, an unpriced model), sent as OTLP protobuf."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field

from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from otlp_payloads import raw_request, raw_span, unique

MS = 1_000_000
PROMPT = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Where is order A-1001? Mail <EMAIL>"}]}])
COMPLETION = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "It shipped yesterday."}]}])


@dataclass
class Seeded:
    """What was sent, for the assertions."""

    support: str  # service names
    research: str
    traces: dict[str, str] = field(default_factory=dict)  # label -> trace id (hex)
    spans: int = 0


class _Trace:
    def __init__(self, start_ns: int) -> None:
        self.tid = os.urandom(16)
        self.start = start_ns
        self.spans: list[PbSpan] = []
        self.root = os.urandom(8)

    def span(self, name: str, attrs: dict, *, at_ms: float, dur_ms: float, parent: bytes | None = None,
             span_id: bytes | None = None, error: str = "") -> bytes:  # fmt: skip
        sid = span_id or os.urandom(8)
        s = raw_span(self.tid, sid, name, attrs, parent=b"" if parent == b"" else (parent or self.root),
                     start_ns=self.start + int(at_ms * MS), dur_ns=int(dur_ms * MS))  # fmt: skip
        if error:
            s.status.code = Status.STATUS_CODE_ERROR
            s.status.message = error
        self.spans.append(s)
        return sid

    def task(self, name: str, outcome: str, dur_ms: float, *, error: str = "") -> None:
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, "agentwatch.task.name": name,
                 "agentwatch.task.outcome": outcome}  # fmt: skip
        if error:
            attrs["error.type"] = error
        self.span(f"invoke_agent {name}", attrs, at_ms=0, dur_ms=dur_ms, parent=b"", span_id=self.root, error=error)

    def chat(self, model: str, inp: int, out: int, *, at_ms: float, dur_ms: float, cost: float | None,
             provider: str = "openai", content: bool = False) -> None:  # fmt: skip
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
                 "gen_ai.response.model": model, "gen_ai.response.id": f"resp-{os.urandom(6).hex()}",
                 "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out}  # fmt: skip
        if cost is not None:
            attrs["agentwatch.cost.usd"] = cost
        if content:
            attrs["gen_ai.input.messages"] = PROMPT
            attrs["gen_ai.output.messages"] = COMPLETION
        self.span(f"chat {model}", attrs, at_ms=at_ms, dur_ms=dur_ms)

    def tool(self, name: str, args: str, *, at_ms: float, dur_ms: float, result: str = "", error: str = "") -> None:
        attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.arguments": args}
        if result:
            attrs["gen_ai.tool.call.result"] = result
        if error:
            attrs["error.type"] = error
        self.span(f"execute_tool {name}", attrs, at_ms=at_ms, dur_ms=dur_ms, error=error)


def seed(collector, *, prefix: str | None = None, now_ns: int | None = None) -> Seeded:
    """Five tasks. Service ``<prefix>-support``, in the last hour: triage (ok, 1200 ms, gpt-4o 1000/200 tokens,
    $0.01, a decision, a tool with content), refund (error, 3000 ms, 2000/300, $0.02, a failing tool),
    triage (escalated, 5000 ms, 500/50, $0.005, search_orders x4 with the same arguments: a loop); and 3 h ago
    triage (ok, 600 ms, 100/10, $0.001). Service ``<prefix>-research``: research (ok, 10000 ms, claude
    3000/1000 $0.05 and an unpriced model 100/10)."""
    prefix = prefix or unique("dash")
    now = now_ns or time.time_ns()
    base = now - 10 * 60 * 1_000_000_000
    out = Seeded(support=f"{prefix}-support", research=f"{prefix}-research")

    t1 = _Trace(base)
    t1.task("triage", "ok", 1200)
    t1.chat("gpt-4o", 1000, 200, at_ms=50, dur_ms=400, cost=0.01, content=True)
    t1.span("decision route", {"gen_ai.operation.name": "decision", "agentwatch.decision.name": "route",
                               "agentwatch.decision.choice": "lookup", "agentwatch.decision.confidence": 0.82,
                               "agentwatch.decision.options": json.dumps(["refund", "lookup", "escalate"]),
                               "agentwatch.decision.reasoning": "the message names an order id"},
            at_ms=460, dur_ms=5)  # fmt: skip
    t1.tool("search_orders", '{"q": "A-1001"}', at_ms=470, dur_ms=100, result='{"status": "shipped"}')

    t2 = _Trace(base + 60 * 1_000_000_000)
    t2.task("refund", "error", 3000, error="PaymentError")
    t2.chat("gpt-4o", 2000, 300, at_ms=100, dur_ms=800, cost=0.02)
    t2.tool("refund_api", '{"order": "A-1002"}', at_ms=1000, dur_ms=250, error="TimeoutError")

    t3 = _Trace(base + 120 * 1_000_000_000)
    t3.task("triage", "escalated", 5000)
    t3.chat("gpt-4o", 500, 50, at_ms=100, dur_ms=300, cost=0.005)
    for i in range(4):
        t3.tool("search_orders", '{"q": "A-2002"}', at_ms=500 + 100 * i, dur_ms=50)

    t5 = _Trace(now - 3 * 3600 * 1_000_000_000)
    t5.task("triage", "ok", 600)
    t5.chat("gpt-4o", 100, 10, at_ms=10, dur_ms=200, cost=0.001)

    t4 = _Trace(base + 180 * 1_000_000_000)
    t4.task("research", "ok", 10_000)
    t4.chat("claude-3-5-sonnet", 3000, 1000, at_ms=100, dur_ms=6000, cost=0.05, provider="anthropic")
    t4.chat("mystery-model-x", 100, 10, at_ms=6200, dur_ms=500, cost=None, provider="acme")

    support = [t1, t2, t3, t5]
    for service, traces in ((out.support, support), (out.research, [t4])):
        spans = [s for t in traces for s in t.spans]
        r = collector.post_traces(raw_request(service, spans).SerializeToString())
        assert r.status_code == 200, r.text
        out.spans += len(spans)
    for label, t in (("triage_ok", t1), ("refund", t2), ("loop", t3), ("old", t5), ("research", t4)):
        out.traces[label] = t.tid.hex()
    collector.wait_for(
        lambda: all(collector.get(f"/api/v1/traces/{t}").status_code == 200 for t in out.traces.values())
        and collector.api("/api/v1/overview", service=out.support)["spans"] >= 13,
        what="seeded traces stored",
    )  # fmt: skip
    return out


def seed_fleet(collector, *, prefix: str | None = None, tasks: int = 240, hours: float = 24, rng_seed: int = 7,
               now_ns: int | None = None) -> list[str]:  # fmt: skip
    """A day of a small fleet (three services, realistic durations, tokens and outcomes, some loops, a model
    switch halfway): for screenshots and render timing. Returns the service names."""
    rng = random.Random(rng_seed)
    prefix = prefix or unique("fleet")
    now = now_ns or time.time_ns()
    services = [f"{prefix}-support-bot", f"{prefix}-research-agent", f"{prefix}-billing-agent"]
    by_service: dict[str, list[PbSpan]] = {s: [] for s in services}
    models = {0: ("gpt-4o-mini", "openai", 0.15e-6, 0.6e-6), 1: ("claude-3-5-sonnet", "anthropic", 3e-6, 15e-6),
              2: ("gpt-4o", "openai", 2.5e-6, 10e-6)}  # fmt: skip
    tools = {0: ["lookup_order", "refund"], 1: ["web_search", "fetch_page"], 2: ["get_invoice", "charge_card"]}
    for n in range(tasks):
        k = n % 3
        frac = n / tasks
        start = now - int((1 - frac) * hours * 3600e9) + rng.randint(0, 10**9)
        t = _Trace(start)
        model, provider, pin, pout = models[k]
        if k == 2 and frac > 0.5:
            model, pin, pout = "gpt-4o-mini", 0.15e-6, 0.6e-6  # the cheaper model after the switch (drift)
        steps = rng.randint(1, 4) + (2 if k == 2 and frac > 0.5 else 0)
        at = 20.0
        looping = rng.random() < 0.05
        failed = rng.random() < 0.08
        for i in range(steps):
            inp = int(rng.lognormvariate(7.3, 0.5)) * (20 if rng.random() < 0.01 else 1)
            out = int(rng.lognormvariate(5, 0.6))
            dur = rng.lognormvariate(6.5, 0.45) * (3 if k == 1 else 1)
            cost = round(inp * pin + out * pout, 9) if model != "gpt-4o-mini" or rng.random() > 0.02 else None
            t.chat(model, inp, out, at_ms=at, dur_ms=dur, cost=cost, provider=provider, content=i == 0)
            at += dur + 5
            tool = rng.choice(tools[k])
            reps = 4 if looping and i == 0 else 1
            for _ in range(reps):
                tdur = rng.lognormvariate(4.5, 0.7) * (8 if tool == "charge_card" and rng.random() < 0.1 else 1)
                err = "TimeoutError" if rng.random() < (0.15 if tool in ("charge_card", "fetch_page") else 0.02) else ""
                args = {"id": 0} if looping else {"id": n, "step": i}
                t.tool(tool, json.dumps(args), at_ms=at, dur_ms=tdur, error=err)
                at += tdur + 5
        outcome = "loop_stopped" if looping else ("error" if failed else rng.choice(["ok"] * 12 + ["escalated"]))
        t.task(["triage", "research", "billing"][k], outcome, at + 10, error="ValueError" if failed else "")
        by_service[services[k]].extend(t.spans)
    for service, spans in by_service.items():
        for i in range(0, len(spans), 500):
            r = collector.post_traces(raw_request(service, spans[i : i + 500]).SerializeToString())
            assert r.status_code == 200, r.text
    return services
