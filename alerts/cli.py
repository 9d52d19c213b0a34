"""``agentwatch alerts check | test | silence``. ``register(subparsers)`` adds the group to the main CLI.

The embedded store belongs to the running collector (chDB locks its directory), so with a collector
running use ``--api URL`` (and a key in ``AGENTWATCH_API_KEY`` or ``--key``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _fail(msg: str) -> Any:
    from agentwatch.collector.cli import CliError

    return CliError(msg)


def _config(path: Path | None):
    from agentwatch.alerts.config import AlertConfigError, load

    try:
        return load(path)
    except AlertConfigError as e:
        raise _fail(str(e)) from None


def _key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("AGENTWATCH_API_KEY")
    if not key:
        raise _fail("--api needs a key: pass --key or set AGENTWATCH_API_KEY")
    return key


def _local_store(args: argparse.Namespace):
    from agentwatch.alerts import schema
    from agentwatch.collector.cli import _open_store, _settings
    from agentwatch.collector.migrations import migrate

    store = _open_store(_settings(args))
    migrate(store)
    schema.ensure(store)
    return store


def _fmt_sample(rule, s) -> str:
    from agentwatch.alerts.channels import fmt_num

    where = ", ".join(f"{k}={v}" for k, v in s.labels.items()) or "whole project"
    thr = f" {rule.op if rule.metric else 'vs'} {fmt_num(s.threshold)}" if s.threshold is not None else ""
    base = f" (baseline {fmt_num(s.baseline)})" if s.baseline is not None else ""
    state = "ACTIVE" if s.active else "ok"
    return f"  {state:<6} {where}: {fmt_num(s.value)}{thr}{base}, {s.count} samples"


def cmd_check(args: argparse.Namespace) -> int:
    from agentwatch.alerts.channels import Backoff, Dispatcher, make_channel
    from agentwatch.alerts.engine import Engine
    from agentwatch.alerts.sources import ApiReader, StoreReader
    from agentwatch.alerts.state import MemoryState

    config = _config(args.rules)
    if not config.rules:
        raise _fail("no rules: pass --rules FILE (or configure Slack/PagerDuty for the built-in rules)")
    store = None
    if args.api:
        api = ApiReader(args.api, _key(args))
        projects = ["api"]

        def reader(project: str):
            return api
    else:
        store = _local_store(args)
        projects = sorted({r["project"] for r in store.query(
            "SELECT DISTINCT ProjectId AS project FROM api_keys FINAL WHERE Revoked = 0")})  # fmt: skip

        def reader(project: str):
            return StoreReader(store, project)

    dispatcher = None
    if args.send:
        state = MemoryState()
        chans = {n: make_channel(s, config.env) for n, s in config.channels.items()}
        holder: dict[str, Any] = {}
        dispatcher = Dispatcher(chans, record=state.add_delivery, done=lambda n, ok: holder["e"].on_done(n, ok),
                                backoff=Backoff())  # fmt: skip
    else:
        state = MemoryState()
    engine = Engine(config, state, reader=reader, projects=lambda: projects, dispatcher=dispatcher, ignore_for=True)
    if args.send:
        holder["e"] = engine
        dispatcher.start()
    try:
        runs = engine.evaluate()
        active = 0
        for run in runs:
            rule = engine.rules[run.rule]
            head = f"{run.rule} [{rule.severity.value}] project {run.project}" if len(projects) > 1 else \
                f"{run.rule} [{rule.severity.value}]"  # fmt: skip
            if not run.ok:
                print(f"{head}: ERROR {run.error}")
                continue
            print(f"{head}: {sum(s.active for s in run.samples or [])} active of {len(run.samples or [])} group(s)")
            for s in run.samples or []:
                active += s.active
                print(_fmt_sample(rule, s))
        if args.send:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(w.inflight for w in dispatcher.workers.values()):
                time.sleep(0.1)
            for d in reversed(state.deliveries):
                print(f"sent {d.kind} to {d.channel} (attempt {d.attempt}): {d.outcome}"
                      + (f" {d.error}" if d.error else ""))  # fmt: skip
        if args.json:
            print(json.dumps({"active": active}))
    finally:
        if dispatcher:
            dispatcher.stop()
        if store is not None:
            store.close()
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    import httpx

    from agentwatch.alerts.channels import Backoff, Notification, deliver, make_channel
    from agentwatch.alerts.model import Severity

    config = _config(args.rules)
    spec = config.channels.get(args.channel)
    if spec is None:
        raise _fail(f"no channel {args.channel!r}; known: {', '.join(sorted(config.channels))} "
                    "(slack and pagerduty come from AGENTWATCH_SLACK_WEBHOOK_URL / AGENTWATCH_PAGERDUTY_ROUTING_KEY)")
    ch = make_channel(spec, config.env)
    n = Notification("test", args.channel, "test", "agentwatch-test", Severity.INFO, [], [], test=True,
                     dashboard_url=config.dashboard_url)  # fmt: skip
    attempts: list = []

    def record(d):
        attempts.append(d)
        print(f"attempt {d.attempt}: {d.outcome}" + (f" (HTTP {d.http_status})" if d.http_status else "")
              + (f" {d.error}" if d.error else ""))  # fmt: skip

    with httpx.Client() as client:
        ok = deliver(ch, n, client, backoff=Backoff(base=1.0, cap=8.0), record=record)
    print(f"{args.channel}: {'delivered' if ok else 'NOT delivered'}")
    return 0 if ok else 1


def cmd_silence(args: argparse.Namespace) -> int:
    import httpx

    from agentwatch.alerts.model import parse_duration

    if args.api:
        h = {"Authorization": f"Bearer {_key(args)}"}
        base = args.api.rstrip("/") + "/api/v1/alerts"
        if args.silence_cmd == "add":
            r = httpx.post(base + "/silences", headers=h, timeout=30, json={
                "matchers": args.match, "duration": args.duration, "comment": args.comment or ""})  # fmt: skip
        elif args.silence_cmd == "expire":
            r = httpx.delete(f"{base}/silences/{args.id}", headers=h, timeout=30)
        else:
            r = httpx.get(base, headers=h, params={"history": 0, "deliveries": 0}, timeout=30)
        if r.status_code >= 300:
            raise _fail(f"HTTP {r.status_code}: {r.text[:300]}")
        out = r.json()
        for s in out["silences"] if args.silence_cmd == "list" else [out]:
            print(json.dumps(s))
        return 0
    from agentwatch.alerts.config import AlertConfig
    from agentwatch.alerts.service import AlertService

    store = _local_store(args)
    try:
        svc = AlertService(AlertConfig((), {}), store=store, projects=lambda: [])
        now = time.time()
        if args.silence_cmd == "add":
            try:
                s = svc.add_silence(args.project, args.match, duration_s=parse_duration(args.duration),
                                    created_by=os.environ.get("USER", ""), comment=args.comment or "")  # fmt: skip
            except ValueError as e:
                raise _fail(str(e)) from None
            print(json.dumps(s.describe(now)))
        elif args.silence_cmd == "expire":
            s = svc.expire_silence(args.project, args.id)
            if s is None:
                raise _fail(f"no silence {args.id!r} in project {args.project}")
            print(json.dumps(s.describe(now)))
        else:
            for s in svc.state.load_silences(args.project):
                print(json.dumps(s.describe(now)))
    finally:
        store.close()
    return 0


def register(sub: Any) -> None:
    """Add ``alerts`` to the ``agentwatch`` subcommands."""

    def store_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", type=Path, help="embedded store (the collector must be stopped)")
        sp.add_argument("--clickhouse-url", help="ClickHouse server URL instead of the embedded store")

    def api_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--api", help="a running collector's URL, e.g. http://127.0.0.1:4318 (read API)")
        sp.add_argument("--key", help="API key for --api (default AGENTWATCH_API_KEY)")

    a = sub.add_parser("alerts", help="alert rules: check once, test a channel, silence")
    asub = a.add_subparsers(dest="alerts_cmd", required=True, metavar="ACTION")
    c = asub.add_parser("check", help="evaluate the rules once and print (--send also notifies)")
    c.add_argument("--rules", type=Path, help="rules YAML (default: the built-in rules)")
    c.add_argument("--send", action="store_true", help="send notifications for active alerts")
    c.add_argument("--json", action="store_true", help="also print a JSON summary line")
    api_flags(c)
    store_flags(c)
    c.set_defaults(fn=cmd_check)
    t = asub.add_parser("test", help="send a test message to a channel")
    t.add_argument("channel", help="channel name: slack, pagerduty, log, or one from --rules")
    t.add_argument("--rules", type=Path)
    t.set_defaults(fn=cmd_test)
    s = asub.add_parser("silence", help="add, list and expire silences")
    ssub = s.add_subparsers(dest="silence_cmd", required=True, metavar="ACTION")
    sa = ssub.add_parser("add", help="silence alerts whose labels match")
    sa.add_argument("--match", action="append", required=True, help="label=value or label=~regex (repeatable)")
    sa.add_argument("--duration", default="2h", help="30m, 2h, 1d (default 2h)")
    sa.add_argument("--comment")
    sl = ssub.add_parser("list", help="silences (active and recent)")
    se = ssub.add_parser("expire", help="end a silence now")
    se.add_argument("id")
    for leaf in (sa, sl, se):
        api_flags(leaf)
        store_flags(leaf)
        leaf.add_argument("--project", default="default", help="project (local store only; a key fixes its own)")
    s.set_defaults(fn=cmd_silence)


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="agentwatch")
    register(p.add_subparsers(dest="cmd", required=True))
    ns = p.parse_args()
    sys.exit(ns.fn(ns))
