"""Alert state, history, notification log, delivery log and silences, in the store (``schema.py``).

``StoreState`` persists; ``MemoryState`` keeps the same in memory (``alerts check`` through the API, where
the store belongs to the running collector).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from agentwatch.alerts.model import Alert, Matcher, Silence, Status
from agentwatch.alerts.schema import (
    DELIVERIES_TABLE,
    EVENTS_TABLE,
    LEASE_TABLE,
    NFLOG_TABLE,
    SILENCES_TABLE,
    STATE_TABLE,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NflogEntry:
    """What a channel was last told about a group: the alerts it knows as firing, and when it was paged."""

    firing: frozenset[str]
    sent_at: float


@dataclass(frozen=True)
class Delivery:
    time: float
    project: str
    channel: str
    group_key: str
    kind: str  # firing | resolved | test
    attempt: int
    outcome: str  # ok | retry | failed | gave_up
    http_status: int
    error: str
    duration_ms: float
    alerts: int

    def describe(self) -> dict[str, Any]:
        return {
            "time": self.time, "channel": self.channel, "group_key": self.group_key, "kind": self.kind,
            "attempt": self.attempt, "outcome": self.outcome, "http_status": self.http_status or None,
            "error": self.error or None, "duration_ms": round(self.duration_ms, 1), "alerts": self.alerts,
        }  # fmt: skip


class MemoryState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.alerts: dict[tuple[str, str], Alert] = {}
        self.events: list[dict[str, Any]] = []
        self.nflog: dict[tuple[str, str, str], NflogEntry] = {}
        self.deliveries: list[Delivery] = []
        self.silences: dict[tuple[str, str], Silence] = {}

    # alerts
    def load_alerts(self) -> list[Alert]:
        with self._lock:
            return [a for a in self.alerts.values() if a.status is not Status.INACTIVE]

    def save_alert(self, a: Alert, event: str | None, now: float) -> None:
        with self._lock:
            self.alerts[(a.project, a.fingerprint)] = a
            if event:
                self.events.append(_event(a, event, now))

    def history(self, project: str, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in reversed(self.events) if e["project"] == project][:limit]

    # notification log
    def load_nflog(self) -> dict[tuple[str, str, str], NflogEntry]:
        with self._lock:
            return dict(self.nflog)

    def save_nflog(self, project: str, channel: str, group_key: str, entry: NflogEntry) -> None:
        with self._lock:
            self.nflog[(project, channel, group_key)] = entry

    def add_delivery(self, d: Delivery) -> None:
        with self._lock:
            self.deliveries.append(d)
            del self.deliveries[:-1000]

    def deliveries_of(self, project: str, limit: int) -> list[Delivery]:
        with self._lock:
            return [d for d in reversed(self.deliveries) if d.project == project][:limit]

    # silences
    def save_silence(self, s: Silence) -> None:
        with self._lock:
            self.silences[(s.project, s.id)] = s

    def load_silences(self, project: str | None = None) -> list[Silence]:
        with self._lock:
            return [s for s in self.silences.values() if project is None or s.project == project]

    # the evaluation lease (one evaluator among the collectors that share a store)
    def lease(self, holder: str, ttl_s: float, now: float) -> tuple[str, float]:
        """Claim or renew the lease for ``holder`` unless another holds it unexpired: ``(holder, expires_at)``
        of whoever holds it now. In memory, nobody else can."""
        return holder, now + ttl_s

    def release(self, holder: str) -> None:
        return None


def _event(a: Alert, event: str, now: float) -> dict[str, Any]:
    return {"time": now, "project": a.project, "fingerprint": a.fingerprint, "rule": a.rule, "event": event,
            "severity": a.severity.value, "value": a.value, "labels": a.labels, "summary": a.summary}  # fmt: skip


class StoreState(MemoryState):
    """Writes through to the store; reads at start (alerts, notification log) and per call (silences,
    history, deliveries), so a silence added by another process is seen at the next evaluation."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store

    def load_alerts(self) -> list[Alert]:
        rows = self.store.query(
            f"SELECT Body FROM {STATE_TABLE} FINAL WHERE Status IN ('pending', 'firing', 'resolved')"
        )
        out = []
        for r in rows:
            try:
                out.append(Alert.from_json(r["Body"]))
            except (ValueError, KeyError, TypeError):
                log.warning("skipping an unreadable alert state row")
        return out

    def save_alert(self, a: Alert, event: str | None, now: float) -> None:
        self.store.command(
            f"INSERT INTO {STATE_TABLE} (ProjectId, Fingerprint, Rule, Status, Body, Version) VALUES "
            "({p:String}, {f:String}, {r:String}, {s:String}, {b:String}, {v:UInt64})",
            {"p": a.project, "f": a.fingerprint, "r": a.rule, "s": a.status.value, "b": a.to_json(),
             "v": time.time_ns()},
        )  # fmt: skip
        if event:
            self.store.command(
                f"INSERT INTO {EVENTS_TABLE} (Time, ProjectId, Fingerprint, Rule, Event, Severity, Value, Labels, "
                "Summary) VALUES (fromUnixTimestamp64Milli({t:Int64}), {p:String}, {f:String}, {r:String}, "
                "{e:String}, {sev:String}, {val:Nullable(Float64)}, {l:String}, {sum:String})",
                {"t": int(now * 1000), "p": a.project, "f": a.fingerprint, "r": a.rule, "e": event,
                 "sev": a.severity.value, "val": a.value, "l": json.dumps(a.labels), "sum": a.summary},
            )  # fmt: skip

    def history(self, project: str, limit: int) -> list[dict[str, Any]]:
        rows = self.store.query(
            f"SELECT toUnixTimestamp64Milli(Time) AS t, Fingerprint, Rule, Event, Severity, Value, Labels, Summary "
            f"FROM {EVENTS_TABLE} WHERE ProjectId = {{p:String}} ORDER BY Time DESC LIMIT {{n:UInt32}}",
            {"p": project, "n": limit},
        )
        return [
            {"time": r["t"] / 1000, "fingerprint": r["Fingerprint"], "rule": r["Rule"], "event": r["Event"],
             "severity": r["Severity"], "value": r["Value"], "labels": json.loads(r["Labels"] or "{}"),
             "summary": r["Summary"]}
            for r in rows
        ]  # fmt: skip

    def load_nflog(self) -> dict[tuple[str, str, str], NflogEntry]:
        rows = self.store.query(f"SELECT ProjectId, Channel, GroupKey, Firing, SentAt FROM {NFLOG_TABLE} FINAL")
        return {(r["ProjectId"], r["Channel"], r["GroupKey"]): NflogEntry(frozenset(r["Firing"]), r["SentAt"])
                for r in rows}  # fmt: skip

    def save_nflog(self, project: str, channel: str, group_key: str, entry: NflogEntry) -> None:
        self.store.command(
            f"INSERT INTO {NFLOG_TABLE} (ProjectId, Channel, GroupKey, Firing, SentAt, Version) VALUES "
            "({p:String}, {c:String}, {g:String}, JSONExtract({f:String}, 'Array(String)'), {s:Float64}, {v:UInt64})",
            {"p": project, "c": channel, "g": group_key, "f": json.dumps(sorted(entry.firing)),
             "s": entry.sent_at, "v": time.time_ns()},
        )  # fmt: skip

    def add_delivery(self, d: Delivery) -> None:
        self.store.command(
            f"INSERT INTO {DELIVERIES_TABLE} (Time, ProjectId, Channel, GroupKey, Kind, Attempt, Outcome, HttpStatus, "
            "Error, DurationMs, Alerts) VALUES (fromUnixTimestamp64Milli({t:Int64}), {p:String}, {c:String}, "
            "{g:String}, {k:String}, {a:UInt16}, {o:String}, {h:UInt16}, {e:String}, {d:Float64}, {n:UInt32})",
            {"t": int(d.time * 1000), "p": d.project, "c": d.channel, "g": d.group_key, "k": d.kind, "a": d.attempt,
             "o": d.outcome, "h": d.http_status, "e": d.error, "d": d.duration_ms, "n": d.alerts},
        )  # fmt: skip

    def deliveries_of(self, project: str, limit: int) -> list[Delivery]:
        rows = self.store.query(
            f"SELECT toUnixTimestamp64Milli(Time) AS t, ProjectId, Channel, GroupKey, Kind, Attempt, Outcome, "
            f"HttpStatus, Error, DurationMs, Alerts FROM {DELIVERIES_TABLE} WHERE ProjectId = {{p:String}} "
            f"ORDER BY Time DESC, Attempt DESC LIMIT {{n:UInt32}}",
            {"p": project, "n": limit},
        )
        cols = (
            "ProjectId",
            "Channel",
            "GroupKey",
            "Kind",
            "Attempt",
            "Outcome",
            "HttpStatus",
            "Error",
            "DurationMs",
            "Alerts",
        )
        return [Delivery(r["t"] / 1000, *(r[c] for c in cols)) for r in rows]

    def save_silence(self, s: Silence) -> None:
        self.store.command(
            f"INSERT INTO {SILENCES_TABLE} (ProjectId, Id, Matchers, StartsAt, EndsAt, CreatedBy, Comment, Version) "
            "VALUES ({p:String}, {i:String}, JSONExtract({m:String}, 'Array(String)'), {s:Float64}, {e:Float64}, "
            "{by:String}, {c:String}, {v:UInt64})",
            {"p": s.project, "i": s.id, "m": json.dumps([str(m) for m in s.matchers]), "s": s.starts_at,
             "e": s.ends_at, "by": s.created_by, "c": s.comment, "v": time.time_ns()},
        )  # fmt: skip

    def load_silences(self, project: str | None = None) -> list[Silence]:
        rows = self.store.query(
            f"SELECT ProjectId, Id, Matchers, StartsAt, EndsAt, CreatedBy, Comment FROM {SILENCES_TABLE} FINAL "
            "WHERE ({p:String} = '' OR ProjectId = {p:String}) ORDER BY StartsAt",
            {"p": project or ""},
        )
        out = []
        for r in rows:
            try:
                matchers = tuple(Matcher.parse(m) for m in r["Matchers"])
            except ValueError:
                continue
            out.append(Silence(r["Id"], r["ProjectId"], matchers, r["StartsAt"], r["EndsAt"], r["CreatedBy"],
                               r["Comment"]))  # fmt: skip
        return out

    def _lease_row(self) -> dict[str, Any] | None:
        rows = self.store.query(
            f"SELECT Holder, ExpiresAt FROM {LEASE_TABLE} WHERE Name = 'alerts' ORDER BY Version DESC LIMIT 1"
        )
        return rows[0] if rows else None

    def _write_lease(self, holder: str, expires_at: float) -> None:
        # nanoseconds plus a random tail: two collectors claiming in the same instant never tie
        self.store.command(
            f"INSERT INTO {LEASE_TABLE} (Name, Holder, ExpiresAt, Version) VALUES ('alerts', {{h:String}}, "
            "{e:Float64}, {v:UInt64})",
            {"h": holder, "e": expires_at, "v": time.time_ns() * 1000 + secrets.randbelow(1000)},
        )

    def lease(self, holder: str, ttl_s: float, now: float) -> tuple[str, float]:
        """Claim the lease when it is free, lapsed or ours; then read back who won (the newest row: a collector
        that claimed at the same moment may have written after us). ClickHouse has no compare-and-set, so two
        collectors can both evaluate for at most one interval after a lapse; the state they page from is shared."""
        row = self._lease_row()
        ours = row is not None and row["Holder"] == holder
        if row is None or row["ExpiresAt"] < now or (ours and row["ExpiresAt"] - now < ttl_s * 2 / 3):
            self._write_lease(holder, now + ttl_s)  # claim, or renew a third of the way in
            row = self._lease_row()
        assert row is not None
        return row["Holder"], float(row["ExpiresAt"])

    def release(self, holder: str) -> None:
        """Give the lease up at a clean stop, so a standing-by collector takes over at its next tick."""
        row = self._lease_row()
        if row is not None and row["Holder"] == holder:
            self._write_lease(holder, 0.0)
