"""``agentwatch`` command line. Subcommands: ``collector``, ``keys``, ``migrate``."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from pathlib import Path

log = logging.getLogger("agentwatch")


class CliError(RuntimeError):
    """Printed as one line, exit code 2."""


def _setup_logging(*, json_lines: bool, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:

        class _Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return json.dumps(
                    {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                     "message": record.getMessage()}
                )  # fmt: skip

        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("httpx", "httpcore"):  # one line per HTTP request is noise in a service log
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _settings(args: argparse.Namespace):
    from pydantic import ValidationError

    from agentwatch.collector.settings import CollectorSettings

    overrides = {k: v for k, v in vars(args).items() if k in CollectorSettings.model_fields and v is not None}
    try:
        return CollectorSettings(**overrides)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'setting'}: {err['msg']}" for err in e.errors())
        raise CliError(f"bad configuration: {problems}") from None


def _open_store(settings):
    from agentwatch.collector.store import StoreError, open_store

    try:
        return open_store(data_dir=settings.data_dir, clickhouse_url=settings.clickhouse_url)
    except StoreError as e:
        raise CliError(str(e)) from None


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise CliError(
                f"cannot listen on {host}:{port}: {e.strerror}. Stop what uses it, or pass --port another port."
            ) from None


def cmd_collector(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(json_lines=settings.log_json)
    _check_port(settings.host, settings.port)
    import uvicorn

    from agentwatch.collector.app import build, create_app
    from agentwatch.collector.auth import KeySpecError
    from agentwatch.collector.migrations import migrate
    from agentwatch.collector.pricing import PriceFileError, Pricer

    try:
        pricer = Pricer(price_file=settings.price_file)
    except PriceFileError as e:
        raise CliError(str(e)) from None
    store = _open_store(settings)
    migrate(store, ttl_days=settings.ttl_days)
    collector = build(settings, store, pricer=pricer)
    try:
        provisioned = collector.keys.bootstrap(settings.api_keys, data_dir=settings.data_dir)
    except KeySpecError as e:
        raise CliError(str(e)) from None
    if provisioned:
        log.info("first start: created project 'default' with admin, ingest and read keys in %s", provisioned)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: keys and spans travel in clear text unless TLS terminates in front of agentwatch",
            settings.host,
        )
    where = (
        settings.clickhouse_url.split("@")[-1] if settings.clickhouse_url else f"embedded chDB in {settings.data_dir}"
    )
    log.info("agentwatch collector on http://%s:%d (store: %s)", settings.host, settings.port, where)
    from agentwatch.alerts import AlertConfigError

    try:
        app = create_app(collector)
    except AlertConfigError as e:
        raise CliError(str(e)) from None
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    store.close()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from agentwatch.collector.up import run_up

    settings = _settings(args)
    _setup_logging(json_lines=settings.log_json)
    _check_port(settings.host, settings.port)
    _check_port("127.0.0.1", args.dashboard_port)
    return run_up(
        data_dir=settings.data_dir,
        host=settings.host,
        port=settings.port,
        dashboard_port=args.dashboard_port,
        rules=args.rules,
        demo=args.demo,
        demo_rate=args.rate,
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    from agentwatch.dashboard import main as dashboard_main

    argv = ["--port", str(args.port), "--host", args.host] + (["--api", args.api] if args.api else [])
    return dashboard_main(argv)


def cmd_keys(args: argparse.Namespace) -> int:
    from agentwatch.collector.auth import Keys, KeySpecError, Role
    from agentwatch.collector.migrations import migrate

    settings = _settings(args)
    store = _open_store(settings)
    try:
        migrate(store)
        keys = Keys(store)
        if args.keys_cmd == "create":
            key = keys.create(args.project, Role(args.role), args.name or "")
            print(json.dumps({"key": key, "project": args.project, "role": args.role}))
            print("store this key now: it is not shown again", file=sys.stderr)
        elif args.keys_cmd == "list":
            for k in keys.list():
                print(json.dumps(k))
        elif args.keys_cmd == "revoke":
            n = keys.revoke(args.prefix)
            if not n:
                raise CliError(f"no active key matches {args.prefix!r}")
            print(f"revoked {n} key(s)")
    except KeySpecError as e:
        raise CliError(str(e)) from None
    finally:
        store.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from agentwatch.collector.migrations import Target, migrate, render

    if args.print_sql:
        for sql in render(Target(cluster=args.cluster)):
            print(sql.rstrip() + ";\n")
        return 0
    if args.cluster:
        raise CliError("--cluster only renders SQL (with --print-sql); run it with clickhouse-client on the cluster")
    settings = _settings(args)
    store = _open_store(settings)
    try:
        applied = migrate(store, ttl_days=settings.ttl_days)
    finally:
        store.close()
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentwatch", description="Observability and cost monitoring for AI agents.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def store_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", type=Path, help="embedded store, spool and keys (default ./.agentwatch)")
        sp.add_argument("--clickhouse-url", help="ClickHouse server URL instead of the embedded store")

    c = sub.add_parser("collector", help="run the collector: OTLP/HTTP ingest, read API")
    store_flags(c)
    c.add_argument("--host", help="bind address (default 127.0.0.1)")
    c.add_argument("--port", type=int, help="port (default 4318)")
    c.add_argument("--price-file", type=Path, help="YAML file of custom model prices")
    c.add_argument("--ttl-days", type=int, help="drop spans older than this many days")
    c.add_argument("--rules", type=Path, help="alert rules YAML (default: built-in rules when Slack/PagerDuty is set)")
    c.set_defaults(fn=cmd_collector)

    u = sub.add_parser("up", help="collector + alerts + dashboard on the embedded store (--demo: and a demo fleet)")
    u.add_argument("--demo", action="store_true", help="also run the demo fleet of agents")
    u.add_argument("--rate", type=float, help="demo tasks per second (default 1)")
    u.add_argument("--data-dir", type=Path, help="embedded store, spool and keys (default ./.agentwatch)")
    u.add_argument("--host", help="collector bind address (default 127.0.0.1)")
    u.add_argument("--port", type=int, help="collector port (default 4318)")
    u.add_argument("--dashboard-port", type=int, default=8501, help="dashboard port (default 8501)")
    u.add_argument("--rules", type=Path, help="alert rules file (default: built-in rules)")
    u.set_defaults(fn=cmd_up)

    from agentwatch.dashboard import add_arguments as dashboard_flags  # light: no streamlit import

    d = sub.add_parser("dashboard", help="the Streamlit dashboard over a collector's read API")
    dashboard_flags(d)
    d.set_defaults(fn=cmd_dashboard)

    sub.add_parser("demo", help="a demo fleet of agents sending to a collector (--endpoint, --tasks, --rate)")

    k = sub.add_parser("keys", help="create, list and revoke API keys (embedded store: stop the collector first)")
    ks = k.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    kc = ks.add_parser("create", help="create a key; printed once")
    kc.add_argument("--project", required=True)
    kc.add_argument("--role", required=True, choices=["ingest", "read", "admin"])
    kc.add_argument("--name", help="what the key is for")
    kl = ks.add_parser("list", help="list keys (prefixes only)")
    kr = ks.add_parser("revoke", help="revoke by key prefix (first 12 characters) or whole key")
    kr.add_argument("prefix")
    for leaf in (kc, kl, kr):
        store_flags(leaf)
    k.set_defaults(fn=cmd_keys)

    m = sub.add_parser("migrate", help="apply schema migrations, or print their SQL")
    store_flags(m)
    m.add_argument("--print-sql", action="store_true", help="print the DDL instead of applying it")
    m.add_argument("--cluster", help="with --print-sql: ON CLUSTER, Replicated and Distributed tables")
    m.add_argument("--ttl-days", type=int)
    m.set_defaults(fn=cmd_migrate)
    from agentwatch.alerts.cli import register as register_alerts

    register_alerts(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:  # its own parser: everything after `demo` is its
        from agentwatch.collector.demo import main as demo_main

        return demo_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except CliError as e:
        print(f"agentwatch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
