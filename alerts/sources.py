"""Where rules get their figures: the same query layer the read API serves (so a page and a chart never
disagree), in-process over the store or over HTTP through the read API.

- ``Reader``: one call per read-API endpoint (``overview``, ``tasks``, ``latency``, ``loops``,
  ``anomalies/cost``, ``drift``, ``ingestion``). ``StoreReader`` calls the query functions in the collector
  process; ``ApiReader`` calls ``GET /api/v1/<endpoint>`` (for ``agentwatch alerts check --api``).
- metric sources (``METRIC_SOURCES``) serve threshold rules: which metrics, which ``group_by`` labels;
- detectors (``DETECTORS``) serve detector rules from the analytics endpoints.
Both are registries: a new source or detector is a class and one ``register`` call.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentwatch.alerts.model import OPS, Rule, Sample

log = logging.getLogger(__name__)


class SourceUnavailable(RuntimeError):
    """The endpoint a rule needs is not served here (an older collector): the rule is skipped, loudly."""


# --- readers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    start: float  # epoch seconds
    end: float
    service: str = ""


class Reader(ABC):
    """The read API's endpoints as calls. ``project`` is the project evaluated (an API key fixes its own)."""

    project: str

    @abstractmethod
    def get(self, endpoint: str, window: Window, **params: Any) -> dict[str, Any]: ...


def _store_endpoints() -> dict[str, Callable[..., dict[str, Any]]]:
    from agentwatch.collector import queries

    out: dict[str, Callable[..., dict[str, Any]]] = {
        "overview": lambda store, scope: queries.overview(store, scope),
        "tasks": lambda store, scope, **p: queries.tasks(store, scope, queries.TaskFilter(**p)),
    }
    try:  # the analytics modules (collector/analytics_*.py); a build without them still serves the basics
        from agentwatch.collector import analytics_anomalies, analytics_drift, analytics_loops, analytics_stats

        def drift(store, scope, *, psi: float = 0.2, **p):
            return analytics_drift.drift(store, scope, psi_threshold=psi, **p)

        out.update(
            {
                "latency": analytics_stats.latency,
                "ingestion": analytics_stats.ingestion,
                "loops": analytics_loops.loops,
                "anomalies/cost": analytics_anomalies.cost_anomalies,
                "drift": drift,
            }
        )
    except ImportError:  # pragma: no cover - depends on the build
        log.info("analytics modules not found: detector rules other than loop are unavailable")
    return out


class StoreReader(Reader):
    """In the collector process: the query functions themselves, scoped to ``project``."""

    def __init__(self, store: Any, project: str) -> None:
        self.store = store
        self.project = project
        self._endpoints = _store_endpoints()

    def get(self, endpoint: str, window: Window, **params: Any) -> dict[str, Any]:
        from agentwatch.collector.queries import Scope

        fn = self._endpoints.get(endpoint)
        if fn is None:
            raise SourceUnavailable(f"this collector does not serve {endpoint}")
        scope = Scope(self.project, int(window.start * 1000), int(window.end * 1000), window.service)
        return fn(self.store, scope, **params)


class ApiReader(Reader):
    """Through the read API (a running collector holds the embedded store): ``GET /api/v1/<endpoint>``."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 30.0, client: Any = None) -> None:
        import httpx

        self.base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}"}
        self._client = client or httpx.Client(timeout=timeout)
        self.project = "(api key's project)"

    def get(self, endpoint: str, window: Window, **params: Any) -> dict[str, Any]:
        q = {"from": f"{window.start:.3f}", "to": f"{window.end:.3f}", **{k: _q(v) for k, v in params.items()}}
        if window.service:
            q["service"] = window.service
        r = self._client.get(f"{self.base}/api/v1/{endpoint}", params=q, headers=self._headers)
        if r.status_code == 404 and "Not Found" in r.text:
            raise SourceUnavailable(f"{self.base} does not serve /api/v1/{endpoint}")
        if r.status_code != 200:
            raise RuntimeError(f"GET /api/v1/{endpoint}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()


def _q(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


# --- helpers -----------------------------------------------------------------------------------------
MAX_TASK_PAGES = 10
TASK_PAGE = 1000


def fetch_tasks(reader: Reader, window: Window, **filters: Any) -> list[dict[str, Any]]:
    """Every task of the window (up to 10,000, newest first)."""
    out: list[dict[str, Any]] = []
    for page in range(MAX_TASK_PAGES):
        res = reader.get("tasks", window, limit=TASK_PAGE, offset=page * TASK_PAGE, **filters)
        out.extend(res["items"])
        if len(res["items"]) < TASK_PAGE:
            break
    return out


def services(reader: Reader, window: Window) -> list[str]:
    if window.service:
        return [window.service]
    try:
        res = reader.get("latency", window, kind="all", group_by="service", interval="window")
        return sorted({i["group"] for i in res["items"] if i.get("group")})
    except SourceUnavailable:
        return sorted({t["service"] for t in fetch_tasks(reader, window)})


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _pct(values: list[float], q: float) -> float | None:
    """Linear interpolation between ranks (numpy's default, the analytics' definition)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


LATENCY_KINDS = ("task", "llm", "tool")
PCTS = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
LATENCY_METRICS = {f"latency_ms.{k}.{p}" for k in LATENCY_KINDS for p in PCTS}


# --- metric sources (threshold rules) ----------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    value: float | None
    count: int


class MetricSource(ABC):
    name: str
    metrics: frozenset[str]
    group_by: frozenset[str]

    def serves(self, metric: str, group_by: tuple[str, ...]) -> bool:
        return metric in self.metrics and set(group_by) <= self.group_by

    @abstractmethod
    def figures(self, reader: Reader, rule: Rule, window: Window) -> dict[tuple[str, ...], Figure]:
        """Group label values (in ``rule.group_by`` order) -> the metric's value and sample count."""


OVERVIEW_METRICS = {
    "tasks", "completion_rate", "error_rate", "escalation_rate", "llm_calls", "tool_calls", "spans", "errors",
    "tokens", "input_tokens", "output_tokens", "cost_usd", "cost_per_hour", "cost_per_task", "unpriced_llm_calls",
} | LATENCY_METRICS  # fmt: skip


def _count_for(metric: str, ov: dict[str, Any]) -> int:
    if metric.startswith("latency_ms.llm") or metric in ("llm_calls", "tokens", "input_tokens", "output_tokens",
                                                         "unpriced_llm_calls"):
        return ov["llm_calls"]
    if metric.startswith("latency_ms.tool") or metric == "tool_calls":
        return ov["tool_calls"]
    if metric in ("spans", "errors"):
        return ov["spans"]
    return ov["tasks"]


def overview_value(metric: str, ov: dict[str, Any], window_s: float) -> float | None:
    if metric == "tokens":
        return float(ov["input_tokens"] + ov["output_tokens"])
    if metric == "cost_per_hour":
        return ov["cost_usd"] / (window_s / 3600)
    if metric == "cost_per_task":
        return ov["cost_usd"] / ov["tasks"] if ov["tasks"] else None
    v = _dig(ov, metric)
    return None if v is None else float(v)


class OverviewSource(MetricSource):
    """``overview`` for the project or per service: exact span-level figures."""

    name = "overview"
    metrics = frozenset(OVERVIEW_METRICS)
    group_by = frozenset({"service"})

    def figures(self, reader: Reader, rule: Rule, window: Window) -> dict[tuple[str, ...], Figure]:
        assert rule.metric
        out = {}
        targets = services(reader, window) if "service" in rule.group_by else [window.service]
        for svc in targets:
            ov = reader.get("overview", Window(window.start, window.end, svc))
            key = (svc,) if rule.group_by else ()
            out[key] = Figure(overview_value(rule.metric, ov, window.end - window.start), _count_for(rule.metric, ov))
        return out


TASK_METRICS = {
    "tasks", "completion_rate", "error_rate", "escalation_rate", "llm_calls", "tool_calls", "tokens",
    "input_tokens", "output_tokens", "cost_usd", "cost_per_hour", "cost_per_task", "unpriced_llm_calls",
    "loop_tasks", "latency_ms.task.p50", "latency_ms.task.p95", "latency_ms.task.p99",
}  # fmt: skip
TASK_LABELS = {"service": "service", "task": "name", "outcome": "outcome"}


def task_value(metric: str, rows: list[dict[str, Any]], window_s: float) -> float | None:
    n = len(rows)
    if metric == "tasks":
        return float(n)
    if metric.endswith("_rate"):
        want = {"completion_rate": "ok", "error_rate": "error", "escalation_rate": "escalated"}[metric]
        return sum(r["outcome"] == want for r in rows) / n if n else None
    if metric == "tokens":
        return float(sum(r["input_tokens"] + r["output_tokens"] for r in rows))
    if metric in ("cost_usd", "cost_per_hour", "cost_per_task"):
        cost = sum(r["cost_usd"] or 0.0 for r in rows)
        if metric == "cost_per_hour":
            return cost / (window_s / 3600)
        if metric == "cost_per_task":
            return cost / n if n else None
        return cost
    if metric == "loop_tasks":
        return float(sum(bool(r["loop"]) for r in rows))
    if metric.startswith("latency_ms.task."):
        return _pct([r["duration_ms"] for r in rows if r["duration_ms"] is not None], PCTS[metric.rsplit(".", 1)[1]])
    return float(sum(r[metric] or 0 for r in rows))


class TasksSource(MetricSource):
    """Per-task rollups grouped by service, task name or outcome (up to 10,000 tasks a window)."""

    name = "tasks"
    metrics = frozenset(TASK_METRICS)
    group_by = frozenset(TASK_LABELS)

    def figures(self, reader: Reader, rule: Rule, window: Window) -> dict[tuple[str, ...], Figure]:
        assert rule.metric
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for t in fetch_tasks(reader, window):
            groups[tuple(str(t[TASK_LABELS[g]] or "") for g in rule.group_by)].append(t)
        if not rule.group_by and not groups:
            groups[()] = []
        return {k: Figure(task_value(rule.metric, rows, window.end - window.start), len(rows))
                for k, rows in groups.items()}  # fmt: skip


class LatencySource(MetricSource):
    """``latency`` analytics: P50/P95/P99 of one span kind per model, tool, service, task or provider."""

    name = "latency"
    metrics = frozenset(LATENCY_METRICS)
    group_by = frozenset({"model", "tool", "service", "task", "provider", "operation"})

    def serves(self, metric: str, group_by: tuple[str, ...]) -> bool:
        return super().serves(metric, group_by) and len(group_by) <= 1

    def figures(self, reader: Reader, rule: Rule, window: Window) -> dict[tuple[str, ...], Figure]:
        assert rule.metric
        _, kind, p = rule.metric.split(".")
        g = rule.group_by[0] if rule.group_by else "none"
        res = reader.get("latency", window, kind=kind, group_by=g, interval="window")
        return {((i["group"] or "",) if rule.group_by else ()): Figure(i[p], i["count"]) for i in res["items"]}


INGEST_METRICS = {"ingest_rejected_spans", "ingest_dropped_spans", "ingest_pending_spans", "ingest_accepted_spans"}


class IngestionSource(MetricSource):
    """``ingestion`` health for the project: spans rejected, dropped, still pending."""

    name = "ingestion"
    metrics = frozenset(INGEST_METRICS)
    group_by = frozenset()

    def figures(self, reader: Reader, rule: Rule, window: Window) -> dict[tuple[str, ...], Figure]:
        assert rule.metric
        t = reader.get("ingestion", window, interval="window")["totals"]
        stage = rule.metric.removeprefix("ingest_").removesuffix("_spans")
        return {(): Figure(float(t.get(stage, 0)), int(t.get("accepted", 0)))}


METRIC_SOURCES: list[MetricSource] = []


def register_source(src: MetricSource) -> None:
    METRIC_SOURCES.append(src)


for _s in (OverviewSource(), TasksSource(), LatencySource(), IngestionSource()):
    register_source(_s)


def all_metrics() -> list[str]:
    return sorted(set().union(*(s.metrics for s in METRIC_SOURCES)))


def resolve_metric(metric: str, group_by: tuple[str, ...]) -> str | None:
    """None when some source serves ``metric`` by ``group_by``, else what is wrong (for the rules file)."""
    if not any(metric in s.metrics for s in METRIC_SOURCES):
        return f"unknown metric {metric!r}; known: {', '.join(all_metrics())}"
    if not any(s.serves(metric, group_by) for s in METRIC_SOURCES):
        ok = sorted({",".join(sorted(s.group_by)) or "(none)" for s in METRIC_SOURCES if metric in s.metrics})
        return f"group_by {list(group_by)} is not served for {metric}; possible labels: {'; '.join(ok)}"
    return None


def pick_source(metric: str, group_by: tuple[str, ...]) -> MetricSource:
    for s in METRIC_SOURCES:
        if s.serves(metric, group_by):
            return s
    raise SourceUnavailable(f"no source serves {metric} by {list(group_by)}")


def evaluate_threshold(reader: Reader, rule: Rule, now: float) -> list[Sample]:
    assert rule.metric
    src = pick_source(rule.metric, rule.group_by)
    cur = src.figures(reader, rule, Window(now - rule.window, now, rule.service))
    base: dict[tuple[str, ...], Figure] = {}
    if rule.baseline:
        bw = Window(now - rule.window - rule.baseline.window, now - rule.window, rule.service)
        base = src.figures(reader, rule, bw)
    cmp = OPS[rule.op]
    out = []
    for key, fig in cur.items():
        labels = dict(zip(rule.group_by, key, strict=True))
        thresholds = [rule.threshold] if rule.threshold is not None else []
        b = base.get(key)
        bval = b.value if b and b.value is not None and b.count >= max(rule.min_samples, 1) else None
        if rule.baseline:
            if bval is None:
                thresholds = []  # no baseline yet: a baseline rule does not fire on its first figures
            else:
                thresholds.append(bval * rule.baseline.factor)
        effective = None
        if thresholds:
            effective = max(thresholds) if rule.op in (">", ">=") else min(thresholds)
        active = (
            fig.value is not None and effective is not None and fig.count >= rule.min_samples
            and cmp(fig.value, effective)
        )  # fmt: skip
        details: dict[str, Any] = {"metric": rule.metric, "window": rule.window}
        if rule.baseline:
            details["baseline_factor"] = rule.baseline.factor
        out.append(Sample(labels, fig.value, fig.count, bool(active), effective, bval, details))
    return out


# --- detectors ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    type: type
    default: Any
    lo: float
    hi: float


class Detector(ABC):
    name: str
    group_by: tuple[str, ...]
    default_group_by: tuple[str, ...]
    params: dict[str, Param] = {}

    def check_param(self, key: str, value: Any) -> str | None:
        p = self.params.get(key)
        if p is None:
            return f"unknown parameter; {self.name} takes {', '.join(self.params) or 'none'}"
        if isinstance(value, bool) or not isinstance(value, int | float) or (p.type is int and value != int(value)):
            return f"must be {'a whole number' if p.type is int else 'a number'}, got {value!r}"
        if not p.lo <= value <= p.hi:
            return f"must be between {p.lo:g} and {p.hi:g}, got {value!r}"
        return None

    def p(self, rule: Rule) -> dict[str, Any]:
        return {k: p.type(rule.param(k, p.default)) for k, p in self.params.items()}

    @abstractmethod
    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]: ...


def _group(rule: Rule, item: dict[str, Any], fields: dict[str, str]) -> tuple[str, ...]:
    return tuple(str(item.get(fields[g]) or "") for g in rule.group_by)


def _samples(
    rule: Rule, groups: dict[tuple[str, ...], list[dict[str, Any]]], value: Callable[[list[dict]], float],
    details: Callable[[list[dict]], dict[str, Any]], threshold: float | None = None,
    baseline: Callable[[list[dict]], float | None] | None = None,
) -> list[Sample]:  # fmt: skip
    out = []
    for key, items in groups.items():
        n = len(items)
        out.append(
            Sample(dict(zip(rule.group_by, key, strict=True)), value(items), n, n >= max(rule.min_samples, 1),
                   threshold, baseline(items) if baseline else None, details(items))
        )  # fmt: skip
    return out


def _top_traces(items: list[dict[str, Any]], n: int = 5) -> list[str]:
    return [i["trace_id"] for i in items[:n] if i.get("trace_id")]


class LoopDetector(Detector):
    """Tasks in the window where the same tool with the same arguments ran ``repeats`` times in a row (or
    the same error repeats, or a cycle): one alert per group while any such task is in the window."""

    name = "loop"
    group_by = ("service", "task", "tool")
    default_group_by = ("service", "task")
    params = {"repeats": Param(int, 3, 2, 100)}
    FIELDS = {"service": "service", "task": "name", "tool": "tool"}

    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]:
        p = self.p(rule)
        window = Window(now - rule.window, now, rule.service)
        try:
            items = reader.get("loops", window, repeats=p["repeats"], limit=1000)["items"]
        except SourceUnavailable:  # an older collector: the loop flag of the tasks
            items = [dict(t, repeats=t.get("max_repeats"), tool=None)
                     for t in fetch_tasks(reader, window, loop=True)]  # fmt: skip
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for i in items:
            groups[_group(rule, i, self.FIELDS)].append(i)
        return _samples(
            rule, groups, value=lambda xs: float(len(xs)), threshold=None,
            details=lambda xs: {
                "looping_tasks": len(xs), "repeats_threshold": p["repeats"],
                "max_repeats": max((x.get("repeats") or 0) for x in xs),
                "tools": sorted({x["tool"] for x in xs if x.get("tool")})[:5],
                "wasted_cost_usd": round(sum(x.get("wasted_cost_usd") or 0.0 for x in xs), 6),
                "still_running": sum(bool(x.get("running")) for x in xs),
                "trace_ids": _top_traces(xs),
            },
        )  # fmt: skip


class _AnomalyDetector(Detector):
    params = {
        "baseline_hours": Param(float, 168, 1, 24 * 90),
        "z": Param(float, 4.0, 0, 1000),
        "ratio": Param(float, 3.0, 1, 1e6),
        "min_baseline": Param(int, 20, 3, 100_000),
    }

    def _fetch(self, reader: Reader, rule: Rule, now: float) -> dict[str, Any]:
        p = self.p(rule)
        q = {"baseline_hours": p["baseline_hours"], "min_samples": p["min_baseline"]}
        if self.name == "token_bomb":
            q.update(bomb_z=p["z"], bomb_ratio=p["ratio"])
        else:
            q.update(z=p["z"], ratio=p["ratio"])
        return reader.get("anomalies/cost", Window(now - rule.window, now, rule.service), **q)


class CostAnomalyDetector(_AnomalyDetector):
    """Tasks whose cost is far above the robust (median/MAD) baseline of their service and task name."""

    name = "cost_anomaly"
    group_by = ("service", "task")
    default_group_by = ("service", "task")
    FIELDS = {"service": "service", "task": "name"}

    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]:
        items = self._fetch(reader, rule, now)["items"]
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for i in sorted(items, key=lambda x: -(x.get("score") or 0)):
            groups[_group(rule, i, self.FIELDS)].append(i)
        return _samples(
            rule, groups, value=lambda xs: max(x["cost_usd"] or 0.0 for x in xs),
            baseline=lambda xs: xs[0].get("baseline_usd"),
            details=lambda xs: {"anomalous_tasks": len(xs), "max_score": xs[0].get("score"),
                                "max_ratio": xs[0].get("ratio"), "unit": "usd", "trace_ids": _top_traces(xs)},
        )  # fmt: skip


class TokenBombDetector(_AnomalyDetector):
    """LLM calls whose input tokens are far above the norm of their service, task and model."""

    name = "token_bomb"
    group_by = ("service", "task", "model")
    default_group_by = ("service", "task")
    FIELDS = {"service": "service", "task": "name", "model": "model"}

    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]:
        items = self._fetch(reader, rule, now)["token_bombs"]
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for i in sorted(items, key=lambda x: -(x.get("score") or 0)):
            groups[_group(rule, i, self.FIELDS)].append(i)
        return _samples(
            rule, groups, value=lambda xs: float(max(x["input_tokens"] for x in xs)),
            baseline=lambda xs: xs[0].get("baseline_input_tokens"),
            details=lambda xs: {"calls": len(xs), "max_score": xs[0].get("score"), "unit": "input tokens",
                                "models": sorted({x["model"] for x in xs if x.get("model")}),
                                "trace_ids": _top_traces(xs)},
        )  # fmt: skip


class SpendSpikeDetector(_AnomalyDetector):
    """An hour of a service's spend far above its hourly baseline (a service-wide cost alert)."""

    name = "spend_spike"
    group_by = ("service",)
    default_group_by = ("service",)

    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]:
        items = self._fetch(reader, rule, now)["spend_spikes"]
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for i in sorted(items, key=lambda x: -(x.get("score") or 0)):
            groups[_group(rule, i, {"service": "service"})].append(i)
        return _samples(
            rule, groups, value=lambda xs: xs[0]["cost_usd"], baseline=lambda xs: xs[0].get("baseline_usd"),
            details=lambda xs: {"hour": xs[0].get("hour"), "ratio": xs[0].get("ratio"), "unit": "usd/hour"},
        )  # fmt: skip


class DriftDetector(Detector):
    """Per service and metric, the window against the baseline before it: PSI >= ``psi`` and a significant
    KS / chi-square test (Bonferroni-corrected)."""

    name = "drift"
    group_by = ("service", "metric")
    default_group_by = ("service", "metric")
    params = {
        "baseline_hours": Param(float, 168, 1, 24 * 90),
        "psi": Param(float, 0.2, 0.001, 10),
        "alpha": Param(float, 0.05, 1e-9, 0.5),
        "min_baseline": Param(int, 30, 5, 100_000),
    }

    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]:
        p = self.p(rule)
        res = reader.get(
            "drift", Window(now - rule.window, now, rule.service), baseline_hours=p["baseline_hours"], psi=p["psi"],
            alpha=p["alpha"], min_samples=p["min_baseline"],
        )  # fmt: skip
        out = []
        for i in res["items"]:
            key = _group(rule, i, {"service": "service", "metric": "metric"})
            details = {k: i.get(k) for k in ("metric", "test", "p_adjusted", "baseline_n", "current_n",
                                              "baseline_median", "current_median", "baseline_value", "current_value")
                       if i.get(k) is not None}  # fmt: skip
            details["psi_threshold"] = p["psi"]
            out.append(Sample(dict(zip(rule.group_by, key, strict=True)), i["psi"], int(i.get("current_n") or 0),
                              bool(i["drifted"]) and int(i.get("current_n") or 0) >= rule.min_samples, p["psi"],
                              None, details))  # fmt: skip
        return _merge(out)


class ModelChangeDetector(Detector):
    """A model (or model version, ``gen_ai.response.model``) seen in the window and not in the baseline."""

    name = "model_change"
    group_by = ("service", "model")
    default_group_by = ("service", "model")
    params = {"baseline_hours": Param(float, 168, 1, 24 * 90)}

    def evaluate(self, reader: Reader, rule: Rule, now: float) -> list[Sample]:
        p = self.p(rule)
        res = reader.get("drift", Window(now - rule.window, now, rule.service), baseline_hours=p["baseline_hours"])
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for e in res.get("model_changes", []):
            groups[_group(rule, e, {"service": "service", "model": "model"})].append(e)
        return _samples(
            rule, groups, value=lambda xs: float(sum(x["calls"] for x in xs)),
            details=lambda xs: {"type": xs[0]["type"], "previous_models": xs[0]["previous_models"],
                                "first_seen": xs[0]["time"]},
        )  # fmt: skip


def _merge(samples: list[Sample]) -> list[Sample]:
    """One sample per group (a coarser group_by folds several rows): active if any is, the largest value."""
    by: dict[tuple, Sample] = {}
    for s in samples:
        k = tuple(sorted(s.labels.items()))
        prev = by.get(k)
        if prev is None or (s.active, s.value or 0) > (prev.active, prev.value or 0):
            by[k] = s
    return list(by.values())


DETECTORS: dict[str, Detector] = {}


def register_detector(d: Detector) -> None:
    DETECTORS[d.name] = d


for _d in (LoopDetector(), CostAnomalyDetector(), TokenBombDetector(), SpendSpikeDetector(), DriftDetector(),
           ModelChangeDetector()):  # fmt: skip
    register_detector(_d)


def evaluate(reader: Reader, rule: Rule, now: float) -> list[Sample]:
    """A rule's samples at ``now``; raises when its figures cannot be had (the engine then leaves the rule's
    alerts as they are: an outage of the store never resolves, nor fires, anything)."""
    if rule.detector:
        return DETECTORS[rule.detector].evaluate(reader, rule, now)
    return evaluate_threshold(reader, rule, now)
