"""Hostile OTLP input against a real collector process (chDB store): property-based (hypothesis) protobuf and
JSON bodies — valid, truncated, byte-mutated, deeply nested AnyValues, huge strings, invalid UTF-8, NaN/inf and
extreme numbers, bad ids, timestamps far in the past and future, gzip of garbage.

What every example proves: the answer is never a 5xx (only 200/400/413/415), a 200 carries a well-formed
ExportTraceServiceResponse whose ``rejected_spans`` is what the generator predicts for the spans it knows to be
bad, and the collector is alive afterwards. What each test proves at its end: the store holds exactly the spans
the collector said it accepted (sum over the 200s of n - rejected, counted in the project over a window that
covers every acceptable timestamp), and ``/api/v1/ingestion`` counts the same accepted and rejected totals.

The tests own a collector (nothing else writes to its project), examples are derandomized and span ids come
from a seeded generator, so a run is deterministic.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import random
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.protobuf.message import DecodeError
from harness import CollectorProc, collector_env, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

DAY_NS = 86400 * 10**9
ATTR_LIMIT = 1 << 20  # the collector's default max attribute bytes
HYPO = settings(
    max_examples=45, deadline=None, derandomize=True, database=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)  # fmt: skip
OK_STATUSES = {200, 400, 413, 415}
_rng = random.Random(20261122)  # ids: unique within a run, the same every run


def _rand(n: int) -> bytes:
    return _rng.getrandbits(8 * n).to_bytes(n, "big") or b"\x01"


# --- a collector of our own -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    d = tmp_path_factory.mktemp("hostile") / "data"
    c = CollectorProc(d, free_port(), collector_env()).start()
    yield c
    alive = c.proc is not None and c.proc.poll() is None
    # ingestion counts are flushed every 10 s: checked once, for the whole module
    c.wait_for(lambda: _ingest_totals(c) == (TOTAL.accepted, TOTAL.rejected), timeout=30,
               what=f"ingestion totals to be {TOTAL}")  # fmt: skip
    print(f"\nhostile module: {TOTAL}")
    c.stop()
    assert alive, f"the collector died under hostile input:\n{c.log()}"
    assert "Traceback" not in c.log_path.read_text(errors="replace"), c.log()


@dataclass
class Ledger:
    """What the collector said about each request: the spans it should now hold."""

    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def note(self, status: int, n: int = 0, k: int = 0) -> None:
        if self is not TOTAL:
            TOTAL.note(status, n, k)
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            assert 0 <= k <= n, (n, k)
            self.accepted += n - k
            self.rejected += k


TOTAL = Ledger()  # every request of the module: /api/v1/ingestion must count the same at the end


def _window() -> dict[str, str]:
    now = time.time()
    return {"from": str(int(now - 367 * 86400)), "to": str(int(now + 1.5 * 86400))}


def _stored(c: CollectorProc) -> int:
    return c.api("/api/v1/overview", **_window())["spans"]


def _ingest_totals(c: CollectorProc) -> tuple[int, int]:
    t = c.api("/api/v1/ingestion", interval="window")["totals"]
    return t["accepted"], t["rejected"]


@pytest.fixture
def ledger(hc: CollectorProc) -> Iterator[Ledger]:
    """Yields a ledger; afterwards the store must hold exactly the accepted spans, no more, no fewer."""
    before = _stored(hc)
    led = Ledger()
    yield led

    last: list = []

    def settled():
        ready = hc.get("/readyz", key=None).json()
        last[:] = [ready["queue_depth"], _stored(hc) - before]
        return last == [0, led.accepted]

    try:
        hc.wait_for(settled, timeout=30, what=f"exactly {led.accepted} new stored spans ({led})")
    except AssertionError:
        raise AssertionError(f"queue depth, new stored spans: {last}; accepted: {led}") from None
    assert hc.get("/healthz", key=None).status_code == 200
    print(f"\nhostile: {led.requests} requests, statuses {led.statuses}, {led.accepted} spans accepted "
          f"(and stored), {led.rejected} rejected")  # fmt: skip


def _post(c: CollectorProc, body: bytes, ctype: str, encoding: str = "") -> httpx.Response:
    headers = {"Content-Encoding": encoding} if encoding else None
    r = c.post_traces(body, content_type=ctype, headers=headers)
    assert r.status_code in OK_STATUSES, (r.status_code, r.text[:500])
    return r


def _rejected(r: httpx.Response, *, json_out: bool) -> int:
    if json_out:
        doc = r.json()
        assert isinstance(doc, dict)
        return int(doc.get("partialSuccess", {}).get("rejectedSpans", 0))
    return ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans


# --- strategies: one span's recipe ------------------------------------------------------------------
Tree = tuple  # ("s", str) ("i", int) ("d", float) ("b", bool) ("y", bytes) ("n",) ("a", [Tree]) ("k", [(str, Tree)])

LEAVES = st.one_of(
    st.text(max_size=40).map(lambda s: ("s", s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: ("i", i)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: ("d", f)),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308]).map(
        lambda f: ("d", f)
    ),
    st.booleans().map(lambda b: ("b", b)),
    st.binary(max_size=24).map(lambda b: ("y", b)),
    st.just(("n",)),
)
TREES = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4).map(lambda xs: ("a", xs)),
        st.lists(st.tuples(st.text(max_size=12), kids), max_size=4).map(lambda xs: ("k", xs)),
    ),
    max_leaves=12,
)
ID_KINDS = st.sampled_from(["ok", "ok", "ok", "ok", "ok", "short", "long", "zero", "empty"])
PARENT_KINDS = st.sampled_from(["none", "none", "ok", "ok", "zero", "short"])
# (kind, acceptable): the collector takes starts in [now - 366 d, now + 1 d]; the generator stays well clear
TIME_KINDS = st.sampled_from(
    ["recent", "recent", "recent", "year_ago", "skew", "zero", "epoch", "far_past", "far_future", "max_u64"]
)
BAD_TIMES = {"zero", "epoch", "far_past", "far_future", "max_u64"}


@dataclass
class SpanRecipe:
    trace: str
    span: str
    parent: str
    start: str
    end_offset: int
    name: str
    kind: int
    status: int
    attrs: list[tuple[str, Tree]]
    deep: int  # 0, or an attribute nested this many arrays/kvlists deep
    huge: bool  # an attribute longer than the attribute limit
    events: int
    event_time: int
    links: int

    def bad(self) -> bool:
        # an end more than a day ahead of now is out of the accepted window (2**62 ns is ~146 years)
        return (self.trace != "ok" or self.span != "ok" or self.parent == "short" or self.start in BAD_TIMES
                or self.end_offset >= 2**62)  # fmt: skip

    def has(self, pred) -> bool:
        def walk(t: Tree) -> bool:
            if pred(t):
                return True
            if t[0] == "a":
                return any(walk(x) for x in t[1])
            if t[0] == "k":
                return any(walk(v) for _, v in t[1])
            return False

        return any(walk(t) for _, t in self.attrs)


SPANS = st.builds(
    SpanRecipe,
    trace=ID_KINDS,
    span=ID_KINDS,
    parent=PARENT_KINDS,
    start=TIME_KINDS,
    end_offset=st.sampled_from([0, 1, 10**9, -(10**9), 2**62, 2**63 - 1, 2**64 - 1, -(2**62)]),
    name=st.text(max_size=60),
    kind=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99, -1, 2**31 - 1]),
    status=st.sampled_from([0, 1, 2, 3, -5, 2**31 - 1]),
    attrs=st.lists(st.tuples(st.text(max_size=20), TREES), max_size=6),
    deep=st.sampled_from([0, 0, 0, 0, 12, 30, 150, 400]),
    huge=st.sampled_from([False] * 9 + [True]),
    events=st.integers(0, 3),
    event_time=st.sampled_from([0, 1, 2**64 - 1, 5]),
    links=st.integers(0, 2),
)


def _id(kind: str, size: int) -> bytes:
    return {"ok": _rand(size), "short": _rand(size - 1), "long": _rand(size + 3), "zero": b"\0" * size, "empty": b""}[
        kind
    ]


def _parent(kind: str) -> bytes:
    return {"none": b"", "ok": _rand(8), "zero": b"\0" * 8, "short": _rand(5)}[kind]


def _start(kind: str, now: int) -> int:
    return {
        "recent": now - _rng.randrange(0, 3600) * 10**9,
        "year_ago": now - 360 * DAY_NS,
        "skew": now + DAY_NS // 2,
        "zero": 0,
        "epoch": 10**9,
        "far_past": now - 400 * DAY_NS,
        "far_future": now + 3 * DAY_NS,
        "max_u64": 2**64 - 1,
    }[kind]


def _u64(x: int) -> int:
    return min(max(x, 0), 2**64 - 1)


# --- protobuf ---------------------------------------------------------------------------------------
def _any(t: Tree) -> AnyValue:
    tag = t[0]
    if tag == "s":
        return AnyValue(string_value=t[1])
    if tag == "i":
        return AnyValue(int_value=t[1])
    if tag == "d":
        return AnyValue(double_value=t[1])
    if tag == "b":
        return AnyValue(bool_value=t[1])
    if tag == "y":
        return AnyValue(bytes_value=t[1])
    if tag == "a":
        return AnyValue(array_value=ArrayValue(values=[_any(x) for x in t[1]]))
    if tag == "k":
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=_any(v)) for k, v in t[1]]))
    return AnyValue()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _ld(fieldno: int, payload: bytes) -> bytes:
    return _varint(fieldno << 3 | 2) + _varint(len(payload)) + payload


def _deep_anyvalue(depth: int) -> bytes:
    """An AnyValue nested ``depth`` arrays and kvlists deep, by hand (the protobuf runtime refuses to build it)."""
    v = _ld(1, b"bottom")
    for i in range(depth):
        v = _ld(6, _ld(1, _ld(1, b"k") + _ld(2, v))) if i % 2 else _ld(5, _ld(1, v))
    return v


UTF8_HOLE = "\x00utf8-hole\x00"


def _pb_span(r: SpanRecipe, now: int) -> bytes:
    start = _start(r.start, now)
    s = Span(
        trace_id=_id(r.trace, 16), span_id=_id(r.span, 8), parent_span_id=_parent(r.parent), name=r.name,
        kind=r.kind, start_time_unix_nano=start, end_time_unix_nano=_u64(start + r.end_offset),
        status=Status(code=r.status, message=r.name[:10]),
        attributes=[KeyValue(key=k, value=_any(v)) for k, v in r.attrs],
    )  # fmt: skip
    if r.huge:
        s.attributes.append(KeyValue(key="huge", value=AnyValue(string_value="h" * (ATTR_LIMIT + 100))))
    for i in range(r.events):
        ev = s.events.add(name=f"ev{i}", time_unix_nano=r.event_time)
        ev.attributes.extend(s.attributes[:2])
    for _ in range(r.links):
        s.links.add(trace_id=_rand(16), span_id=_rand(8), trace_state="a=b")
    raw = s.SerializeToString()
    if r.deep:
        raw += _ld(9, _ld(1, b"deep") + _ld(2, _deep_anyvalue(r.deep)))  # one more Span.attributes entry
    return raw


def _pb_body(service: str, groups: list[list[SpanRecipe]], now: int, *, bad_utf8: bool) -> bytes:
    out = b""
    for i, spans in enumerate(groups):
        res = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service)),
                                   KeyValue(key="hostile.group", value=AnyValue(int_value=i))])  # fmt: skip
        if bad_utf8 and i == 0:
            res.attributes.append(KeyValue(key="note", value=AnyValue(string_value=UTF8_HOLE)))
        ss = ScopeSpans(scope={"name": "hostile", "version": "0"}).SerializeToString()
        ss += b"".join(_ld(2, _pb_span(r, now)) for r in spans)
        rs = ResourceSpans(resource=res).SerializeToString() + _ld(2, ss)
        out += _ld(1, rs)
    if bad_utf8:  # same length, so every length prefix stays right: only the UTF-8 is broken
        out = out.replace(UTF8_HOLE.encode(), b"\xff\xfe\xc3(" + UTF8_HOLE.encode()[4:])
    return out


def _pb_spans_in(body: bytes) -> int | None:
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RecursionError):
        return None
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


# --- JSON -------------------------------------------------------------------------------------------
def _json_any(t: Tree, *, bare_nonfinite: bool) -> Any:
    tag = t[0]
    if tag == "s":
        return {"stringValue": t[1]}
    if tag == "i":
        return {"intValue": str(t[1]) if t[1] % 2 else t[1]}
    if tag == "d":
        f = t[1]
        if math.isfinite(f) or bare_nonfinite:
            return {"doubleValue": f}
        return {"doubleValue": "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")}
    if tag == "b":
        return {"boolValue": t[1]}
    if tag == "y":
        return {"bytesValue": base64.b64encode(t[1]).decode()}
    if tag == "a":
        return {"arrayValue": {"values": [_json_any(x, bare_nonfinite=bare_nonfinite) for x in t[1]]}}
    if tag == "k":
        kvs = [{"key": k, "value": _json_any(v, bare_nonfinite=bare_nonfinite)} for k, v in t[1]]
        return {"kvlistValue": {"values": kvs}}
    return {}


def _json_deep(depth: int) -> str:
    v = '{"stringValue":"bottom"}'
    for i in range(depth):
        kv, arr = f'{{"kvlistValue":{{"values":[{{"key":"k","value":{v}}}]}}}}', f'{{"arrayValue":{{"values":[{v}]}}}}'
        v = kv if i % 2 else arr
    return v


def _json_span(r: SpanRecipe, now: int, idx: int, *, bare_nonfinite: bool, upper: bool) -> dict:
    start = _start(r.start, now)
    tid, sid = _id(r.trace, 16).hex(), _id(r.span, 8).hex()
    d: dict[str, Any] = {
        "traceId": tid.upper() if upper else tid, "spanId": sid, "name": r.name, "kind": r.kind,
        "startTimeUnixNano": str(start), "endTimeUnixNano": _u64(start + r.end_offset),
        "status": {"code": r.status, "message": r.name[:10]},
        "attributes": [{"key": k, "value": _json_any(v, bare_nonfinite=bare_nonfinite)} for k, v in r.attrs],
        "events": [{"name": f"ev{i}", "timeUnixNano": str(r.event_time)} for i in range(r.events)],
        "links": [{"traceId": _rand(16).hex(), "spanId": _rand(8).hex()} for _ in range(r.links)],
        "droppedAttributesCount": 0, "someFutureField": {"x": [1, 2]},
    }  # fmt: skip
    if r.parent != "none":
        d["parentSpanId"] = _parent(r.parent).hex()
    if r.trace == "empty":
        del d["traceId"]
    if r.huge:
        d["attributes"].append({"key": "huge", "value": {"stringValue": "h" * (ATTR_LIMIT + 100)}})
    if r.deep:
        d["attributes"].append({"key": "deep", "value": f"__DEEP_{idx}_{r.deep}__"})
    return d


def _json_body(service: str, groups: list[list[SpanRecipe]], now: int, *, bare_nonfinite: bool, upper: bool,
               bad_utf8: bool) -> bytes:  # fmt: skip
    doc, deep, idx = {"resourceSpans": []}, {}, 0
    for i, spans in enumerate(groups):
        js = []
        for r in spans:
            js.append(_json_span(r, now, idx, bare_nonfinite=bare_nonfinite, upper=upper))
            if r.deep:
                deep[f'"__DEEP_{idx}_{r.deep}__"'] = _json_deep(r.deep)
            idx += 1
        attrs = [{"key": "service.name", "value": {"stringValue": service}}, {"key": "g", "value": {"intValue": i}}]
        if bad_utf8 and i == 0:
            attrs.append({"key": "note", "value": {"stringValue": "utf8-hole"}})
        doc["resourceSpans"].append(
            {"resource": {"attributes": attrs}, "scopeSpans": [{"scope": {"name": "hostile"}, "spans": js}]}
        )
    text = json.dumps(doc, allow_nan=True)
    for placeholder, value in deep.items():
        text = text.replace(placeholder, value)
    body = text.encode()
    if bad_utf8:
        body = body.replace(b"utf8-hole", b"utf8\xff\xfe\xc3(")
    return body


def _json_spans_in(body: bytes) -> int | None:
    """How many span entries the collector's JSON decoder sees (None: it answers 400)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    rs_list = doc.get("resourceSpans", doc.get("resource_spans", []))
    if not isinstance(rs_list, list):
        return None
    n = 0
    for rs in rs_list:
        if not isinstance(rs, dict):
            return None
        for ss in rs.get("scopeSpans", rs.get("scope_spans", [])) or []:
            if not isinstance(ss, dict):
                return None
            spans = ss.get("spans", []) or []
            if not isinstance(spans, list):
                return None
            n += len(spans)
    return n


# --- body transforms --------------------------------------------------------------------------------
TRANSFORMS = st.one_of(
    st.just(("plain",)),
    st.just(("gzip",)),
    st.just(("deflate",)),
    st.tuples(st.just("truncate"), st.integers(0, 10**9)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("gzip_truncated"), st.integers(0, 10**9)),
    st.tuples(st.just("gzip_garbage"), st.binary(min_size=1, max_size=300)),
)


def _transform(body: bytes, t: tuple) -> tuple[bytes, str, bytes | None]:
    """(body to send, Content-Encoding, the decompressed body the collector will decode or None when it cannot)."""
    kind = t[0]
    if kind == "gzip":
        return gzip.compress(body), "gzip", body
    if kind == "deflate":
        return zlib.compress(body), "deflate", body
    if kind == "truncate":
        cut = t[1] % (len(body) + 1)
        return body[:cut], "", body[:cut]
    if kind == "flip":
        b = bytearray(body)
        for pos, val in t[1]:
            if b:
                b[pos % len(b)] = val
        return bytes(b), "", bytes(b)
    if kind == "gzip_truncated":
        z = gzip.compress(body)
        cut = t[1] % len(z)  # always short of the end: a truncated stream
        return z[:cut], "gzip", None
    if kind == "gzip_garbage":
        return gzip.compress(t[1]), "gzip", t[1]
    return body, "", body


GROUPS = st.lists(st.lists(SPANS, min_size=0, max_size=5), min_size=1, max_size=3)


def _expectations(groups: list[list[SpanRecipe]], *, json_mode: bool, bare_nonfinite: bool) -> tuple[int, int, int]:
    """(spans, surely rejected, maybe rejected) for an intact body."""
    n = sure = maybe = 0
    for spans in groups:
        for r in spans:
            n += 1
            nonfinite = json_mode and bare_nonfinite and r.has(lambda t: t[0] == "d" and not math.isfinite(t[1]))
            if r.bad() or nonfinite:
                sure += 1
            elif r.deep >= 100:  # past the decoders' nesting limits: the span (JSON) or the request (protobuf)
                maybe += 1
    return n, sure, maybe


# --- the properties ---------------------------------------------------------------------------------
@HYPO
@given(groups=GROUPS, transform=TRANSFORMS, bad_utf8=st.sampled_from([False] * 6 + [True]))
def test_protobuf_bodies_never_500_and_store_exactly_what_was_accepted(hc, ledger, groups, transform, bad_utf8):
    now = time.time_ns()
    body = _pb_body(f"hostile-pb-{_rand(4).hex()}", groups, now, bad_utf8=bad_utf8)
    sent, encoding, decoded = _transform(body, transform)
    r = _post(hc, sent, "application/x-protobuf", encoding)
    n = _pb_spans_in(decoded) if decoded is not None else None
    if n is None:  # what our own decoder refuses, the collector refuses whole: nothing stored
        assert r.status_code == 400, r.content[:300]
        ledger.note(400)
        return
    assert r.status_code == 200, r.content[:300]
    k = _rejected(r, json_out=False)
    ledger.note(200, n, k)
    if transform[0] in ("plain", "gzip", "deflate"):
        spans, sure, maybe = _expectations(groups, json_mode=False, bare_nonfinite=False)
        assert n == spans and not bad_utf8
        assert sure <= k <= sure + maybe, (k, sure, maybe)


@HYPO
@given(
    groups=GROUPS, transform=TRANSFORMS, bad_utf8=st.sampled_from([False] * 6 + [True]),
    bare_nonfinite=st.booleans(), upper=st.booleans(),
)  # fmt: skip
def test_json_bodies_never_500_and_store_exactly_what_was_accepted(
    hc, ledger, groups, transform, bad_utf8, bare_nonfinite, upper
):
    now = time.time_ns()
    body = _json_body(f"hostile-json-{_rand(4).hex()}", groups, now, bare_nonfinite=bare_nonfinite, upper=upper,
                      bad_utf8=bad_utf8)  # fmt: skip
    sent, encoding, decoded = _transform(body, transform)
    r = _post(hc, sent, "application/json", encoding)
    n = _json_spans_in(decoded) if decoded is not None else None
    if r.status_code != 200:
        assert r.status_code == 400, r.text[:300]
        assert r.json()["message"], r.text  # a reason, in a google.rpc.Status-shaped JSON body
        ledger.note(400)
        intact = transform[0] in ("plain", "gzip", "deflate")
        deep = any(sp.deep >= 100 for g in groups for sp in g)  # json.loads itself may refuse the nesting
        assert not intact or bad_utf8 or deep, f"an intact body got 400: {r.text[:300]}"
        return
    assert n is not None, "200 for a body whose span list our decoder cannot find"
    k = _rejected(r, json_out=True)
    ledger.note(200, n, k)
    if transform[0] in ("plain", "gzip", "deflate"):
        spans, sure, maybe = _expectations(groups, json_mode=True, bare_nonfinite=bare_nonfinite)
        assert n == spans and not bad_utf8
        assert sure <= k <= sure + maybe, (k, sure, maybe, r.text[:300])


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


@HYPO
@given(
    where=st.sampled_from(["resourceSpans", "resource", "scope", "spans", "span", "attributes", "attr", "value",
                           "events", "links", "status", "resource_attr"]),
    value=JSON_SCALARS,
)  # fmt: skip
def test_json_with_a_wrong_type_anywhere_is_a_4xx_or_a_rejected_span(hc, ledger, where, value):
    """Each structural position of an OTLP/JSON body gets a value of the wrong type. ``scopeSpans`` has its own
    test (a scalar there is a 400)."""
    now = time.time_ns()
    span = {"traceId": _rand(16).hex(), "spanId": _rand(8).hex(), "name": "typed", "startTimeUnixNano": str(now),
            "attributes": [{"key": "a", "value": {"stringValue": "b"}}]}  # fmt: skip
    rs = {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "hostile-types"}}]},
          "scopeSpans": [{"scope": {"name": "x"}, "spans": [span]}]}  # fmt: skip
    doc: dict[str, Any] = {"resourceSpans": [rs]}
    target = {
        "resourceSpans": (doc, "resourceSpans"), "resource": (rs, "resource"), "scope": (rs["scopeSpans"][0], "scope"),
        "spans": (rs["scopeSpans"][0], "spans"), "attributes": (span, "attributes"), "events": (span, "events"),
        "links": (span, "links"), "status": (span, "status"), "attr": (span["attributes"], 0),
        "value": (span["attributes"][0], "value"), "resource_attr": (rs["resource"]["attributes"], 0),
    }  # fmt: skip
    if where == "span":
        rs["scopeSpans"][0]["spans"] = [value]
    else:
        obj, key = target[where]
        obj[key] = value
    r = _post(hc, json.dumps(doc).encode(), "application/json")
    if r.status_code == 200:
        ledger.note(200, _json_spans_in(json.dumps(doc).encode()) or 0, _rejected(r, json_out=True))
    else:
        assert r.status_code == 400 and r.json()["message"]
        ledger.note(400)


@pytest.mark.parametrize("value", ["5", "true", "1.5"])
def test_json_scalar_scope_spans_is_a_400_not_a_500(collector, value):
    body = ('{"resourceSpans":[{"scopeSpans": ' + value + "}]}").encode()
    r = collector.post_traces(body, content_type="application/json")
    assert collector.get("/healthz", key=None).status_code == 200
    assert r.status_code == 400, (r.status_code, r.text)


def test_a_span_ending_past_2262_does_not_take_other_acknowledged_spans_with_it(hc):
    now = time.time_ns()
    good, bad = (
        Span(
            trace_id=_rand(16), span_id=_rand(8), name="good", start_time_unix_nano=now, end_time_unix_nano=now + 10**9
        ),
        Span(
            trace_id=_rand(16),
            span_id=_rand(8),
            name="ends in 2262+",
            start_time_unix_nano=now,
            end_time_unix_nano=2**63 + 10**9,
        ),
    )
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="hostile-2262"))]),
        scope_spans=[ScopeSpans(spans=[good, bad])])])  # fmt: skip
    r = _post(hc, req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200
    TOTAL.note(200, 2, _rejected(r, json_out=False))
    accepted = 2 - _rejected(r, json_out=False)
    hc.wait_for(lambda: hc.get("/readyz", key=None).json()["queue_depth"] == 0, what="the spool to drain")
    stored = hc.api("/api/v1/overview", service="hostile-2262", **_window())["spans"]
    assert stored == accepted, f"acknowledged {accepted} spans, stored {stored}"


# --- deterministic hostile cases with a known answer -----------------------------------------------
def test_huge_attribute_is_cut_at_the_limit_and_flagged(hc, ledger):
    tid, sid = _rand(16), _rand(8)
    span = Span(trace_id=tid, span_id=sid, name="huge", start_time_unix_nano=time.time_ns(),
                attributes=[KeyValue(key="big", value=AnyValue(string_value="h" * (ATTR_LIMIT + 7))),
                            KeyValue(key="small", value=AnyValue(string_value="ok"))])  # fmt: skip
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="hostile-huge"))]),
        scope_spans=[ScopeSpans(spans=[span])])])  # fmt: skip
    r = _post(hc, req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200 and _rejected(r, json_out=False) == 0
    ledger.note(200, 1, 0)
    s = hc.trace(tid.hex(), spans=1)["spans"][0]
    assert s["attributes"]["small"] == "ok"
    assert s["attributes"]["agentwatch.truncated"] == "true"
    assert len(s["attributes"]["big"]) == ATTR_LIMIT and set(s["attributes"]["big"]) == {"h"}


@pytest.mark.parametrize(
    ("body", "ctype", "encoding"),
    [
        (b"", "application/json", ""),
        (b"\x00" * 64, "application/x-protobuf", ""),
        (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", ""),  # a 4 GiB length prefix
        (b"\x0a" + b"\x80" * 20, "application/x-protobuf", ""),  # an endless varint
        (gzip.compress(b"\x0a\x05hello" * 1000), "application/x-protobuf", "gzip"),
        (b"\x1f\x8b" + b"\x00" * 30, "application/x-protobuf", "gzip"),
        (gzip.compress(b"{" * 200_000), "application/json", "gzip"),
        (b"[" * 100_000, "application/json", ""),
        (b'{"resourceSpans": [' + b'{"resource": {}},' * 20000 + b"{}]}", "application/json", ""),
        (
            '{"resourceSpans":[{"resource":{"attributes":[{"key":"\ud800","value":{}}]}}]}'.encode(
                "utf-8", "surrogatepass"
            ),
            "application/json",
            "",
        ),  # fmt: skip
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
            + b"ab" * 16
            + b'","spanId":"'
            + b"cd" * 8
            + b'","startTimeUnixNano":"1e400"}]}]}]}',
            "application/json",
            "",
        ),  # fmt: skip
        (b"\xef\xbb\xbf" + b'{"resourceSpans": []}', "application/json", ""),
        (b"x" * 10, "application/x-protobuf; charset=utf-8; q=\x7f", ""),
        (b"{}", "application/json", "gzip, gzip"),
        (b"{}", "application/json", "GZIP"),
    ],
)
def test_hand_made_hostile_bodies(hc, body, ctype, encoding):
    r = _post(hc, body, ctype, encoding)
    n = _pb_spans_in(body) if ctype.startswith("application/x-protobuf") else _json_spans_in(body)
    if r.status_code == 200:  # none of these bodies holds an acceptable span
        k = _rejected(r, json_out=ctype == "application/json")
        assert k == (n or 0)
        TOTAL.note(200, n or 0, k)
    assert hc.get("/healthz", key=None).status_code == 200
