"""``init()``, ``shutdown()``, ``force_flush()``: the OpenTelemetry set-up behind the one line.

The OpenTelemetry SDK and the exporter are imported here, inside ``init()``, never at ``import agentwatch``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace

from . import _settings as S
from ._errors import handle_internal_errors
from ._exceptions import ConfigError
from ._options import AdvancedOptions, Redaction
from ._runtime import RUNTIME, SCOPE, VERSION

if TYPE_CHECKING:
    from ._export import AgentwatchProcessor, DeliveryStats, Stats


def _positive(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
        raise ConfigError(f"AdvancedOptions.{name} must be a positive number, got {value!r}")


def _script_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.splitext(os.path.basename(argv0))[0]
    return name if name and name not in ("-c", "-m") else "agent"


class Agentwatch:
    """One configured SDK; the module-level functions are bound to ``DEFAULT``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._processor: AgentwatchProcessor | None = None
        self._attached: list[object] = []  # providers our processor is on
        self._stats: Stats | None = None
        self._atexit = False
        self._shutdown_timeout_s = 5.0

    def init(
        self,
        *,
        service_name: str | None = None,
        endpoint: str | None = None,
        api_key: str | None = None,
        enabled: bool | None = None,
        capture_content: bool | None = None,
        redact: bool | Redaction | None = None,
        instrument: bool | Sequence[str] | None = None,
        advanced: AdvancedOptions | None = None,
    ) -> trace.TracerProvider:
        """Set up OpenTelemetry to send the agent's spans to agentwatch. Idempotent; call it again to reconfigure.

        Creates a TracerProvider (or adds our processor to the one the application already set: logfire,
        Datadog, its own) with batch export over OTLP/HTTP protobuf to the collector, masks PII before export,
        and auto-instruments the installed LLM clients. No network call happens here.

        Args:
            service_name: ``service.name``; else ``AGENTWATCH_SERVICE_NAME``, ``OTEL_SERVICE_NAME``, the script's name.
            endpoint: collector base URL; else ``AGENTWATCH_ENDPOINT``, the ``OTEL_EXPORTER_OTLP_*`` variables,
                ``http://127.0.0.1:4318``. ``/v1/traces`` is appended.
            api_key: ingest key, sent as ``Authorization: Bearer``; else ``AGENTWATCH_API_KEY``.
            enabled: ``False`` makes every agentwatch call a no-op; else ``AGENTWATCH_ENABLED`` /
                ``OTEL_SDK_DISABLED``.
            capture_content: export prompts, completions, tool arguments and results (masked). Default on;
                ``False`` keeps tokens, cost and latency but never exports content.
            redact: ``True`` (default) masks PII and secrets; a ``Redaction`` tunes it; ``False`` turns it off.
            instrument: which LLM clients to auto-instrument: ``True``/``None`` all installed (``openai``,
                ``anthropic``), ``False`` none, or a list of names.
            advanced: queue sizes, timeouts, a custom exporter or provider, default guards.

        Returns:
            The OpenTelemetry ``TracerProvider`` in use (a no-op one when disabled).

        Raises:
            ConfigError: a bad argument or environment variable (only here: nothing raises after start-up).

        Example:
            >>> import agentwatch
            >>> agentwatch.init(service_name="support-agent")
        """
        advanced = advanced or AdvancedOptions()
        with self._lock:
            if not S.ENABLED.resolve(enabled):
                self._stop_pipeline()
                RUNTIME.enabled = False
                RUNTIME.tracer = trace.NoOpTracer()
                return trace.NoOpTracerProvider()

            for name in ("max_queue_size", "max_export_batch_size", "schedule_delay_ms", "export_timeout_s"):
                _positive(name, getattr(advanced, name))
            _positive("shutdown_timeout_s", advanced.shutdown_timeout_s)
            _positive("max_content_chars", advanced.max_content_chars)
            traces_url = S.traces_endpoint(endpoint)
            key = S.API_KEY.resolve(api_key)
            capture = S.CAPTURE_CONTENT.resolve(capture_content)
            if isinstance(redact, Redaction):
                redaction: Redaction | None = redact
            elif S.REDACT.resolve(redact):
                redaction = Redaction()
            else:
                redaction = None
            explicit = instrument is not None or bool(os.environ.get(S.AGENTWATCH_INSTRUMENT))
            if instrument is True or instrument is None:
                names = S.INSTRUMENT.resolve(None) if instrument is None else S.INSTRUMENTATION_NAMES
            elif instrument is False:
                names = ()
            else:
                names = tuple(instrument)
                unknown = [name for name in names if name not in S.INSTRUMENTATION_NAMES]
                if unknown:
                    raise ConfigError(f"instrument: unknown {unknown!r}; known: {', '.join(S.INSTRUMENTATION_NAMES)}")
            max_queue = S.MAX_QUEUE_SIZE.resolve(advanced.max_queue_size)
            batch_size = S.MAX_EXPORT_BATCH_SIZE.resolve(advanced.max_export_batch_size)
            delay_ms = S.SCHEDULE_DELAY_MS.resolve(advanced.schedule_delay_ms)
            export_timeout = S.EXPORT_TIMEOUT_S.resolve(advanced.export_timeout_s)
            shutdown_timeout = S.SHUTDOWN_TIMEOUT_S.resolve(advanced.shutdown_timeout_s)
            compression = S.COMPRESSION.resolve(advanced.compression)
            max_chars = S.MAX_CONTENT_CHARS.resolve(advanced.max_content_chars)
            service = service_name or S.SERVICE_NAME.resolve(None)

            from opentelemetry.sdk.trace import TracerProvider

            from ._export import AgentwatchProcessor, Pipeline, QuietExporter, Redactor, Stats
            from ._masking import Masker

            provider = advanced.tracer_provider
            if provider is None:
                current = trace.get_tracer_provider()
                if isinstance(current, TracerProvider):
                    provider = current
                else:
                    provider = TracerProvider(resource=self._resource(service), shutdown_on_exit=False)
                    trace.set_tracer_provider(provider)
            if self._processor is None:
                self._processor = AgentwatchProcessor()
            if not any(attached is provider for attached in self._attached):
                provider.add_span_processor(self._processor)
                self._attached.append(provider)

            stats = Stats(traces_url if advanced.span_exporter is None else type(advanced.span_exporter).__name__)
            exporter = advanced.span_exporter or self._otlp_exporter(
                traces_url, key, advanced.headers, export_timeout, compression
            )
            pipeline = Pipeline(
                QuietExporter(
                    exporter,
                    stats,
                    redactor=Redactor(
                        masker=Masker(redaction) if redaction is not None else None,
                        capture_content=capture,
                        max_chars=max_chars,
                    ),
                ),
                stats,
                synchronous=advanced.synchronous_export,
                max_queue_size=max_queue,
                max_export_batch_size=batch_size,
                schedule_delay_ms=delay_ms,
                export_timeout_s=export_timeout,
            )
            self._stop_pipeline()
            self._processor.pipeline = pipeline
            self._processor.shutdown_timeout_s = shutdown_timeout
            self._stats = stats
            self._shutdown_timeout_s = shutdown_timeout

            RUNTIME.enabled = True
            RUNTIME.tracer = provider.get_tracer(SCOPE, VERSION)
            RUNTIME.capture_content = capture
            RUNTIME.max_content_chars = max_chars
            RUNTIME.loop = advanced.loop or None
            RUNTIME.circuit = advanced.circuit

            # The GenAI instrumentations read this variable; content they capture is masked by our exporter.
            genai = os.environ.get(S.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, "").strip().upper()
            if not capture:
                os.environ[S.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT] = "NO_CONTENT"
            elif genai in ("", "NO_CONTENT", "FALSE", "0"):
                os.environ[S.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT] = "SPAN_ONLY"
            if names:
                from ._instrument import instrument as instrument_clients

                instrument_clients(names, provider, explicit=explicit)

            if not self._atexit:
                self._atexit = True
                atexit.register(self.shutdown)
            return provider

    @staticmethod
    def _resource(service_name: str | None) -> object:
        from opentelemetry.sdk.resources import Resource

        attributes: dict[str, str] = {"telemetry.distro.name": "agentwatch", "telemetry.distro.version": VERSION}
        if service_name:
            attributes["service.name"] = service_name
        elif not os.environ.get(S.OTEL_SERVICE_NAME) and "service.name=" not in os.environ.get(
            S.OTEL_RESOURCE_ATTRIBUTES, ""
        ):
            attributes["service.name"] = _script_name()
        return Resource.create(attributes)

    @staticmethod
    def _otlp_exporter(url: str, api_key: str | None, headers: object, timeout_s: float, compression: str) -> object:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        all_headers = dict(headers or {})  # type: ignore[call-overload]
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        return OTLPSpanExporter(
            endpoint=url,
            headers=all_headers,
            timeout=timeout_s,
            compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
        )

    def _stop_pipeline(self, timeout_s: float | None = None) -> None:
        processor = self._processor
        if processor is not None and processor.pipeline is not None:
            pipeline, processor.pipeline = processor.pipeline, None
            pipeline.shutdown(self._shutdown_timeout_s if timeout_s is None else timeout_s)

    @handle_internal_errors
    def shutdown(self, *, timeout_s: float | None = None) -> None:
        """Flush what is queued (at most ``timeout_s``, default ``AGENTWATCH_SHUTDOWN_TIMEOUT_S`` = 5 s) and stop
        exporting. Also runs at interpreter exit. ``init()`` starts it again."""
        with self._lock:
            self._stop_pipeline(timeout_s)

    @handle_internal_errors
    def force_flush(self, *, timeout_s: float = 5.0) -> bool:
        """Export what is queued now; True when it all went out in time."""
        processor = self._processor
        if processor is None:
            return True
        return processor.force_flush(int(timeout_s * 1000))

    def delivery_stats(self) -> DeliveryStats:
        """Spans exported, failed and dropped since the last ``init()`` (all zero before it)."""
        from ._export import DeliveryStats

        stats = self._stats
        return stats.snapshot() if stats is not None else DeliveryStats(0, 0, 0)


DEFAULT = Agentwatch()
