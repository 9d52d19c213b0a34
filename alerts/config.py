"""The rules file (YAML), validated at load with errors that name the file, the rule and the field; the
channels from the environment; the built-in rules used when a channel is configured and no file is given.

Format (``alerts/rules.example.yaml`` is the commented version)::

    interval: 30s                 # evaluation period (default AGENTWATCH_ALERT_INTERVAL, else 30s)
    dashboard_url: http://127.0.0.1:8501
    defaults: {window: 5m, for: 0s, repeat_interval: 4h, min_samples: 1, severity: warning, channels: [slack]}
    channels:
      slack: {type: slack, url_env: AGENTWATCH_SLACK_WEBHOOK_URL}
      pagerduty: {type: pagerduty, routing_key_env: AGENTWATCH_PAGERDUTY_ROUTING_KEY}
      audit: {type: webhook, url_env: AUDIT_HOOK_URL, secret_env: AUDIT_HOOK_SECRET}
      console: {type: log}
    rules:
      - {name: llm-p99, metric: latency_ms.llm.p99, op: ">", threshold: 8000, group_by: [service], for: 2m}
      - {name: loops, detector: loop, severity: critical, channels: [slack, pagerduty]}
    inhibit:
      - {source: {scope: project, category: cost}, target: {scope: task, category: cost}, equal: [project]}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentwatch.alerts.model import (
    DEFAULT_INHIBIT,
    OPS,
    Baseline,
    ChannelSpec,
    ChannelType,
    Inhibit,
    Matcher,
    Rule,
    Severity,
    parse_duration,
)
from agentwatch.alerts.sources import DETECTORS, resolve_metric

ENV_SLACK = "AGENTWATCH_SLACK_WEBHOOK_URL"
ENV_PD_KEY = "AGENTWATCH_PAGERDUTY_ROUTING_KEY"
ENV_PD_URL = "AGENTWATCH_PAGERDUTY_EVENTS_URL"
ENV_INTERVAL = "AGENTWATCH_ALERT_INTERVAL"
ENV_RULES = "AGENTWATCH_RULES"
ENV_DASHBOARD = "AGENTWATCH_DASHBOARD_URL"
ENV_LOG_ALERTS = "AGENTWATCH_ALERT_LOG"  # "true": the built-in rules also run with only the log channel
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_INTERVAL = 30.0
DEFAULT_DASHBOARD = "http://127.0.0.1:8501"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_LABELS = {"alertname", "severity", "project"}


class AlertConfigError(ValueError):
    """A rules file (or alert environment) that cannot be used; the message names file, rule and field."""


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...]
    channels: dict[str, ChannelSpec]
    inhibit: tuple[Inhibit, ...] = DEFAULT_INHIBIT
    interval: float = DEFAULT_INTERVAL
    projects: tuple[str, ...] = ()  # empty: every project that has a key
    dashboard_url: str = DEFAULT_DASHBOARD
    source: str = "built-in"
    env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "interval_s": self.interval,
            "rules": [r.describe() for r in self.rules],
            "channels": [c.describe(self.env) for c in self.channels.values()],
        }


def env_channels(env: dict[str, str]) -> dict[str, ChannelSpec]:
    """``log`` always; ``slack`` and ``pagerduty`` when their variables are set."""
    out = {"log": ChannelSpec("log", ChannelType.LOG)}
    if env.get(ENV_SLACK):
        out["slack"] = ChannelSpec("slack", ChannelType.SLACK, url_env=ENV_SLACK)
    if env.get(ENV_PD_KEY):
        out["pagerduty"] = ChannelSpec(
            "pagerduty", ChannelType.PAGERDUTY, routing_key_env=ENV_PD_KEY, url=env.get(ENV_PD_URL) or None
        )
    return out


def builtin_rules(channels: tuple[str, ...]) -> tuple[Rule, ...]:
    """Loops, cost anomalies, P99 latency and drift: what ``agentwatch up`` watches with no rules file."""
    pager = tuple(c for c in channels if c == "pagerduty")
    chat = tuple(c for c in channels if c != "pagerduty") or channels
    return (
        Rule(name="agent-loop", detector="loop", severity=Severity.CRITICAL, channels=chat + pager, window=600,
             group_by=("service", "task"), labels=(("category", "loop"),),
             summary="An agent is looping: the same tool call repeats inside one task"),
        Rule(name="cost-anomaly", detector="cost_anomaly", severity=Severity.WARNING, channels=chat, window=900,
             group_by=("service", "task"), labels=(("category", "cost"), ("scope", "task")),
             summary="Tasks cost far more than their baseline"),
        Rule(name="llm-p99-latency", metric="latency_ms.llm.p99", op=">", threshold=None,
             baseline=Baseline(window=86400, factor=2.0), min_samples=20, for_s=300, severity=Severity.WARNING,
             channels=chat, window=900, group_by=("service",), labels=(("category", "latency"),),
             summary="LLM P99 latency is more than twice its 24 h baseline"),
        Rule(name="drift", detector="drift", severity=Severity.WARNING, channels=chat, window=3600,
             group_by=("service", "metric"), labels=(("category", "drift"),), repeat_interval=24 * 3600,
             summary="Agent behaviour drifted from its baseline (PSI >= 0.2)", every=300),
    )  # fmt: skip


def default_interval(env: dict[str, str]) -> float:
    raw = env.get(ENV_INTERVAL)
    if not raw:
        return DEFAULT_INTERVAL
    try:
        v = parse_duration(raw)
    except ValueError as e:
        raise AlertConfigError(f"{ENV_INTERVAL}: {e}") from None
    if not 0.05 <= v <= 3600:
        raise AlertConfigError(f"{ENV_INTERVAL}: must be between 0.05 s and 1 h, got {raw!r}")
    return v


def load(path: str | Path | None, *, env: dict[str, str] | None = None) -> AlertConfig:
    """The alert configuration: the rules file when given, else the built-in rules when a channel
    (Slack or PagerDuty) is configured in the environment, or ``AGENTWATCH_ALERT_LOG=true`` asks for them on
    the log channel (``agentwatch up`` sets it), else no rules."""
    env = dict(os.environ if env is None else env)
    interval = default_interval(env)
    dashboard = env.get(ENV_DASHBOARD) or DEFAULT_DASHBOARD
    channels = env_channels(env)
    if path is None:
        paging = tuple(c for c in channels if c != "log")
        if env.get(ENV_LOG_ALERTS, "").strip().lower() in ("1", "true", "yes"):
            paging = ("log", *paging)
        rules = builtin_rules(paging) if paging else ()
        return AlertConfig(rules, channels, interval=interval, dashboard_url=dashboard, env=env)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise AlertConfigError(f"{p}: cannot read the rules file: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AlertConfigError(f"{p}: not valid YAML: {e}") from None
    return parse(doc, source=str(p), env=env, interval=interval, dashboard=dashboard, channels=channels)


class _Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.items.append(f"{self.source}: {where}: {msg}")

    def raise_if_any(self) -> None:
        if self.items:
            raise AlertConfigError("\n".join(self.items) if len(self.items) > 1 else self.items[0])


TOP_KEYS = {"version", "interval", "dashboard_url", "projects", "defaults", "channels", "rules", "inhibit"}
RULE_KEYS = {
    "name", "metric", "op", "threshold", "baseline", "detector", "params", "severity", "channels", "window", "for",
    "min_samples", "repeat_interval", "labels", "group_by", "summary", "service", "every",
}  # fmt: skip
DEFAULT_KEYS = {"window", "for", "min_samples", "repeat_interval", "severity", "channels"}
CHANNEL_KEYS = {"type", "url_env", "url", "routing_key_env", "secret_env", "min_interval", "max_attempts", "timeout"}


def parse(
    doc: Any, *, source: str = "<rules>", env: dict[str, str] | None = None, interval: float | None = None,
    dashboard: str | None = None, channels: dict[str, ChannelSpec] | None = None,
) -> AlertConfig:  # fmt: skip
    env = dict(os.environ if env is None else env)
    errs = _Errors(source)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise AlertConfigError(f"{source}: the top level must be a mapping with a 'rules' list")
    for k in doc:
        if k not in TOP_KEYS:
            errs.add(f"field {k!r}", f"unknown field; expected one of {', '.join(sorted(TOP_KEYS))}")
    if doc.get("version", 1) != 1:
        errs.add("field 'version'", f"only version 1 is known, got {doc.get('version')!r}")

    def duration(where: str, v: Any, *, lo: float = 0.0, hi: float = 400 * 86400) -> float | None:
        try:
            d = parse_duration(v)
        except ValueError as e:
            errs.add(where, str(e))
            return None
        if not lo <= d <= hi:
            errs.add(where, f"must be between {lo:g}s and {hi:g}s, got {v!r}")
            return None
        return d

    iv = interval if interval is not None else DEFAULT_INTERVAL
    if "interval" in doc:
        iv = duration("field 'interval'", doc["interval"], lo=0.05, hi=3600) or iv
    dash = doc.get("dashboard_url") or dashboard or env.get(ENV_DASHBOARD) or DEFAULT_DASHBOARD
    if not isinstance(dash, str) or not dash.startswith(("http://", "https://")):
        errs.add("field 'dashboard_url'", f"must be an http(s) URL, got {dash!r}")
        dash = DEFAULT_DASHBOARD
    projects = doc.get("projects") or []
    if not isinstance(projects, list) or not all(isinstance(x, str) and x for x in projects):
        errs.add("field 'projects'", "must be a list of project names")
        projects = []

    # --- channels: the environment's, then the file's (which may override by name) ---
    chans = dict(channels if channels is not None else env_channels(env))
    raw_channels = doc.get("channels") or {}
    if not isinstance(raw_channels, dict):
        errs.add("field 'channels'", "must be a mapping of channel name to its settings")
        raw_channels = {}
    for name, spec in raw_channels.items():
        c = _channel(errs, str(name), spec, env)
        if c is not None:
            chans[c.name] = c

    # --- defaults ---
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        errs.add("field 'defaults'", "must be a mapping")
        defaults = {}
    for k in defaults:
        if k not in DEFAULT_KEYS:
            errs.add(f"defaults: field {k!r}", f"unknown field; expected one of {', '.join(sorted(DEFAULT_KEYS))}")

    # --- rules ---
    raw_rules = doc.get("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        errs.add("field 'rules'", "must be a list of rules")
        raw_rules = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        r = _rule(errs, i, raw, defaults, chans, duration)
        if r is None:
            continue
        if r.name in seen:
            errs.add(f"rule {r.name!r}: field 'name'", "duplicate rule name (names identify alerts)")
            continue
        seen.add(r.name)
        rules.append(r)

    # --- inhibit ---
    inhibit: tuple[Inhibit, ...] = DEFAULT_INHIBIT
    if "inhibit" in doc:
        raw_inh = doc["inhibit"] or []
        if not isinstance(raw_inh, list):
            errs.add("field 'inhibit'", "must be a list of {source, target, equal}")
            raw_inh = []
        parsed = [_inhibit(errs, i, x) for i, x in enumerate(raw_inh)]
        inhibit = tuple(x for x in parsed if x is not None)
    errs.raise_if_any()
    return AlertConfig(
        tuple(rules), chans, inhibit=inhibit, interval=iv, projects=tuple(projects), dashboard_url=dash.rstrip("/"),
        source=source, env=env,
    )  # fmt: skip


def _channel(errs: _Errors, name: str, spec: Any, env: dict[str, str]) -> ChannelSpec | None:
    where = f"channel {name!r}"
    if not NAME_RE.match(name):
        errs.add(where, "bad channel name (letters, digits, '_', '.', ':', '-')")
        return None
    if not isinstance(spec, dict):
        errs.add(where, "must be a mapping with at least 'type'")
        return None
    ok = True
    for k in spec:
        if k not in CHANNEL_KEYS:
            errs.add(f"{where}: field {k!r}", f"unknown field; expected one of {', '.join(sorted(CHANNEL_KEYS))}")
            ok = False
    try:
        ctype = ChannelType(spec.get("type"))
    except ValueError:
        errs.add(f"{where}: field 'type'", f"must be one of {', '.join(t.value for t in ChannelType)}")
        return None
    if ctype is ChannelType.SLACK and "url" in spec:
        errs.add(f"{where}: field 'url'", "a Slack webhook URL is a secret: put it in a variable, name it in url_env")
        ok = False
    needs = {ChannelType.SLACK: ["url_env"], ChannelType.PAGERDUTY: ["routing_key_env"], ChannelType.WEBHOOK: []}
    for k in needs.get(ctype, []):
        if not spec.get(k):
            errs.add(f"{where}: field {k!r}", "required for a " + ctype.value + " channel")
            ok = False
    if ctype is ChannelType.WEBHOOK and not (spec.get("url_env") or spec.get("url")):
        errs.add(f"{where}: field 'url_env'", "a webhook channel needs url_env (or url)")
        ok = False
    for k in ("url_env", "routing_key_env", "secret_env"):
        v = spec.get(k)
        if v is not None and (not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)):
            errs.add(f"{where}: field {k!r}", "must be the name of an environment variable")
            ok = False
        elif v and not env.get(v):
            errs.add(f"{where}: field {k!r}", f"environment variable {v} is not set")
            ok = False
    url = spec.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        errs.add(f"{where}: field 'url'", "must be an http(s) URL")
        ok = False
    if ctype is ChannelType.PAGERDUTY and url is None:
        url = env.get(ENV_PD_URL) or None
    mi = spec.get("min_interval")
    if mi is not None and (not isinstance(mi, int | float) or isinstance(mi, bool) or not 0 <= mi <= 60):
        errs.add(f"{where}: field 'min_interval'", "must be seconds between 0 and 60")
        ok = False
    ma = spec.get("max_attempts", 6)
    if not isinstance(ma, int) or isinstance(ma, bool) or not 1 <= ma <= 20:
        errs.add(f"{where}: field 'max_attempts'", "must be an integer between 1 and 20")
        ok = False
    to = spec.get("timeout", 10.0)
    if not isinstance(to, int | float) or isinstance(to, bool) or not 0.1 <= to <= 120:
        errs.add(f"{where}: field 'timeout'", "must be seconds between 0.1 and 120")
        ok = False
    if not ok:
        return None
    return ChannelSpec(
        name, ctype, url_env=spec.get("url_env"), url=url, routing_key_env=spec.get("routing_key_env"),
        secret_env=spec.get("secret_env"), min_interval=mi, max_attempts=ma, timeout=float(to),
    )  # fmt: skip


def _labels(errs: _Errors, where: str, raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        errs.add(where, "must be a mapping of label name to value")
        return ()
    out = []
    for k, v in raw.items():
        if not isinstance(k, str) or not LABEL_RE.match(k):
            errs.add(where, f"bad label name {k!r} (letters, digits, '_')")
        elif k in RESERVED_LABELS:
            errs.add(where, f"label {k!r} is set by the engine")
        elif not isinstance(v, str | int | float) or isinstance(v, bool):
            errs.add(where, f"label {k!r} must be a string")
        else:
            out.append((k, str(v)))
    return tuple(sorted(out))


def _rule(errs: _Errors, i: int, raw: Any, defaults: dict, chans: dict[str, ChannelSpec], duration) -> Rule | None:
    if not isinstance(raw, dict):
        errs.add(f"rule #{i + 1}", "must be a mapping")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errs.add(f"rule #{i + 1}: field 'name'", f"required: letters, digits, '_', '.', ':', '-', got {name!r}")
        return None
    w = f"rule {name!r}"
    n_errors = len(errs.items)
    for k in raw:
        if k not in RULE_KEYS:
            errs.add(f"{w}: field {k!r}", f"unknown field; expected one of {', '.join(sorted(RULE_KEYS))}")

    def get(k: str, default: Any = None) -> Any:
        return raw[k] if k in raw else defaults.get(k, default)

    try:
        severity = Severity(get("severity", "warning"))
    except ValueError:
        errs.add(f"{w}: field 'severity'", f"must be one of {', '.join(s.value for s in Severity)}")
        severity = Severity.WARNING
    ch = get("channels")
    if ch is None:
        ch = [c for c in chans if c != "log"] or ["log"]
    if isinstance(ch, str):
        ch = [ch]
    if not isinstance(ch, list) or not ch:
        errs.add(f"{w}: field 'channels'", "must be a list of channel names")
        ch = []
    for c in ch:
        if c not in chans:
            hint = ""
            if c == "slack":
                hint = f" (set {ENV_SLACK} or define it under channels)"
            elif c == "pagerduty":
                hint = f" (set {ENV_PD_KEY} or define it under channels)"
            errs.add(f"{w}: field 'channels'", f"unknown channel {c!r}{hint}; known: {', '.join(sorted(chans))}")
    window = duration(f"{w}: field 'window'", get("window", "5m"), lo=1)
    for_s = duration(f"{w}: field 'for'", get("for", 0))
    repeat = duration(f"{w}: field 'repeat_interval'", get("repeat_interval", "4h"), lo=1)
    every = duration(f"{w}: field 'every'", raw.get("every", 0))
    ms = get("min_samples", 1)
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
        errs.add(f"{w}: field 'min_samples'", f"must be a whole number >= 0, got {ms!r}")
        ms = 1
    group_by = raw.get("group_by") or []
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        errs.add(f"{w}: field 'group_by'", "must be a list of label names")
        group_by = []
    labels = _labels(errs, f"{w}: field 'labels'", raw.get("labels"))
    service = raw.get("service") or ""
    if not isinstance(service, str):
        errs.add(f"{w}: field 'service'", "must be a service name")
        service = ""
    summary = raw.get("summary") or ""
    if not isinstance(summary, str):
        errs.add(f"{w}: field 'summary'", "must be text")
        summary = ""

    metric, detector = raw.get("metric"), raw.get("detector")
    op, threshold, baseline, params = ">", None, None, ()
    if bool(metric) == bool(detector):
        errs.add(w, "give exactly one of 'metric' (a threshold rule) or 'detector' (a detector rule)")
    elif metric:
        if not isinstance(metric, str):
            errs.add(f"{w}: field 'metric'", "must be a metric name")
        else:
            problem = resolve_metric(metric, tuple(group_by))
            if problem:
                errs.add(f"{w}: field {'group_by' if problem.startswith('group_by') else 'metric'!r}", problem)
        op = raw.get("op", ">")
        if op not in OPS:
            errs.add(f"{w}: field 'op'", f"must be one of {', '.join(OPS)}, got {op!r}")
        threshold = raw.get("threshold")
        if threshold is not None and (not isinstance(threshold, int | float) or isinstance(threshold, bool)):
            errs.add(f"{w}: field 'threshold'", f"must be a number, got {threshold!r}")
            threshold = None
        b = raw.get("baseline")
        if b is not None:
            if not isinstance(b, dict) or set(b) - {"window", "factor"}:
                errs.add(f"{w}: field 'baseline'", "must be {window: <duration>, factor: <number>}")
            else:
                bw = duration(f"{w}: field 'baseline.window'", b.get("window", "24h"), lo=1)
                f = b.get("factor", 2.0)
                if not isinstance(f, int | float) or isinstance(f, bool) or f <= 0:
                    errs.add(f"{w}: field 'baseline.factor'", f"must be a positive number, got {f!r}")
                elif bw is not None:
                    baseline = Baseline(bw, float(f))
        if threshold is None and baseline is None and "baseline" not in raw:
            errs.add(f"{w}: field 'threshold'", "required for a threshold rule (or give a baseline)")
        if "params" in raw:
            errs.add(f"{w}: field 'params'", "only detector rules take params")
    else:
        if detector not in DETECTORS:
            errs.add(f"{w}: field 'detector'", f"unknown detector {detector!r}; known: {', '.join(sorted(DETECTORS))}")
        else:
            det = DETECTORS[detector]
            p = raw.get("params") or {}
            if not isinstance(p, dict):
                errs.add(f"{w}: field 'params'", "must be a mapping")
                p = {}
            for k, v in p.items():
                problem = det.check_param(k, v)
                if problem:
                    errs.add(f"{w}: field 'params.{k}'", problem)
            params = tuple(sorted(p.items()))
            if not group_by:
                group_by = list(det.default_group_by)
            bad = [g for g in group_by if g not in det.group_by]
            if bad:
                errs.add(f"{w}: field 'group_by'", f"{detector} groups by {', '.join(det.group_by)}; not {bad}")
        for k in ("threshold", "op", "baseline"):
            if k in raw:
                errs.add(f"{w}: field {k!r}", "only threshold rules (metric) take it; detectors use params")
    if len(errs.items) > n_errors or window is None or for_s is None or repeat is None or every is None:
        return None
    return Rule(
        name=name, severity=severity, channels=tuple(dict.fromkeys(ch)), window=window, for_s=for_s, min_samples=ms,
        repeat_interval=repeat, labels=labels, group_by=tuple(group_by), summary=summary, metric=metric, op=op,
        threshold=float(threshold) if threshold is not None else None, baseline=baseline, detector=detector,
        params=params, service=service, every=every,
    )  # fmt: skip


def _matchers(errs: _Errors, where: str, raw: Any) -> tuple[Matcher, ...] | None:
    if not isinstance(raw, dict) or not raw:
        errs.add(where, "must be a non-empty mapping of label to value (prefix a value with ~ for a regex)")
        return None
    out = []
    for k, v in raw.items():
        v = str(v)
        try:
            out.append(Matcher(str(k), v[1:], True) if v.startswith("~") else Matcher(str(k), v))
            if v.startswith("~"):
                re.compile(v[1:])
        except re.error as e:
            errs.add(where, f"bad regex for {k!r}: {e}")
            return None
    return tuple(out)


def _inhibit(errs: _Errors, i: int, raw: Any) -> Inhibit | None:
    w = f"inhibit #{i + 1}"
    if not isinstance(raw, dict) or set(raw) - {"source", "target", "equal"}:
        errs.add(w, "must be {source: {label: value}, target: {label: value}, equal: [labels]}")
        return None
    src = _matchers(errs, f"{w}: field 'source'", raw.get("source"))
    tgt = _matchers(errs, f"{w}: field 'target'", raw.get("target"))
    eq = raw.get("equal") or []
    if not isinstance(eq, list) or not all(isinstance(x, str) for x in eq):
        errs.add(f"{w}: field 'equal'", "must be a list of label names")
        return None
    if src is None or tgt is None:
        return None
    return Inhibit(src, tgt, tuple(eq))
