"""OTLP/HTTP trace payloads in, columns out: the edge of the collector (STANDARDS.md 5).

Nothing behind this module sees protobuf. A request body (protobuf or JSON, already decompressed)
becomes a ``Batch``: one list per column of the spans table, values already in the shape the OTel
Collector's ClickHouse exporter writes (attribute values as strings, lowercase hex ids, span start
time and duration in nanoseconds), plus the count and reasons of the spans it rejected. A bad span
is rejected alone; its batch goes on.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentwatch.collector.migrations import INSERT_COLUMNS

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")
NS = 1_000_000_000
MAX_NS = 2**63 - 1


class BadRequest(ValueError):
    """The body cannot be decoded at all: 400 with this message."""


@dataclass
class Limits:
    max_attribute_bytes: int = 1 << 20  # a longer value is cut and the span marked
    max_past_seconds: int = 366 * 86400  # spans older than this are rejected (partitions, TTL)
    max_future_seconds: int = 86400  # clock skew allowed into the future


@dataclass
class Batch:
    """The decoded spans of one request, column by column.

    ``columns`` holds one list per insert column, except ``SpanAttributes``: the spans' attribute keys and
    values are kept flat (``attr_keys``/``attr_values``, span ``i``'s pairs between ``attr_offsets[i]`` and
    ``attr_offsets[i + 1]``) and become one Arrow map array in ``span_attributes``: no tuple per attribute,
    and Arrow builds a map from flat string lists ~5x faster than from pairs."""

    columns: dict[str, list[Any]]
    spans: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    attr_keys: list[str] = field(default_factory=list)
    attr_values: list[str] = field(default_factory=list)
    attr_offsets: list[int] = field(default_factory=lambda: [0])
    _key_array: pa.StringArray | None = field(default=None, repr=False)

    def reject(self, reason: str, message: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.messages) < 5:
            self.messages.append(message)

    def error_message(self) -> str:
        more = self.rejected - len(self.messages)
        text = "; ".join(self.messages)
        return f"{text}; and {more} more" if more > 0 else text

    def span_attrs(self, i: int) -> dict[str, str]:
        """Span ``i``'s attributes as a dict (a repeated key: the last value wins)."""
        lo, hi = self.attr_offsets[i], self.attr_offsets[i + 1]
        return dict(zip(self.attr_keys[lo:hi], self.attr_values[lo:hi], strict=True))

    def key_array(self) -> pa.StringArray:
        """``attr_keys`` as an Arrow array (built once; call after the walk)."""
        if self._key_array is None or len(self._key_array) != len(self.attr_keys):
            self._key_array = pa.array(self.attr_keys, pa.string())
        return self._key_array

    def spans_with_keys(self, value_set: pa.StringArray) -> list[int]:
        """Indexes of the spans that have at least one attribute key in ``value_set`` (vectorised)."""
        if not self.attr_keys:
            return []
        hit = pc.cast(pc.is_in(self.key_array(), value_set=value_set), pa.int32())
        cum = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(hit).cast(pa.int64())])
        at = cum.take(pa.array(self.attr_offsets, pa.int32()))  # keys in the set before span i's first key
        per_span = pc.subtract(at.slice(1), at.slice(0, len(at) - 1))
        return pc.indices_nonzero(per_span).to_pylist()

    def span_attributes(self) -> pa.MapArray:
        return pa.MapArray.from_arrays(
            pa.array(self.attr_offsets, pa.int32()),
            self.key_array(),
            pa.array(self.attr_values, pa.string()),
        )

    def arrow_columns(self) -> dict[str, Any]:
        """``columns`` with ``SpanAttributes`` filled in, for ``writer.to_ipc``."""
        return {**self.columns, "SpanAttributes": self.span_attributes()}


def new_columns() -> dict[str, list[Any]]:
    return {c: [] for c in INSERT_COLUMNS}


# --- decoding bodies ----------------------------------------------------------------------------
def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as e:
        raise BadRequest(f"the body is not a valid protobuf ExportTraceServiceRequest: {e}") from None
    except RecursionError:
        raise BadRequest("the protobuf body nests AnyValues too deeply") from None
    return req


def _hex_to_b64(value: Any, size: int, what: str, *, optional: bool = False) -> str:
    if value in (None, "") and optional:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what} {value[:40]!r} is not hex") from None
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes ({size * 2} hex digits), got {len(raw)}")
    return base64.b64encode(raw).decode()


def _json_span(d: Any) -> Span:
    if not isinstance(d, dict):
        raise ValueError("a span must be a JSON object")
    d = dict(d)
    for key, size, optional in (("traceId", 16, False), ("spanId", 8, False), ("parentSpanId", 8, True)):
        alt = {"traceId": "trace_id", "spanId": "span_id", "parentSpanId": "parent_span_id"}[key]
        raw = d.pop(key, d.pop(alt, None))
        d[key] = _hex_to_b64(raw, size, key, optional=optional)
    links = d.get("links")
    if isinstance(links, list):
        fixed = []
        for link in links:
            if isinstance(link, dict):
                link = dict(link)
                link["traceId"] = _hex_to_b64(link.get("traceId"), 16, "link traceId")
                link["spanId"] = _hex_to_b64(link.get("spanId"), 8, "link spanId")
            fixed.append(link)
        d["links"] = fixed
    span = Span()
    try:
        json_format.ParseDict(d, span, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"span {d.get('name', '')!r}: {str(e)[:200]}") from None
    return span


def parse_json(body: bytes, batch: Batch) -> ExportTraceServiceRequest:
    """OTLP/JSON: hex ids (not base64), integer enums, lowerCamelCase keys, unknown fields ignored.
    Spans are parsed one by one so that one bad span is rejected alone (counted on ``batch``)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("the JSON body nests too deeply") from None
    if not isinstance(doc, dict):
        raise BadRequest("the JSON body must be an object with a resourceSpans array")
    rs_list = doc.get("resourceSpans", doc.get("resource_spans", []))
    if not isinstance(rs_list, list):
        raise BadRequest("resourceSpans must be an array")
    req = ExportTraceServiceRequest()
    for rs_d in rs_list:
        if not isinstance(rs_d, dict):
            raise BadRequest("each resourceSpans entry must be an object")
        rs = req.resource_spans.add()
        _parse_part(rs_d.get("resource"), Resource, rs.resource, "resource")
        ss_list = rs_d.get("scopeSpans", rs_d.get("scope_spans", [])) or []
        if not isinstance(ss_list, list):
            raise BadRequest("scopeSpans must be an array")
        for ss_d in ss_list:
            if not isinstance(ss_d, dict):
                raise BadRequest("each scopeSpans entry must be an object")
            ss = rs.scope_spans.add()
            _parse_part(ss_d.get("scope"), InstrumentationScope, ss.scope, "scope")
            spans = ss_d.get("spans", []) or []
            if not isinstance(spans, list):
                raise BadRequest("spans must be an array")
            for sd in spans:
                try:
                    ss.spans.append(_json_span(sd))
                except ValueError as e:
                    batch.reject("invalid_span", str(e))
    return req


def _parse_part(d: Any, cls: type, target: Any, what: str) -> None:
    if d is None:
        return
    msg = cls()
    try:
        json_format.ParseDict(d, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as e:
        raise BadRequest(f"invalid {what}: {str(e)[:200]}") from None
    target.CopyFrom(msg)


# --- values ---------------------------------------------------------------------------------------
def _float_str(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f.is_integer() and abs(f) < 1e16:
        return str(int(f))
    return repr(f)


def _plain(v: Any) -> Any:
    """AnyValue -> JSON-able Python value (for arrays and kvlists)."""
    k = v.WhichOneof("value")
    if k == "string_value":
        return v.string_value
    if k == "int_value":
        return v.int_value
    if k == "bool_value":
        return v.bool_value
    if k == "double_value":
        f = v.double_value
        return f if math.isfinite(f) else _float_str(f)
    if k == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if k == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    if k == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def any_to_str(v: Any) -> str:
    """The OTel Collector's ``AsString``: scalars as text, arrays and maps as JSON."""
    k = v.WhichOneof("value")
    if k == "string_value":
        return v.string_value
    if k == "int_value":
        return str(v.int_value)
    if k == "bool_value":
        return "true" if v.bool_value else "false"
    if k == "double_value":
        return _float_str(v.double_value)
    if k is None:
        return ""
    return json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"))


def append_attributes(kvs: Any, limit: int, key_add: Any, value_add: Any, *, check_strings: bool = True) -> bool:
    """Append the key/value pairs as strings to two flat lists (by their ``append``); whether a value was cut to
    ``limit``. ``check_strings=False``: string values are known to fit (values converted from other types are
    checked all the same)."""
    cut = False
    for kv in kvs:
        v = kv.value
        # the hot path (most values are strings): one attribute read instead of WhichOneof + a call; an empty
        # string_value may be another type (or an empty string): any_to_str decides
        s = v.string_value
        if not s:
            s = any_to_str(v)
            if len(s) > limit:
                s = s[:limit]
                cut = True
        elif check_strings and len(s) > limit:
            s = s[:limit]
            cut = True
        key_add(kv.key)
        value_add(s)
    return cut


def attributes(kvs: Any, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """Key/value pairs as strings (pairs, not a dict: Arrow builds maps from pairs ~20x faster)."""
    keys: list[str] = []
    values: list[str] = []
    cut = append_attributes(kvs, limit, keys.append, values.append)
    return list(zip(keys, values, strict=True)), cut


# --- the walk -------------------------------------------------------------------------------------
_NO_ITEMS: tuple = ()  # the events and links of a span that has none (shared: nothing mutates column values)


def walk(
    req: ExportTraceServiceRequest,
    batch: Batch,
    *,
    limits: Limits,
    now_ns: int | None = None,
    body_bytes: int | None = None,
) -> None:
    """Append every valid span of ``req`` to ``batch``.

    ``body_bytes``: the size of the decoded body, when known. A string value has at most as many characters
    as the body has bytes, so with a body no larger than ``limits.max_attribute_bytes`` no string value
    needs its length checked (values converted from other types still are)."""
    now_ns = now_ns or time.time_ns()
    lo = now_ns - limits.max_past_seconds * NS
    hi = now_ns + limits.max_future_seconds * NS
    cols = batch.columns
    ts_add, tid_add, sid_add, pid_add, tstate_add = (
        cols["Timestamp"].append, cols["TraceId"].append, cols["SpanId"].append, cols["ParentSpanId"].append,
        cols["TraceState"].append,
    )  # fmt: skip
    name_add, kind_add, svc_add, res_add = (
        cols["SpanName"].append, cols["SpanKind"].append, cols["ServiceName"].append,
        cols["ResourceAttributes"].append,
    )  # fmt: skip
    sname_add, sver_add, dur_add = cols["ScopeName"].append, cols["ScopeVersion"].append, cols["Duration"].append
    status_add, smsg_add = cols["StatusCode"].append, cols["StatusMessage"].append
    c_ets, c_en, c_ea = cols["Events.Timestamp"], cols["Events.Name"], cols["Events.Attributes"]
    c_ltid, c_lsid, c_lts, c_la = (
        cols["Links.TraceId"], cols["Links.SpanId"], cols["Links.TraceState"], cols["Links.Attributes"],
    )  # fmt: skip
    keys, values, offsets = batch.attr_keys, batch.attr_values, batch.attr_offsets
    key_add, value_add, offset_add = keys.append, values.append, offsets.append
    limit = limits.max_attribute_bytes
    check_strings = body_bytes is None or body_bytes > limit
    zero16, zero8 = b"\0" * 16, b"\0" * 8
    spans = 0
    for rs in req.resource_spans:
        res_attrs, _ = attributes(rs.resource.attributes, limit)
        service = next((v for k, v in res_attrs if k == "service.name"), "") or "unknown_service"
        for ss in rs.scope_spans:
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for span in ss.spans:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                if len(tid) != 16 or tid == zero16:
                    batch.reject("invalid_trace_id", f"span {span.name[:80]!r}: trace_id must be 16 non-zero bytes")
                    continue
                if len(sid) != 8 or sid == zero8:
                    batch.reject("invalid_span_id", f"span {span.name[:80]!r}: span_id must be 8 non-zero bytes")
                    continue
                if pid and len(pid) != 8:
                    batch.reject("invalid_parent_id", f"span {span.name[:80]!r}: parent_span_id must be 8 bytes")
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if not lo <= start <= hi:
                    batch.reject(
                        "invalid_timestamp",
                        f"span {span.name[:80]!r}: start time {start} ns is missing or outside the accepted window",
                    )
                    continue
                if end > hi:  # an end in the far future would overflow the store's end time (and lie)
                    batch.reject(
                        "invalid_timestamp", f"span {span.name[:80]!r}: end time {end} ns is beyond the accepted window"
                    )
                    continue
                # flat keys and values, no tuple per attribute
                cut = append_attributes(span.attributes, limit, key_add, value_add, check_strings=check_strings)
                if cut:
                    key_add("agentwatch.truncated")
                    value_add("true")
                offset_add(len(keys))
                ts_add(start)
                tid_add(tid.hex())
                sid_add(sid.hex())
                pid_add(pid.hex() if pid != zero8 else "")
                tstate_add(span.trace_state)
                name_add(span.name)
                k = span.kind
                kind_add(SPAN_KINDS[k] if 0 <= k < 6 else "Unspecified")
                svc_add(service)
                res_add(res_attrs)
                sname_add(scope_name)
                sver_add(scope_version)
                dur_add(end - start if end > start else 0)
                status = span.status
                code = status.code
                status_add(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                smsg_add(status.message)
                if span.events:
                    ets, en, ea = [], [], []
                    for ev in span.events:
                        t = ev.time_unix_nano
                        ets.append(t if 0 < t < MAX_NS else start)
                        en.append(ev.name)
                        ea.append(attributes(ev.attributes, limit)[0])
                    c_ets.append(ets)
                    c_en.append(en)
                    c_ea.append(ea)
                else:
                    c_ets.append(_NO_ITEMS)
                    c_en.append(_NO_ITEMS)
                    c_ea.append(_NO_ITEMS)
                if span.links:
                    c_ltid.append([lk.trace_id.hex() for lk in span.links])
                    c_lsid.append([lk.span_id.hex() for lk in span.links])
                    c_lts.append([lk.trace_state for lk in span.links])
                    c_la.append([attributes(lk.attributes, limit)[0] for lk in span.links])
                else:
                    c_ltid.append(_NO_ITEMS)
                    c_lsid.append(_NO_ITEMS)
                    c_lts.append(_NO_ITEMS)
                    c_la.append(_NO_ITEMS)
                spans += 1
    batch.spans += spans


def response_body(*, rejected: int, message: str, json_out: bool) -> bytes:
    """ExportTraceServiceResponse: partial_success only when something was rejected."""
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    if json_out:
        return json.dumps(json_format.MessageToDict(resp)).encode()
    return resp.SerializeToString()


def status_body(message: str, *, code: int, json_out: bool) -> bytes:
    """A google.rpc.Status for error responses (OTLP says the body MUST be a Status)."""
    from google.rpc.status_pb2 import Status

    st = Status(code=code, message=message)
    if json_out:
        return json.dumps({"code": code, "message": message}).encode()
    return st.SerializeToString()


__all__ = [
    "BadRequest",
    "Batch",
    "Limits",
    "any_to_str",
    "new_columns",
    "parse_json",
    "parse_protobuf",
    "response_body",
    "status_body",
    "walk",
]
