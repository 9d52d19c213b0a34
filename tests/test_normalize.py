"""The typed columns ClickHouse derives (MATERIALIZED, from normalize.py's alias tables) agree with the
Python mirror used for pricing, and every dialect maps to the right kind, provider and tokens."""

from __future__ import annotations

import time

import pytest

from agentwatch.collector.migrations import INSERT_COLUMNS, SPANS_TABLE, migrate
from agentwatch.collector.normalize import llm_usage
from agentwatch.collector.otlp import new_columns
from agentwatch.collector.store import ChdbStore
from agentwatch.collector.writer import to_ipc

CORPUS: list[tuple[dict[str, str], str]] = [
    ({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
      "gen_ai.usage.input_tokens": "100", "gen_ai.usage.output_tokens": "7"}, "llm"),
    ({"gen_ai.operation.name": "chat", "gen_ai.system": "az.ai.openai", "gen_ai.response.model": "gpt-4o-2024-08-06",
      "gen_ai.request.model": "gpt-4o", "gen_ai.usage.prompt_tokens": "12.0", "gen_ai.usage.completion_tokens": "3"},
     "llm"),
    ({"openinference.span.kind": "LLM", "llm.system": "openai", "llm.model_name": "gpt-4o-mini",
      "llm.token_count.prompt": "50", "llm.token_count.completion": "5",
      "llm.token_count.prompt_details.cache_read": "20"}, "llm"),
    ({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small",
      "llm.token_count.prompt": "9"}, "llm"),
    # Anthropic-style input without the cache: corrected by adding it
    ({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-x",
      "gen_ai.usage.input_tokens": "10", "gen_ai.usage.cache_read.input_tokens": "100",
      "gen_ai.usage.cache_write.input_tokens": "5", "gen_ai.usage.output_tokens": "1"}, "llm"),
    ({"llm.request.type": "completion", "gen_ai.system": "mistralai", "gen_ai.request.model": "m",
      "gen_ai.usage.input_tokens": "-5", "gen_ai.usage.output_tokens": "nan"}, "llm"),
    ({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "1e300",
      "gen_ai.usage.reasoning_tokens": "4", "gen_ai.usage.output_tokens": "8"}, "llm"),
    ({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": "999"}, "task"),
    ({"traceloop.span.kind": "agent", "traceloop.entity.name": "a"}, "task"),
    ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "x"}, "tool"),
    ({"traceloop.span.kind": "tool", "traceloop.entity.name": "y"}, "tool"),
    ({"openinference.span.kind": "TOOL", "tool.name": "z"}, "tool"),
    ({"gen_ai.operation.name": "plan"}, "decision"),
    ({"agentwatch.decision.name": "route"}, "decision"),
    ({"http.method": "GET"}, "other"),
]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = ChdbStore(tmp_path_factory.mktemp("norm"))
    migrate(s)
    yield s
    s.close()


def test_sql_typed_columns_agree_with_the_python_mirror(store):
    cols = new_columns()
    now = time.time_ns()
    for i, (attrs, _) in enumerate(CORPUS):
        row = {
            "Timestamp": now, "TraceId": f"{i:032x}", "SpanId": f"{i + 1:016x}", "ParentSpanId": "a" * 16,
            "TraceState": "", "SpanName": "s", "SpanKind": "Internal", "ServiceName": "norm",
            "ResourceAttributes": [], "ScopeName": "", "ScopeVersion": "", "SpanAttributes": list(attrs.items()),
            "Duration": 1, "StatusCode": "Unset", "StatusMessage": "", "Events.Timestamp": [], "Events.Name": [],
            "Events.Attributes": [], "Links.TraceId": [], "Links.SpanId": [], "Links.TraceState": [],
            "Links.Attributes": [], "ProjectId": "norm", "CostUsd": None, "PriceSource": "",
        }  # fmt: skip
        for k in INSERT_COLUMNS:
            cols[k].append(row[k])
    store.insert_arrow(SPANS_TABLE, INSERT_COLUMNS, to_ipc(cols))
    rows = store.query(
        f"SELECT TraceId, Kind, Provider, Model, InputTokens, OutputTokens, CacheReadTokens, CacheWriteTokens, "
        f"ReasoningTokens FROM {SPANS_TABLE} WHERE ProjectId = 'norm' ORDER BY TraceId"
    )
    assert len(rows) == len(CORPUS)
    for row, (attrs, kind) in zip(rows, CORPUS, strict=True):
        assert row["Kind"] == kind, attrs
        u = llm_usage(attrs)
        if kind != "llm":
            assert u is None, attrs  # aggregates and non-LLM spans are never priced
            continue
        if u is None:  # no usable tokens: the SQL side sees zeros too
            assert (row["InputTokens"], row["OutputTokens"]) == (0, 0), attrs
            continue
        got = (row["Provider"], row["Model"], row["InputTokens"], row["OutputTokens"], row["CacheReadTokens"],
               row["CacheWriteTokens"], row["ReasoningTokens"])  # fmt: skip
        assert got == (u.provider, u.model, u.input_tokens, u.output_tokens, u.cache_read_tokens,
                       u.cache_write_tokens, u.reasoning_tokens), attrs  # fmt: skip


def test_dialect_values_are_mapped():
    u = llm_usage(CORPUS[1][0])
    assert (u.provider, u.model, u.input_tokens) == ("azure.ai.openai", "gpt-4o-2024-08-06", 12)
    u = llm_usage(CORPUS[4][0])
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (115, 100, 5)
    assert llm_usage(CORPUS[6][0]).input_tokens == 0  # absurd counts are garbage, not usage
