from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sdk_fakes import fake_llm

import agentwatch
from agentwatch import _errors
from agentwatch._runtime import RUNTIME
from agentwatch.testing import agentwatch_spans  # noqa: F401 - the plugin's fixture, until its entry point is installed


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    yield
    agentwatch.shutdown(timeout_s=1)
    RUNTIME._circuits = None


@pytest.fixture
def quiet_internal_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal errors logged and swallowed, as outside pytest (they fail the test otherwise)."""
    monkeypatch.setattr(_errors, "RERAISE_UNDER_PYTEST", False)
    monkeypatch.setattr(_errors, "_last_logged", -1e9)


@pytest.fixture
def llm_server() -> Iterator[Any]:
    with fake_llm() as server:
        yield server
