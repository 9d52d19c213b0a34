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
    columns: dict[str, list[Any]]
    spans: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    trace_ids: set[str] = field(default_factory=set)
    min_ts: int = 0
    max_ts: int = 0

    def reject(self, reason: str, message: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.messages) < 5:
            self.messages.append(message)

    def error_message(self) -> str:
        more = self.rejected - len(self.messages)
        text = "; ".join(self.messages)
        return f"{text}; and {more} more" if more > 0 else text


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


def attributes(kvs: Any, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """Key/value pairs as strings (pairs, not a dict: Arrow builds maps from pairs ~20x faster)."""
    out: list[tuple[str, str]] = []
    append = out.append
    cut = False
    for kv in kvs:
        v = kv.value
        # the hot path (most values are strings): one attribute read instead of WhichOneof + a call;
        # an empty string_value may be another type (or an empty string): any_to_str decides
        s = v.string_value or any_to_str(v)
        if len(s) > limit:
            s = s[:limit]
            cut = True
        append((kv.key, s))
    return out, cut


# --- the walk -------------------------------------------------------------------------------------
def walk(req: ExportTraceServiceRequest, batch: Batch, *, limits: Limits, now_ns: int | None = None) -> None:
    """Append every valid span of ``req`` to ``batch``."""
    now_ns = now_ns or time.time_ns()
    lo = now_ns - limits.max_past_seconds * NS
    hi = now_ns + limits.max_future_seconds * NS
    cols = batch.columns
    c_ts, c_tid, c_sid, c_pid, c_tstate = (
        cols["Timestamp"], cols["TraceId"], cols["SpanId"], cols["ParentSpanId"], cols["TraceState"],
    )  # fmt: skip
    c_name, c_kind, c_svc, c_res = cols["SpanName"], cols["SpanKind"], cols["ServiceName"], cols["ResourceAttributes"]
    c_sname, c_sver, c_attrs, c_dur = cols["ScopeName"], cols["ScopeVersion"], cols["SpanAttributes"], cols["Duration"]
    c_status, c_smsg = cols["StatusCode"], cols["StatusMessage"]
    c_ets, c_en, c_ea = cols["Events.Timestamp"], cols["Events.Name"], cols["Events.Attributes"]
    c_ltid, c_lsid, c_lts, c_la = (
        cols["Links.TraceId"],
        cols["Links.SpanId"],
        cols["Links.TraceState"],
        cols["Links.Attributes"],
    )  # noqa: E501
    limit = limits.max_attribute_bytes
    trace_ids = batch.trace_ids
    min_ts, max_ts = batch.min_ts or MAX_NS, batch.max_ts
    for rs in req.resource_spans:
        res_attrs, _ = attributes(rs.resource.attributes, limit)
        service = next((v for k, v in res_attrs if k == "service.name"), "") or "unknown_service"
        for ss in rs.scope_spans:
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for span in ss.spans:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                if len(tid) != 16 or tid == b"\0" * 16:
                    batch.reject("invalid_trace_id", f"span {span.name[:80]!r}: trace_id must be 16 non-zero bytes")
                    continue
                if len(sid) != 8 or sid == b"\0" * 8:
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
                attrs, cut = attributes(span.attributes, limit)
                if cut:
                    attrs.append(("agentwatch.truncated", "true"))
                tid_hex = tid.hex()
                trace_ids.add(tid_hex)
                if start < min_ts:
                    min_ts = start
                if start > max_ts:
                    max_ts = start
                c_ts.append(start)
                c_tid.append(tid_hex)
                c_sid.append(sid.hex())
                c_pid.append(pid.hex() if pid != b"\0" * 8 else "")
                c_tstate.append(span.trace_state)
                c_name.append(span.name)
                c_kind.append(SPAN_KINDS[span.kind] if 0 <= span.kind < 6 else "Unspecified")
                c_svc.append(service)
                c_res.append(res_attrs)
                c_sname.append(scope_name)
                c_sver.append(scope_version)
                c_attrs.append(attrs)
                c_dur.append(end - start if end > start else 0)
                code = span.status.code
                c_status.append(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                c_smsg.append(span.status.message)
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
                    c_ets.append([])
                    c_en.append([])
                    c_ea.append([])
                if span.links:
                    c_ltid.append([lk.trace_id.hex() for lk in span.links])
                    c_lsid.append([lk.span_id.hex() for lk in span.links])
                    c_lts.append([lk.trace_state for lk in span.links])
                    c_la.append([attributes(lk.attributes, limit)[0] for lk in span.links])
                else:
                    c_ltid.append([])
                    c_lsid.append([])
                    c_lts.append([])
                    c_la.append([])
                batch.spans += 1
    batch.min_ts, batch.max_ts = (min_ts if batch.spans else 0), max_ts


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
