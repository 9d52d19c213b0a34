"""Budgets, the loop breaker and circuit breakers: they fire when they should, and only then."""

from __future__ import annotations

import time

import pytest

import agentwatch
from agentwatch import Budget, BudgetExceeded, CircuitBreaker, CircuitOpen, LoopDetected, LoopGuard
from agentwatch import _attributes as A
from agentwatch._runtime import RUNTIME
from agentwatch.testing import CapturedSpans, capture_spans


def _llm_call(tokens_in: int, tokens_out: int, *, model: str = "gpt-4o-mini", response_id: str | None = None) -> None:
    with agentwatch.llm(model, provider="openai") as call:
        call.record(input_tokens=tokens_in, output_tokens=tokens_out, response_id=response_id)


def _events(spans: CapturedSpans, name: str) -> list[dict[str, object]]:
    return [dict(event.attributes) for event in spans.one(name).events if event.name.startswith("agentwatch.")]


def test_token_budget_stops_the_next_call(agentwatch_spans: CapturedSpans) -> None:
    calls = 0
    with pytest.raises(BudgetExceeded) as caught:
        with agentwatch.task("t", budget=Budget(tokens=1000)):
            for _ in range(10):
                _llm_call(400, 100)
                calls += 1
    assert calls == 3  # 500, 1000 (not over), 1500 (over): the 4th call never starts
    assert (caught.value.what, caught.value.limit, caught.value.value) == ("tokens", 1000, 1500)
    task = agentwatch_spans.one("invoke_agent t")
    assert task.attributes[A.TASK_OUTCOME] == "budget_exceeded"
    assert task.attributes[A.ERROR_TYPE] == "agentwatch.BudgetExceeded"
    assert _events(agentwatch_spans, "invoke_agent t") == [
        {A.BUDGET_WHAT: "tokens", A.BUDGET_LIMIT: 1000.0, A.BUDGET_VALUE: 1500.0, A.BUDGET_ACTION: "raise"}
    ]
    assert len(agentwatch_spans.find("chat gpt-4o-mini")) == 3


def test_budget_not_reached_does_not_fire(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("t", budget=Budget(tokens=1000, llm_calls=2, tool_calls=2, seconds=60)) as task:
        _llm_call(400, 100)
        _llm_call(400, 100)
        with agentwatch.tool("a", arguments={"i": 1}):
            pass
        with agentwatch.tool("a", arguments={"i": 2}):
            pass
    assert task.usage.input_tokens == 800 and task.usage.llm_calls == 2 and task.usage.tool_calls == 2
    assert agentwatch_spans.one("invoke_agent t").attributes[A.TASK_OUTCOME] == "ok"
    assert _events(agentwatch_spans, "invoke_agent t") == []


def test_call_count_budgets_stop_before_the_call(agentwatch_spans: CapturedSpans) -> None:
    ran = []

    @agentwatch.tool
    def step(i: int) -> None:
        ran.append(i)

    with pytest.raises(BudgetExceeded, match="tool_calls"):
        with agentwatch.task("tools", budget=Budget(tool_calls=2)):
            for i in range(5):
                step(i)
    assert ran == [0, 1]
    with pytest.raises(BudgetExceeded, match="llm_calls"):
        with agentwatch.task("llms", budget=Budget(llm_calls=1)):
            _llm_call(1, 1)
            _llm_call(1, 1)
    assert len(agentwatch_spans.find("chat gpt-4o-mini")) == 1


def test_seconds_budget() -> None:
    with capture_spans() as spans:
        with pytest.raises(BudgetExceeded, match="seconds"):
            with agentwatch.task("slow", budget=Budget(seconds=0.05)):
                _llm_call(1, 1)
                time.sleep(0.06)
                _llm_call(1, 1)
    assert spans.one("invoke_agent slow").attributes[A.TASK_OUTCOME] == "budget_exceeded"


def test_warn_mode_records_but_lets_the_run_go_on(
    agentwatch_spans: CapturedSpans, caplog: pytest.LogCaptureFixture
) -> None:
    with agentwatch.task("t", budget=Budget(tokens=100, on_breach="warn")):
        for _ in range(3):
            _llm_call(100, 10)
    assert agentwatch_spans.one("invoke_agent t").attributes[A.TASK_OUTCOME] == "ok"
    assert len(_events(agentwatch_spans, "invoke_agent t")) == 1
    assert sum("budget" in record.getMessage() for record in caplog.records) == 1


def test_outer_budget_sees_inner_tasks(agentwatch_spans: CapturedSpans) -> None:
    with pytest.raises(BudgetExceeded):
        with agentwatch.task("outer", budget=Budget(tokens=250)):
            for i in range(5):
                with agentwatch.task(f"sub-{i}"):
                    _llm_call(100, 0)  # 100, 200, 300 (over); the 4th subtask's call is stopped
    assert agentwatch_spans.one("invoke_agent outer").attributes[A.TASK_OUTCOME] == "budget_exceeded"
    assert agentwatch_spans.one("invoke_agent sub-2").attributes[A.TASK_OUTCOME] == "ok"
    assert agentwatch_spans.one("invoke_agent sub-3").attributes[A.TASK_OUTCOME] == "budget_exceeded"
    assert agentwatch_spans.find("invoke_agent sub-4") == []


def test_same_response_reported_twice_counts_once(agentwatch_spans: CapturedSpans) -> None:
    # a client's own span and an instrumentation's span for the same call: tokens and calls count once
    with agentwatch.task("t", budget=Budget(tokens=10_000)) as task:
        with agentwatch.llm("claude-sonnet-4", provider="anthropic") as call:
            call.record(output_tokens=40, cache_read_tokens=50, response_id="msg_1")  # client span: no input
        with agentwatch.llm("claude-sonnet-4", provider="anthropic") as call:
            call.record(input_tokens=160, output_tokens=40, cache_read_tokens=50, response_id="msg_1")
    assert (task.usage.input_tokens, task.usage.output_tokens, task.usage.llm_calls) == (160, 40, 1)


def test_usd_budget_uses_genai_prices(agentwatch_spans: CapturedSpans) -> None:
    # gpt-4o-mini: $0.15 / MTok in, $0.60 / MTok out -> 1M in + 100k out = $0.21 per call
    with pytest.raises(BudgetExceeded) as caught:
        with agentwatch.task("spendy", budget=Budget(usd=0.30)) as task:
            _llm_call(1_000_000, 100_000, response_id="r1")
            assert task.usage.usd == pytest.approx(0.21, rel=0.01)
            _llm_call(1_000_000, 100_000, response_id="r2")
            _llm_call(1, 1, response_id="r3")
    assert caught.value.what == "usd"
    assert caught.value.value == pytest.approx(0.42, rel=0.01)


def test_usd_cache_is_priced_once_and_cheaper(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("cached", budget=Budget(usd=100)) as cached:
        with agentwatch.llm("gpt-4o-mini", provider="openai") as call:
            call.record(input_tokens=1_000_000, cache_read_tokens=1_000_000, output_tokens=0)
    with agentwatch.task("uncached", budget=Budget(usd=100)) as uncached:
        _llm_call(1_000_000, 0)
    assert cached.usage.usd is not None and uncached.usage.usd is not None
    assert 0 < cached.usage.usd < uncached.usage.usd


def _counting_usage_of(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from agentwatch import _task

    calls = [0]
    real = _task.usage_of

    def counted(attrs: object) -> object:
        calls[0] += 1
        return real(attrs)  # type: ignore[arg-type]

    monkeypatch.setattr(_task, "usage_of", counted)
    return calls


def test_usage_without_a_budget_is_added_up_when_read(
    agentwatch_spans: CapturedSpans, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No budget: nothing needs the usage before it is read, so LLM span ends only queue it (agent-thread cost).
    calls = _counting_usage_of(monkeypatch)
    with agentwatch.task("t") as task:  # the default loop breaker is on: it still sees every call
        _llm_call(400, 100, response_id="r1")
        with agentwatch.llm("gpt-4o-mini", provider="openai") as call:  # the same call reported again
            call.record(input_tokens=400, output_tokens=120, response_id="r1")
        _llm_call(50, 5)
        with agentwatch.tool("a", arguments={"i": 1}):
            pass
        assert calls[0] == 0
        assert (task.usage.input_tokens, task.usage.output_tokens, task.usage.llm_calls) == (450, 125, 2)
        assert task.usage.tool_calls == 1 and task.usage.usd is None
        assert calls[0] == 3
        with agentwatch.tool("a", arguments={"i": 1}):
            pass
    assert task.usage.tool_calls == 2 and calls[0] == 3
    # the task still learns its provider from its first call, at once
    assert agentwatch_spans.one("invoke_agent t").attributes[A.GEN_AI_PROVIDER_NAME] == "openai"


def test_deferred_usage_of_subtasks_and_long_tasks(
    agentwatch_spans: CapturedSpans, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting_usage_of(monkeypatch)
    with agentwatch.task("outer", loop=False) as outer:
        for i in range(150):  # more than the queue keeps: added up on the way, none lost
            _llm_call(10, 1, response_id=f"r{i}")
        assert 0 < calls[0] < 150
        with agentwatch.task("inner") as inner:
            _llm_call(1000, 100)
            with agentwatch.tool("a"):
                pass
        assert (inner.usage.input_tokens, inner.usage.llm_calls, inner.usage.tool_calls) == (1000, 1, 1)
        with agentwatch.tool("b"):
            pass
    assert (outer.usage.input_tokens, outer.usage.output_tokens) == (2500, 250)
    assert (outer.usage.llm_calls, outer.usage.tool_calls) == (151, 2)
    assert calls[0] == 151


def test_budgeted_subtask_in_a_task_without_budget(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("outer") as outer:
        _llm_call(500, 0)  # deferred: outer has no budget
        with pytest.raises(BudgetExceeded):
            with agentwatch.task("inner", budget=Budget(tokens=250)):
                for _ in range(5):
                    _llm_call(100, 0)  # 100, 200, 300 (over): the 4th call is stopped
        assert (outer.usage.input_tokens, outer.usage.llm_calls) == (800, 4)
    assert agentwatch_spans.one("invoke_agent inner").attributes[A.TASK_OUTCOME] == "budget_exceeded"
    assert agentwatch_spans.one("invoke_agent outer").attributes[A.TASK_OUTCOME] == "ok"


def test_loop_breaker_default_threshold(agentwatch_spans: CapturedSpans) -> None:
    ran = []

    @agentwatch.tool
    def fetch(url: str) -> None:
        ran.append(url)

    with pytest.raises(LoopDetected) as caught:
        with agentwatch.task("loops"):
            fetch("a")
            fetch("b")  # a different call resets the count
            for _ in range(5):
                fetch("a")
    assert ran == ["a", "b", "a", "a"]  # the third identical call in a row is stopped before it runs
    assert caught.value.repeats == 3
    task = agentwatch_spans.one("invoke_agent loops")
    assert task.attributes[A.TASK_OUTCOME] == "loop_stopped"
    [event] = _events(agentwatch_spans, "invoke_agent loops")
    assert event[A.LOOP_TOOL] == "fetch" and event[A.LOOP_REPEATS] == 3 and event[A.LOOP_THRESHOLD] == 3
    stopped = agentwatch_spans.find("execute_tool fetch")[-1]
    assert stopped.attributes[A.ERROR_TYPE] == "agentwatch.LoopDetected"


def test_loop_breaker_varied_arguments_and_off(agentwatch_spans: CapturedSpans) -> None:
    @agentwatch.tool
    def fetch(url: str) -> str:
        return url

    with agentwatch.task("varied"):
        for i in range(10):
            fetch(str(i % 2))  # alternating: never the same call 3 times in a row
    with agentwatch.task("off", loop=False):
        for _ in range(10):
            fetch("same")
    with agentwatch.task("warn", loop=LoopGuard(threshold=4, on_breach="warn")):
        for _ in range(6):
            fetch("same")
    for name in ("varied", "off", "warn"):
        assert agentwatch_spans.one(f"invoke_agent {name}").attributes[A.TASK_OUTCOME] == "ok"
    assert len(_events(agentwatch_spans, "invoke_agent warn")) == 3  # repeats 4, 5 and 6 are all recorded


def test_loop_breaker_normalises_arguments(agentwatch_spans: CapturedSpans) -> None:
    with pytest.raises(LoopDetected):
        with agentwatch.task("t", loop=LoopGuard(threshold=2)):
            with agentwatch.tool("q", arguments={"a": 1, "b": [1, 2]}):
                pass
            with agentwatch.tool("q", arguments={"b": [1, 2], "a": 1}):  # same arguments, other key order
                pass


def test_circuit_breaker_opens_half_opens_and_closes(agentwatch_spans: CapturedSpans) -> None:
    now = [1000.0]
    RUNTIME.circuits.clock = lambda: now[0]
    healthy = [False]

    @agentwatch.tool(circuit=CircuitBreaker(failures=2, cooldown_s=30))
    def flaky() -> str:
        if not healthy[0]:
            raise ConnectionError("down")
        return "up"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            flaky()
    with pytest.raises(CircuitOpen) as caught:
        flaky()  # fails fast: the function does not run
    assert caught.value.retry_in == pytest.approx(30)
    now[0] += 31
    with pytest.raises(ConnectionError):
        flaky()  # the trial call fails: open again
    with pytest.raises(CircuitOpen):
        flaky()
    now[0] += 31
    healthy[0] = True
    assert flaky() == "up"  # the trial succeeds: closed
    assert flaky() == "up"

    events = [event.name for span in agentwatch_spans.find("execute_tool flaky") for event in span.events]
    assert [name for name in events if name.startswith("agentwatch.circuit")] == [
        A.EVENT_CIRCUIT_OPEN,
        A.EVENT_CIRCUIT_HALF_OPEN,
        A.EVENT_CIRCUIT_OPEN,
        A.EVENT_CIRCUIT_HALF_OPEN,
        A.EVENT_CIRCUIT_CLOSED,
    ]
    fast_fails = [
        s
        for s in agentwatch_spans.find("execute_tool flaky")
        if s.attributes.get(A.ERROR_TYPE) == "agentwatch.CircuitOpen"
    ]
    assert len(fast_fails) == 2


def test_circuit_stays_closed_below_threshold(agentwatch_spans: CapturedSpans) -> None:
    calls = [0]

    @agentwatch.tool(circuit=CircuitBreaker(failures=3))
    def sometimes() -> None:
        calls[0] += 1
        if calls[0] % 2:
            raise ValueError("odd")

    for _ in range(10):
        try:
            sometimes()
        except ValueError:
            pass
    assert calls[0] == 10


@pytest.mark.parametrize(
    "make",
    [
        lambda: Budget(usd=-1),
        lambda: Budget(tokens="10"),  # type: ignore[arg-type]
        lambda: Budget(on_breach="explode"),  # type: ignore[arg-type]
        lambda: LoopGuard(threshold=1),
        lambda: CircuitBreaker(failures=0),
    ],
)
def test_bad_guard_options_fail_fast(make: object) -> None:
    with pytest.raises(agentwatch.ConfigError):
        make()  # type: ignore[operator]
