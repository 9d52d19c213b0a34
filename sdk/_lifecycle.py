"""The three forms of every span of ours: context manager, decorator (sync, async, generators), explicit start/end.

A *spec* (what ``agentwatch.task(...)`` returns) describes a span; each use begins a *run* (one span). Runs attach
to the OpenTelemetry context while their code runs: for generators, only while the generator itself runs, so the
caller's context between two ``yield``s is the caller's own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import Token
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace

from ._errors import swallowed
from ._runtime import CURRENT_RUN

P = ParamSpec("P")
R = TypeVar("R")
RunT = TypeVar("RunT", bound="Run")

NOTHING: Any = object()


class Run:
    """A started span of ours. Subclasses add what the user can record, and ``_close``."""

    __slots__ = ("span", "_otel_token", "_run_token", "_ended", "_spec")

    def __init__(self, span: trace.Span, spec: object) -> None:
        self.span = span
        self._spec = spec
        self._ended = False
        self._otel_token: Token[Any] | None = None
        self._run_token: Token[Any] | None = None

    def _attach(self) -> None:
        self._otel_token = otel_context.attach(trace.set_span_in_context(self.span))
        self._run_token = CURRENT_RUN.set(self)

    def _detach(self) -> None:
        try:
            if self._run_token is not None:
                CURRENT_RUN.reset(self._run_token)
                self._run_token = None
            if self._otel_token is not None:
                otel_context.detach(self._otel_token)
                self._otel_token = None
        except Exception as internal:
            if not swallowed(internal):
                raise

    def _finish(self, error: BaseException | None, result: Any = NOTHING) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._close(error, result)
        except Exception as internal:
            if not swallowed(internal):
                raise

    def _close(self, error: BaseException | None, result: Any) -> None:
        self.span.end()

    def end(self, error: BaseException | None = None) -> None:
        """End the span (explicit form); pass the exception that ended the work, if any. Idempotent."""
        self._finish(error)


class NoopRun(Run):
    """What a span of ours becomes when agentwatch is disabled or failed to start it: records nothing."""

    __slots__ = ()

    def __init__(self, spec: object = None) -> None:
        super().__init__(trace.INVALID_SPAN, spec)

    def _attach(self) -> None:
        self._run_token = CURRENT_RUN.set(self)

    def _close(self, error: BaseException | None, result: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        # Every recording method of every run type is a no-op here.
        if name.startswith("_"):
            raise AttributeError(name)
        return _noop


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class Spec(Generic[RunT]):
    """Base of the specs: subclasses implement ``_begin`` (start a span; may raise a guard error)."""

    def _begin(self, fn: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunT:
        raise NotImplementedError

    def start(self) -> RunT:
        """Start the span without making it current (for callbacks); call ``.end()`` on what it returns."""
        return self._begin(None, (), {})

    # -- context manager --------------------------------------------------------------------------------------
    def __enter__(self) -> RunT:
        run = self._begin(None, (), {})
        try:
            run._attach()
        except Exception as internal:
            if not swallowed(internal):
                raise
        return run

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run = CURRENT_RUN.get()
        if isinstance(run, Run) and run._spec is self:
            run._detach()
            run._finish(exc)

    async def __aenter__(self) -> RunT:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator --------------------------------------------------------------------------------------------
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, Generator[Any, Any, R]]) -> Callable[P, Generator[Any, Any, R]]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        self._bind(fn)
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_generator(self, fn)
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(self, fn)
        if inspect.iscoroutinefunction(fn):
            return _wrap_coroutine(self, fn)
        return _wrap_function(self, fn)

    def _bind(self, fn: Callable[..., Any]) -> None:
        """Learn what the decorated function tells (its name, its parameters). Called once per decoration."""


def _wrap_function(spec: Spec[Any], fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        run = spec._begin(fn, args, kwargs)
        run._attach()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            run._detach()
            run._finish(error)
            raise
        run._detach()
        run._finish(None, result)
        return result

    return wrapper


def _wrap_coroutine(spec: Spec[Any], fn: Callable[P, Any]) -> Callable[P, Any]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        run = spec._begin(fn, args, kwargs)
        run._attach()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            run._detach()
            run._finish(error)
            raise
        run._detach()
        run._finish(None, result)
        return result

    return wrapper


def _wrap_generator(
    spec: Spec[Any], fn: Callable[P, Generator[Any, Any, Any]]
) -> Callable[P, Generator[Any, Any, Any]]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, Any]:
        run = spec._begin(fn, args, kwargs)
        gen = fn(*args, **kwargs)
        step: Callable[[Any], Any] = gen.send
        value: Any = None
        while True:
            run._attach()
            try:
                item = step(value)
            except StopIteration as stop:
                run._detach()
                run._finish(None, stop.value)
                return stop.value
            except BaseException as error:
                run._detach()
                run._finish(error)
                raise
            run._detach()
            try:
                value = yield item
                step = gen.send
            except GeneratorExit:
                run._attach()
                try:
                    gen.close()
                finally:
                    run._detach()
                    run._finish(None)
                raise
            except BaseException as error:  # thrown in by the caller: pass it on to the generator
                step, value = gen.throw, error

    return wrapper


def _wrap_async_generator(
    spec: Spec[Any], fn: Callable[P, AsyncGenerator[Any, Any]]
) -> Callable[P, AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, Any]:
        run = spec._begin(fn, args, kwargs)
        agen = fn(*args, **kwargs)
        step: Callable[[Any], Any] = agen.asend
        value: Any = None
        while True:
            run._attach()
            try:
                item = await step(value)
            except StopAsyncIteration:
                run._detach()
                run._finish(None)
                return
            except BaseException as error:
                run._detach()
                run._finish(error)
                raise
            run._detach()
            try:
                value = yield item
                step = agen.asend
            except GeneratorExit:
                run._attach()
                try:
                    await agen.aclose()
                finally:
                    run._detach()
                    run._finish(None)
                raise
            except BaseException as error:
                step, value = agen.athrow, error

    return wrapper
