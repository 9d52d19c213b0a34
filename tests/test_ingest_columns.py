"""The decode path's columnar pieces, without HTTP: flat span attributes, the spans pricing looks at, and
the writer's splicing of spooled IPC records into one insert stream."""

from __future__ import annotations

import io
import os
import time

import pyarrow as pa
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from otlp_payloads import raw_request, raw_span

from agentwatch.collector.otlp import Batch, Limits, any_to_str, new_columns, walk
from agentwatch.collector.spool import Spool, read_records
from agentwatch.collector.writer import ARROW_SCHEMA, segment_stream, segment_table, to_ipc

NOW = time.time_ns()


def _span(name: str, attrs: dict, extra: list[KeyValue] | None = None):
    s = raw_span(os.urandom(16), os.urandom(8), name, attrs, start_ns=NOW)
    s.attributes.extend(extra or [])
    return s


def _expected_pairs(span, limit: int) -> list[tuple[str, str]]:
    """The attribute pairs as the store gets them, computed the slow, obvious way."""
    out, cut = [], False
    for kv in span.attributes:
        s = any_to_str(kv.value)
        if len(s) > limit:
            s, cut = s[:limit], True
        out.append((kv.key, s))
    return out + [("agentwatch.truncated", "true")] if cut else out


def _decode(spans, *, limits: Limits, body_bytes: int | None) -> Batch:
    batch = Batch(new_columns())
    walk(raw_request("svc-columns", spans), batch, limits=limits, body_bytes=body_bytes)
    batch.columns.update(ProjectId=["p"] * batch.spans, CostUsd=[None] * batch.spans, PriceSource=[""] * batch.spans)
    return batch


def test_flat_attributes_become_the_same_maps_as_pairs():
    array = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value='a"b')]))
    spans = [
        _span("none", {}),
        _span("mixed", {"s": "text", "i": 42, "f": 0.5, "b": True, "empty": "", "long": "y" * 40}),
        _span("dup", {"k": "first"}, [KeyValue(key="k", value=AnyValue(string_value="second"))]),
        _span(
            "typed-long", {}, [KeyValue(key="arr", value=array), KeyValue(key="n", value=AnyValue(int_value=10**15))]
        ),
        _span("last", {"gen_ai.usage.input_tokens": 7}),
    ]
    for limit, body_bytes in ((1 << 20, 4096), (12, None), (12, 1 << 30)):
        limits = Limits(max_attribute_bytes=limit)
        batch = _decode(spans, limits=limits, body_bytes=body_bytes)
        assert batch.spans == len(spans)
        got = pa.ipc.open_stream(to_ipc(batch.arrow_columns())).read_all().column("SpanAttributes").to_pylist()
        assert got == [_expected_pairs(s, limit) for s in spans], (limit, body_bytes)
        for i, s in enumerate(spans):
            assert batch.span_attrs(i) == dict(_expected_pairs(s, limit))
    # with the limit under the body size, a long string is cut (and flagged) even when the body size is known
    cut = _decode(spans, limits=Limits(max_attribute_bytes=12), body_bytes=1 << 30)
    assert dict(cut.span_attrs(1))["long"] == "y" * 12 and cut.span_attrs(1)["agentwatch.truncated"] == "true"


def test_spans_with_keys_finds_exactly_the_spans_to_price():
    keys = pa.array(["gen_ai.usage.input_tokens", "agentwatch.cost.usd"])
    spans = [
        _span("tool", {"gen_ai.tool.name": "x"}),
        _span("chat", {"a": "1", "gen_ai.usage.input_tokens": 3, "b": "2"}),
        _span("none", {}),
        _span("cost", {"agentwatch.cost.usd": 0.1, "gen_ai.usage.input_tokens": 3}),
        _span("other", {"z": "z"}),
        _span("last", {"gen_ai.usage.input_tokens": 1}),
    ]
    batch = _decode(spans, limits=Limits(), body_bytes=None)
    assert batch.spans_with_keys(keys) == [1, 3, 5]
    assert _decode([_span("none", {})], limits=Limits(), body_bytes=None).spans_with_keys(keys) == []


def test_spooled_records_are_spliced_into_one_stream(tmp_path):
    spool = Spool(tmp_path / "spool")
    batches = [_decode([_span(f"s{i}-{j}", {"i": i}) for j in range(3 + i)], limits=Limits(), body_bytes=None)
               for i in range(4)]  # fmt: skip
    for b in batches:
        spool.append(to_ipc(b.arrow_columns()), b.spans)
    (seg,) = spool.take()
    records, torn = read_records(seg.path)
    assert torn == 0 and len(records) == 4
    table = segment_table(records)
    stream = segment_stream(records, table)
    back = pa.ipc.open_stream(stream).read_all()
    assert back.equals(table) and back.num_rows == sum(b.spans for b in batches)
    assert [r["SpanName"] for r in back.select(["SpanName"]).to_pylist()] == [
        f"s{i}-{j}" for i in range(4) for j in range(3 + i)
    ]


def test_a_record_of_another_form_is_reencoded_not_spliced():
    batch = _decode([_span("a", {"k": "v"})], limits=Limits(), body_bytes=None)
    table = pa.ipc.open_stream(to_ipc(batch.arrow_columns())).read_all()
    sink = io.BytesIO()  # same columns, a schema message with metadata: its bytes differ from ours
    with pa.ipc.new_stream(sink, ARROW_SCHEMA.with_metadata({"writer": "other"})) as w:
        w.write_table(table.replace_schema_metadata({"writer": "other"}))
    records = [to_ipc(batch.arrow_columns()), sink.getvalue()]
    both = segment_table(records)
    back = pa.ipc.open_stream(segment_stream(records, both)).read_all()
    assert back.num_rows == 2 and back.column("SpanName").to_pylist() == ["a", "a"]
