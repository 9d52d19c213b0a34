"""agentwatch: one line to instrument an AI agent — tasks, prompts, tool calls, decisions — with budgets and a
loop breaker that stop a runaway run.

    import agentwatch
    agentwatch.init(service_name="support-agent")

    @agentwatch.tool
    def search(query: str) -> list[str]: ...

    with agentwatch.task("triage", user_id="u-42", budget=agentwatch.Budget(usd=0.50)):
        run_agent()

Spans follow the OpenTelemetry GenAI semantic conventions and go to the agentwatch collector over OTLP/HTTP.
Telemetry never raises into the agent; the guards (``BudgetExceeded``, ``LoopDetected``, ``CircuitOpen``) do,
on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from opentelemetry.util.types import AttributeValue

from ._errors import handle_internal_errors, logger
from ._exceptions import AgentwatchError, BudgetExceeded, CircuitOpen, ConfigError, GuardError, LoopDetected
from ._llm import LlmRun as LlmCall
from ._llm import LlmSpec
from ._options import AdvancedOptions, Budget, CircuitBreaker, LoopGuard, Outcome, Redaction
from ._runtime import CURRENT_TASK, VERSION
from ._sdk import DEFAULT
from ._task import TaskRun as Task
from ._task import TaskSpec, TaskUsage
from ._tool import ToolRun as ToolCall
from ._tool import ToolSpec, decision

__version__ = VERSION

__all__ = [
    "AdvancedOptions",
    "AgentwatchError",
    "Budget",
    "BudgetExceeded",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "GuardError",
    "LlmCall",
    "LoopDetected",
    "LoopGuard",
    "Outcome",
    "Redaction",
    "Task",
    "TaskUsage",
    "ToolCall",
    "current_task",
    "decision",
    "delivery_stats",
    "escalate",
    "force_flush",
    "init",
    "llm",
    "shutdown",
    "task",
    "tool",
]

for _public in (AgentwatchError, BudgetExceeded, CircuitOpen, ConfigError, GuardError, LoopDetected):
    _public.__module__ = "agentwatch"  # error.type reads agentwatch.BudgetExceeded, not a private module
del _public

F = TypeVar("F", bound=Callable[..., Any])

init = DEFAULT.init
shutdown = DEFAULT.shutdown
force_flush = DEFAULT.force_flush
delivery_stats = DEFAULT.delivery_stats


@overload
def task(name: str, **options: Any) -> TaskSpec: ...
@overload
def task(name: F) -> F: ...


def task(
    name: Any,
    *,
    agent: str | None = None,
    conversation_id: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    provider: str | None = None,
    budget: Budget | None = None,
    loop: LoopGuard | bool | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Any:
    """One agent run: the root ``invoke_agent {name}`` span, with its outcome, budget and loop breaker.

    A context manager (``with agentwatch.task("triage") as t:``), a decorator (sync, async, generators; the
    function keeps its signature; ``@agentwatch.task`` alone takes the function's name), or explicit
    ``t = agentwatch.task("triage").start(); ...; t.end()`` for callbacks.

    The outcome (``agentwatch.task.outcome``) is ``ok``, or ``error`` when an exception leaves the task (status
    ERROR, ``error.type``; the exception is re-raised unchanged), ``budget_exceeded``, ``loop_stopped``,
    ``timeout`` (``TimeoutError``), ``escalated`` (``agentwatch.escalate``), or what ``t.set_outcome`` says.

    Args:
        name: the task's name (``agentwatch.task.name``), e.g. ``"triage"``.
        agent: the agent's name (``gen_ai.agent.name``), default ``name``.
        conversation_id, session_id, user_id: ``gen_ai.conversation.id``, ``session.id``, ``user.id``.
        provider: the model provider (``gen_ai.provider.name``); else taken from the task's first LLM call.
        budget: limits that stop the run (``Budget``).
        loop: the loop breaker: ``None`` the default from ``init()`` (3 identical tool calls in a row),
            a ``LoopGuard``, or ``False`` for none.
        attributes: more span attributes.

    Example:
        >>> with agentwatch.task("triage", user_id="u-42", budget=agentwatch.Budget(tokens=50_000)) as t:
        ...     answer = agent.run(ticket)
    """
    if callable(name):
        return TaskSpec(
            name.__name__,
            agent=None,
            conversation_id=None,
            session_id=None,
            user_id=None,
            provider=None,
            budget=None,
            loop=None,
            attributes=None,
        )(name)
    return TaskSpec(
        str(name),
        agent=agent,
        conversation_id=conversation_id,
        session_id=session_id,
        user_id=user_id,
        provider=provider,
        budget=budget,
        loop=loop,
        attributes=attributes,
    )


@overload
def tool(name: str | None = None, **options: Any) -> ToolSpec: ...
@overload
def tool(name: F) -> F: ...


def tool(
    name: Any = None,
    *,
    arguments: Any = None,
    call_id: str | None = None,
    tool_type: str | None = None,
    description: str | None = None,
    circuit: CircuitBreaker | None = None,
) -> Any:
    """A tool call: an ``execute_tool {name}`` span, guarded by the task's loop breaker and budget.

    As a decorator (``@agentwatch.tool`` or ``@agentwatch.tool("search")``) the call's arguments and return
    value are recorded; as a context manager pass ``arguments=`` and call ``call.set_result(...)``. Arguments and
    result are exported (masked, truncated) only with content capture on; ``agentwatch.tool.args_hash`` (hash
    of the normalised arguments) always is. An exception is recorded (status ERROR, ``error.type``) and
    re-raised unchanged.

    Args:
        name: the tool's name (``gen_ai.tool.name``); default the function's name.
        arguments: the call's arguments (context-manager form).
        call_id: the model's tool-call id (``gen_ai.tool.call.id``).
        tool_type: ``function``, ``extension`` or ``datastore`` (``gen_ai.tool.type``).
        description: ``gen_ai.tool.description``.
        circuit: a ``CircuitBreaker`` for this tool (default: the one from ``init()``, none unless set).

    Raises:
        LoopDetected: the same call the loop breaker's threshold times in a row (the call does not run).
        BudgetExceeded: the task's budget is spent (the call does not run).
        CircuitOpen: the tool's circuit is open (the call does not run).

    Example:
        >>> @agentwatch.tool(tool_type="function")
        ... def lookup_order(order_id: str) -> dict: ...
    """
    if callable(name):
        return ToolSpec(None, arguments=None, call_id=None, tool_type=None, description=None, circuit=None)(name)
    return ToolSpec(
        name, arguments=arguments, call_id=call_id, tool_type=tool_type, description=description, circuit=circuit
    )


def llm(
    model: str,
    *,
    provider: str | None = None,
    operation: str = "chat",
    attributes: Mapping[str, AttributeValue] | None = None,
) -> LlmSpec:
    """A manual LLM call span (``chat {model}``, CLIENT) for clients no instrumentation covers.

    Record usage and messages on what the ``with`` gives: ``call.record(input_tokens=..., output_tokens=...,
    cache_read_tokens=..., finish_reasons=[...], input_messages=[...], output_messages=[...])``. Its tokens count
    in the task's budget; a spent budget raises ``BudgetExceeded`` before the call.

    Args:
        model: the requested model (``gen_ai.request.model``).
        provider: ``gen_ai.provider.name``, e.g. ``"openai"``, ``"anthropic"``, ``"aws.bedrock"``.
        operation: ``chat`` (default), ``text_completion``, ``generate_content`` or ``embeddings``.
        attributes: more span attributes.

    Example:
        >>> with agentwatch.llm("llama-3-70b", provider="groq") as call:
        ...     reply = my_client.complete(prompt)
        ...     call.record(input_tokens=reply.prompt_tokens, output_tokens=reply.completion_tokens)
    """
    return LlmSpec(model, provider=provider, operation=operation, attributes=attributes)


@handle_internal_errors
def escalate(reason: str, *, summary: str | None = None, actions_taken: str | Sequence[str] | None = None) -> None:
    """Hand the current task to a human with a structured handoff; its outcome becomes ``escalated``.

    Sets ``agentwatch.escalation.reason``, ``.summary`` (what was asked, what is known) and ``.actions_taken``
    (string[]: what the agent did) on the task span. Does not raise: return or stop the agent as you see fit.

    Example:
        >>> agentwatch.escalate("refund above limit", summary="customer wants $900 back",
        ...                     actions_taken=["looked up order", "checked refund policy"])
    """
    current = CURRENT_TASK.get()
    if current is None:
        logger.warning("agentwatch: escalate(%r) called outside a task; nothing recorded", reason)
        return
    current.escalate(reason, summary=summary, actions_taken=actions_taken)


def current_task() -> Task | None:
    """The innermost task running in this context (thread or asyncio task), or None."""
    return CURRENT_TASK.get()
