"""``agentwatch.llm``: a manual ``chat {model}`` span for LLM clients no instrumentation covers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _attributes as A
from ._errors import swallowed
from ._json import error_type, messages, to_json
from ._lifecycle import NoopRun, Run, Spec
from ._runtime import CURRENT_TASK, RUNTIME


class LlmRun(Run):
    """One LLM call (the ``chat {model}`` span). ``with agentwatch.llm(...) as call:`` gives you this.

    Attributes:
        span: the OpenTelemetry span.
    """

    __slots__ = ()

    def record(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        input_messages: Iterable[Any] | None = None,
        output_messages: Iterable[Any] | None = None,
        system_instructions: str | Iterable[Any] | None = None,
    ) -> None:
        """Record what the call used and said. Call it once or several times; every argument is optional.

        Args:
            input_tokens: all input tokens, cached ones included (OpenTelemetry GenAI). If the cache counts are
                larger (a provider that reports them apart, as Anthropic does), they are added.
            output_tokens: all output tokens, reasoning included.
            cache_read_tokens, cache_creation_tokens, reasoning_tokens: the parts.
            response_model, response_id, finish_reasons: what the provider answered.
            input_messages, output_messages: the chat, as ``{"role", "content"}`` dicts, semconv ``{"role",
                "parts"}`` messages or strings; exported as JSON (masked) only with content capture on.
            system_instructions: the system prompt, when passed apart from the messages.
        """
        try:
            span = self.span
            if not span.is_recording():
                return
            attrs: dict[str, AttributeValue] = {}
            read, write = cache_read_tokens or 0, cache_creation_tokens or 0
            if input_tokens is not None:
                attrs[A.GEN_AI_USAGE_INPUT_TOKENS] = (
                    input_tokens + read + write if input_tokens < read + write else int(input_tokens)
                )
            for key, value in (
                (A.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens),
                (A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read_tokens),
                (A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, cache_creation_tokens),
                (A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, reasoning_tokens),
            ):
                if value is not None:
                    attrs[key] = int(value)
            if response_model is not None:
                attrs[A.GEN_AI_RESPONSE_MODEL] = str(response_model)
            if response_id is not None:
                attrs[A.GEN_AI_RESPONSE_ID] = str(response_id)
            if finish_reasons is not None:
                attrs[A.GEN_AI_RESPONSE_FINISH_REASONS] = [str(reason) for reason in finish_reasons]
            if RUNTIME.capture_content:
                limit = RUNTIME.max_content_chars
                if input_messages is not None:
                    attrs[A.GEN_AI_INPUT_MESSAGES] = to_json(messages(input_messages), limit)
                if output_messages is not None:
                    reasons = list(finish_reasons) if finish_reasons is not None else None
                    attrs[A.GEN_AI_OUTPUT_MESSAGES] = to_json(
                        messages(output_messages, output=True, finish_reasons=reasons), limit
                    )
                if system_instructions is not None:
                    parts = (
                        [{"type": "text", "content": system_instructions}]
                        if isinstance(system_instructions, str)
                        else list(system_instructions)
                    )
                    attrs[A.GEN_AI_SYSTEM_INSTRUCTIONS] = to_json(parts, limit)
            span.set_attributes(attrs)
        except Exception as internal:  # not @handle_internal_errors: its *args, **kwargs wrapper costs ~0.5 us here
            if not swallowed(internal):
                raise

    def _close(self, error: BaseException | None, result: Any) -> None:
        span = self.span
        if error is not None and not isinstance(error, GeneratorExit):
            span.set_attribute(A.ERROR_TYPE, error_type(error))
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:1024]))
            span.record_exception(error)
        span.end()


class LlmSpec(Spec[LlmRun]):
    def __init__(
        self,
        model: str,
        *,
        provider: str | None,
        operation: str,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        attrs: dict[str, AttributeValue] = dict(attributes or {})
        attrs[A.GEN_AI_OPERATION_NAME] = operation
        attrs[A.GEN_AI_REQUEST_MODEL] = str(model)
        if provider is not None:
            attrs[A.GEN_AI_PROVIDER_NAME] = str(provider)
        self._attrs = attrs
        self._span_name = f"{operation} {model}"

    def _begin(self, fn: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LlmRun:
        if not RUNTIME.enabled:
            return NoopRun(self)  # type: ignore[return-value]
        task = CURRENT_TASK.get()
        if task is not None:
            error = None
            try:
                error = task.admit_llm()
            except Exception as internal:
                if not swallowed(internal):
                    raise
            if error is not None:
                raise error
        try:
            span: trace.Span = RUNTIME.tracer.start_span(self._span_name, kind=SpanKind.CLIENT, attributes=self._attrs)
            return LlmRun(span, self)
        except Exception as internal:
            if not swallowed(internal):
                raise
        return NoopRun(self)  # type: ignore[return-value]
