"""Every setting the SDK reads, declared once, as data.

Precedence, for each setting: the ``init()`` argument (or ``AdvancedOptions`` field), then the ``AGENTWATCH_*``
variable, then the standard ``OTEL_*`` variable, then the default. Bad values fail fast in ``init()`` with a
``ConfigError``; nothing here is read at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._exceptions import ConfigError

T = TypeVar("T")

AGENTWATCH_ENABLED = "AGENTWATCH_ENABLED"
"""``true``/``false``. ``false`` makes every agentwatch call a no-op (so does ``OTEL_SDK_DISABLED=true``)."""

AGENTWATCH_ENDPOINT = "AGENTWATCH_ENDPOINT"
"""Base URL of the collector, default ``http://127.0.0.1:4318``; ``/v1/traces`` is appended."""

AGENTWATCH_API_KEY = "AGENTWATCH_API_KEY"
"""Ingest key, sent as ``Authorization: Bearer <key>``."""

AGENTWATCH_SERVICE_NAME = "AGENTWATCH_SERVICE_NAME"
"""``service.name`` of the agent; else ``OTEL_SERVICE_NAME``; else the script's name."""

AGENTWATCH_CAPTURE_CONTENT = "AGENTWATCH_CAPTURE_CONTENT"
"""``true`` (default) exports prompts, completions, tool arguments and results (masked); ``false`` never does."""

AGENTWATCH_REDACT = "AGENTWATCH_REDACT"
"""``true`` (default) masks PII and secrets in every exported attribute value."""

AGENTWATCH_INSTRUMENT = "AGENTWATCH_INSTRUMENT"
"""Which LLM clients to auto-instrument: ``all`` (default), ``none``, or a comma list (``openai,anthropic``)."""

AGENTWATCH_MAX_QUEUE_SIZE = "AGENTWATCH_MAX_QUEUE_SIZE"
"""Spans held for export before new ones are dropped (and counted). Default 16384 (a 10,000-span burst fits);
else ``OTEL_BSP_MAX_QUEUE_SIZE``."""

AGENTWATCH_MAX_EXPORT_BATCH_SIZE = "AGENTWATCH_MAX_EXPORT_BATCH_SIZE"
"""Spans per export request. Default 1024; else ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``."""

AGENTWATCH_SCHEDULE_DELAY_MS = "AGENTWATCH_SCHEDULE_DELAY_MS"
"""Longest wait before a partial batch is exported, in ms. Default 1000; else ``OTEL_BSP_SCHEDULE_DELAY``."""

AGENTWATCH_EXPORT_TIMEOUT_S = "AGENTWATCH_EXPORT_TIMEOUT_S"
"""Deadline of one export request, retries included, in seconds. Default 10; else ``OTEL_EXPORTER_OTLP_TIMEOUT``."""

AGENTWATCH_SHUTDOWN_TIMEOUT_S = "AGENTWATCH_SHUTDOWN_TIMEOUT_S"
"""Longest time ``shutdown()`` and the exit flush may take, in seconds. Default 5."""

AGENTWATCH_COMPRESSION = "AGENTWATCH_COMPRESSION"
"""``gzip`` (default) or ``none``; else ``OTEL_EXPORTER_OTLP_COMPRESSION``."""

AGENTWATCH_MAX_CONTENT_CHARS = "AGENTWATCH_MAX_CONTENT_CHARS"
"""Longest exported content value (messages, tool arguments and results), in characters. Default 16384."""

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
OTEL_EXPORTER_OTLP_TRACES_TIMEOUT = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
OTEL_EXPORTER_OTLP_COMPRESSION = "OTEL_EXPORTER_OTLP_COMPRESSION"
OTEL_EXPORTER_OTLP_TRACES_COMPRESSION = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
OTEL_BSP_MAX_QUEUE_SIZE = "OTEL_BSP_MAX_QUEUE_SIZE"
OTEL_BSP_MAX_EXPORT_BATCH_SIZE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
OTEL_BSP_SCHEDULE_DELAY = "OTEL_BSP_SCHEDULE_DELAY"
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
TRACES_PATH = "/v1/traces"
INSTRUMENTATION_NAMES = ("openai", "anthropic")


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {raw!r}")
    return value


def parse_positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not value > 0:
        raise ValueError(f"expected a positive number, got {raw!r}")
    return value


def parse_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")
    return value


def parse_compression(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("gzip", "none"):
        raise ValueError(f"expected gzip or none, got {raw!r}")
    return value


def parse_instrument(raw: str) -> tuple[str, ...]:
    value = raw.strip().lower()
    if value in ("all", "true", "1"):
        return INSTRUMENTATION_NAMES
    if value in ("none", "false", "0", ""):
        return ()
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [name for name in names if name not in INSTRUMENTATION_NAMES]
    if unknown:
        raise ValueError(f"unknown instrumentation {unknown!r}; known: {', '.join(INSTRUMENTATION_NAMES)}")
    return names


def _genai_capture(raw: str) -> bool:
    # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: NO_CONTENT | SPAN_ONLY | EVENT_ONLY | SPAN_AND_EVENT
    # (or legacy true/false). Only an explicit "no" turns our default (capture, masked) off.
    return raw.strip().upper() not in ("NO_CONTENT", "FALSE", "0")


def _otel_disabled(raw: str) -> bool:
    return not parse_bool(raw)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: its variable, the standard OTel variable it falls back to, its default and its parser."""

    env: str | None
    default: T
    parse: Callable[[str], T]
    otel_env: tuple[str, ...] = ()
    otel_parse: Callable[[str], T] | None = None

    def resolve(self, argument: T | None, environ: Mapping[str, str] | None = None) -> T:
        if argument is not None:
            return argument
        env = os.environ if environ is None else environ
        if self.env is not None and (raw := env.get(self.env)) not in (None, ""):
            return self._parse(self.env, raw, self.parse)
        for name in self.otel_env:
            if (raw := env.get(name)) not in (None, ""):
                return self._parse(name, raw, self.otel_parse or self.parse)
        return self.default

    @staticmethod
    def _parse(name: str, raw: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(raw)
        except ValueError as error:
            raise ConfigError(f"{name}={raw!r} is not valid: {error}") from None


ENABLED: Setting[bool] = Setting(AGENTWATCH_ENABLED, True, parse_bool, (OTEL_SDK_DISABLED,), _otel_disabled)
ENDPOINT: Setting[str] = Setting(AGENTWATCH_ENDPOINT, DEFAULT_ENDPOINT, parse_url)
API_KEY: Setting[str | None] = Setting(AGENTWATCH_API_KEY, None, str.strip)
SERVICE_NAME: Setting[str | None] = Setting(AGENTWATCH_SERVICE_NAME, None, str.strip)
CAPTURE_CONTENT: Setting[bool] = Setting(
    AGENTWATCH_CAPTURE_CONTENT, True, parse_bool, (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,), _genai_capture
)
REDACT: Setting[bool] = Setting(AGENTWATCH_REDACT, True, parse_bool)
INSTRUMENT: Setting[tuple[str, ...]] = Setting(AGENTWATCH_INSTRUMENT, INSTRUMENTATION_NAMES, parse_instrument)
MAX_QUEUE_SIZE: Setting[int] = Setting(AGENTWATCH_MAX_QUEUE_SIZE, 16384, parse_positive_int, (OTEL_BSP_MAX_QUEUE_SIZE,))
MAX_EXPORT_BATCH_SIZE: Setting[int] = Setting(
    AGENTWATCH_MAX_EXPORT_BATCH_SIZE, 1024, parse_positive_int, (OTEL_BSP_MAX_EXPORT_BATCH_SIZE,)
)
SCHEDULE_DELAY_MS: Setting[float] = Setting(
    AGENTWATCH_SCHEDULE_DELAY_MS, 1000.0, parse_positive_float, (OTEL_BSP_SCHEDULE_DELAY,)
)
EXPORT_TIMEOUT_S: Setting[float] = Setting(
    AGENTWATCH_EXPORT_TIMEOUT_S,
    10.0,
    parse_positive_float,
    (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT),
)
SHUTDOWN_TIMEOUT_S: Setting[float] = Setting(AGENTWATCH_SHUTDOWN_TIMEOUT_S, 5.0, parse_positive_float)
COMPRESSION: Setting[str] = Setting(
    AGENTWATCH_COMPRESSION,
    "gzip",
    parse_compression,
    (OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION),
)
MAX_CONTENT_CHARS: Setting[int] = Setting(AGENTWATCH_MAX_CONTENT_CHARS, 16384, parse_positive_int)


def traces_endpoint(argument: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The full ``.../v1/traces`` URL: argument > ``AGENTWATCH_ENDPOINT`` > the OTLP variables > the default."""
    env = os.environ if environ is None else environ
    if argument is None and not env.get(AGENTWATCH_ENDPOINT):
        if raw := env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT):
            return Setting._parse(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, raw, parse_url)  # used as-is, per the spec
        if raw := env.get(OTEL_EXPORTER_OTLP_ENDPOINT):
            return Setting._parse(OTEL_EXPORTER_OTLP_ENDPOINT, raw, parse_url).rstrip("/") + TRACES_PATH
    base = ENDPOINT.resolve(None if argument is None else Setting._parse("endpoint", argument, parse_url), env)
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH
