"""init() and export over real OTLP/HTTP on loopback: the collector up, busy, down or hanging."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sdk_fakes import otlp_sink, url, wait_for

import agentwatch
from agentwatch import AdvancedOptions

FAKE_KEY = "aw-test-not-a-real-key"


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _spans(n: int) -> None:
    for i in range(n):
        with agentwatch.tool("step", arguments={"i": i}):
            pass


def test_spans_reach_the_collector_with_the_key() -> None:
    with otlp_sink() as sink:
        provider = agentwatch.init(
            endpoint=url(sink), api_key=FAKE_KEY, instrument=False, advanced=AdvancedOptions(schedule_delay_ms=50)
        )
        assert isinstance(provider, TracerProvider)
        with agentwatch.task("t"):
            _spans(3)
        assert wait_for(lambda: len(sink.spans) == 4)
        assert agentwatch.force_flush()
        headers = {key.lower(): value for key, value in sink.headers[0].items()}
        assert headers["authorization"] == f"Bearer {FAKE_KEY}"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["content-encoding"] == "gzip"
        assert sorted(span.name for span in sink.spans) == ["execute_tool step"] * 3 + ["invoke_agent t"]
        assert agentwatch.delivery_stats() == agentwatch.delivery_stats().__class__(exported=4, failed=0, dropped=0)


def test_init_is_idempotent_and_keeps_one_processor() -> None:
    with otlp_sink() as sink:
        first = agentwatch.init(endpoint=url(sink), instrument=False, advanced=AdvancedOptions(schedule_delay_ms=50))
        second = agentwatch.init(endpoint=url(sink), instrument=False, advanced=AdvancedOptions(schedule_delay_ms=50))
        assert first is second
        _spans(1)
        agentwatch.shutdown()
        assert len(sink.spans) == 1  # not exported twice


def test_existing_provider_gets_our_processor_added() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    theirs = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    with otlp_sink() as sink:
        returned = agentwatch.init(
            endpoint=url(sink), instrument=False, advanced=AdvancedOptions(tracer_provider=provider)
        )
        assert returned is provider
        _spans(2)
        agentwatch.shutdown()
        assert len(sink.spans) == 2
    assert len(theirs.get_finished_spans()) == 2  # their pipeline still gets everything


def test_collector_busy_is_retried() -> None:
    with otlp_sink(mode="busy_once") as sink:
        agentwatch.init(endpoint=url(sink), instrument=False, advanced=AdvancedOptions(schedule_delay_ms=50))
        _spans(5)
        assert wait_for(lambda: len(sink.spans) == 5)
        assert sink.requests >= 2
        assert agentwatch.delivery_stats().failed == 0


def test_collector_down_never_hurts_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    agentwatch.init(
        endpoint=_closed_port(),
        instrument=False,
        advanced=AdvancedOptions(
            max_queue_size=500, max_export_batch_size=100, schedule_delay_ms=20, export_timeout_s=0.5
        ),
    )
    started = time.perf_counter()
    with agentwatch.task("t"):
        _spans(3000)
    elapsed = time.perf_counter() - started
    assert elapsed < 5  # no network on the agent's thread: 3000 spans never wait for the dead collector
    assert wait_for(lambda: agentwatch.delivery_stats().failed > 0, timeout=10)
    begun = time.perf_counter()
    agentwatch.shutdown(timeout_s=1)
    assert time.perf_counter() - begun < 3
    stats = agentwatch.delivery_stats()
    assert stats.exported == 0
    assert stats.dropped > 0  # the bounded queue filled up: counted, not held
    assert stats.dropped + stats.failed <= 3001
    reports = [r for r in caplog.records if "spans not delivered" in r.getMessage()]
    assert 1 <= len(reports) <= 2  # once a minute (plus the one at shutdown), never per span or per batch


def test_collector_hanging_does_not_block_shutdown_and_the_batch_in_flight_is_counted() -> None:
    with otlp_sink(mode="hang") as sink:
        agentwatch.init(
            endpoint=url(sink),
            instrument=False,
            advanced=AdvancedOptions(schedule_delay_ms=20, export_timeout_s=20, shutdown_timeout_s=1),
        )
        _spans(10)
        assert wait_for(lambda: sink.requests >= 1)
        begun = time.perf_counter()
        agentwatch.shutdown()
        assert time.perf_counter() - begun < 3
        # the 10 spans were in an export still waiting for an answer: shutdown gave up on them, and counts them
        # (dropped; or failed, should the exporter's own shutdown cut the request short first) — never lost
        stats = agentwatch.delivery_stats()
        assert (stats.exported, stats.failed + stats.dropped) == (0, 10), stats


def test_a_10000_span_burst_loses_nothing_with_the_defaults() -> None:
    with otlp_sink() as sink:
        agentwatch.init(endpoint=url(sink), instrument=False, redact=False)
        with agentwatch.task("burst", loop=False):
            for i in range(10_000 - 1):
                agentwatch.decision("d", i)
        agentwatch.shutdown(timeout_s=30)
        assert len(sink.spans) == 10_000
        assert agentwatch.delivery_stats().dropped == 0


@pytest.mark.parametrize(
    ("kwargs", "env"),
    [
        ({"endpoint": "localhost:4318"}, {}),
        ({}, {"AGENTWATCH_ENABLED": "maybe"}),
        ({}, {"AGENTWATCH_MAX_QUEUE_SIZE": "-5"}),
        ({"instrument": ["cohere"]}, {}),
        ({"advanced": AdvancedOptions(export_timeout_s=0)}, {}),
        ({}, {"AGENTWATCH_COMPRESSION": "brotli"}),
    ],
)
def test_bad_configuration_fails_fast(
    kwargs: dict[str, object], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(agentwatch.ConfigError):
        agentwatch.init(**kwargs)  # type: ignore[arg-type]


def test_internal_errors_are_swallowed_outside_pytest(
    quiet_internal_errors: None, agentwatch_spans, monkeypatch
) -> None:
    from agentwatch import _tool

    def broken(canonical: str) -> str:
        raise RuntimeError("bug in agentwatch")

    monkeypatch.setattr(_tool, "args_hash", broken)

    @agentwatch.tool
    def still_works(x: int) -> int:
        return x + 1

    with agentwatch.task("t"):
        assert still_works(1) == 2  # the user's code ran, once
    assert agentwatch_spans.find("execute_tool still_works") == []  # less telemetry, not a crash


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_", "PYTEST_"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=60
    )


def test_import_and_init_make_no_network_call_and_exit_flushes() -> None:
    with otlp_sink() as sink:
        result = _run(
            """
            import socket
            real = socket.socket.connect
            calls = []
            socket.socket.connect = lambda self, addr: calls.append(addr) or real(self, addr)
            import agentwatch
            agentwatch.init(instrument=False)
            assert calls == [], calls
            with agentwatch.task("exit-flush"):
                pass
            print("ok")
            """,
            AGENTWATCH_ENDPOINT=url(sink),
            OTEL_SERVICE_NAME="svc-from-env",
        )
        assert result.returncode == 0, result.stderr
        assert [span.name for span in sink.spans] == ["invoke_agent exit-flush"]  # flushed at exit
        service = {kv.key: kv.value.string_value for kv in sink.resources[0].attributes}["service.name"]
        assert service == "svc-from-env"


def test_disabled_by_env_in_a_fresh_process() -> None:
    result = _run(
        """
        import agentwatch
        from opentelemetry import trace
        assert isinstance(agentwatch.init(), trace.NoOpTracerProvider)
        with agentwatch.task("t") as t:
            pass
        print(type(t).__name__)
        """,
        OTEL_SDK_DISABLED="true",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NoopRun"


def test_fork_safe() -> None:
    with otlp_sink() as sink:
        result = _run(
            """
            import os, agentwatch
            agentwatch.init(instrument=False, advanced=agentwatch.AdvancedOptions(schedule_delay_ms=20))
            with agentwatch.task("parent"):
                pass
            pid = os.fork()
            if pid == 0:
                with agentwatch.task("child"):
                    pass
                agentwatch.shutdown()
                os._exit(0)
            os.waitpid(pid, 0)
            """,
            AGENTWATCH_ENDPOINT=url(sink),
        )
        assert result.returncode == 0, result.stderr
        assert wait_for(
            lambda: sorted(span.name for span in sink.spans) == ["invoke_agent child", "invoke_agent parent"]
        )
