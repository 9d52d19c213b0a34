"""``handle_internal_errors``: the one place where a bug in agentwatch stops being the agent's problem."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from ._exceptions import ConfigError, GuardError

logger = logging.getLogger("agentwatch")

F = TypeVar("F", bound=Callable[..., Any])

RERAISE_UNDER_PYTEST = True
"""Under pytest an internal error fails the test instead of being logged; our tests of the quiet path turn it off."""

_LOG_EVERY_S = 60.0
_last_logged = -_LOG_EVERY_S
_suppressed = 0


def _should_reraise() -> bool:
    return RERAISE_UNDER_PYTEST and "PYTEST_CURRENT_TEST" in os.environ


def log_internal_error(error: BaseException) -> None:
    """Log an internal error, with its traceback, at most once a minute (the rest are counted)."""
    global _last_logged, _suppressed
    now = time.monotonic()
    if now - _last_logged < _LOG_EVERY_S:
        _suppressed += 1
        return
    more = f" ({_suppressed} more since the last report)" if _suppressed else ""
    _last_logged, _suppressed = now, 0
    logger.warning("agentwatch hit an internal error; your code runs on, with less telemetry%s", more, exc_info=error)


def swallowed(error: BaseException) -> bool:
    """Whether an error that reached an SDK boundary is an internal one to log and drop (True, after logging it),
    or one to re-raise: not an ``Exception``, a guard's or ``init()``'s error, or any error under pytest.

    The hot paths use it as ``except Exception as error: if not swallowed(error): raise`` (a ``try`` costs
    nothing when nothing is raised; entering a context manager costs ~0.1 us, several times per span).
    """
    if not isinstance(error, Exception) or isinstance(error, (GuardError, ConfigError)) or _should_reraise():
        return False
    log_internal_error(error)
    return True


class _HandleInternalErrors:
    """Context manager and decorator: swallow and log our own bugs, never the guards' or ``init()``'s errors.

    As a decorator the wrapped function returns ``None`` when it fails. Under pytest the error is re-raised.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return exc is not None and swallowed(exc)

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                if not swallowed(error):
                    raise
            return None

        return wrapper  # type: ignore[return-value]


handle_internal_errors = _HandleInternalErrors()
