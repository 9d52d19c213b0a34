"""Loop detection (DESIGN.md, Semantics): inside one task,

- ``repeat``: the same tool with the same arguments (hash) N times in a row (default 3);
- ``cycle``: a repeated two-step cycle A,B,A,B,... of (tool, arguments), N full cycles;
- ``error``: the same tool failing with the same error type N times in a row (arguments may change).

Detection runs over the window's tool spans grouped by trace, in array form (one ``groupArray`` per trace,
sorted by time, adjacent comparisons; MEASUREMENTS.md: ~5x faster than window functions), and needs no root
span: a task still running (its root not exported yet) is found as soon as its tool spans arrive
(``running: true``). The flagged traces' LLM calls are then read to price the loop: the calls that started
after the loop's first tool call and up to its last are the ones that kept it going (``wasted_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentwatch.collector import rollups as R
from agentwatch.collector import summary as S
from agentwatch.collector.analytics_common import rnd
from agentwatch.collector.migrations import SPANS_TABLE
from agentwatch.collector.queries import DEFAULT_LOOP_REPEATS, WHERE, QueryError, Scope, iso
from agentwatch.collector.store import Store

PATTERNS = ("repeat", "cycle", "error")


def _longest_run(flags: str) -> str:
    """SQL: the longest run of true values in a UInt8 array expression (0 for an empty array)."""
    return f"arrayMax(arrayCumSumNonNegative(arrayMap(x -> if(x, toInt64(1), toInt64(-1000000000)), {flags})))"


# candidates: traces whose tool sequence has a loop of any pattern; params: scope + repeats
CANDIDATES_SQL = f"""
WITH per_task AS (
    SELECT TraceId, any(ServiceName) AS service, countIf(ParentSpanId = '') AS roots,
           anyIf(if(TaskName != '', TaskName, SpanName), ParentSpanId = '') AS root_name,
           anyIf(TaskName, TaskName != '') AS span_task_name,
           arraySort(x -> x.1, groupArrayIf((toUnixTimestamp64Nano(Timestamp), ToolName, ToolArgsHash, ErrorType,
                                             Duration), Kind = 'tool')) AS tl,
           arrayMap(x -> concat(x.2, '#', x.3), tl) AS k,
           arrayMap(x -> if(x.4 != '', concat(x.2, '!', x.4), ''), tl) AS e,
           {_longest_run("arrayMap(i -> k[i] = k[i - 1], range(2, length(k) + 1))")} + 1 AS rep,
           intDiv({_longest_run("arrayMap(i -> k[i] = k[i - 2] AND k[i] != k[i - 1], range(3, length(k) + 1))")} + 2,
                  2) AS cyc,
           {_longest_run("arrayMap(i -> e[i] != '' AND e[i] = e[i - 1], range(2, length(e) + 1))")} + 1 AS err
    FROM {SPANS_TABLE} FINAL
    WHERE {WHERE} AND (Kind = 'tool' OR ParentSpanId = '')
    GROUP BY TraceId
)
SELECT TraceId, service, roots, root_name, span_task_name, tl, rep, cyc, err
FROM per_task
WHERE length(tl) >= {{repeats:UInt32}}
  AND (rep >= {{repeats:UInt32}} OR cyc >= {{repeats:UInt32}} OR err >= {{repeats:UInt32}})
ORDER BY TraceId
LIMIT 100000
"""

# the flagged tasks' LLM calls in the window, from the per-call rollup (one row a call, collector/rollups.py): a
# narrow table, not the spans (measured at 9.9M spans, 13k flagged tasks: 460 ms on the spans)
CALLS_SQL = f"""
SELECT TraceId, CallKey, toUnixTimestamp64Nano(ts) AS ts_ns, i, o, c
FROM ({R.calls(
    "ProjectId = {project:String} AND ({service:String} = '' OR ServiceName = {service:String})"
    f" AND Hour >= toStartOfHour({R.ms('from_ms')}) AND Hour < {R.ms('to_ms')}"
    " AND TraceId IN (SELECT arrayJoin(splitByChar(',', {ids:String})))"
)})
WHERE ts >= {R.ms("from_ms")} AND ts < {R.ms("to_ms")}
"""


# roots outside the window of flagged traces that have none in it: a task that began before the window and loops in
# it is that task (its name, not running), not a root-less one. Read as the summarizer reads roots: the task rollup
# over the traces' extent (the trace lookup's first and last span).
EARLIER_ROOTS_SQL = f"""
WITH ids AS (SELECT arrayJoin(splitByChar(',', {{ids:String}})) AS TraceId),
bounds AS ({S.bounds_sql("ids")})
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


def loops(
    store: Store, scope: Scope, *, repeats: int = DEFAULT_LOOP_REPEATS, pattern: str = "", limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Tasks with a loop in the window, costliest waste first."""
    validate(repeats, limit, offset)
    if pattern and pattern not in PATTERNS:
        raise QueryError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern[:64]!r}")
    params = {**scope.params(), "repeats": repeats}
    cands = store.query(CANDIDATES_SQL, params)
    found: list[tuple[dict, list[tuple], list[Run]]] = []
    for r in cands:
        tl = [tuple(x.values()) if isinstance(x, dict) else tuple(x) for x in r["tl"]]
        runs = find_runs(tl, repeats)
        if pattern:
            runs = [x for x in runs if x.pattern == pattern]
        if runs:
            found.append((r, tl, runs))
    calls: dict[str, list[tuple[int, int, int, float | None]]] = {}
    if found:
        ids = [r["TraceId"] for r, _, _ in found]
        for c in store.query(CALLS_SQL, {**scope.params(), "ids": ",".join(ids)}):
            calls.setdefault(c["TraceId"], []).append((c["ts_ns"], c["i"], c["o"], c["c"]))
    # ranked on the waste's cost; the items (names, times, sums) are made for the page only
    found.sort(key=lambda f: _rank(f, calls.get(f[0]["TraceId"], [])))
    page = found[offset : offset + limit]
    earlier: dict[str, str] = {}  # trace -> name of its root, begun before the window
    rootless = [r["TraceId"] for r, _, _ in page if not r["roots"]]
    if rootless:
        for e in store.query(EARLIER_ROOTS_SQL, {**scope.params(), "ids": ",".join(rootless)}):
            earlier[e["TraceId"]] = e["name"]
    items = [_item(r, tl, runs, calls.get(r["TraceId"], []), earlier) for r, tl, runs in page]
    return {"repeats": repeats, "total": len(found), "items": items}


def _wasted(tl: list[tuple], main: Run, calls: list[tuple]) -> list[tuple]:
    """The LLM calls that kept the loop going: started after its first tool call, up to its last."""
    lo, hi = tl[main.start][0], tl[main.end][0]
    return [c for c in calls if lo < c[0] <= hi]


def _rank(f: tuple[dict, list[tuple], list[Run]], calls: list[tuple]) -> tuple[float, int, str]:
    """Costliest waste first, then the longest loop, then by trace id (as the items' fields say)."""
    r, tl, runs = f
    priced = [c[3] for c in _wasted(tl, runs[0], calls) if c[3] is not None]
    return -(rnd(sum(priced), 9) if priced else 0.0), -runs[0].repeats, r["TraceId"]


def _item(r: dict, tl: list[tuple], runs: list[Run], calls: list[tuple], earlier: dict[str, str]) -> dict[str, Any]:
    main = runs[0]
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
        "trace_id": r["TraceId"],
        "service": r["service"],
        "name": r["root_name"] or earlier.get(r["TraceId"]) or r["span_task_name"] or None,
        "pattern": main.pattern,
        "patterns": [x.pattern for x in runs],
        "tool": tool,
        "args_hash": args or None,
        "error_type": first[3] or None if main.pattern == "error" else None,
        "repeats": main.repeats,
        "start": iso(first[0]),
        "end": iso(last[0] + last[4]),
        "running": not r["roots"] and r["TraceId"] not in earlier,
        "wasted_tool_calls": wasted_tools,
        "wasted_tool_ms": rnd(sum(t[4] for t in tl[main.start + (2 if main.pattern == "cycle" else 1) : main.end + 1])
                              / 1e6, 3),
        "wasted_llm_calls": len(wasted),
        "wasted_tokens": int(sum(c[1] + c[2] for c in wasted)),
        "wasted_cost_usd": rnd(sum(priced), 9) if priced or not wasted else None,
        "unpriced_llm_calls": len(wasted) - len(priced),
    }  # fmt: skip
