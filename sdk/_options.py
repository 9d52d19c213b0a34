"""The small option types users pass in: budgets, the loop and circuit guards, redaction, advanced settings."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ._exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

OnBreach = Literal["raise", "warn"]


class Outcome(enum.StrEnum):
    """How a task ended, exported as ``agentwatch.task.outcome``."""

    OK = "ok"
    ERROR = "error"
    ESCALATED = "escalated"
    BUDGET_EXCEEDED = "budget_exceeded"
    LOOP_STOPPED = "loop_stopped"
    TIMEOUT = "timeout"


def _check_on_breach(value: str, owner: str) -> None:
    if value not in ("raise", "warn"):
        raise ConfigError(f"{owner}: on_breach must be 'raise' or 'warn', got {value!r}")


@dataclass(frozen=True)
class Budget:
    """Limits for one task; every limit is optional.

    Fed by the task's own spans: tokens and cost of every LLM call inside it (auto-instrumented or
    ``agentwatch.llm``), its tool calls and its wall time. Cost needs the ``genai-prices`` package; without it
    only the other limits act. Input tokens include cached tokens (OpenTelemetry GenAI conventions).

    Args:
        usd: most the task may spend, in US dollars.
        tokens: most input plus output tokens.
        llm_calls: most LLM calls.
        tool_calls: most tool calls.
        seconds: most wall time.
        on_breach: ``"raise"`` (default) raises ``BudgetExceeded`` at the task's next LLM or tool call;
            ``"warn"`` logs once. The task span records the breach (event ``agentwatch.budget.exceeded``) either way.

    Example:
        >>> with agentwatch.task("triage", budget=Budget(usd=0.50, llm_calls=20)):
        ...     run_agent()
    """

    usd: float | None = None
    tokens: int | None = None
    llm_calls: int | None = None
    tool_calls: int | None = None
    seconds: float | None = None
    on_breach: OnBreach = "raise"

    def __post_init__(self) -> None:
        for name in ("usd", "tokens", "llm_calls", "tool_calls", "seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"Budget.{name} must be a number >= 0, got {value!r}")
        _check_on_breach(self.on_breach, "Budget")


@dataclass(frozen=True)
class LoopGuard:
    """The loop breaker: the same tool with the same (normalised) arguments ``threshold`` times in a row in a task.

    Args:
        threshold: the number of identical calls in a row that is a loop (default 3); the call that reaches it
            is stopped before it runs.
        on_breach: ``"raise"`` (default) raises ``LoopDetected``; ``"warn"`` logs once and lets the call run.
    """

    threshold: int = 3
    on_breach: OnBreach = "raise"

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 2:
            raise ConfigError(f"LoopGuard.threshold must be an integer >= 2, got {self.threshold!r}")
        _check_on_breach(self.on_breach, "LoopGuard")


@dataclass(frozen=True)
class CircuitBreaker:
    """A circuit breaker per tool name: after ``failures`` consecutive failures the tool fails fast with
    ``CircuitOpen`` for ``cooldown_s`` seconds, then lets one trial call through (half-open): success closes the
    circuit, failure opens it again. State changes are span events ``agentwatch.circuit.*``.
    """

    failures: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int) or self.failures < 1:
            raise ConfigError(f"CircuitBreaker.failures must be an integer >= 1, got {self.failures!r}")
        if not isinstance(self.cooldown_s, (int, float)) or self.cooldown_s < 0:
            raise ConfigError(f"CircuitBreaker.cooldown_s must be >= 0, got {self.cooldown_s!r}")


RedactCallback = Callable[[str, str], str]
"""``callback(key, value) -> value``: called for every exported string value after the built-in masking."""

REDACTION_KINDS = frozenset({"email", "phone", "card", "iban", "ssn", "ip", "api_key", "bearer"})


@dataclass(frozen=True)
class Redaction:
    """What is masked before export (on by default).

    Args:
        kinds: built-in detectors to use; default all of ``REDACTION_KINDS`` (email, phone, card with Luhn check,
            iban with checksum, ssn, ip, api_key, bearer).
        patterns: extra regular expressions by label; a match becomes ``[REDACTED:<label>]``.
        callback: ``callback(key, value) -> value``, run after the built-in masking; if it fails the value is
            replaced by ``[REDACTED]`` (fail closed).
        keep_keys: attribute keys never masked (identifiers, model names, hashes) on top of the built-in list.
    """

    kinds: frozenset[str] = REDACTION_KINDS
    patterns: Mapping[str, str] = field(default_factory=dict)
    callback: RedactCallback | None = None
    keep_keys: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - REDACTION_KINDS
        if unknown:
            raise ConfigError(f"Redaction.kinds: unknown {sorted(unknown)}; known: {sorted(REDACTION_KINDS)}")
        for label, pattern in self.patterns.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"Redaction.patterns[{label!r}] is not a valid regex: {error}") from None


@dataclass(frozen=True)
class AdvancedOptions:
    """Settings most agents never touch. ``None`` means: the environment variable, else the default.

    Args:
        tracer_provider: use this SDK TracerProvider instead of the global one (our processor is added to it).
        span_exporter: export here instead of OTLP/HTTP (masking and content rules still apply).
        synchronous_export: export each span as it ends, on the caller's thread. For tests only: it blocks.
        max_queue_size, max_export_batch_size, schedule_delay_ms: the batch processor (``AGENTWATCH_*``/``OTEL_BSP_*``).
        export_timeout_s: deadline of one export, retries included.
        shutdown_timeout_s: longest ``shutdown()`` and the exit flush may take.
        compression: ``"gzip"`` or ``"none"``.
        headers: extra HTTP headers for the collector.
        max_content_chars: longest exported content value; longer ones are cut and marked.
        loop: the default loop breaker for tasks (``False``: off).
        circuit: the default circuit breaker for tools (``None``: off).
    """

    tracer_provider: TracerProvider | None = None
    span_exporter: SpanExporter | None = None
    synchronous_export: bool = False
    max_queue_size: int | None = None
    max_export_batch_size: int | None = None
    schedule_delay_ms: float | None = None
    export_timeout_s: float | None = None
    shutdown_timeout_s: float | None = None
    compression: Literal["gzip", "none"] | None = None
    headers: Mapping[str, str] | None = None
    max_content_chars: int | None = None
    loop: LoopGuard | Literal[False] = LoopGuard()
    circuit: CircuitBreaker | None = None
