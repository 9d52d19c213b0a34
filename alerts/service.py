"""The alert engine as a collector daemon: evaluates on a schedule, delivers through per-channel workers.

In ``collector/app.py``::

    alerts = AlertService.for_collector(c)      # reads --rules / AGENTWATCH_* (raises AlertConfigError)
    app.state.alerts = alerts                   # GET /api/v1/alerts reads it
    app.include_router(alerts_router)
    # lifespan: alerts.start() ... await run_in_threadpool(alerts.stop)
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from agentwatch.alerts import schema
from agentwatch.alerts.channels import Backoff, Dispatcher, make_channel
from agentwatch.alerts.config import ENV_RULES, AlertConfig, load
from agentwatch.alerts.engine import Engine
from agentwatch.alerts.model import Matcher, Silence
from agentwatch.alerts.sources import Reader, StoreReader
from agentwatch.alerts.state import MemoryState, StoreState

log = logging.getLogger(__name__)


class AlertService:
    def __init__(
        self, config: AlertConfig, *, store: Any = None, state: MemoryState | None = None,
        reader: Callable[[str], Reader] | None = None, projects: Callable[[], list[str]] | None = None,
        backoff: Backoff | None = None, failure_holdoff: float = 300.0, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.config = config
        self.store = store
        self.state = state or (StoreState(store) if store is not None else MemoryState())
        if reader is None:
            if store is None:
                raise ValueError("AlertService needs a store or a reader")
            reader = lambda project: StoreReader(store, project)  # noqa: E731
        self.projects = projects or self._projects_from_keys
        channels = {name: make_channel(spec, config.env) for name, spec in config.channels.items()}
        self.dispatcher = Dispatcher(channels, record=self.state.add_delivery, done=self._done, backoff=backoff)
        self.engine = Engine(
            config, self.state, reader=reader, projects=self.projects, dispatcher=self.dispatcher, clock=clock,
            failure_holdoff=failure_holdoff,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        # one evaluator among the collectors sharing the store: this one, while it holds the lease
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.leader: str | None = None
        self._leading = False
        self._expires = 0.0

    @classmethod
    def for_collector(cls, c: Any, *, rules: str | None = None, **kw: Any) -> AlertService:
        """From the collector's settings (``rules``; else ``AGENTWATCH_RULES``) and environment."""
        path = rules or getattr(c.settings, "rules", None) or os.environ.get(ENV_RULES) or None
        return cls(load(path), store=c.store, **kw)

    def _projects_from_keys(self) -> list[str]:
        from agentwatch.collector.migrations import KEYS_TABLE

        rows = self.store.query(f"SELECT DISTINCT ProjectId AS p FROM {KEYS_TABLE} FINAL WHERE Revoked = 0")
        return [r["p"] for r in rows]

    def _done(self, n, ok: bool) -> None:
        self.engine.on_done(n, ok)

    # --- daemon -----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.config.rules)

    def start(self) -> None:
        if self.store is not None:
            schema.ensure(self.store)  # no-op once migrations 20-22 ran
        self.engine.load()
        self.dispatcher.start()
        if not self.active:
            log.info("alerts: no rules (no rules file, no Slack or PagerDuty configured); evaluation is off")
            return
        log.info("alerts: %d rule(s) from %s, evaluated every %gs, channels: %s", len(self.config.rules),
                 self.config.source, self.config.interval, ", ".join(self.config.channels))  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="agentwatch-alerts", daemon=True)
        self._thread.start()

    @property
    def lease_ttl(self) -> float:
        """How long a collector that stopped answering keeps the lease: three intervals, at least 5 s."""
        return max(3 * self.config.interval, 5.0)

    def _lead(self) -> bool:
        """Whether this collector evaluates now. Taking over (at start, or from one that stopped or lapsed)
        reloads the alerts and notification log from the store, so the incident goes on without a second page."""
        now = time.time()
        try:
            holder, self._expires = self.state.lease(self.holder, self.lease_ttl, now)
        except Exception as e:  # noqa: BLE001 - the store is down: keep the role we had while our lease runs
            log.debug("alerts: cannot read the evaluation lease: %s", e)
            return self._leading and now < self._expires
        leading = holder == self.holder
        if leading and not self._leading:
            if self.leader is not None:  # at start, load() ran already
                log.info("alerts: taking over evaluation from %s", self.leader)
                self.engine.load()
        elif not leading and (self._leading or self.leader != holder):
            log.info("alerts: %s evaluates (it holds the lease); this collector stands by", holder)
        self.leader, self._leading = holder, leading
        return leading

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._lead():
                    self.engine.evaluate()
            except Exception:  # noqa: BLE001 - the daemon outlives any one evaluation
                self.errors += 1
                log.exception("alert evaluation failed")
            self._stop.wait(self.config.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            if self._leading:
                try:
                    self.state.release(self.holder)
                except Exception:  # noqa: BLE001 - the lease lapses by itself
                    log.warning("alerts: could not release the evaluation lease; it lapses in %gs", self.lease_ttl)
        self.dispatcher.stop()

    # --- silences --------------------------------------------------------------------------------------
    def add_silence(self, project: str, matchers: list[str], *, duration_s: float, created_by: str = "",
                    comment: str = "", starts_at: float | None = None) -> Silence:  # fmt: skip
        if not matchers:
            raise ValueError("a silence needs at least one matcher (label=value)")
        if not 0 < duration_s <= 366 * 86400:
            raise ValueError("a silence lasts between 1 second and a year")
        parsed = tuple(Matcher.parse(m) for m in matchers)
        start = starts_at if starts_at is not None else time.time()
        s = Silence(secrets.token_hex(6), project, parsed, start, start + duration_s, created_by[:128], comment[:1000])
        self.state.save_silence(s)
        return s

    def expire_silence(self, project: str, silence_id: str) -> Silence | None:
        for s in self.state.load_silences(project):
            if s.id == silence_id:
                now = time.time()
                done = Silence(s.id, s.project, s.matchers, s.starts_at, min(s.ends_at, now), s.created_by, s.comment)
                self.state.save_silence(done)
                return done
        return None

    # --- the API view ------------------------------------------------------------------------------------
    def view(self, project: str, *, history: int = 100, deliveries: int = 100) -> dict[str, Any]:
        now = time.time()
        out = {
            "enabled": self.active,
            "evaluator": {"this_collector": self.holder, "leader": self.leader, "evaluating": self._leading},
            **self.config.describe(),
            **self.engine.snapshot(project),
            "history": self.state.history(project, history),
            "deliveries": [d.describe() for d in self.state.deliveries_of(project, deliveries)],
            "silences": [s.describe(now) for s in self.state.load_silences(project) if s.ends_at > now - 86400],
        }
        return out
