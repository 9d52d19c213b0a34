"""Span shapes and lifecycles through the public API: task, tool, decision, llm, escalate."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import agentwatch
from agentwatch import _attributes as A
from agentwatch.testing import CapturedSpans, capture_spans


def test_task_root_span_carries_the_contract(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task(
        "triage", conversation_id="conv-1", session_id="sess-1", user_id="user-1", provider="openai"
    ) as task:
        task.span.set_attribute("custom", 1)
    span = agentwatch_spans.one("invoke_agent triage")
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is None
    assert dict(span.attributes) == {
        A.GEN_AI_OPERATION_NAME: "invoke_agent",
        A.GEN_AI_AGENT_NAME: "triage",
        A.TASK_NAME: "triage",
        A.GEN_AI_CONVERSATION_ID: "conv-1",
        A.SESSION_ID: "sess-1",
        A.USER_ID: "user-1",
        A.GEN_AI_PROVIDER_NAME: "openai",
        A.TASK_OUTCOME: "ok",
        "custom": 1,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_agent_name_names_the_span(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("refund", agent="Support Bot"):
        pass
    span = agentwatch_spans.one("invoke_agent Support Bot")
    assert span.attributes[A.TASK_NAME] == "refund"
    assert span.attributes[A.GEN_AI_AGENT_NAME] == "Support Bot"


def test_exception_is_recorded_and_reraised_unchanged(agentwatch_spans: CapturedSpans) -> None:
    class Boom(RuntimeError):
        pass

    error = Boom("kaput")
    with pytest.raises(Boom) as caught:
        with agentwatch.task("fails"):
            raise error
    assert caught.value is error
    span = agentwatch_spans.one("invoke_agent fails")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[A.TASK_OUTCOME] == "error"
    assert span.attributes[A.ERROR_TYPE].endswith("Boom")
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize(
    ("raised", "outcome"), [(TimeoutError("slow"), "timeout"), (TimeoutError(), "timeout"), (KeyError("k"), "error")]
)
def test_outcome_follows_the_exception(agentwatch_spans: CapturedSpans, raised: BaseException, outcome: str) -> None:
    with pytest.raises(type(raised)):
        with agentwatch.task("t"):
            raise raised
    assert agentwatch_spans.one("invoke_agent t").attributes[A.TASK_OUTCOME] == outcome


def test_set_outcome_and_escalate(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("a") as task:
        task.set_outcome(agentwatch.Outcome.TIMEOUT)
    with agentwatch.task("b"):
        agentwatch.escalate(
            "refund above limit",
            summary="customer wants $900 back",
            actions_taken=["looked up order", "checked policy"],
        )
    assert agentwatch_spans.one("invoke_agent a").attributes[A.TASK_OUTCOME] == "timeout"
    escalated = agentwatch_spans.one("invoke_agent b").attributes
    assert escalated[A.TASK_OUTCOME] == "escalated"
    assert escalated[A.ESCALATION_REASON] == "refund above limit"
    assert escalated[A.ESCALATION_SUMMARY] == "customer wants $900 back"
    assert escalated[A.ESCALATION_ACTIONS] == ("looked up order", "checked policy")


def test_escalate_outside_a_task_records_nothing(agentwatch_spans: CapturedSpans) -> None:
    agentwatch.escalate("nobody home")
    assert agentwatch_spans.spans == []


def test_tool_decorator_records_arguments_result_and_hash(agentwatch_spans: CapturedSpans) -> None:
    @agentwatch.tool
    def lookup_order(order_id: str, *, verbose: bool = False) -> dict[str, str]:
        return {"status": "shipped"}

    with agentwatch.task("t"):
        assert lookup_order("A-1") == {"status": "shipped"}
        lookup_order(order_id="A-1", verbose=False)
    first, second = agentwatch_spans.find("execute_tool lookup_order")
    attrs = first.attributes
    assert attrs[A.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert attrs[A.GEN_AI_TOOL_NAME] == "lookup_order"
    assert json.loads(attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"order_id": "A-1", "verbose": False}
    assert json.loads(attrs[A.GEN_AI_TOOL_CALL_RESULT]) == {"status": "shipped"}
    # positional or keyword, defaults spelled out or not: the same normalised arguments, the same hash
    assert attrs[A.TOOL_ARGS_HASH] == second.attributes[A.TOOL_ARGS_HASH]
    assert len(attrs[A.TOOL_ARGS_HASH]) == 16 and int(attrs[A.TOOL_ARGS_HASH], 16) >= 0
    task = agentwatch_spans.one("invoke_agent t")
    assert first.parent.span_id == task.context.span_id


def test_tool_keeps_the_signature_and_works_on_methods(agentwatch_spans: CapturedSpans) -> None:
    class Tools:
        @agentwatch.tool("search", tool_type="function", call_id="call_1")
        def search(self, query: str, limit: int = 3) -> list[str]:
            """Search things."""
            return [query] * limit

    signature = inspect.signature(Tools.search)
    assert list(signature.parameters) == ["self", "query", "limit"]
    assert signature.parameters["limit"].default == 3
    assert signature.return_annotation == "list[str]"
    assert Tools.search.__doc__ == "Search things."
    assert Tools().search("q", limit=2) == ["q", "q"]
    attrs = agentwatch_spans.one("execute_tool search").attributes
    assert json.loads(attrs[A.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"query": "q", "limit": 2}
    assert attrs[A.GEN_AI_TOOL_TYPE] == "function"
    assert attrs[A.GEN_AI_TOOL_CALL_ID] == "call_1"


def test_tool_context_manager_and_error(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.tool("fetch", arguments={"url": "https://example.org"}) as call:
        call.set_result("<html>")
    with pytest.raises(ConnectionError):
        with agentwatch.tool("fetch", arguments={"url": "https://down.example"}):
            raise ConnectionError("refused")
    ok, failed = agentwatch_spans.find("execute_tool fetch")
    assert ok.attributes[A.GEN_AI_TOOL_CALL_RESULT] == '"<html>"'
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes[A.ERROR_TYPE] == "ConnectionError"
    assert A.GEN_AI_TOOL_CALL_RESULT not in failed.attributes


def test_content_off_keeps_the_hash_but_no_content() -> None:
    with capture_spans(capture_content=False) as spans:

        @agentwatch.tool
        def search(query: str) -> str:
            return "result"

        with agentwatch.llm("gpt-4o", provider="openai") as call:
            call.record(input_tokens=10, output_tokens=2, input_messages=["hi"], output_messages=["hello"])
        agentwatch.decision("route", "a", reasoning="because the user said so")
        search("secret plans")
    tool = spans.one("execute_tool search").attributes
    assert A.TOOL_ARGS_HASH in tool
    assert A.GEN_AI_TOOL_CALL_ARGUMENTS not in tool and A.GEN_AI_TOOL_CALL_RESULT not in tool
    chat = spans.one("chat gpt-4o").attributes
    assert chat[A.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert A.GEN_AI_INPUT_MESSAGES not in chat and A.GEN_AI_OUTPUT_MESSAGES not in chat
    assert A.DECISION_REASONING not in spans.one("decision route").attributes


def test_decision_span(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("t"):
        choice = agentwatch.decision(
            "route", "refund", options=["refund", "escalate", "ignore"], confidence=0.82, reasoning="policy allows it"
        )
        agentwatch.decision("bad", "x", confidence=7)  # outside [0, 1]: not recorded, no raise
    assert choice == "refund"
    attrs = agentwatch_spans.one("decision route").attributes
    assert attrs == {
        A.GEN_AI_OPERATION_NAME: "decision",
        A.DECISION_NAME: "route",
        A.DECISION_CHOICE: "refund",
        A.DECISION_OPTIONS: ("refund", "escalate", "ignore"),
        A.DECISION_CONFIDENCE: 0.82,
        A.DECISION_REASONING: "policy allows it",
    }
    assert A.DECISION_CONFIDENCE not in agentwatch_spans.one("decision bad").attributes


def test_manual_llm_span(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("t"):
        with agentwatch.llm("claude-sonnet-4", provider="anthropic") as call:
            call.record(
                input_tokens=100,  # Anthropic style: without the cache, which is larger: the cache is added
                output_tokens=40,
                cache_read_tokens=500,
                cache_creation_tokens=10,
                reasoning_tokens=12,
                response_model="claude-sonnet-4-20250514",
                response_id="msg_1",
                finish_reasons=["end_turn"],
                input_messages=[{"role": "user", "content": "Where is my order?"}],
                output_messages=["It ships tomorrow."],
                system_instructions="You are a support agent.",
            )
    span = agentwatch_spans.one("chat claude-sonnet-4")
    attrs = span.attributes
    assert span.kind is SpanKind.CLIENT
    assert attrs[A.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[A.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[A.GEN_AI_REQUEST_MODEL] == "claude-sonnet-4"
    assert attrs[A.GEN_AI_RESPONSE_MODEL] == "claude-sonnet-4-20250514"
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == 610
    assert attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] == 40
    assert attrs[A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 500
    assert attrs[A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 10
    assert attrs[A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 12
    assert attrs[A.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert json.loads(attrs[A.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is my order?"}]}
    ]
    assert json.loads(attrs[A.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "It ships tomorrow."}], "finish_reason": "end_turn"}
    ]
    assert json.loads(attrs[A.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "You are a support agent."}]
    # the task learnt its provider from the call
    assert agentwatch_spans.one("invoke_agent t").attributes[A.GEN_AI_PROVIDER_NAME] == "anthropic"


def test_nested_tasks_and_explicit_start(agentwatch_spans: CapturedSpans) -> None:
    with agentwatch.task("outer") as outer:
        assert agentwatch.current_task() is outer
        with agentwatch.task("inner") as inner:
            assert agentwatch.current_task() is inner
        assert agentwatch.current_task() is outer
        handle = agentwatch.task("callback").start()
        assert agentwatch.current_task() is outer
        handle.end()
        handle.end()  # idempotent
    assert agentwatch.current_task() is None
    outer_span = agentwatch_spans.one("invoke_agent outer")
    for name in ("invoke_agent inner", "invoke_agent callback"):
        assert agentwatch_spans.one(name).parent.span_id == outer_span.context.span_id


async def test_async_function_and_async_generator(agentwatch_spans: CapturedSpans) -> None:
    @agentwatch.task("async-task")
    async def run(x: int) -> int:
        await asyncio.sleep(0)
        return await double(x)

    @agentwatch.tool
    async def double(x: int) -> int:
        return 2 * x

    @agentwatch.tool("stream")
    async def stream(n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    assert await run(21) == 42
    async with agentwatch.task("consume"):
        assert [i async for i in stream(3)] == [0, 1, 2]
    task = agentwatch_spans.one("invoke_agent async-task")
    assert agentwatch_spans.one("execute_tool double").parent.span_id == task.context.span_id
    streamed = agentwatch_spans.one("execute_tool stream")
    assert streamed.parent.span_id == agentwatch_spans.one("invoke_agent consume").context.span_id


def test_generator_runs_in_its_own_context(agentwatch_spans: CapturedSpans) -> None:
    @agentwatch.task("producer")
    def produce(n: int):
        yield from range(n)
        return "done"

    gen = produce(3)
    assert next(gen) == 0
    # between two items the caller's context is the caller's: no task leaks out of the generator
    assert agentwatch.current_task() is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert list(gen) == [1, 2]
    assert agentwatch_spans.one("invoke_agent producer").attributes[A.TASK_OUTCOME] == "ok"

    closed = produce(5)
    next(closed)
    closed.close()
    assert len(agentwatch_spans.find("invoke_agent producer")) == 2


def test_generator_exception_is_recorded(agentwatch_spans: CapturedSpans) -> None:
    @agentwatch.tool
    def items():
        yield 1
        raise ValueError("bad item")

    with pytest.raises(ValueError, match="bad item"):
        list(items())
    assert agentwatch_spans.one("execute_tool items").attributes[A.ERROR_TYPE] == "ValueError"


def test_threads_and_asyncio_tasks_keep_their_own_task(agentwatch_spans: CapturedSpans) -> None:
    barrier = threading.Barrier(4)

    @agentwatch.tool
    def work(worker: int) -> int:
        return worker

    def run(worker: int) -> str:
        with agentwatch.task(f"worker-{worker}") as task:
            barrier.wait(timeout=5)
            work(worker)
            assert agentwatch.current_task() is task
            return task.name

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(run, range(4))) == [f"worker-{i}" for i in range(4)]

    async def one(worker: int) -> None:
        async with agentwatch.task(f"aio-{worker}"):
            await asyncio.sleep(0.01)
            work(worker)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(4)))

    asyncio.run(main())
    for prefix in ("worker", "aio"):
        for i in range(4):
            task = agentwatch_spans.one(f"invoke_agent {prefix}-{i}")
            tools = agentwatch_spans.children(task)
            assert [json.loads(t.attributes[A.GEN_AI_TOOL_CALL_ARGUMENTS]) for t in tools] == [{"worker": i}]


def test_disabled_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = agentwatch.init(enabled=False)
    try:
        assert isinstance(provider, trace.NoOpTracerProvider)

        @agentwatch.tool
        def search(q: str) -> str:
            return q

        with agentwatch.task("t", budget=agentwatch.Budget(tool_calls=0)) as task:
            assert search("x") == "x"  # no guard either: disabled means no-op
            task.set_outcome("ok")
            assert agentwatch.decision("d", 3) == 3
            with agentwatch.llm("m") as call:
                call.record(input_tokens=1)
    finally:
        agentwatch._runtime.RUNTIME.enabled = True
