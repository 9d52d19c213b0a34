"""The alert engine's own types: rules, channels, alerts, silences. Plain frozen data, no I/O."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Status(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    INACTIVE = "inactive"  # resolved and every channel told (or never fired): history only


OPS = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``1.5h``, ``2d``, ``250ms`` or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m, 1h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like 30s, 5m, 1h, got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s % 86400 == 0 and s:
        return f"{s // 86400}d"
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60}m"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Baseline:
    """Compare against the same metric over a trailing window that ends where the evaluated one starts:
    the threshold becomes ``factor`` times the baseline value."""

    window: float
    factor: float


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    channels: tuple[str, ...]
    window: float
    for_s: float = 0.0
    min_samples: int = 1
    repeat_interval: float = 4 * 3600
    labels: tuple[tuple[str, str], ...] = ()
    group_by: tuple[str, ...] = ()
    summary: str = ""
    # threshold rules
    metric: str | None = None
    op: str = ">"
    threshold: float | None = None
    baseline: Baseline | None = None
    # detector rules
    detector: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    service: str = ""  # only this service (empty: all)
    every: float = 0.0  # evaluate at most this often (0: every interval); for heavy detectors over long windows

    @property
    def kind(self) -> str:
        return "detector" if self.detector else "threshold"

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "severity": self.severity.value,
            "channels": list(self.channels),
            "window": fmt_duration(self.window),
            "for": fmt_duration(self.for_s),
            "min_samples": self.min_samples,
            "repeat_interval": fmt_duration(self.repeat_interval),
            "labels": dict(self.labels),
            "group_by": list(self.group_by),
        }
        if self.service:
            d["service"] = self.service
        if self.every:
            d["every"] = fmt_duration(self.every)
        if self.detector:
            d["detector"] = self.detector
            d["params"] = dict(self.params)
        else:
            d.update(metric=self.metric, op=self.op, threshold=self.threshold)
            if self.baseline:
                d["baseline"] = {"window": fmt_duration(self.baseline.window), "factor": self.baseline.factor}
        return d


class ChannelType(StrEnum):
    SLACK = "slack"
    PAGERDUTY = "pagerduty"
    WEBHOOK = "webhook"
    LOG = "log"


@dataclass(frozen=True)
class ChannelSpec:
    """A channel as configured: secrets are named by environment variable, never held in the rules file."""

    name: str
    type: ChannelType
    url_env: str | None = None  # slack: the webhook URL; webhook: the target URL
    url: str | None = None  # webhook / pagerduty events URL when not secret
    routing_key_env: str | None = None  # pagerduty
    secret_env: str | None = None  # webhook HMAC secret
    min_interval: float | None = None  # seconds between two messages (slack default 1.0)
    max_attempts: int = 6
    timeout: float = 10.0

    def describe(self, env: dict[str, str]) -> dict[str, Any]:
        """What the API may show: the variable names and whether they are set, never their values."""
        d: dict[str, Any] = {"name": self.name, "type": self.type.value}
        for attr in ("url_env", "routing_key_env", "secret_env"):
            var = getattr(self, attr)
            if var:
                d[attr] = var
                d[attr.replace("_env", "_set")] = bool(env.get(var))
        return d


@dataclass(frozen=True)
class Matcher:
    """``label=value`` (exact) or ``label=~regex`` (full match)."""

    label: str
    value: str
    regex: bool = False

    def matches(self, labels: dict[str, str]) -> bool:
        v = labels.get(self.label, "")
        return re.fullmatch(self.value, v) is not None if self.regex else v == self.value

    def __str__(self) -> str:
        return f"{self.label}{'=~' if self.regex else '='}{self.value}"

    @classmethod
    def parse(cls, text: str) -> Matcher:
        if "=~" in text:
            k, _, v = text.partition("=~")
            re.compile(v)
            return cls(k.strip(), v.strip(), True)
        k, sep, v = text.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"expected label=value or label=~regex, got {text!r}")
        return cls(k.strip(), v.strip())


@dataclass(frozen=True)
class Inhibit:
    """While an alert matching ``source`` fires, alerts matching ``target`` (with equal values of the
    ``equal`` labels) are muted. Alertmanager's inhibit_rules."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


# A project-wide cost alert mutes the per-task cost alerts of the same project.
DEFAULT_INHIBIT = (
    Inhibit(
        source=(Matcher("category", "cost"), Matcher("scope", "project")),
        target=(Matcher("category", "cost"), Matcher("scope", "task")),
        equal=("project",),
    ),
)


@dataclass(frozen=True)
class Silence:
    id: str
    project: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "active": self.active(now),
            "created_by": self.created_by,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class Sample:
    """One group's figure from one evaluation of a rule."""

    labels: dict[str, str]
    value: float | None
    count: int
    active: bool
    threshold: float | None = None
    baseline: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (text, url)


def fingerprint(project: str, rule: str, group: dict[str, str]) -> str:
    """Identity of an alert: project + rule + group labels, stable across restarts and processes."""
    blob = json.dumps([project, rule, sorted(group.items())], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class Alert:
    """One alert instance (rule x group) and where it is in its lifecycle."""

    project: str
    fingerprint: str
    rule: str
    labels: dict[str, str]  # alertname, severity, project, group labels, rule labels
    group: dict[str, str]  # the group labels only
    severity: Severity
    channels: tuple[str, ...]
    status: Status
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_eval: float = 0.0
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    samples: int = 0
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    muted_by: str = ""  # "silence <id>" / "inhibited by <fingerprint>" (computed each evaluation)

    def describe(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "status": self.status.value,
            "severity": self.severity.value,
            "labels": dict(self.labels),
            "summary": self.summary,
            "value": self.value,
            "threshold": self.threshold,
            "baseline": self.baseline,
            "samples": self.samples,
            "active_since": self.active_since,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "last_eval": self.last_eval,
            "channels": list(self.channels),
            "muted_by": self.muted_by or None,
            "details": self.details,
            "links": [{"text": t, "url": u} for t, u in self.links],
        }

    def to_json(self) -> str:
        d = self.describe()
        d.update(project=self.project, group=self.group)
        return json.dumps(d, default=str)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        d = json.loads(text)
        return cls(
            project=d["project"],
            fingerprint=d["fingerprint"],
            rule=d["rule"],
            labels=d["labels"],
            group=d.get("group", {}),
            severity=Severity(d["severity"]),
            channels=tuple(d["channels"]),
            status=Status(d["status"]),
            active_since=d["active_since"],
            fired_at=d.get("fired_at"),
            resolved_at=d.get("resolved_at"),
            last_eval=d.get("last_eval") or 0.0,
            value=d.get("value"),
            threshold=d.get("threshold"),
            baseline=d.get("baseline"),
            samples=d.get("samples") or 0,
            summary=d.get("summary") or "",
            details=d.get("details") or {},
            links=[(x["text"], x["url"]) for x in d.get("links") or []],
        )
