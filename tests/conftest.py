"""Shared fixtures (the harness itself is in harness.py: import it from there, not from conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import CollectorProc, collector_env, free_port


@pytest.fixture
def make_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., CollectorProc]]:
    """A factory for collectors of one's own (fault tests: kill, restart, limits)."""
    started: list[CollectorProc] = []

    def make(*, data_dir: Path | None = None, args: list[str] | None = None, **env: str) -> CollectorProc:
        d = data_dir or tmp_path_factory.mktemp("aw") / "data"
        c = CollectorProc(d, free_port(), collector_env(**env), list(args or []))
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.stop()


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    """One collector shared by the session; tests keep apart by their own trace ids and service names. Its task
    summarizer runs often, so the reads of every test mix summary rows with tasks computed from the rollups."""
    d = tmp_path_factory.mktemp("collector") / "data"
    env = collector_env(AGENTWATCH_SUMMARY_INTERVAL="0.5")
    c = CollectorProc(d, free_port(), env).start()
    yield c
    c.stop()
