"""``agentwatch.task``: the root ``invoke_agent`` span of an agent run, with its outcome, budget and loop breaker."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _attributes as A
from ._errors import handle_internal_errors, swallowed
from ._exceptions import BudgetExceeded, GuardError, LoopDetected
from ._json import error_type
from ._lifecycle import NoopRun, Run, Spec
from ._options import Budget, LoopGuard, Outcome
from ._pricing import PRICER, Usage
from ._runtime import CURRENT_TASK, RUNTIME

logger = logging.getLogger("agentwatch")

# One lock for all accounting: it is held for a few microseconds, by LLM span ends and tool starts (and by settling
# deferred usage, which accounts entry by entry under it: hence reentrant).
_ACCOUNTING = threading.RLock()

_MAX_PENDING = 64
"""Deferred usage entries a task tree keeps before adding them up (bounds what the entries keep alive)."""


@dataclass(frozen=True)
class TaskUsage:
    """What a task has used so far. ``usd`` is None unless the task (or an outer one) has a USD budget."""

    input_tokens: int
    output_tokens: int
    llm_calls: int
    tool_calls: int
    seconds: float
    usd: float | None


def _int(value: Any) -> int | None:
    return value if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)) else None


_NO_USAGE = Usage()


def usage_of(attrs: Mapping[str, Any]) -> Usage | None:
    """Token usage from a span's attributes (semconv, the in-flight cache_write name, deprecated aliases)."""
    get = attrs.get
    inp = _int(get(A.GEN_AI_USAGE_INPUT_TOKENS))
    if inp is None:
        inp = _int(get(A.GEN_AI_USAGE_PROMPT_TOKENS))
    out = _int(get(A.GEN_AI_USAGE_OUTPUT_TOKENS))
    if out is None:
        out = _int(get(A.GEN_AI_USAGE_COMPLETION_TOKENS))
    read = _int(get(A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS))
    write = _int(get(A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS))
    if write is None:
        write = _int(get(A.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS))
    if inp is None and out is None and read is None and write is None:
        return None
    reasoning = _int(get(A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS))
    read, write = read or 0, write or 0
    inp = inp or 0
    if inp < read + write and inp:  # a sender that reports input without the cache (provider style): add it
        inp += read + write
    return Usage(max(inp, read + write), out or 0, read, write, reasoning or 0)


def _merge(a: Usage, b: Usage) -> Usage:
    return Usage(
        max(a.input_tokens, b.input_tokens),
        max(a.output_tokens, b.output_tokens),
        max(a.cache_read_tokens, b.cache_read_tokens),
        max(a.cache_write_tokens, b.cache_write_tokens),
        max(a.reasoning_tokens, b.reasoning_tokens),
    )


class TaskRun(Run):
    """One agent run (the ``invoke_agent`` span). ``with agentwatch.task(...) as task:`` gives you this.

    Attributes:
        span: the OpenTelemetry span, to add your own attributes.
    """

    __slots__ = (
        "name",
        "budget",
        "loop",
        "parent",
        "_task_token",
        "_t0",
        "_outcome",
        "_escalated",
        "_input",
        "_output",
        "_usd",
        "_priced",
        "_llm_calls",
        "_tool_calls",
        "_seen",
        "_breach",
        "_loop_key",
        "_repeats",
        "_warned",
        "_has_provider",
        "_trace_id",
        "_prev_in_trace",
        "_root",
        "_pending",
        "_budgeted",
    )

    def __init__(
        self,
        span: trace.Span,
        spec: object,
        name: str,
        budget: Budget | None,
        loop: LoopGuard | None,
        parent: TaskRun | None,
        has_provider: bool,
    ) -> None:
        super().__init__(span, spec)
        self.name, self.budget, self.loop, self.parent = name, budget, loop, parent
        self._task_token: Any = None
        self._t0 = time.monotonic()
        self._outcome: Outcome | None = None
        self._escalated = False
        self._input = self._output = self._llm_calls = self._tool_calls = 0
        self._usd = 0.0
        self._priced = self._needs_usd()
        self._seen: dict[str, tuple[Usage, float]] = {}
        self._breach: BudgetExceeded | None = None
        self._loop_key: tuple[str, str] | None = None
        self._repeats = 0
        self._warned: set[str] = set()
        self._has_provider = has_provider
        # whether this task or one it runs in has a budget (then its usage is accounted at once): fixed at start
        self._budgeted: bool = budget is not None or (parent is not None and parent._budgeted)
        # Usage of a task tree without any budget is only read through ``usage``: LLM span ends and tool calls in it
        # queue an entry on the tree's root (a deque: append and popleft need no lock) and ``_settle`` adds them up
        # when ``usage`` is read or a subtask ends. With a budget on the way up, accounting is eager: the guards
        # need it at once. No reference cycle: the root is None in the root itself and in its own entries.
        self._root: TaskRun | None = None if parent is None else (parent._root or parent)
        self._pending: deque[tuple[TaskRun | None, Mapping[str, Any] | None]] | None = (
            deque() if parent is None else None
        )
        self._trace_id = span.get_span_context().trace_id
        with RUNTIME.lock:
            self._prev_in_trace = RUNTIME.tasks_by_trace.get(self._trace_id)
            RUNTIME.tasks_by_trace[self._trace_id] = self
        if self._priced:
            PRICER.warm_up_in_background()

    def _needs_usd(self) -> bool:
        task: TaskRun | None = self
        while task is not None:
            if task.budget is not None and task.budget.usd is not None:
                return True
            task = task.parent
        return False

    # -- what the user records ---------------------------------------------------------------------------------
    @handle_internal_errors
    def set_outcome(self, outcome: Outcome | str) -> None:
        """Set the outcome this task ends with if no exception ends it (default ``ok``)."""
        self._outcome = Outcome(outcome)

    @handle_internal_errors
    def escalate(
        self, reason: str, *, summary: str | None = None, actions_taken: str | Sequence[str] | None = None
    ) -> None:
        """Hand this task to a human; see ``agentwatch.escalate``."""
        self._escalated = True
        attrs: dict[str, AttributeValue] = {A.ESCALATION_REASON: str(reason)}
        if summary is not None:
            attrs[A.ESCALATION_SUMMARY] = str(summary)
        if actions_taken is not None:
            actions = [actions_taken] if isinstance(actions_taken, str) else [str(a) for a in actions_taken]
            attrs[A.ESCALATION_ACTIONS] = actions
        self.span.set_attributes(attrs)

    @property
    def usage(self) -> TaskUsage:
        """Tokens, calls, time (and cost, with a USD budget) used so far, this task's own and its subtasks'."""
        self._settle()
        return TaskUsage(
            self._input,
            self._output,
            self._llm_calls,
            self._tool_calls,
            time.monotonic() - self._t0,
            self._usd if self._priced else None,
        )

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _attach(self) -> None:
        super()._attach()
        self._task_token = CURRENT_TASK.set(self)

    def _detach(self) -> None:
        if self._task_token is not None:
            try:
                CURRENT_TASK.reset(self._task_token)
            except Exception as internal:
                if not swallowed(internal):
                    raise
            self._task_token = None
        super()._detach()

    def _close(self, error: BaseException | None, result: Any) -> None:
        if self._root is not None:
            self._settle()  # a subtask's entries refer to it: add them up now, while its root may still be read
        with RUNTIME.lock:
            if RUNTIME.tasks_by_trace.get(self._trace_id) is self:
                if self._prev_in_trace is not None and not self._prev_in_trace._ended:
                    RUNTIME.tasks_by_trace[self._trace_id] = self._prev_in_trace
                else:
                    del RUNTIME.tasks_by_trace[self._trace_id]
        span = self.span
        if error is not None and not isinstance(error, GeneratorExit):
            if isinstance(error, BudgetExceeded):
                outcome = Outcome.BUDGET_EXCEEDED
            elif isinstance(error, LoopDetected):
                outcome = Outcome.LOOP_STOPPED
            elif isinstance(error, TimeoutError):  # asyncio.TimeoutError too, since 3.11
                outcome = Outcome.TIMEOUT
            else:
                outcome = Outcome.ERROR
            span.set_attribute(A.ERROR_TYPE, error_type(error))
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:1024]))
            span.record_exception(error)
        else:
            outcome = self._outcome or (Outcome.ESCALATED if self._escalated else Outcome.OK)
        span.set_attribute(A.TASK_OUTCOME, outcome.value)
        span.end()

    # -- guards ------------------------------------------------------------------------------------------------
    def _defer(self, attrs: Mapping[str, Any] | None) -> None:
        """Queue an LLM span's attributes (or None: a tool call) for ``_settle``."""
        root = self._root
        pending = (root or self)._pending
        assert pending is not None
        pending.append((self if root is not None else None, attrs))
        if len(pending) >= _MAX_PENDING:
            self._settle()

    def _settle(self) -> None:
        """Add up the deferred entries of this task's tree, in the order they came."""
        root = self._root or self
        pending = root._pending
        if not pending:
            return
        with _ACCOUNTING:
            while pending:
                try:
                    task, attrs = pending.popleft()
                except IndexError:  # another thread took the last one
                    break
                if task is None:
                    task = root
                if attrs is None:
                    for each in task._chain():
                        each._tool_calls += 1
                else:
                    task._add_usage(attrs)

    def _chain(self) -> list[TaskRun]:
        chain: list[TaskRun] = []
        task: TaskRun | None = self
        while task is not None:
            chain.append(task)
            task = task.parent
        return chain

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _record_breach(self, what: str, limit: float, value: float) -> None:
        budget = self.budget
        assert budget is not None
        self._breach = BudgetExceeded(what, limit, value, task=self.name)
        self.span.add_event(
            A.EVENT_BUDGET_EXCEEDED,
            {
                A.BUDGET_WHAT: what,
                A.BUDGET_LIMIT: float(limit),
                A.BUDGET_VALUE: float(value),
                A.BUDGET_ACTION: budget.on_breach,
            },
        )
        if budget.on_breach == "warn":
            self._warn_once("budget", "agentwatch: %s", self._breach)

    def _admit(self, kind: str) -> BudgetExceeded | None:
        budget = self.budget
        if budget is None:
            return None
        if self._breach is None:
            if budget.seconds is not None and (elapsed := time.monotonic() - self._t0) > budget.seconds:
                self._record_breach("seconds", budget.seconds, elapsed)
            elif kind == "llm" and budget.llm_calls is not None and self._llm_calls >= budget.llm_calls:
                self._record_breach("llm_calls", budget.llm_calls, self._llm_calls + 1)
            elif kind == "tool" and budget.tool_calls is not None and self._tool_calls >= budget.tool_calls:
                self._record_breach("tool_calls", budget.tool_calls, self._tool_calls + 1)
        breach = self._breach
        if breach is not None and budget.on_breach == "raise":
            return BudgetExceeded(breach.what, breach.limit, breach.value, task=self.name)
        return None

    def admit_llm(self) -> GuardError | None:
        """Before an LLM call in this task: the budget error to raise, if any."""
        if not self._budgeted:
            return None  # nothing to enforce (the common case: no lock taken)
        self._settle()
        with _ACCOUNTING:
            for task in self._chain():
                if (error := task._admit("llm")) is not None:
                    return error
        return None

    def admit_tool(self, tool: str, args_hash: str) -> tuple[GuardError | None, bool]:
        """Before a tool call: ``(error to raise or None, whether a loop was seen)``; counts the call."""
        budgeted = self._budgeted
        if not budgeted:
            self._defer(None)  # no budget to check: the call is counted when ``usage`` is read
            if self.loop is None:
                return None, False
        else:
            self._settle()
        with _ACCOUNTING:
            if budgeted:
                chain = self._chain()
                for task in chain:
                    if (error := task._admit("tool")) is not None:
                        return error, False
                for task in chain:
                    task._tool_calls += 1
            key = (tool, args_hash)
            if key == self._loop_key:
                self._repeats += 1
            else:
                self._loop_key, self._repeats = key, 1
            loop = self.loop
            if loop is None or self._repeats < loop.threshold:
                return None, False
            self.span.add_event(
                A.EVENT_LOOP_DETECTED,
                {
                    A.LOOP_TOOL: tool,
                    A.LOOP_ARGS_HASH: args_hash,
                    A.LOOP_REPEATS: self._repeats,
                    A.LOOP_THRESHOLD: loop.threshold,
                    A.LOOP_ACTION: loop.on_breach,
                },
            )
            error = LoopDetected(tool, args_hash, self._repeats, task=self.name)
            if loop.on_breach == "warn":
                self._warn_once(f"loop:{tool}:{args_hash}", "agentwatch: %s", error)
                return None, True
            return error, True

    def account_llm(self, attrs: Mapping[str, Any]) -> None:
        """After an LLM span of this task ended (``attrs``: its attributes, no longer changing): name the task's
        provider after its first call's, add the call's usage (once per response id) and check the budgets.

        Without a budget on the way up the usage is deferred (see ``_settle``): nothing needs it before ``usage``
        is read, and most tasks have no budget.
        """
        if not self._has_provider:
            provider = attrs.get(A.GEN_AI_PROVIDER_NAME) or attrs.get(A.GEN_AI_SYSTEM)
            if isinstance(provider, str):
                self._has_provider = True
                self.span.set_attribute(A.GEN_AI_PROVIDER_NAME, provider)
        if not self._budgeted:
            self._defer(attrs)
            return
        self._settle()
        self._add_usage(attrs)

    def _add_usage(self, attrs: Mapping[str, Any]) -> None:
        usage = usage_of(attrs)
        response_id = attrs.get(A.GEN_AI_RESPONSE_ID)
        provider = attrs.get(A.GEN_AI_PROVIDER_NAME) or attrs.get(A.GEN_AI_SYSTEM)
        model = attrs.get(A.GEN_AI_RESPONSE_MODEL) or attrs.get(A.GEN_AI_REQUEST_MODEL)
        with _ACCOUNTING:
            new_call = True
            merged = usage or _NO_USAGE
            charged = 0.0
            prior = _NO_USAGE
            if isinstance(response_id, str) and response_id:
                seen = self._seen.get(response_id)
                if seen is not None:  # the same call reported by a second span (client + instrumentation)
                    new_call = False
                    prior, charged = seen
                    merged = _merge(prior, merged)
            cost = 0.0
            if self._priced and usage is not None:
                full = PRICER.cost(provider if isinstance(provider, str) else None, model, merged)
                cost = max((full or 0.0) - charged, 0.0)
                charged += cost
            if isinstance(response_id, str) and response_id:
                self._seen[response_id] = (merged, charged)
            d_in = merged.input_tokens - prior.input_tokens
            d_out = merged.output_tokens - prior.output_tokens
            for task in self._chain():
                task._input += d_in
                task._output += d_out
                task._usd += cost
                task._llm_calls += new_call
                budget = task.budget
                if budget is None or task._breach is not None:
                    continue
                if budget.tokens is not None and task._input + task._output > budget.tokens:
                    task._record_breach("tokens", budget.tokens, task._input + task._output)
                elif budget.usd is not None and task._usd > budget.usd:
                    task._record_breach("usd", budget.usd, task._usd)


class TaskSpec(Spec[TaskRun]):
    def __init__(
        self,
        name: str,
        *,
        agent: str | None,
        conversation_id: str | None,
        session_id: str | None,
        user_id: str | None,
        provider: str | None,
        budget: Budget | None,
        loop: LoopGuard | bool | None,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        self.name = name
        self.agent = agent
        self.budget = budget
        self.loop = loop
        self.provider = provider
        attrs: dict[str, AttributeValue] = dict(attributes or {})
        attrs[A.GEN_AI_OPERATION_NAME] = A.OP_INVOKE_AGENT
        attrs[A.GEN_AI_AGENT_NAME] = agent or name
        attrs[A.TASK_NAME] = name
        for key, value in (
            (A.GEN_AI_CONVERSATION_ID, conversation_id),
            (A.SESSION_ID, session_id),
            (A.USER_ID, user_id),
            (A.GEN_AI_PROVIDER_NAME, provider),
        ):
            if value is not None:
                attrs[key] = str(value)
        self._attrs = attrs
        self._span_name = f"invoke_agent {agent or name}"

    def _bind(self, fn: Callable[..., Any]) -> None:
        return None

    def _begin(self, fn: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskRun:
        if not RUNTIME.enabled:
            return NoopRun(self)  # type: ignore[return-value]
        try:
            loop = self.loop
            guard = RUNTIME.loop if loop is None or loop is True else (loop or None)
            span = RUNTIME.tracer.start_span(self._span_name, kind=SpanKind.INTERNAL, attributes=self._attrs)
            return TaskRun(span, self, self.name, self.budget, guard, CURRENT_TASK.get(), self.provider is not None)
        except Exception as internal:
            if not swallowed(internal):
                raise
        return NoopRun(self)  # type: ignore[return-value]


def current_task() -> TaskRun | None:
    return CURRENT_TASK.get()
