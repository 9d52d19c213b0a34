"""agentwatch dashboard: a Streamlit app over the collector's read API.

``agentwatch dashboard [--api URL] [--port P]`` (or ``python -m agentwatch.dashboard``) runs
``streamlit run`` on the entry file with the settings passed through the environment. Streamlit is imported
only by the app itself, never by this module.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from agentwatch.dashboard.settings import DEFAULT_ENDPOINT, ENDPOINT_ENV

ENTRY = Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501

__all__ = ["ENTRY", "add_arguments", "command", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The dashboard's flags (shared by ``agentwatch dashboard`` and ``python -m agentwatch.dashboard``)."""
    p.add_argument("--api", help=f"the collector's URL (default ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"dashboard port (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")


def command(args: argparse.Namespace, *, environ: dict[str, str] | None = None) -> list[str]:
    """The ``streamlit run`` command line for parsed flags (and sets the environment it needs)."""
    env = os.environ if environ is None else environ
    if args.api:
        env[ENDPOINT_ENV] = args.api
    return [
        sys.executable, "-m", "streamlit", "run", str(ENTRY),
        "--server.port", str(args.port), "--server.address", args.host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer", "--theme.base", "light",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the dashboard until interrupted. On POSIX the process becomes Streamlit (exec), so signals from a
    supervisor (``agentwatch up``, systemd, Ctrl-C) reach it directly; elsewhere it waits for the child."""
    p = argparse.ArgumentParser(prog="agentwatch dashboard", description="The agentwatch dashboard (Streamlit).")
    add_arguments(p)
    args = p.parse_args(argv)
    env = dict(os.environ)
    cmd = command(args, environ=env)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(sys.executable, cmd, env)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
