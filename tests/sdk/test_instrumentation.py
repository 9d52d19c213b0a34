"""Auto-instrumentation: the real openai and anthropic clients against a local fake server (sync, async, streaming)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from sdk_fakes import url

import agentwatch
from agentwatch import _attributes as A
from agentwatch.testing import CapturedSpans, capture_spans

FAKE_KEY = "sk-test-not-a-real-key-000000000000"
OPENAI_SCOPE = "opentelemetry.instrumentation.genai.openai"
ANTHROPIC_SCOPE = "opentelemetry.instrumentation.genai.anthropic"
MESSAGES = [{"role": "user", "content": "Where is order 48213? Mail me at jane@example.com"}]


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans(instrument=True) as captured:
        yield captured


def _openai_span(spans: CapturedSpans) -> Any:
    [span] = spans.find(operation="chat", scope=OPENAI_SCOPE)
    return span


def _check_openai(spans: CapturedSpans, task_name: str) -> None:
    span = _openai_span(spans)
    attrs = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert attrs[A.GEN_AI_PROVIDER_NAME] == "openai"
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == 120 and attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    # content is captured by default, and masked before export
    inputs = attrs[A.GEN_AI_INPUT_MESSAGES]
    assert "jane@example.com" not in inputs and "[REDACTED:email]" in inputs
    outputs = json.loads(attrs[A.GEN_AI_OUTPUT_MESSAGES])
    text = json.dumps(outputs)
    assert "support@shop.example" not in text and "[REDACTED:email]" in text and "[REDACTED:phone]" in text
    task = spans.one(f"invoke_agent {task_name}")
    assert span.parent.span_id == task.context.span_id
    assert task.attributes[A.GEN_AI_PROVIDER_NAME] == "openai"


def test_openai_sync(spans: CapturedSpans, llm_server: Any) -> None:
    client = openai.OpenAI(base_url=url(llm_server) + "/v1", api_key=FAKE_KEY, max_retries=0)
    with agentwatch.task("oa-sync") as task:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "ships tomorrow" in reply.choices[0].message.content
    assert (task.usage.input_tokens, task.usage.output_tokens, task.usage.llm_calls) == (120, 30, 1)
    _check_openai(spans, "oa-sync")


async def test_openai_async_stream(spans: CapturedSpans, llm_server: Any) -> None:
    client = openai.AsyncOpenAI(base_url=url(llm_server) + "/v1", api_key=FAKE_KEY, max_retries=0)
    async with agentwatch.task("oa-stream") as task:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert "ships tomorrow" in text
    assert task.usage.input_tokens == 120 and task.usage.llm_calls == 1
    _check_openai(spans, "oa-stream")
    assert _openai_span(spans).attributes[A.GEN_AI_REQUEST_STREAM] is True


async def test_openai_async(spans: CapturedSpans, llm_server: Any) -> None:
    client = openai.AsyncOpenAI(base_url=url(llm_server) + "/v1", api_key=FAKE_KEY, max_retries=0)
    async with agentwatch.task("oa-async"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _check_openai(spans, "oa-async")


def test_openai_sync_stream(spans: CapturedSpans, llm_server: Any) -> None:
    client = openai.OpenAI(base_url=url(llm_server) + "/v1", api_key=FAKE_KEY, max_retries=0)
    with agentwatch.task("oa-sync-stream"):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        assert "ships" in "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    _check_openai(spans, "oa-sync-stream")


def test_budget_stops_an_instrumented_call_before_it_is_sent(spans: CapturedSpans, llm_server: Any) -> None:
    client = openai.OpenAI(base_url=url(llm_server) + "/v1", api_key=FAKE_KEY, max_retries=0)
    with pytest.raises(agentwatch.BudgetExceeded) as caught:
        with agentwatch.task("capped", budget=agentwatch.Budget(tokens=200)):
            for _ in range(5):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.what == "tokens" and caught.value.value == 300
    assert len(llm_server.requests) == 2  # 150, 300 (over): the third call never reached the server
    assert spans.one("invoke_agent capped").attributes[A.TASK_OUTCOME] == "budget_exceeded"


def _anthropic_spans(spans: CapturedSpans) -> list[Any]:
    return [s for s in spans.spans if (s.attributes or {}).get(A.GEN_AI_OPERATION_NAME) == "chat"]


def _check_anthropic(spans: CapturedSpans, task: agentwatch.Task) -> None:
    chats = _anthropic_spans(spans)
    scopes = {span.instrumentation_scope.name for span in chats}
    assert ANTHROPIC_SCOPE in scopes  # the official instrumentation (the client may add its own span too)
    [instrumented] = [span for span in chats if span.instrumentation_scope.name == ANTHROPIC_SCOPE]
    attrs = instrumented.attributes
    assert attrs[A.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == 160  # 100 + cache read 50 + cache creation 10
    assert attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] == 40
    assert "jane@example.com" not in attrs.get(A.GEN_AI_INPUT_MESSAGES, "")
    # however many spans report the call, it counts once
    assert (task.usage.input_tokens, task.usage.output_tokens, task.usage.llm_calls) == (160, 40, 1)


def test_anthropic_sync(spans: CapturedSpans, llm_server: Any) -> None:
    client = anthropic.Anthropic(base_url=url(llm_server), api_key=FAKE_KEY, max_retries=0)
    with agentwatch.task("an-sync") as task:
        reply = client.messages.create(model="claude-sonnet-4-20250514", max_tokens=100, messages=MESSAGES)
    assert "ships tomorrow" in reply.content[0].text
    _check_anthropic(spans, task)


def test_anthropic_sync_stream(spans: CapturedSpans, llm_server: Any) -> None:
    client = anthropic.Anthropic(base_url=url(llm_server), api_key=FAKE_KEY, max_retries=0)
    with agentwatch.task("an-stream") as task:
        with client.messages.stream(model="claude-sonnet-4-20250514", max_tokens=100, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
    assert "ships tomorrow" in text
    _check_anthropic(spans, task)


async def test_anthropic_async_and_async_stream(spans: CapturedSpans, llm_server: Any) -> None:
    client = anthropic.AsyncAnthropic(base_url=url(llm_server), api_key=FAKE_KEY, max_retries=0)
    async with agentwatch.task("an-async") as task:
        await client.messages.create(model="claude-sonnet-4-20250514", max_tokens=100, messages=MESSAGES)
    _check_anthropic(spans, task)
    spans.clear()
    async with agentwatch.task("an-async-stream") as task:
        stream = await client.messages.create(
            model="claude-sonnet-4-20250514", max_tokens=100, messages=MESSAGES, stream=True
        )
        events = [event.type async for event in stream]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    _check_anthropic(spans, task)


def test_capture_content_off_exports_no_content(llm_server: Any) -> None:
    with capture_spans(instrument=True, capture_content=False) as spans:
        client = openai.OpenAI(base_url=url(llm_server) + "/v1", api_key=FAKE_KEY, max_retries=0)
        with agentwatch.task("private"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = _openai_span(spans).attributes
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == 120
    assert not set(attrs) & A.CONTENT_KEYS
