"""A synthetic agent fleet with known truth, for measuring the detectors (bench/detectors.py) and for tests.

Deterministic per seed. Four services of agent runs (an invoke_agent root; LLM calls interleaved with tool
calls; tokens, cost, latency and errors drawn from per-service distributions), over a baseline window and a
current window right after it. Injected, with the truth recorded:

- loops (``loop_rate`` of tasks): the same tool with the same arguments 3-6 times in a row, the same tool
  failing with the same error 3-6 times, or a 2-step cycle 3-4 times; ``running_rate`` of them (and of normal
  tasks) have no root span yet, as if still running;
- near-misses in normal tasks, which must not be flagged: one immediate identical retry, the same tool 3x
  with other arguments, A,B,A,B (two cycles), two identical failures in a row;
- token bombs (``bomb_rate``): one LLM call with 20-60x the call site's input tokens;
- runaway tasks (``runaway_rate``): 25-40 steps instead of 2-5 (a cost anomaly without a bomb);
- a latency spike: one tool of one service 8x slower for 30 minutes of the current window;
- drift (``drift=True``): ``svc-triage`` switches response model version (pricier) in the current window
  (drifted: model_mix, cost_per_task; a model-version-change event), ``svc-research`` replaces a tool by
  another (drifted: tool_mix). With ``drift=False`` the current window is drawn like the baseline.

Rows come out as the writer's Arrow schema (``to_ipc``), so they can be inserted straight into a store.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field

from agentwatch.collector.migrations import INSERT_COLUMNS, SPANS_TABLE
from agentwatch.collector.writer import to_ipc

# price per million tokens (input, output)
PRICES = {
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "gpt-4o-mini-2025-01-01": (0.60, 2.40),
    "gpt-4o-2024-08-06": (2.50, 10.0),
    "claude-3-5-haiku-20241022": (0.80, 4.0),
}


@dataclass(frozen=True)
class ServiceSpec:
    task: str
    provider: str
    request_model: str
    model: str
    tools: dict[str, float]  # tool -> weight
    tool_ms: dict[str, float]  # tool -> median latency
    input_median: float
    output_median: float


SERVICES: dict[str, ServiceSpec] = {
    "svc-support": ServiceSpec(
        "support", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18",
        {"search_kb": 0.4, "lookup_order": 0.35, "send_email": 0.25},
        {"search_kb": 120, "lookup_order": 60, "send_email": 200}, 1800, 180,
    ),
    "svc-research": ServiceSpec(
        "research", "openai", "gpt-4o", "gpt-4o-2024-08-06",
        {"web_search": 0.5, "fetch_page": 0.4, "summarize": 0.1},
        {"web_search": 400, "fetch_page": 300, "summarize": 50, "web_search_v2": 400}, 4000, 400,
    ),
    "svc-billing": ServiceSpec(
        "billing", "anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022",
        {"query_db": 0.6, "refund": 0.4}, {"query_db": 30, "refund": 150}, 1200, 120,
    ),
    "svc-triage": ServiceSpec(
        "triage", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18",
        {"classify": 0.5, "route": 0.3, "escalate": 0.2}, {"classify": 80, "route": 40, "escalate": 90}, 900, 60,
    ),
}  # fmt: skip

DRIFT_TRUTH = {"svc-triage": {"model_mix", "cost_per_task"}, "svc-research": {"tool_mix"}}
DRIFT_MODEL = "gpt-4o-mini-2025-01-01"
SPIKE = ("svc-support", "search_kb")


@dataclass(frozen=True)
class FleetConfig:
    seed: int = 0
    project: str = "fleet"
    current_start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    current_hours: float = 24.0
    baseline_hours: float = 7 * 24.0
    baseline_tasks: int = 2000  # per service
    current_tasks: int = 1000  # per service
    loop_rate: float = 0.04
    running_rate: float = 0.3
    bomb_rate: float = 0.005
    runaway_rate: float = 0.005
    near_miss_rate: float = 0.25
    drift: bool = True
    spike: bool = True
    services: tuple[str, ...] = tuple(SERVICES)

    @property
    def current_end_ms(self) -> int:
        return self.current_start_ms + int(self.current_hours * 3_600_000)

    @property
    def baseline_start_ms(self) -> int:
        return self.current_start_ms - int(self.baseline_hours * 3_600_000)

    @property
    def drift_at_ms(self) -> int:
        return self.current_start_ms + int(self.current_hours * 3_600_000 * 0.05)

    @property
    def spike_window_ms(self) -> tuple[int, int]:
        s = self.current_start_ms + int(self.current_hours * 3_600_000 * 0.4)
        return s, s + 30 * 60_000


@dataclass
class Truth:
    loops: dict[str, str] = field(default_factory=dict)  # trace id -> pattern
    running: set[str] = field(default_factory=set)  # traces without a root span
    bombs: dict[str, str] = field(default_factory=dict)  # trace id -> span id of the bomb call
    runaways: set[str] = field(default_factory=set)
    current_tasks: set[str] = field(default_factory=set)  # every task started in the current window
    service_of: dict[str, str] = field(default_factory=dict)
    drift: dict[str, set[str]] = field(default_factory=dict)
    model_change: tuple[str, str, int] | None = None  # service, new model, ms of the switch
    spike: tuple[str, str, int, int] | None = None  # service, tool, start ms, end ms


@dataclass
class Fleet:
    config: FleetConfig
    columns: dict[str, list]
    truth: Truth

    @property
    def spans(self) -> int:
        return len(self.columns["TraceId"])

    def ipc(self) -> bytes:
        return to_ipc(self.columns)

    def insert(self, store, *, batch: int = 200_000) -> int:
        n = self.spans
        if n <= batch:
            return store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, self.ipc())
        written = 0
        for i in range(0, n, batch):
            part = {k: v[i : i + batch] for k, v in self.columns.items()}
            written += store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(part))
        return written


def _hash(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()


class _Builder:
    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self.cols: dict[str, list] = {k: [] for k in INSERT_COLUMNS}

    def span(
        self, *, tid: str, sid: str, parent: str, name: str, service: str, start_ns: int, dur_ns: int,
        attrs: dict[str, str], error: str = "", cost: float | None = None,
    ) -> None:  # fmt: skip
        if error:
            attrs = {**attrs, "error.type": error}
        row = {
            "Timestamp": start_ns, "TraceId": tid, "SpanId": sid, "ParentSpanId": parent, "TraceState": "",
            "SpanName": name, "SpanKind": "Internal" if not parent else "Client", "ServiceName": service,
            "ResourceAttributes": [("service.name", service)], "ScopeName": "fleet", "ScopeVersion": "1",
            "SpanAttributes": list(attrs.items()), "Duration": dur_ns, "StatusCode": "Error" if error else "Unset",
            "StatusMessage": "", "Events.Timestamp": [], "Events.Name": [], "Events.Attributes": [],
            "Links.TraceId": [], "Links.SpanId": [], "Links.TraceState": [], "Links.Attributes": [],
            "ProjectId": self.cfg.project, "CostUsd": cost, "PriceSource": "fleet" if cost is not None else "",
        }  # fmt: skip
        for k, v in row.items():
            self.cols[k].append(v)


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def generate(cfg: FleetConfig = FleetConfig()) -> Fleet:
    rng = random.Random(cfg.seed)
    b = _Builder(cfg)
    truth = Truth()
    if cfg.drift:
        truth.drift = {s: set(m) for s, m in DRIFT_TRUTH.items() if s in cfg.services}
        if "svc-triage" in cfg.services:
            truth.model_change = ("svc-triage", DRIFT_MODEL, cfg.drift_at_ms)
    if cfg.spike and SPIKE[0] in cfg.services:
        truth.spike = (*SPIKE, *cfg.spike_window_ms)
    for service in cfg.services:
        spec = SERVICES[service]
        for cur, n, lo, hi in (
            (False, cfg.baseline_tasks, cfg.baseline_start_ms, cfg.current_start_ms),
            (True, cfg.current_tasks, cfg.current_start_ms, cfg.current_end_ms),
        ):
            starts = sorted(rng.randint(lo, hi - 120_000) for _ in range(n))
            for start_ms in starts:
                _task(rng, b, truth, cfg, service, spec, start_ms, cur)
    return Fleet(cfg, b.cols, truth)


def _task(
    rng: random.Random, b: _Builder, truth: Truth, cfg: FleetConfig, service: str, spec: ServiceSpec, start_ms: int,
    cur: bool,
) -> None:  # fmt: skip
    tid = rng.randbytes(16).hex()
    root = rng.randbytes(8).hex()
    drifted = cfg.drift and cur and start_ms >= cfg.drift_at_ms
    model = DRIFT_MODEL if drifted and service == "svc-triage" else spec.model
    tools = dict(spec.tools)
    if drifted and service == "svc-research":
        tools["web_search_v2"] = tools.pop("web_search")
    r = rng.random()
    loop = ""
    if r < cfg.loop_rate:
        loop = rng.choices(["repeat", "error", "cycle"], [0.6, 0.2, 0.2])[0]
    bomb = not loop and rng.random() < cfg.bomb_rate
    runaway = not loop and not bomb and rng.random() < cfg.runaway_rate
    steps = rng.randint(25, 40) if runaway else rng.randint(2, 5)
    names, weights = list(tools), list(tools.values())

    # the tool-call plan: (tool, args id, error)
    plan: list[tuple[str, str, str]] = []
    for _ in range(steps):
        tool = rng.choices(names, weights)[0]
        plan.append((tool, str(rng.randrange(10_000)), "TimeoutError" if rng.random() < 0.03 else ""))
    if not loop and rng.random() < cfg.near_miss_rate:
        i = rng.randrange(len(plan))
        t, a, _ = plan[i]
        kind = rng.randrange(4)
        if kind == 0:  # one immediate identical retry
            plan[i + 1 : i + 1] = [(t, a, "")]
        elif kind == 1:  # same tool three times, other arguments
            plan[i + 1 : i + 1] = [
                (t, str(rng.randrange(10_000, 20_000)), ""),
                (t, str(rng.randrange(20_000, 30_000)), ""),
            ]
        elif kind == 2:  # A,B,A,B: two cycles
            t2 = rng.choice([x for x in names if x != t] or [t])
            a2 = str(rng.randrange(10_000))
            plan[i:i] = [(t, a, ""), (t2, a2, ""), (t, a, ""), (t2, a2, "")]
        else:  # two identical failures, then success
            plan[i:i] = [(t, a, "RateLimitError"), (t, str(rng.randrange(10_000)), "RateLimitError")]
    if loop:
        i = rng.randrange(len(plan) + 1)
        t = rng.choice(names)
        if loop == "repeat":
            a = str(rng.randrange(10_000))
            ins = [(t, a, "")] * rng.randint(3, 6)
        elif loop == "error":
            ins = [(t, str(rng.randrange(10_000)), "RateLimitError") for _ in range(rng.randint(3, 6))]
        else:
            t2 = rng.choice([x for x in names if x != t])
            a, a2 = str(rng.randrange(10_000)), str(rng.randrange(10_000))
            ins = [(t, a, ""), (t2, a2, "")] * rng.randint(3, 4)
        # break identical neighbours so the planted loop is the only one
        plan[i:i] = ins
        for j in (i - 1, i + len(ins)):
            if 0 <= j < len(plan) and plan[j][0] == t:
                plan[j] = (rng.choice([x for x in names if x != t]), plan[j][1], "")
        truth.loops[tid] = loop

    has_root = not (rng.random() < (cfg.running_rate if loop else 0.02))
    t_ns = start_ms * 1_000_000 + 5_000_000
    bomb_at = rng.randrange(len(plan) + 1) if bomb else -1
    in_price, out_price = PRICES[model]
    for step in range(len(plan) + 1):
        # an LLM call decides the next step
        inp = int(_lognormal(rng, spec.input_median * (1 + 0.1 * min(step, 6)), 0.3))
        if step == bomb_at:
            inp = int(inp * rng.uniform(20, 60))
        out = max(1, int(_lognormal(rng, spec.output_median, 0.4)))
        dur = int((200 + out * 8) * math.exp(rng.gauss(0, 0.2)) * 1_000_000)
        sid = rng.randbytes(8).hex()
        b.span(
            tid=tid, sid=sid, parent=root, name=f"chat {spec.request_model}", service=service, start_ns=t_ns,
            dur_ns=dur, cost=(inp * in_price + out * out_price) / 1e6,
            attrs={"gen_ai.operation.name": "chat", "gen_ai.provider.name": spec.provider,
                   "gen_ai.request.model": spec.request_model, "gen_ai.response.model": model,
                   "gen_ai.usage.input_tokens": str(inp), "gen_ai.usage.output_tokens": str(out),
                   "gen_ai.response.id": f"resp-{sid}"},
        )  # fmt: skip
        if step == bomb_at:
            truth.bombs[tid] = sid
        t_ns += dur + 2_000_000
        if step == len(plan):
            break
        tool, args, err = plan[step]
        ms = _lognormal(rng, spec.tool_ms.get(tool, 100), 0.35)
        if (
            cfg.spike
            and (service, tool) == SPIKE
            and cfg.spike_window_ms[0] <= t_ns // 1_000_000 < cfg.spike_window_ms[1]
        ):
            ms *= 8
        dur = int(ms * 1_000_000)
        b.span(
            tid=tid, sid=rng.randbytes(8).hex(), parent=root, name=f"execute_tool {tool}", service=service,
            start_ns=t_ns, dur_ns=dur, error=err,
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                   "agentwatch.tool.args_hash": _hash(tool, args)},
        )  # fmt: skip
        t_ns += dur + 2_000_000
    if runaway:
        truth.runaways.add(tid)
    truth.service_of[tid] = service
    if cur:
        truth.current_tasks.add(tid)
    if not has_root:
        truth.running.add(tid)
        return
    o = rng.random()
    outcome, error = ("ok", "")
    if loop and o < 0.5:
        outcome = "loop_stopped"
    elif o < 0.05:
        outcome, error = "error", "AgentError"
    elif o < 0.08:
        outcome = "escalated"
    b.span(
        tid=tid, sid=root, parent="", name=f"invoke_agent {spec.task}", service=service,
        start_ns=start_ms * 1_000_000, dur_ns=t_ns - start_ms * 1_000_000 + 1_000_000, error=error,
        attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": spec.task,
               "agentwatch.task.name": spec.task, "agentwatch.task.outcome": outcome},
    )  # fmt: skip


def by_window(fleet: Fleet) -> dict[str, list[int]]:
    """Span indexes of the current window, by kind (tests compare percentiles on them)."""
    out: dict[str, list[int]] = defaultdict(list)
    lo, hi = fleet.config.current_start_ms * 1_000_000, fleet.config.current_end_ms * 1_000_000
    for i, ts in enumerate(fleet.columns["Timestamp"]):
        if lo <= ts < hi:
            out["all"].append(i)
    return out
