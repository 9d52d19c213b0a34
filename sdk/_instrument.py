"""Auto-instrumentation of the installed LLM clients, through the official OpenTelemetry GenAI instrumentations.

Nothing is imported until ``init()``; a client library that is not imported yet is instrumented when it is (a
post-import hook), so ``init()`` does not pay for importing clients the agent may never use.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass

from ._exceptions import ConfigError

logger = logging.getLogger("agentwatch")


@dataclass(frozen=True)
class Instrumentation:
    client: str  # the client library's top-level module
    module: str  # the instrumentation's module
    instrumentor: str
    extra: str  # pip extra that installs it


INSTRUMENTATIONS = {
    "openai": Instrumentation(
        "openai", "opentelemetry.instrumentation.genai.openai", "OpenAIInstrumentor", "agentwatch[openai]"
    ),
    "anthropic": Instrumentation(
        "anthropic", "opentelemetry.instrumentation.genai.anthropic", "AnthropicInstrumentor", "agentwatch[anthropic]"
    ),
}

_done: set[str] = set()
_hooked: set[str] = set()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _instrument_now(name: str, tracer_provider: object) -> None:
    if name in _done:
        return
    spec = INSTRUMENTATIONS[name]
    try:
        instrumentor_cls = getattr(importlib.import_module(spec.module), spec.instrumentor)
        instrumentor = instrumentor_cls()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tracer_provider)
        _done.add(name)
    except Exception:  # noqa: BLE001 - an instrumentation that fails leaves the agent uninstrumented, not broken
        logger.warning("agentwatch: could not instrument %s; its calls are not traced", name, exc_info=True)


def instrument(names: tuple[str, ...], tracer_provider: object, *, explicit: bool) -> list[str]:
    """Instrument ``names`` (now, or when their client is imported); the ones that will be instrumented."""
    chosen: list[str] = []
    for name in names:
        spec = INSTRUMENTATIONS[name]
        if not _installed(spec.client):
            if explicit:
                raise ConfigError(f"instrument={name!r}: the {spec.client!r} package is not installed")
            continue
        if not _installed(spec.module):
            message = f"to trace {name} calls, install the instrumentation: pip install '{spec.extra}'"
            if explicit:
                raise ConfigError(message)
            logger.info("agentwatch: %s", message)
            continue
        chosen.append(name)
        if spec.client in sys.modules:
            _instrument_now(name, tracer_provider)
        elif name not in _hooked:
            _hooked.add(name)
            from wrapt import register_post_import_hook

            def hook(module: object, name: str = name) -> None:
                _instrument_now(name, tracer_provider)

            register_post_import_hook(hook, spec.client)
    return chosen
