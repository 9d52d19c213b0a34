"""Channels: Slack incoming webhook, PagerDuty Events API v2, a generic signed webhook, the log.

A channel turns a ``Notification`` into HTTP requests and judges each answer: (ok, retryable, error).
5xx, 429 and network errors retry with exponential backoff and jitter (429 honours Retry-After); any
other 4xx does not. Each channel has its own worker thread and queue, so a channel that is down never
delays evaluation or another channel. Secrets (webhook URLs, routing keys, HMAC secrets) come from the
environment and are scrubbed from every error string and from the HTTP client's log lines.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from agentwatch.alerts.model import Alert, ChannelSpec, ChannelType, Severity
from agentwatch.alerts.state import Delivery

log = logging.getLogger(__name__)
notify_log = logging.getLogger("agentwatch.alerts.notify")

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SIGNATURE_HEADER = "X-Agentwatch-Signature"
TIMESTAMP_HEADER = "X-Agentwatch-Timestamp"
MAX_RETRY_AFTER = 300.0


# --- secrets never leave --------------------------------------------------------------------------
class _Secrets(logging.Filter):
    """Scrubs registered secrets from log records of the HTTP client libraries (httpx logs request URLs,
    and a Slack webhook URL is a credential)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def scrub(self, text: str) -> str:
        for s in sorted(self.values, key=len, reverse=True):
            if s and s in text:
                text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.values:
            try:
                msg = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad record is the logger's problem, not ours
                return True
            scrubbed = self.scrub(msg)
            if scrubbed != msg:
                record.msg, record.args = scrubbed, None
        return True


SECRETS = _Secrets()
for _name in ("httpx", "httpcore", "urllib3"):
    logging.getLogger(_name).addFilter(SECRETS)


def register_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        SECRETS.values.add(value)
        # the path of a webhook URL is the credential too (a log line may show only the path)
        if "://" in value:
            path = value.split("://", 1)[1].partition("/")[2]
            if len(path) >= 8:
                SECRETS.values.add("/" + path)


def scrub(text: str) -> str:
    return SECRETS.scrub(text)


# --- what is sent ------------------------------------------------------------------------------------
@dataclass
class Notification:
    project: str
    channel: str
    group_key: str
    rule: str
    severity: Severity
    firing: list[Alert]
    resolved: list[Alert]
    new: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()  # muted alerts the channel already knows as firing
    dashboard_url: str = ""
    test: bool = False
    created: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        return "test" if self.test else ("firing" if self.firing else "resolved")

    def key(self) -> tuple[str, str, str]:
        return (self.project, self.channel, self.group_key)


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Result:
    ok: bool
    retryable: bool = False
    status: int = 0
    error: str = ""
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return min(MAX_RETRY_AFTER, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
        except (TypeError, ValueError):
            return None


def judge_http(status: int, body: str, headers: Any, *, ok: Callable[[int, str], bool]) -> Result:
    if ok(status, body):
        return Result(True, status=status)
    err = f"HTTP {status}: {body.strip()[:200]}"
    if status == 429:
        return Result(False, True, status, err, _retry_after(headers.get("retry-after")))
    if status >= 500:
        return Result(False, True, status, err, _retry_after(headers.get("retry-after")))
    return Result(False, False, status, err)


# --- formatting ---------------------------------------------------------------------------------------
def fmt_num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if unit == "usd":
        return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"
    if abs(v) >= 1000 or float(v).is_integer():
        s = f"{v:,.0f}"
    elif abs(v) >= 1:
        s = f"{v:,.2f}"
    else:
        s = f"{v:.4g}"
    return f"{s} {unit}".strip()


def unit_of(a: Alert) -> str:
    m = str(a.details.get("metric") or "")
    if "cost" in m or a.details.get("unit") == "usd":
        return "usd"
    if m.startswith("latency_ms"):
        return "ms"
    return ""


def iso(ts: float | None) -> str:
    if ts is None:
        return "n/a"
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def where(a: Alert) -> str:
    parts = [f"{k}={v}" for k, v in a.group.items() if v]
    return ", ".join(parts) or "whole project"


def figure(a: Alert) -> str:
    u = unit_of(a)
    out = f"{fmt_num(a.value, u)}"
    if a.threshold is not None:
        op = a.details.get("op", ">")
        out += f" (threshold {op} {fmt_num(a.threshold, u)})"
    if a.baseline is not None:
        out += f", baseline {fmt_num(a.baseline, u)}"
    return out


def title(a: Alert) -> str:
    return a.summary or a.rule


def alert_links(a: Alert, dashboard: str) -> list[tuple[str, str]]:
    links = list(a.links)
    for tid in a.details.get("trace_ids", [])[:3]:
        links.append((f"Trace {tid[:8]}", f"{dashboard}/traces?trace_id={tid}"))
    svc = a.group.get("service", "")
    start = int((a.fired_at or a.active_since) - 3600)
    q = f"from={start}" + (f"&service={quote(svc)}" if svc else "")
    links.append(("Dashboard", f"{dashboard}/?{q}"))
    return links


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


SEVERITY_ICON = {Severity.CRITICAL: ":red_circle:", Severity.ERROR: ":large_orange_circle:",
                 Severity.WARNING: ":large_yellow_circle:", Severity.INFO: ":large_blue_circle:"}  # fmt: skip


# --- channels -----------------------------------------------------------------------------------------
class Channel(ABC):
    def __init__(self, spec: ChannelSpec, env: dict[str, str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.min_interval = spec.min_interval if spec.min_interval is not None else self.default_min_interval
        self.max_attempts = spec.max_attempts
        self.timeout = spec.timeout

    default_min_interval = 0.0

    def __repr__(self) -> str:  # never the secrets
        return f"<{type(self).__name__} {self.name}>"

    @abstractmethod
    def requests(self, n: Notification) -> list[Request]: ...

    @abstractmethod
    def judge(self, status: int, body: str, headers: Any) -> Result: ...


class SlackChannel(Channel):
    """Incoming webhook: Block Kit; success is HTTP 200 with body ``ok``; at most one message a second."""

    default_min_interval = 1.0

    def __init__(self, spec: ChannelSpec, env: dict[str, str]) -> None:
        super().__init__(spec, env)
        self._url = env.get(spec.url_env or "", "")
        register_secret(self._url)

    def judge(self, status: int, body: str, headers: Any) -> Result:
        return judge_http(status, body, headers, ok=lambda s, b: s == 200 and b.strip() == "ok")

    def requests(self, n: Notification) -> list[Request]:
        return [Request(self._url, json.dumps(slack_message(n)).encode(), {"Content-Type": "application/json"})]


def slack_message(n: Notification) -> dict[str, Any]:
    if n.test:
        return {
            "text": "agentwatch test message: this channel works",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "agentwatch test message"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"Channel `{_esc(n.channel)}` works."}},
            ],
        }
    blocks: list[dict[str, Any]] = []
    state = f"FIRING ({len(n.firing)})" if n.firing else f"RESOLVED ({len(n.resolved)})"
    icon = SEVERITY_ICON[n.severity] if n.firing else ":white_check_mark:"
    head = f"{state}: {n.rule}"
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": head[:150], "emoji": True}})

    def section(a: Alert, resolved: bool) -> list[dict[str, Any]]:
        now = time.time()
        since = a.fired_at or a.active_since
        lines = [f"{':white_check_mark:' if resolved else icon} *{_esc(title(a))}*"]
        lines.append(f"*Where:* {_esc(where(a))} (project `{_esc(a.project)}`)")
        if resolved:
            lines.append(f"*Fired:* {iso(since)}  *Resolved:* {iso(a.resolved_at)}")
        else:
            new = " (new)" if a.fingerprint in n.new else ""
            lines.append(f"*Since:* {iso(since)} ({int((now - since) // 60)} min){new}")
        lines.append(f"*Value:* {_esc(figure(a))}" + (f" over {a.samples} samples" if a.samples else ""))
        extra = {k: v for k, v in a.details.items() if k not in ("trace_ids", "metric", "window", "op") and v}
        if extra:
            lines.append("_" + _esc(", ".join(f"{k}: {v}" for k, v in list(extra.items())[:6]))[:500] + "_")
        out: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}]
        buttons = [
            {"type": "button", "text": {"type": "plain_text", "text": t[:75]}, "url": u[:3000]}
            for t, u in alert_links(a, n.dashboard_url)[:4]
        ]
        if buttons:
            out.append({"type": "actions", "elements": buttons})
        return out

    shown_f, shown_r = n.firing[:10], n.resolved[:8]
    for a in shown_f:
        blocks.extend(section(a, False))
    if n.firing and n.resolved:
        blocks.append({"type": "divider"})
    for a in shown_r:
        blocks.extend(section(a, True))
    more = len(n.firing) - len(shown_f) + len(n.resolved) - len(shown_r)
    if more > 0:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"... and {more} more"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _esc(
        f"agentwatch | severity {n.severity.value} | rule {n.rule} | project {n.project}")}]})  # fmt: skip
    first = (n.firing or n.resolved)[0]
    text = f"[{state}] {n.rule}: {title(first)} ({where(first)})"
    return {"text": text[:3000], "blocks": blocks[:50]}


class PagerDutyChannel(Channel):
    """Events API v2: one incident per alert (``dedup_key`` from its fingerprint), resolved with the same key.
    Success is 202 (any 2xx); 429 and 5xx retry; 400 never does."""

    default_min_interval = 0.5  # 120 events a minute per integration key

    def __init__(self, spec: ChannelSpec, env: dict[str, str]) -> None:
        super().__init__(spec, env)
        self._key = env.get(spec.routing_key_env or "", "")
        self.url = spec.url or PAGERDUTY_EVENTS_URL
        register_secret(self._key)

    def judge(self, status: int, body: str, headers: Any) -> Result:
        return judge_http(status, body, headers, ok=lambda s, b: 200 <= s < 300)

    def requests(self, n: Notification) -> list[Request]:
        h = {"Content-Type": "application/json"}
        if n.test:
            dk = f"agentwatch/test/{int(n.created)}"
            trig = {"routing_key": self._key, "event_action": "trigger", "dedup_key": dk, "client": "agentwatch",
                    "payload": {"summary": "agentwatch test event (resolved right away)", "source": "agentwatch",
                                "severity": "info"}}  # fmt: skip
            res = {"routing_key": self._key, "event_action": "resolve", "dedup_key": dk}
            return [Request(self.url, json.dumps(b).encode(), h) for b in (trig, res)]
        out = [Request(self.url, json.dumps(self.trigger(a, n)).encode(), h) for a in n.firing]
        out += [Request(self.url, json.dumps(self.resolve(a)).encode(), h) for a in n.resolved]
        return out

    @staticmethod
    def dedup_key(a: Alert) -> str:
        return f"agentwatch/{a.project}/{a.rule}/{a.fingerprint}"[:255]

    def trigger(self, a: Alert, n: Notification) -> dict[str, Any]:
        links = alert_links(a, n.dashboard_url)
        details: dict[str, Any] = {
            "rule": a.rule, "where": where(a), "project": a.project, "labels": a.labels, "value": a.value,
            "threshold": a.threshold, "baseline": a.baseline, "samples": a.samples,
            "since": iso(a.fired_at or a.active_since), **{k: v for k, v in a.details.items()},
            "links": {t: u for t, u in links},
        }  # fmt: skip
        payload = {
            "summary": f"{title(a)}: {where(a)}: {figure(a)}"[:1024],
            "source": (a.group.get("service") or f"agentwatch/{a.project}")[:255],
            "severity": a.severity.value,  # critical, error, warning, info: PagerDuty's own four
            "timestamp": iso(a.fired_at or a.active_since),
            "group": a.rule,
            "class": str(a.details.get("metric") or a.labels.get("category") or "agentwatch"),
            "custom_details": details,
        }
        if a.group.get("task"):
            payload["component"] = a.group["task"]
        return {
            "routing_key": self._key, "event_action": "trigger", "dedup_key": self.dedup_key(a), "payload": payload,
            "links": [{"href": u, "text": t} for t, u in links], "client": "agentwatch", "client_url": n.dashboard_url,
        }  # fmt: skip

    def resolve(self, a: Alert) -> dict[str, Any]:
        return {"routing_key": self._key, "event_action": "resolve", "dedup_key": self.dedup_key(a)}


class WebhookChannel(Channel):
    """JSON POST, signed: ``X-Agentwatch-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with
    ``X-Agentwatch-Timestamp`` (epoch seconds), so a receiver can check origin and freshness."""

    def __init__(self, spec: ChannelSpec, env: dict[str, str]) -> None:
        super().__init__(spec, env)
        self._url = env.get(spec.url_env or "", "") if spec.url_env else (spec.url or "")
        self._secret = env.get(spec.secret_env or "", "")
        if spec.url_env:
            register_secret(self._url)
        register_secret(self._secret)

    def judge(self, status: int, body: str, headers: Any) -> Result:
        return judge_http(status, body, headers, ok=lambda s, b: 200 <= s < 300)

    def requests(self, n: Notification) -> list[Request]:
        body = json.dumps(webhook_body(n), default=str, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        h = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts}
        if self._secret:
            h[SIGNATURE_HEADER] = "sha256=" + sign(self._secret, ts, body)
        return [Request(self._url, body, h)]


def sign(secret: str, ts: str, body: bytes) -> str:
    return hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()


def webhook_body(n: Notification) -> dict[str, Any]:
    def one(a: Alert, status: str) -> dict[str, Any]:
        d = a.describe()
        d["status"] = status
        d["links"] = [{"text": t, "url": u} for t, u in alert_links(a, n.dashboard_url)]
        return d

    return {
        "version": "1", "status": n.kind, "project": n.project, "group_key": n.group_key, "rule": n.rule,
        "severity": n.severity.value, "sent_at": time.time(),
        "alerts": [one(a, "firing") for a in n.firing] + [one(a, "resolved") for a in n.resolved],
    }  # fmt: skip


class LogChannel(Channel):
    """For local use: one log line per alert on the ``agentwatch.alerts.notify`` logger."""

    def judge(self, status: int, body: str, headers: Any) -> Result:  # pragma: no cover - no HTTP
        return Result(True)

    def requests(self, n: Notification) -> list[Request]:
        return []

    def emit(self, n: Notification) -> None:
        if n.test:
            notify_log.warning("agentwatch test message on channel %s", n.channel)
        for a in n.firing:
            notify_log.warning("FIRING [%s] %s: %s: %s", a.severity.value, a.rule, where(a), figure(a))
        for a in n.resolved:
            notify_log.info("RESOLVED %s: %s", a.rule, where(a))


CHANNEL_TYPES: dict[ChannelType, type[Channel]] = {
    ChannelType.SLACK: SlackChannel,
    ChannelType.PAGERDUTY: PagerDutyChannel,
    ChannelType.WEBHOOK: WebhookChannel,
    ChannelType.LOG: LogChannel,
}


def make_channel(spec: ChannelSpec, env: dict[str, str]) -> Channel:
    return CHANNEL_TYPES[spec.type](spec, env)


# --- delivery -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        """Exponential with "equal jitter": half fixed, half random, so retries spread but still back off."""
        d = min(self.cap, self.base * 2 ** (attempt - 1))
        return d / 2 + random.uniform(0, d / 2)


def deliver(
    ch: Channel, n: Notification, client: Any, *, backoff: Backoff, record: Callable[[Delivery], None],
    stop: threading.Event | None = None, pace: Callable[[], None] | None = None,
) -> bool:  # fmt: skip
    """Every request of the notification, each retried per the policy; True when all were accepted."""
    import httpx

    if isinstance(ch, LogChannel):
        ch.emit(n)
        record(Delivery(time.time(), n.project, n.channel, n.group_key, n.kind, 1, "ok", 0, "", 0.0,
                        len(n.firing) + len(n.resolved)))  # fmt: skip
        return True
    for req in ch.requests(n):
        attempt = 0
        while True:
            attempt += 1
            if pace:
                pace()
            t0 = time.monotonic()
            try:
                r = client.post(req.url, content=req.body, headers=req.headers, timeout=ch.timeout)
                res = ch.judge(r.status_code, r.text, r.headers)
            except httpx.HTTPError as e:  # network errors and timeouts: retry
                res = Result(False, True, 0, scrub(f"{type(e).__name__}: {e}")[:300])
            dur = (time.monotonic() - t0) * 1000
            last = not res.ok and (not res.retryable or attempt >= ch.max_attempts)
            outcome = "ok" if res.ok else ("retry" if not last else ("gave_up" if res.retryable else "failed"))
            record(Delivery(time.time(), n.project, n.channel, n.group_key, n.kind, attempt, outcome, res.status,
                            scrub(res.error), dur, len(n.firing) + len(n.resolved)))  # fmt: skip
            if res.ok:
                break
            if last:
                log.warning("alert channel %s: %s notification for %s not delivered after %d attempt(s): %s",
                            n.channel, n.kind, n.rule, attempt, scrub(res.error))  # fmt: skip
                return False
            delay = backoff.delay(attempt)
            if res.retry_after is not None:
                delay = res.retry_after + random.uniform(0, min(1.0, res.retry_after * 0.1))
            if stop is not None:
                if stop.wait(delay):
                    return False
            else:
                time.sleep(delay)
    return True


class Worker:
    """One channel's queue and thread: sends one notification at a time, paced by ``min_interval``."""

    def __init__(
        self, ch: Channel, *, backoff: Backoff, record: Callable[[Delivery], None],
        done: Callable[[Notification, bool], None], maxsize: int = 1000,
    ) -> None:  # fmt: skip
        self.ch = ch
        self.backoff = backoff
        self.record = record
        self.done = done
        self.q: queue.Queue[Notification] = queue.Queue(maxsize)
        self.stop = threading.Event()
        self.inflight: set[tuple[str, str, str]] = set()
        self.lock = threading.Lock()
        self._last = 0.0
        self.thread = threading.Thread(target=self._run, name=f"agentwatch-alerts-{ch.name}", daemon=True)

    def submit(self, n: Notification) -> bool:
        with self.lock:
            if n.key() in self.inflight:
                return False
            try:
                self.q.put_nowait(n)
            except queue.Full:
                log.warning("alert channel %s: queue full, dropping a %s notification", self.ch.name, n.kind)
                return False
            self.inflight.add(n.key())
            return True

    def busy(self, key: tuple[str, str, str]) -> bool:
        with self.lock:
            return key in self.inflight

    def _pace(self) -> None:
        wait = self._last + self.ch.min_interval - time.monotonic()
        if wait > 0:
            self.stop.wait(wait)
        self._last = time.monotonic()

    def _run(self) -> None:
        import httpx

        with httpx.Client(follow_redirects=False) as client:
            while not self.stop.is_set():
                try:
                    n = self.q.get(timeout=0.2)
                except queue.Empty:
                    continue
                ok = False
                try:
                    ok = deliver(self.ch, n, client, backoff=self.backoff, record=self._safe_record, stop=self.stop,
                                 pace=self._pace)  # fmt: skip
                except Exception:  # noqa: BLE001 - one bad notification must not kill the channel
                    log.exception("alert channel %s: delivery crashed", self.ch.name)
                try:
                    if not self.stop.is_set():
                        self.done(n, ok)  # recorded in the notification log before the group is free again
                except Exception:  # noqa: BLE001
                    log.exception("alert channel %s: recording a delivery failed", self.ch.name)
                finally:
                    with self.lock:
                        self.inflight.discard(n.key())

    def _safe_record(self, d: Delivery) -> None:
        try:
            self.record(d)
        except Exception:  # noqa: BLE001 - the delivery log is best effort; the page matters more
            log.warning("could not write the alert delivery log", exc_info=True)


class Dispatcher:
    def __init__(
        self, channels: dict[str, Channel], *, record: Callable[[Delivery], None],
        done: Callable[[Notification, bool], None], backoff: Backoff | None = None,
    ) -> None:  # fmt: skip
        self.workers = {
            name: Worker(ch, backoff=backoff or Backoff(), record=record, done=done) for name, ch in channels.items()
        }

    def start(self) -> None:
        for w in self.workers.values():
            w.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        for w in self.workers.values():
            w.stop.set()
        for w in self.workers.values():
            if w.thread.is_alive():
                w.thread.join(timeout)

    def submit(self, n: Notification) -> bool:
        w = self.workers.get(n.channel)
        return bool(w and w.submit(n))

    def busy(self, key: tuple[str, str, str]) -> bool:
        w = self.workers.get(key[1])
        return bool(w and w.busy(key))
