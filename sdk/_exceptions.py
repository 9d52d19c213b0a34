"""The exceptions agentwatch raises on purpose: bad configuration at ``init()``, and the guards that stop a run."""

from __future__ import annotations


class AgentwatchError(Exception):
    """Base of every exception agentwatch raises on purpose."""


class ConfigError(AgentwatchError, ValueError):
    """A bad setting, raised by ``init()`` only: after start-up agentwatch never raises because of telemetry."""


class GuardError(AgentwatchError):
    """Base of the guards' exceptions: a budget, the loop breaker or a circuit breaker stopped a call."""


class BudgetExceeded(GuardError):
    """The task went over its ``Budget``; raised at its next LLM or tool call.

    Attributes:
        what: ``usd``, ``tokens``, ``llm_calls``, ``tool_calls`` or ``seconds``.
        limit: the budget's limit for ``what``.
        value: what the task had used when the breach was seen.
    """

    def __init__(self, what: str, limit: float, value: float, *, task: str | None = None) -> None:
        self.what, self.limit, self.value, self.task = what, limit, value, task
        where = f"task {task!r} " if task else ""
        super().__init__(f"{where}went over its {what} budget: {value:g} > {limit:g}")


class LoopDetected(GuardError):
    """The same tool was called with the same arguments ``repeats`` times in a row inside one task."""

    def __init__(self, tool: str, args_hash: str, repeats: int, *, task: str | None = None) -> None:
        self.tool, self.args_hash, self.repeats, self.task = tool, args_hash, repeats, task
        where = f" in task {task!r}" if task else ""
        super().__init__(f"tool {tool!r} called {repeats} times in a row with the same arguments{where}")


class CircuitOpen(GuardError):
    """The tool failed ``failures`` times in a row; it fails fast until ``retry_in`` seconds have passed."""

    def __init__(self, tool: str, failures: int, retry_in: float) -> None:
        self.tool, self.failures, self.retry_in = tool, failures, retry_in
        super().__init__(f"circuit open for tool {tool!r} after {failures} failures; retry in {retry_in:.1f}s")
