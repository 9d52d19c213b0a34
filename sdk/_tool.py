"""``agentwatch.tool`` (``execute_tool`` spans, with the loop and circuit guards) and ``agentwatch.decision``."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _attributes as A
from ._errors import handle_internal_errors, swallowed
from ._exceptions import GuardError
from ._json import args_hash, canonical_json, error_type, to_json
from ._lifecycle import NOTHING, NoopRun, Run, Spec
from ._options import CircuitBreaker
from ._runtime import CURRENT_TASK, RUNTIME

logger = logging.getLogger("agentwatch")

T = TypeVar("T")


class ToolRun(Run):
    """One tool call (the ``execute_tool`` span). ``with agentwatch.tool(...) as call:`` gives you this.

    Attributes:
        span: the OpenTelemetry span.
        args_hash: the hash of the normalised arguments (``agentwatch.tool.args_hash``).
    """

    __slots__ = ("name", "args_hash", "_circuit", "_result_set")

    def __init__(self, span: trace.Span, spec: object, name: str, digest: str, circuit: CircuitBreaker | None) -> None:
        super().__init__(span, spec)
        self.name, self.args_hash, self._circuit = name, digest, circuit
        self._result_set = False

    @handle_internal_errors
    def set_result(self, result: Any) -> None:
        """Record the tool's result (exported, masked and truncated, only with content capture on)."""
        self._result_set = True
        if RUNTIME.capture_content and self.span.is_recording():
            self.span.set_attribute(A.GEN_AI_TOOL_CALL_RESULT, to_json(result, RUNTIME.max_content_chars))

    def _close(self, error: BaseException | None, result: Any) -> None:
        span = self.span
        failed = False
        if error is not None and not isinstance(error, GeneratorExit):
            failed = isinstance(error, Exception) and not isinstance(error, GuardError)
            span.set_attribute(A.ERROR_TYPE, error_type(error))
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:1024]))
            span.record_exception(error)
        elif result is not NOTHING and not self._result_set and RUNTIME.capture_content and span.is_recording():
            span.set_attribute(A.GEN_AI_TOOL_CALL_RESULT, to_json(result, RUNTIME.max_content_chars))
        if self._circuit is not None and not isinstance(error, GuardError):
            if (event := RUNTIME.circuits.after(self.name, self._circuit, failed=failed)) is not None:
                span.add_event(*event)
        span.end()


class _Params:
    """How to turn a call's positional and keyword arguments into a dict, computed once per decorated function."""

    __slots__ = ("names", "varargs", "defaults", "skip_first")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.names: list[str] = []
        self.varargs: str | None = None
        self.defaults: dict[str, Any] = {}
        self.skip_first = False
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return
        for index, param in enumerate(parameters):
            if index == 0 and param.name in ("self", "cls"):
                self.skip_first = True
                continue
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self.names.append(param.name)
            elif param.kind is param.VAR_POSITIONAL:
                self.varargs = param.name
            if param.default is not param.empty:
                self.defaults[param.name] = param.default

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self.skip_first:
            args = args[1:]
        bound = dict(self.defaults)
        names = self.names
        bound.update(zip(names, args, strict=False))
        if len(args) > len(names):
            bound[self.varargs or "args"] = list(args[len(names) :])
        bound.update(kwargs)
        return bound


class ToolSpec(Spec[ToolRun]):
    def __init__(
        self,
        name: str | None,
        *,
        arguments: Any,
        call_id: str | None,
        tool_type: str | None,
        description: str | None,
        circuit: CircuitBreaker | None,
    ) -> None:
        self.name = name
        self.arguments = arguments
        self.circuit = circuit
        self._params: _Params | None = None
        attrs: dict[str, AttributeValue] = {A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_TOOL}
        for key, value in ((A.GEN_AI_TOOL_CALL_ID, call_id), (A.GEN_AI_TOOL_TYPE, tool_type)):
            if value is not None:
                attrs[key] = str(value)
        if description is not None:
            attrs[A.GEN_AI_TOOL_DESCRIPTION] = str(description)
        self._attrs = attrs

    def _bind(self, fn: Callable[..., Any]) -> None:
        if self.name is None:
            self.name = getattr(fn, "__name__", None) or "tool"
        self._params = _Params(fn)

    def _begin(self, fn: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolRun:
        if not RUNTIME.enabled:
            return NoopRun(self)  # type: ignore[return-value]
        guard_error: GuardError | None = None
        try:
            name = self.name or "tool"
            if fn is not None and self._params is not None:
                arguments: Any = self._params.bind(args, kwargs)
            else:
                arguments = self.arguments
            canonical = canonical_json({} if arguments is None else arguments)
            digest = args_hash(canonical)
            task = CURRENT_TASK.get()
            if task is not None:
                guard_error, _ = task.admit_tool(name, digest)
            circuit = self.circuit or RUNTIME.circuit
            event = None
            if guard_error is None and circuit is not None:
                guard_error, event = RUNTIME.circuits.before(name, circuit)
            attrs = dict(self._attrs)
            attrs[A.GEN_AI_TOOL_NAME] = name
            attrs[A.TOOL_ARGS_HASH] = digest
            if RUNTIME.capture_content and arguments is not None:
                attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS] = canonical
            span = RUNTIME.tracer.start_span(f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attrs)
            if event is not None:
                span.add_event(*event)
            run = ToolRun(span, self, name, digest, circuit)
            if guard_error is None:
                return run
            run._finish(guard_error)
        except Exception as internal:
            if not swallowed(internal):
                raise
        if guard_error is not None:
            raise guard_error
        return NoopRun(self)  # type: ignore[return-value]


def decision(
    name: str,
    choice: T,
    *,
    options: Sequence[Any] | None = None,
    confidence: float | None = None,
    reasoning: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> T:
    """Record a decision the agent made: what it chose among what, how sure, why. Returns ``choice``.

    A ``decision {name}`` span (``gen_ai.operation.name=decision``) under the current span. No convention or peer
    has one; it makes wrong-branch analysis and decision drift possible. ``reasoning`` is content: exported
    (masked) only with content capture on.

    Args:
        name: what was decided, e.g. ``"route"``.
        choice: what was chosen (recorded as a string).
        options: what was considered (strings).
        confidence: how sure, in [0, 1].
        reasoning: why.
        attributes: more span attributes.

    Example:
        >>> route = agentwatch.decision("route", "refund", options=["refund", "escalate"], confidence=0.82)
    """
    if not RUNTIME.enabled:
        return choice
    with handle_internal_errors:
        attrs: dict[str, AttributeValue] = dict(attributes or {})
        attrs[A.GEN_AI_OPERATION_NAME] = A.OP_DECISION
        attrs[A.DECISION_NAME] = str(name)
        attrs[A.DECISION_CHOICE] = str(choice)
        if options is not None:
            attrs[A.DECISION_OPTIONS] = [str(option) for option in options]
        if confidence is not None:
            value = float(confidence)
            if 0.0 <= value <= 1.0:
                attrs[A.DECISION_CONFIDENCE] = value
            else:
                logger.warning("agentwatch: decision %r confidence %r is outside [0, 1]; not recorded", name, value)
        if reasoning is not None and RUNTIME.capture_content:
            attrs[A.DECISION_REASONING] = str(reasoning)
        RUNTIME.tracer.start_span(f"decision {name}", kind=SpanKind.INTERNAL, attributes=attrs).end()
    return choice
