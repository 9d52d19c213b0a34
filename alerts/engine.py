"""The Alertmanager model in small stages: rules yield samples; samples become alerts identified by a
fingerprint (project + rule + group labels) moving pending -> firing -> resolved; silences and inhibition
mute; alerts are grouped per channel (by rule; PagerDuty: one incident per alert) and deduplicated against
the notification log, which records what each channel was last told. A group is sent when it has a new
firing alert, a newly resolved one, or when its repeat interval has passed.

State and the notification log persist, so after a restart nothing already told is told again, and an
alert that was firing is still resolved when it clears. A rule whose figures cannot be had (store down)
keeps its alerts as they are: an outage neither fires nor resolves anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agentwatch.alerts import sources
from agentwatch.alerts.channels import Dispatcher, Notification
from agentwatch.alerts.config import AlertConfig
from agentwatch.alerts.model import Alert, ChannelType, Rule, Sample, Severity, Silence, Status, fingerprint
from agentwatch.alerts.state import MemoryState, NflogEntry

log = logging.getLogger(__name__)

SEVERITY_ORDER = [Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL]


@dataclass
class RuleRun:
    project: str
    rule: str
    ok: bool
    error: str = ""
    samples: list[Sample] | None = None
    seconds: float = 0.0
    at: float = 0.0  # the evaluation's time (the engine clock)


class Engine:
    def __init__(
        self, config: AlertConfig, state: MemoryState, *, reader: Callable[[str], sources.Reader],
        projects: Callable[[], list[str]], dispatcher: Dispatcher | None = None, clock: Callable[[], float] = time.time,
        failure_holdoff: float = 300.0, ignore_for: bool = False,
    ) -> None:  # fmt: skip
        self.config = config
        self.state = state
        self.reader = reader
        self.projects = projects
        self.dispatcher = dispatcher
        self.clock = clock
        self.failure_holdoff = failure_holdoff
        self.ignore_for = ignore_for
        self.rules = {r.name: r for r in config.rules}
        self.alerts: dict[tuple[str, str], Alert] = {}
        self.nflog: dict[tuple[str, str, str], NflogEntry] = {}
        self.hold: dict[tuple[str, str, str], float] = {}
        self.last_runs: dict[tuple[str, str], RuleRun] = {}
        self.evaluations = 0
        self.last_eval: float | None = None
        self._lock = threading.RLock()
        self._errors_logged: dict[tuple[str, str], str] = {}

    # --- start -----------------------------------------------------------------------------------
    def load(self) -> None:
        """The persisted alerts and notification log (at start: a restart continues, never re-pages)."""
        with self._lock:
            self.alerts = {(a.project, a.fingerprint): a for a in self.state.load_alerts()}
            self.nflog = self.state.load_nflog()
        if self.alerts:
            log.info("alert engine: resumed %d alert(s) from the store", len(self.alerts))

    # --- one evaluation ----------------------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[RuleRun]:
        now = self.clock() if now is None else now
        runs: list[RuleRun] = []
        with self._lock:
            projects = self._projects()
            for project in projects:
                reader = self.reader(project)
                for rule in self.config.rules:
                    last = self.last_runs.get((project, rule.name))
                    if rule.every and last is not None and last.ok and now - last.at < rule.every:
                        continue  # evaluated recently enough (``every``): its alerts keep their state
                    t0 = time.monotonic()
                    try:
                        samples = sources.evaluate(reader, rule, now)
                    except Exception as e:  # noqa: BLE001 - one rule's failure never stops the others
                        run = RuleRun(project, rule.name, False, str(e)[:500], None, time.monotonic() - t0, now)
                        self._log_error(project, rule.name, e)
                    else:
                        self._errors_logged.pop((project, rule.name), None)
                        self._apply(project, rule, samples, now)
                        run = RuleRun(project, rule.name, True, "", samples, time.monotonic() - t0, now)
                    self.last_runs[(project, rule.name)] = run
                    runs.append(run)
            self._orphans(now)
            self._mute(now)
            self._notify(now)
            self._cleanup()
            self.evaluations += 1
            self.last_eval = now
        return runs

    def _projects(self) -> list[str]:
        if self.config.projects:
            return list(self.config.projects)
        try:
            return sorted(set(self.projects()))
        except Exception as e:  # noqa: BLE001
            log.warning("alert engine: cannot list projects: %s", e)
            return sorted({a.project for a in self.alerts.values()})

    def _log_error(self, project: str, rule: str, e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"[:300]
        if self._errors_logged.get((project, rule)) != msg:  # once per distinct error, not every 30 s
            log.warning("alert rule %s (project %s) not evaluated; its alerts keep their state: %s", rule, project, msg)
            self._errors_logged[(project, rule)] = msg

    def _labels(self, project: str, rule: Rule, group: dict[str, str]) -> dict[str, str]:
        return {**dict(rule.labels), **group, "alertname": rule.name, "severity": rule.severity.value,
                "project": project}  # fmt: skip

    def _apply(self, project: str, rule: Rule, samples: list[Sample], now: float) -> None:
        seen: dict[str, Sample] = {}
        for s in samples:
            group = {k: str(v) for k, v in s.labels.items()}
            fp = fingerprint(project, rule.name, group)
            if not s.active:
                seen.setdefault(fp, s)
                continue
            seen[fp] = s
            a = self.alerts.get((project, fp))
            event = None
            if a is None or a.status in (Status.RESOLVED, Status.INACTIVE):
                a = Alert(project=project, fingerprint=fp, rule=rule.name, labels=self._labels(project, rule, group),
                          group=group, severity=rule.severity, channels=rule.channels, status=Status.PENDING,
                          active_since=now)  # fmt: skip
                self.alerts[(project, fp)] = a
                event = "pending"
            if a.status is Status.PENDING and (self.ignore_for or now - a.active_since >= rule.for_s):
                a.status, a.fired_at, event = Status.FIRING, now, "firing"
            # the rule may have changed (severity, channels, labels) since the alert began
            a.severity, a.channels, a.labels = rule.severity, rule.channels, self._labels(project, rule, group)
            self._update(a, rule, s, now)
            if event:
                self.state.save_alert(a, event, now)
        for (p, fp), a in list(self.alerts.items()):
            if p != project or a.rule != rule.name or a.status not in (Status.PENDING, Status.FIRING):
                continue
            s = seen.get(fp)
            if s is not None and s.active:
                continue
            if s is not None:
                self._update(a, rule, s, now)
            if a.status is Status.PENDING:
                a.status = Status.INACTIVE
                self.state.save_alert(a, None, now)
            else:
                a.status, a.resolved_at = Status.RESOLVED, now
                self.state.save_alert(a, "resolved", now)

    @staticmethod
    def _update(a: Alert, rule: Rule, s: Sample, now: float) -> None:
        a.value, a.threshold, a.baseline, a.samples = s.value, s.threshold, s.baseline, s.count
        a.details = dict(s.details)
        if rule.metric:
            a.details["op"] = rule.op
        a.links = list(s.links)
        a.summary = rule.summary or _default_summary(rule)
        a.last_eval = now

    def _orphans(self, now: float) -> None:
        """Alerts of rules no longer configured resolve (a removed rule never leaves an incident open)."""
        for a in self.alerts.values():
            if a.rule not in self.rules and a.status in (Status.PENDING, Status.FIRING):
                if a.status is Status.PENDING:
                    a.status = Status.INACTIVE
                    self.state.save_alert(a, None, now)
                else:
                    a.status, a.resolved_at = Status.RESOLVED, now
                    a.details["resolved_because"] = "rule removed from the configuration"
                    self.state.save_alert(a, "resolved", now)

    # --- silences and inhibition -----------------------------------------------------------------------
    def silences(self) -> list[Silence]:
        try:
            return self.state.load_silences()
        except Exception as e:  # noqa: BLE001 - without silences we still page (better than not paging)
            log.warning("alert engine: cannot read silences: %s", e)
            return []

    def _mute(self, now: float) -> None:
        active = [s for s in self.silences() if s.active(now)]
        firing = [a for a in self.alerts.values() if a.status is Status.FIRING]
        for a in self.alerts.values():
            a.muted_by = ""
        for a in firing:
            for s in active:
                if s.project == a.project and s.matches(a.labels):
                    a.muted_by = f"silence {s.id}"
                    break
        for inh in self.config.inhibit:
            srcs = [a for a in firing if all(m.matches(a.labels) for m in inh.source)]
            if not srcs:
                continue
            for t in firing:
                if t.muted_by or not all(m.matches(t.labels) for m in inh.target):
                    continue
                for s in srcs:
                    if s is not t and all(s.labels.get(k) == t.labels.get(k) for k in inh.equal):
                        t.muted_by = f"inhibited by {s.rule} ({where_text(s)})"
                        break

    # --- notifications ---------------------------------------------------------------------------------
    def _per_alert(self, channel: str) -> bool:
        spec = self.config.channels.get(channel)
        return spec is not None and spec.type is ChannelType.PAGERDUTY

    def _notify(self, now: float) -> None:
        if self.dispatcher is None:
            return
        groups: dict[tuple[str, str, str], list[Alert]] = defaultdict(list)
        for a in self.alerts.values():
            if a.status not in (Status.FIRING, Status.RESOLVED):
                continue
            for ch in a.channels:
                if ch in self.dispatcher.workers:
                    gk = a.fingerprint if self._per_alert(ch) else f"{a.rule}"
                    groups[(a.project, ch, gk)].append(a)
        for key, members in groups.items():
            if self.dispatcher.busy(key) or self.hold.get(key, 0) > now:
                continue
            last = self.nflog.get(key) or NflogEntry(frozenset(), 0.0)
            firing = [a for a in members if a.status is Status.FIRING and not a.muted_by]
            keep = frozenset(a.fingerprint for a in members
                             if a.status is Status.FIRING and a.muted_by and a.fingerprint in last.firing)  # fmt: skip
            resolved = [a for a in members if a.status is Status.RESOLVED and a.fingerprint in last.firing]
            new = frozenset(a.fingerprint for a in firing) - last.firing
            rule = self.rules.get(members[0].rule)
            repeat = rule.repeat_interval if rule else 4 * 3600
            if not (new or resolved or (firing and now - last.sent_at >= repeat)):
                continue
            shown = firing + resolved
            sev = max((a.severity for a in shown), key=SEVERITY_ORDER.index)
            n = Notification(
                project=key[0], channel=key[1], group_key=key[2], rule=members[0].rule, severity=sev,
                firing=[replace(a, details=dict(a.details), links=list(a.links)) for a in firing],
                resolved=[replace(a, details=dict(a.details), links=list(a.links)) for a in resolved], new=new,
                keep=keep, dashboard_url=self.config.dashboard_url, created=now,
            )  # fmt: skip
            self.dispatcher.submit(n)

    def on_done(self, n: Notification, ok: bool) -> None:
        """A channel's worker finished a notification: record it in the notification log (or hold off)."""
        with self._lock:
            key = n.key()
            if not ok:
                self.hold[key] = self.clock() + self.failure_holdoff
                return
            self.hold.pop(key, None)
            last = self.nflog.get(key)
            firing = frozenset(a.fingerprint for a in n.firing) | n.keep
            sent_at = n.created if n.firing else (last.sent_at if last else 0.0)
            entry = NflogEntry(firing, sent_at)
            self.nflog[key] = entry
            try:
                self.state.save_nflog(*key, entry)
            except Exception:  # noqa: BLE001 - in memory it is recorded; the store catches up next time
                log.warning("could not persist the alert notification log", exc_info=True)

    def _cleanup(self) -> None:
        """A resolved alert no channel still knows as firing is done: history only."""
        for k, a in list(self.alerts.items()):
            if a.status is Status.RESOLVED:
                pending = [
                    ch for ch in a.channels
                    if self.dispatcher is not None and ch in self.dispatcher.workers
                    and a.fingerprint in self._nflog_firing(a, ch)
                ]  # fmt: skip
                if not pending:
                    a.status = Status.INACTIVE
                    self.state.save_alert(a, None, a.resolved_at or self.clock())
            if a.status is Status.INACTIVE:
                del self.alerts[k]

    def _nflog_firing(self, a: Alert, ch: str) -> frozenset[str]:
        gk = a.fingerprint if self._per_alert(ch) else a.rule
        e = self.nflog.get((a.project, ch, gk))
        return e.firing if e else frozenset()

    # --- views ---------------------------------------------------------------------------------------------
    def snapshot(self, project: str) -> dict[str, Any]:
        with self._lock:
            mine = [a for a in self.alerts.values() if a.project == project]
            errors = [
                {"rule": r.rule, "error": r.error} for (p, _), r in self.last_runs.items() if p == project and not r.ok
            ]
            return {
                "firing": [a.describe() for a in mine if a.status is Status.FIRING],
                "pending": [a.describe() for a in mine if a.status is Status.PENDING],
                "resolving": [a.describe() for a in mine if a.status is Status.RESOLVED],
                "rule_errors": errors,
                "evaluations": self.evaluations,
                "last_evaluation": self.last_eval,
            }


def where_text(a: Alert) -> str:
    return ", ".join(f"{k}={v}" for k, v in a.group.items() if v) or "whole project"


def _default_summary(rule: Rule) -> str:
    if rule.detector:
        return f"{rule.detector.replace('_', ' ')} detected"
    if rule.baseline and rule.threshold is None:
        return f"{rule.metric} {rule.op} {rule.baseline.factor:g}x its baseline"
    return f"{rule.metric} {rule.op} {rule.threshold:g}" if rule.threshold is not None else f"{rule.metric}"
