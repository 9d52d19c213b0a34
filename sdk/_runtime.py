"""Process-wide state the span API reads on the hot path: the tracer, the content rules, the current run and task."""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from . import _settings
from ._options import CircuitBreaker, LoopGuard

if TYPE_CHECKING:
    from ._circuit import Circuits
    from ._task import TaskRun

VERSION = "0.1.0"
SCOPE = "agentwatch"

CURRENT_RUN: ContextVar[Any] = ContextVar("agentwatch_run", default=None)
"""The innermost span of ours entered with ``with`` in this context (what ``__exit__`` ends)."""

CURRENT_TASK: ContextVar[TaskRun | None] = ContextVar("agentwatch_task", default=None)
"""The innermost task in this context: the guards and the budget accounting look here."""


class Runtime:
    """What ``init()`` configures. Before ``init()`` spans go to the global tracer provider, without content."""

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(SCOPE, VERSION)
        self._enabled: bool | None = None
        self.capture_content = False  # no masking pipeline before init(): never put content on spans
        self.max_content_chars = 16384
        self.loop: LoopGuard | None = LoopGuard()
        self.circuit: CircuitBreaker | None = None
        self.tasks_by_trace: dict[int, TaskRun] = {}
        self.lock = threading.Lock()
        self._circuits: Circuits | None = None

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            # Read lazily, not at import; a bad value here means enabled (init() is where bad values fail).
            try:
                self._enabled = _settings.ENABLED.resolve(None)
            except ValueError:
                self._enabled = True
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = value

    @property
    def circuits(self) -> Circuits:
        if self._circuits is None:
            from ._circuit import Circuits

            self._circuits = Circuits()
        return self._circuits

    def reset_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.tasks_by_trace = {}
        if self._circuits is not None:
            self._circuits.reset_after_fork()


RUNTIME = Runtime()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RUNTIME.reset_after_fork)
