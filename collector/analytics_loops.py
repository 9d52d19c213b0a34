"""Loop detection (DESIGN.md, Semantics): inside one task,

- ``repeat``: the same tool with the same arguments (hash) N times in a row (default 3);
- ``cycle``: a repeated two-step cycle A,B,A,B,... of (tool, arguments), N full cycles;
- ``error``: the same tool failing with the same error type N times in a row (arguments may change).

Detection runs over the window's tool spans grouped by trace, in array form (one ``groupArray`` per trace,
sorted by time, adjacent comparisons; MEASUREMENTS.md: ~5x faster than window functions), and needs no root
span: a task still running (its root not exported yet) is found as soon as its tool spans arrive
(``running: true``). The flagged traces' LLM calls are then read to price the loop: the calls that started
after the loop's first tool call and up to its last are the ones that kept it going (``wasted_*``).

The summarizer (collector/summary.py) runs the same detection over each trace it summarizes, whole, and keeps its
longest loop of each pattern in ``loop_summary`` (migration 9, ``summary_rows``). A read takes those rows for the
traces wholly inside its window with no span ingested since (``SUMMARY_TOP_SQL``) and does the work above for the
others only (``LIVE_SQL``); both sides give their top of the page, merged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import rnd
from agentwatch.collector.migrations import LOOP_SUMMARY_TABLE, SPANS_TABLE, TRACE_LOOKUP_TABLE
from agentwatch.collector.queries import DEFAULT_LOOP_REPEATS, WHERE, QueryError, Scope, iso
from agentwatch.collector.store import Store, parallel

PATTERNS = ("repeat", "cycle", "error")


def _longest_run(flags: str) -> str:
    """SQL: the longest run of true values in a UInt8 array expression (0 for an empty array)."""
    return f"arrayMax(arrayCumSumNonNegative(arrayMap(x -> if(x, toInt64(1), toInt64(-1000000000)), {flags})))"


def _candidates(where: str, having: str) -> str:
    """Per trace (spans of ``where``): its service(s), roots, names and time-ordered tool calls ``tl``, and the
    longest run of each pattern (``rep``, ``cyc``, ``err``), for the traces passing ``having``. Grouped by the
    trace id's 16 bytes, a UInt128 key, as the tools read is (collector/analytics_stats.py). A span sent twice
    (an exporter's retry) counts once without FINAL: its copies sort next to each other (same start, same span
    id) and all but one are dropped, and roots are counted by span id. FINAL would merge the recent, small parts
    these reads touch (the newest hour, while spans arrive): most of a summarizer pass's time. The run lengths
    compare 64-bit hashes of (tool, arguments) and (tool, error): a filter only, since ``find_runs`` finds the
    runs on the strings (equal strings hash equal, so no loop is missed)."""
    return f"""
SELECT trace_id AS TraceId, service, services, roots, root_name, span_task_name, tl FROM (
SELECT any(TraceId) AS trace_id, any(ServiceName) AS service, groupUniqArray(ServiceName) AS services,
       uniqExactIf(SpanId, ParentSpanId = '') AS roots,
       anyIf(if(TaskName != '', TaskName, SpanName), ParentSpanId = '') AS root_name,
       anyIf(TaskName, TaskName != '') AS span_task_name,
       arraySort(groupArrayIf((toUnixTimestamp64Nano(Timestamp), SpanId, ToolName, ToolArgsHash, ErrorType,
                               Duration), Kind = 'tool')) AS ts,
       arrayMap(x -> (x.1, x.3, x.4, x.5, x.6),
                arrayFilter((x, i) -> i = 1 OR x.2 != ts[i - 1].2, ts, arrayEnumerate(ts))) AS tl,
       arrayMap(x -> cityHash64(x.2, x.3), tl) AS k,
       arrayMap(x -> if(x.4 != '', cityHash64(x.2, x.4), 0), tl) AS e,
       {_longest_run("arrayMap(i -> k[i] = k[i - 1], range(2, length(k) + 1))")} + 1 AS rep,
       intDiv({_longest_run("arrayMap(i -> k[i] = k[i - 2] AND k[i] != k[i - 1], range(3, length(k) + 1))")} + 2,
              2) AS cyc,
       {_longest_run("arrayMap(i -> e[i] != 0 AND e[i] = e[i - 1], range(2, length(e) + 1))")} + 1 AS err
FROM {SPANS_TABLE}
WHERE {where} AND (Kind = 'tool' OR ParentSpanId = '')
GROUP BY reinterpretAsUInt128(unhex(TraceId))
HAVING {having})"""


def _looping(n: str) -> str:
    return f"length(tl) >= {n} AND (rep >= {n} OR cyc >= {n} OR err >= {n})"


_PATTERN_ORDER = f"[{', '.join(repr(p) for p in PATTERNS)}]"
# a loop-summary row's trace lies wholly in the window (Last is a span start's second: the span started before
# Last + 1 s)
_CONTAINED = f"First >= {R.ms('from_ms')} AND Last + INTERVAL 1 SECOND <= {R.ms('to_ms')}"

# the window's loops from the loop summary (migration 9): its traces wholly in the window with no span ingested
# after the watermark (of the scope's service alone, with a service); per trace the first pattern (in PATTERNS'
# order) of the threshold, costliest waste first: the top ``top`` of them and how many there are
SUMMARY_TOP_SQL = f"""
WITH l_dirty AS MATERIALIZED ({S.dirty("wm_ms", "cut_ms")})
SELECT TraceId, service AS ServiceName, name AS Name, running AS Running, patterns, m.1 AS Pattern, m.2 AS Tool,
       m.3 AS ArgsHash, m.4 AS ErrorType, m.5 AS Repeats, m.6 AS StartNs, m.7 AS EndNs, m.8 AS WastedToolCalls,
       m.9 AS WastedToolMs, m.10 AS WastedLlmCalls, m.11 AS WastedTokens, m.12 AS WastedCostUsd,
       m.13 AS UnpricedLlmCalls, count() OVER () AS total
FROM (
    SELECT TraceId, any(ServiceName) AS service, any(Name) AS name, any(Running) AS running,
           argMin((Pattern, Tool, ArgsHash, ErrorType, Repeats, StartNs, EndNs, WastedToolCalls, WastedToolMs,
                   WastedLlmCalls, WastedTokens, WastedCostUsd, UnpricedLlmCalls),
                  indexOf({_PATTERN_ORDER}, Pattern)) AS m,
           arraySort(p -> indexOf({_PATTERN_ORDER}, p), groupArray(Pattern)) AS patterns
    FROM {LOOP_SUMMARY_TABLE} FINAL
    WHERE ProjectId = {{project:String}} AND Hour >= toStartOfHour({R.ms("from_ms")}) AND Hour < {R.ms("to_ms")}
      AND {_CONTAINED} AND Pattern != '' AND Repeats >= {{repeats:UInt32}}
      AND ({{pattern:String}} = '' OR Pattern = {{pattern:String}})
      AND ({{service:String}} = '' OR (ServiceName = {{service:String}} AND Services = 1))
      AND cityHash64(TraceId) NOT IN (SELECT h FROM l_dirty)
    GROUP BY TraceId
)
ORDER BY ifNull(WastedCostUsd, 0) DESC, Repeats DESC, TraceId
LIMIT {{top:UInt32}}
"""

# the window's traces the summary does not answer for, found from their spans: those with a span ingested after the
# watermark, those of the summary that cross the window's edges (a run inside the window is part of a run of the
# whole trace, so a trace with no summary row has no loop in the window either), and with a service, the traces of
# several services (one service's tool calls alone may loop). Only the hours these traces have spans in are read
# (their extents: the trace lookup's, the summary's), by primary key: at the edges and the newest hour, mostly.
LIVE_SQL = f"""
WITH l_dirty AS MATERIALIZED ({S.dirty_ids("wm_ms", "cut_ms")}),
l_edge AS MATERIALIZED (
    SELECT DISTINCT TraceId, First, Last FROM {LOOP_SUMMARY_TABLE} FINAL
    WHERE ProjectId = {{project:String}} AND Hour < {R.ms("to_ms")} AND First < {R.ms("to_ms")}
      AND Last + INTERVAL 1 SECOND > {R.ms("from_ms")}
      AND ((Pattern != '' AND Repeats >= {{repeats:UInt32}} AND NOT ({_CONTAINED}))
           OR ({{service:String}} != '' AND Services > 1))
),
l_live AS MATERIALIZED (
    SELECT cityHash64(TraceId) AS h FROM l_dirty UNION ALL SELECT cityHash64(TraceId) AS h FROM l_edge
),
l_hours AS MATERIALIZED (
    SELECT DISTINCT toDateTime(arrayJoin(range(
        toUInt32(toStartOfHour(greatest(a, toDateTime(intDiv({{from_ms:Int64}}, 1000))))),
        toUInt32(toStartOfHour(least(b, toDateTime(intDiv({{to_ms:Int64}}, 1000))))) + 1, 3600))) AS hour
    FROM (
        SELECT First AS a, Last AS b FROM l_edge
        UNION ALL
        SELECT min(Start) AS a, max(End) AS b FROM {TRACE_LOOKUP_TABLE}
        WHERE TraceId IN (SELECT TraceId FROM l_dirty) GROUP BY TraceId
    )
    WHERE a < {R.ms("to_ms")} AND b + INTERVAL 1 SECOND > {R.ms("from_ms")}
)
{_candidates(f"{WHERE} AND toStartOfHour(Timestamp) IN (SELECT hour FROM l_hours)"
             " AND cityHash64(TraceId) IN (SELECT h FROM l_live)", _looping("{repeats:UInt32}"))}
ORDER BY TraceId
LIMIT 100000
"""
# a store the summarizer never ran on: every trace of the window, from its spans
ALL_SQL = f"""{_candidates(WHERE, _looping("{repeats:UInt32}"))}
ORDER BY TraceId
LIMIT 100000
"""

# the flagged tasks' LLM calls in the window, from the per-call rollup (one row a call, collector/rollups.py): a
# narrow table, not the spans (measured at 9.9M spans, 13k flagged tasks: 460 ms on the spans), over the hours of
# the traces' extent in the window
CALLS_SQL = f"""
WITH ids AS (SELECT arrayJoin(splitByChar(',', {{ids:String}})) AS TraceId),
{S.bounds_ctes("bounds", "ids", materialized=False)}
SELECT TraceId, CallKey, toUnixTimestamp64Nano(ts) AS ts_ns, i, o, c, service
FROM ({R.calls(
    f"{S.extent_where('ids', 'bounds')} AND Hour >= toStartOfHour({R.ms('from_ms')}) AND Hour < {R.ms('to_ms')}"
    " AND ({service:String} = '' OR ServiceName = {service:String})"
)})
WHERE ts >= {R.ms("from_ms")} AND ts < {R.ms("to_ms")}
"""

# the summarizer's pass: the traces with spans ingested in (after, upto] with their first and last span second, over
# their whole extent; those with a loop of 2 or more, or of several services (``hit``), and the keys the summary
# holds for them (``had``: under the hour of their first span then, which only moves earlier), which get a deleted
# row where the pass writes none. The extent's bounds are compared as DateTime64: ``Timestamp < <a DateTime> + 1 s``
# made ClickHouse 26.9 skip the spans of a trace whose spans all start in one second.
PASS_SQL = f"""
WITH {S.cand_ctes(S.dirty_ids("after", "upto")).strip()}
SELECT x.TraceId AS TraceId, x.first AS first, x.last AS last, c.* EXCEPT TraceId, e.had AS had
FROM (SELECT TraceId, toUnixTimestamp(min(Start)) AS first, toUnixTimestamp(max(End)) AS last
      FROM {TRACE_LOOKUP_TABLE} WHERE TraceId IN (SELECT TraceId FROM s_cand) GROUP BY TraceId) AS x
LEFT JOIN (SELECT *, toUInt8(1) AS hit FROM ({_candidates(
    "ProjectId = {project:String} AND Timestamp >= toDateTime64(s_bounds_v.1, 9)"
    " AND Timestamp < toDateTime64(s_bounds_v.2, 9) + INTERVAL 1 SECOND"
    " AND TraceId IN (SELECT TraceId FROM s_cand)",
    f"({_looping('2')}) OR length(services) > 1",
)})) AS c ON c.TraceId = x.TraceId
LEFT JOIN (SELECT TraceId, groupArray((toUnixTimestamp(Hour), Pattern)) AS had FROM {LOOP_SUMMARY_TABLE} FINAL
           WHERE ProjectId = {{project:String}} AND Hour >= toStartOfHour(s_bounds_v.1)
             AND Hour <= s_bounds_v.2 AND TraceId IN (SELECT TraceId FROM s_cand)
           GROUP BY TraceId) AS e ON e.TraceId = x.TraceId
WHERE c.hit = 1 OR notEmpty(e.had)
"""


# roots outside the window of flagged traces that have none in it: a task that began before the window and loops in
# it is that task (its name, not running), not a root-less one. Read as the summarizer reads roots: the task rollup
# over the traces' extent (the trace lookup's first and last span).
EARLIER_ROOTS_SQL = f"""
WITH ids AS (SELECT arrayJoin(splitByChar(',', {{ids:String}})) AS TraceId),
{S.bounds_ctes("bounds", "ids", materialized=False)}
SELECT TraceId, if(r.name != '', r.name, r.span_name) AS name
FROM ({S.max_roots_sql("ids", "bounds")})
WHERE r.has = 1 AND r.ts < {R.ms("from_ms")}
"""


@dataclass(frozen=True)
class Run:
    pattern: str
    start: int  # index of the first tool call of the loop
    end: int  # index of the last
    repeats: int  # run length (repeat, error) or full cycles (cycle)


def _runs(keys: list[str], n: int, *, skip_empty: bool = False) -> Run | None:
    best: Run | None = None
    i = 0
    while i < len(keys):
        j = i
        while j + 1 < len(keys) and keys[j + 1] == keys[i]:
            j += 1
        length = j - i + 1
        if length >= n and not (skip_empty and not keys[i]) and (best is None or length > best.repeats):
            best = Run("", i, j, length)
        i = j + 1
    return best


def _cycle(keys: list[str], n: int) -> Run | None:
    best: Run | None = None
    i = 2
    while i < len(keys):
        if keys[i] == keys[i - 2] and keys[i] != keys[i - 1]:
            j = i
            while j + 1 < len(keys) and keys[j + 1] == keys[j - 1] and keys[j + 1] != keys[j]:
                j += 1
            cycles = (j - i + 1 + 2) // 2
            if cycles >= n and (best is None or cycles > best.repeats):
                best = Run("cycle", i - 2, i - 2 + 2 * cycles - 1, cycles)
            i = j + 1
        else:
            i += 1
    return best


def find_runs(tools: list[tuple], n: int) -> list[Run]:
    """The longest loop of each pattern in a task's tool calls (time-ordered tuples of
    (ts_ns, tool, args_hash, error_type, duration_ns)); strongest first."""
    keys = [f"{t[1]}#{t[2]}" for t in tools]
    errs = [f"{t[1]}!{t[3]}" if t[3] else "" for t in tools]
    out = []
    rep = _runs(keys, n)
    if rep:
        out.append(Run("repeat", rep.start, rep.end, rep.repeats))
    cyc = _cycle(keys, n)
    if cyc:
        out.append(cyc)
    err = _runs(errs, n, skip_empty=True)
    if err:
        out.append(Run("error", err.start, err.end, err.repeats))
    return out


def validate(repeats: int, limit: int, offset: int) -> None:
    if not 2 <= repeats <= 100:
        raise QueryError(f"repeats must be between 2 and 100, got {repeats}")
    if not 1 <= limit <= 1000:
        raise QueryError(f"limit must be between 1 and 1000, got {limit}")
    if not 0 <= offset <= 100_000:
        raise QueryError(f"offset must be between 0 and 100000, got {offset}")


def _tuples(xs: list) -> list[tuple]:
    """Arrays of tuples as the store returns them (dicts from Arrow structs, or tuples), as tuples."""
    return [tuple(x.values()) if isinstance(x, dict) else tuple(x) for x in xs or []]


def _detect(cands: list[dict], repeats: int, pattern: str = "") -> list[tuple[dict, list[tuple], list[Run]]]:
    found = []
    for r in cands:
        tl = _tuples(r["tl"])
        runs = find_runs(tl, repeats)
        if pattern:
            runs = [x for x in runs if x.pattern == pattern]
        if runs:
            found.append((r, tl, runs))
    return found


def _calls(store: Store, sql: str, params: dict[str, Any], ids: list[str]) -> dict[str, list[tuple]]:
    """The LLM calls of the traces ``ids``, per trace: (ts_ns, input, output, cost, service)."""
    calls: dict[str, list[tuple]] = {}
    if ids:
        for c in store.query(sql, {**params, "ids": ",".join(ids)}):
            calls.setdefault(c["TraceId"], []).append((c["ts_ns"], c["i"], c["o"], c["c"], c["service"]))
    return calls


def loops(
    store: Store, scope: Scope, *, repeats: int = DEFAULT_LOOP_REPEATS, pattern: str = "", limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Tasks with a loop in the window, costliest waste first: the loop summary's (migration 9) for the traces it
    answers for, found from the spans for the others (``LIVE_SQL``)."""
    validate(repeats, limit, offset)
    if pattern and pattern not in PATTERNS:
        raise QueryError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern[:64]!r}")
    # the traces touched after the watermark, up to now on the store's clock: the same set for both statements, or
    # a trace touched between them would be in both answers, or in neither
    cut = int(store.query("SELECT toUnixTimestamp64Milli(now64(3)) AS ms")[0]["ms"])
    params = {**scope.params(), "repeats": repeats, "wm_ms": S.watermark(store), "cut_ms": cut, "pattern": pattern,
              "top": offset + limit}  # fmt: skip
    if params["wm_ms"]:
        summarized, cands = parallel(lambda: store.query(SUMMARY_TOP_SQL, params),
                                     lambda: store.query(LIVE_SQL, params))  # fmt: skip
    else:
        summarized, cands = [], store.query(ALL_SQL, params)
    found = _detect(cands, repeats, pattern)
    calls = _calls(store, CALLS_SQL, scope.params(), [r["TraceId"] for r, _, _ in found])
    # ranked on the waste's cost; the items (names, times, sums) are made for the page only
    found.sort(key=lambda f: _rank(f, calls.get(f[0]["TraceId"], [])))
    live = found[: offset + limit]
    earlier: dict[str, str] = {}  # trace -> name of its root, begun before the window
    rootless = [r["TraceId"] for r, _, _ in live if not r["roots"]]
    if rootless:
        for e in store.query(EARLIER_ROOTS_SQL, {**scope.params(), "ids": ",".join(rootless)}):
            earlier[e["TraceId"]] = e["name"]
    items = [_item(r, tl, runs, calls.get(r["TraceId"], []), earlier) for r, tl, runs in live]
    items += [_summary_item(r) for r in summarized]
    # the two sets are disjoint (a trace is summarized or live), and each holds its own top offset + limit
    items.sort(key=lambda i: (-(i["wasted_cost_usd"] or 0.0), -i["repeats"], i["trace_id"]))
    total = len(found) + (summarized[0]["total"] if summarized else 0)
    return {"repeats": repeats, "total": total, "items": items[offset : offset + limit]}


def _wasted(tl: list[tuple], main: Run, calls: list[tuple]) -> list[tuple]:
    """The LLM calls that kept the loop going: started after its first tool call, up to its last."""
    lo, hi = tl[main.start][0], tl[main.end][0]
    return [c for c in calls if lo < c[0] <= hi]


def _rank(f: tuple[dict, list[tuple], list[Run]], calls: list[tuple]) -> tuple[float, int, str]:
    """Costliest waste first, then the longest loop, then by trace id (as the items' fields say)."""
    r, tl, runs = f
    priced = [c[3] for c in _wasted(tl, runs[0], calls) if c[3] is not None]
    return -(rnd(sum(priced), 9) if priced else 0.0), -runs[0].repeats, r["TraceId"]


def _loop(tl: list[tuple], main: Run, calls: list[tuple]) -> dict[str, Any]:
    """What one loop of a task's tool calls ``tl`` shows: the tool(s), times (ns) and its waste."""
    first, last = tl[main.start], tl[main.end]
    if main.pattern == "cycle":
        pair = [tl[main.start], tl[main.start + 1]]
        tool = ",".join(t[1] for t in pair)
        args = ",".join(t[2] for t in pair)
        wasted_tools = main.end - main.start + 1 - 2
    else:
        tool, args = first[1], first[2] if main.pattern == "repeat" else None
        wasted_tools = main.end - main.start
    wasted = _wasted(tl, main, calls)
    priced = [c[3] for c in wasted if c[3] is not None]
    return {
        "tool": tool,
        "args_hash": args or None,
        "error_type": first[3] or None if main.pattern == "error" else None,
        "repeats": main.repeats,
        "start_ns": first[0],
        "end_ns": last[0] + last[4],
        "wasted_tool_calls": wasted_tools,
        "wasted_tool_ms": rnd(sum(t[4] for t in tl[main.start + (2 if main.pattern == "cycle" else 1) : main.end + 1])
                              / 1e6, 3),
        "wasted_llm_calls": len(wasted),
        "wasted_tokens": int(sum(c[1] + c[2] for c in wasted)),
        "wasted_cost_usd": rnd(sum(priced), 9) if priced or not wasted else None,
        "unpriced_llm_calls": len(wasted) - len(priced),
    }  # fmt: skip


def _shown(trace_id: str, service: str, name: str | None, patterns: list[str], running: bool,
           loop: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """An item of the answer, in its field order."""
    return {
        "trace_id": trace_id, "service": service, "name": name, "pattern": patterns[0], "patterns": patterns,
        "tool": loop["tool"], "args_hash": loop["args_hash"], "error_type": loop["error_type"],
        "repeats": loop["repeats"], "start": iso(loop["start_ns"]), "end": iso(loop["end_ns"]), "running": running,
        **{k: loop[k] for k in ("wasted_tool_calls", "wasted_tool_ms", "wasted_llm_calls", "wasted_tokens",
                                "wasted_cost_usd", "unpriced_llm_calls")},
    }  # fmt: skip


def _item(r: dict, tl: list[tuple], runs: list[Run], calls: list[tuple], earlier: dict[str, str]) -> dict[str, Any]:
    return _shown(
        r["TraceId"], r["service"], r["root_name"] or earlier.get(r["TraceId"]) or r["span_task_name"] or None,
        [x.pattern for x in runs], not r["roots"] and r["TraceId"] not in earlier, _loop(tl, runs[0], calls),
    )


# a loop's fields (``_loop``) and the loop-summary columns that keep them; the strings are '' there for None
_LOOP_COLUMNS = {
    "tool": "Tool", "args_hash": "ArgsHash", "error_type": "ErrorType", "repeats": "Repeats", "start_ns": "StartNs",
    "end_ns": "EndNs", "wasted_tool_calls": "WastedToolCalls", "wasted_tool_ms": "WastedToolMs",
    "wasted_llm_calls": "WastedLlmCalls", "wasted_tokens": "WastedTokens", "wasted_cost_usd": "WastedCostUsd",
    "unpriced_llm_calls": "UnpricedLlmCalls",
}  # fmt: skip
_LOOP_STRINGS = ("tool", "args_hash", "error_type")


def _loop_columns(loop: dict[str, Any]) -> dict[str, Any]:
    return {c: loop[k] or "" if k in _LOOP_STRINGS else loop[k] for k, c in _LOOP_COLUMNS.items()}


def _summary_item(r: dict) -> dict[str, Any]:
    loop = {k: r[c] or None if k in _LOOP_STRINGS else r[c] for k, c in _LOOP_COLUMNS.items()}
    return _shown(r["TraceId"], r["ServiceName"], r["Name"] or None, list(r["patterns"]), bool(r["Running"]), loop)


# --- the summarizer's part (collector/summary.py) ------------------------------------------------------------------
SUMMARY_SCHEMA = pa.schema([
    ("ProjectId", pa.string()), ("Hour", pa.timestamp("s")), ("TraceId", pa.string()), ("Pattern", pa.string()),
    ("First", pa.timestamp("s")), ("Last", pa.timestamp("s")), ("ServiceName", pa.string()),
    ("Services", pa.uint32()), ("Name", pa.string()), ("Running", pa.uint8()), ("Repeats", pa.uint32()),
    ("Tool", pa.string()), ("ArgsHash", pa.string()), ("ErrorType", pa.string()), ("StartNs", pa.int64()),
    ("EndNs", pa.int64()), ("WastedToolCalls", pa.uint32()), ("WastedToolMs", pa.float64()),
    ("WastedLlmCalls", pa.uint32()), ("WastedTokens", pa.uint64()), ("WastedCostUsd", pa.float64()),
    ("UnpricedLlmCalls", pa.uint32()),
])  # fmt: skip


def summary_rows(store: Store, params: dict[str, Any], calls: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The loop-summary rows of the traces with spans ingested in (after, upto] (``params``: project, after,
    upto), over each trace's whole extent, and the deleted rows for the keys of these traces the summary holds
    and the pass does not write again. ``calls``: the same traces' LLM calls (``call_summary``'s columns), which the
    pass computed already."""
    traces = store.query(PASS_SQL, params)
    found = {r["TraceId"]: (tl, runs) for r, tl, runs in _detect([r for r in traces if r["hit"]], 2)}
    by_trace = _pass_calls(calls, list(found))
    rows: list[dict[str, Any]] = []
    gone: list[dict[str, Any]] = []
    for r in traces:
        key = {"ProjectId": params["project"], "Hour": r["first"] - r["first"] % 3600, "TraceId": r["TraceId"],
               "First": r["first"], "Last": r["last"]}  # fmt: skip
        written = len(rows)
        if r["hit"]:
            tl, runs = found.get(r["TraceId"], ([], []))
            tc = by_trace.get(r["TraceId"], [])
            base = {**key, "ServiceName": r["service"], "Services": len(set(r["services"]) | {c[4] for c in tc}),
                    "Name": r["root_name"] or r["span_task_name"], "Running": int(not r["roots"])}  # fmt: skip
            if base["Services"] > 1:  # a read of one service computes this trace from its spans
                rows.append({**base, "Pattern": ""})
            for run in runs:
                rows.append({**base, "Pattern": run.pattern, **_loop_columns(_loop(tl, run, tc))})
        now = {(key["Hour"], x["Pattern"]) for x in rows[written:]}
        gone += [{**key, "Hour": h, "Pattern": p} for h, p in _tuples(r["had"]) if (h, p) not in now]
    return _table(rows), _table(gone)


def _pass_calls(calls: pa.Table, ids: list[str]) -> dict[str, list[tuple]]:
    """The LLM calls of the traces ``ids`` among ``calls``, per trace: (ts_ns, input, output, cost, service)."""
    out: dict[str, list[tuple]] = {}
    if not ids or not calls.num_rows:
        return out
    mine = calls.filter(pc.is_in(calls.column("TraceId"), value_set=pa.array(ids)))
    cols = [mine.column("TraceId").to_pylist(), mine.column("Ts").cast(pa.int64()).to_pylist(),
            mine.column("InputTokens").to_pylist(), mine.column("OutputTokens").to_pylist(),
            mine.column("CostUsd").to_pylist(), mine.column("ServiceName").to_pylist()]  # fmt: skip
    for tid, *call in zip(*cols, strict=True):
        out.setdefault(tid, []).append(tuple(call))
    return out


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    defaults = {"Services": 0, "Name": "", "Running": 0, "Repeats": 0, "Tool": "", "ArgsHash": "", "ErrorType": "",
                "StartNs": 0, "EndNs": 0, "WastedToolCalls": 0, "WastedToolMs": 0.0, "WastedLlmCalls": 0,
                "WastedTokens": 0, "WastedCostUsd": None, "UnpricedLlmCalls": 0, "ServiceName": ""}  # fmt: skip
    return pa.Table.from_pylist([{**defaults, **r} for r in rows], schema=SUMMARY_SCHEMA)
