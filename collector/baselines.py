"""A cache of detector baselines: the trailing whole hours before a window's hour that cost anomalies and drift
compare the window against. A baseline is most of what those detectors read (7 days against one) and does not move
while the window does, so the dashboard's live "last 24 h" and the alert engine's "last 15 min" share one for an
hour.

An entry is used while the rollups hold the same number of rows in its hours (an insert adds rows, a merge removes
some: either recomputes it) and for at most ``MAX_AGE_S``. A task of the baseline whose spans arrive after the
window's hour refreshes it only with that age limit.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from agentwatch.collector.migrations import LLM_CALLS_TABLE, TASK_ROLLUP_TABLE
from agentwatch.collector.rollups import ms
from agentwatch.collector.store import Store

T = TypeVar("T")
MAX_AGE_S = 600.0
SIZE = 64

# what a baseline was computed from; params: project, base_ms, bend_ms (the baseline's bounds)
_WHERE = f"ProjectId = {{project:String}} AND Hour >= toStartOfHour({ms('base_ms')}) AND Hour < {ms('bend_ms')}"
VERSION_SQL = (
    f"SELECT (SELECT count() FROM {TASK_ROLLUP_TABLE} WHERE {_WHERE}) AS tasks,"
    f" (SELECT count() FROM {LLM_CALLS_TABLE} WHERE {_WHERE}) AS calls"
)


class BaselineCache:
    """Values by (store, the caller's key, the rollups' row counts in the baseline's hours), at most 10 minutes old."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_store: weakref.WeakKeyDictionary[Store, OrderedDict[tuple, tuple[float, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, store: Store, key: tuple, params: dict[str, Any], compute: Callable[[], T]) -> T:
        v = store.query(VERSION_SQL, params)[0]
        key = (*key, params["project"], params["base_ms"], params["bend_ms"], v["tasks"], v["calls"])
        now = time.monotonic()
        with self._lock:
            entries = self._by_store.setdefault(store, OrderedDict())
            hit = entries.get(key)
            if hit and now - hit[0] < MAX_AGE_S:
                entries.move_to_end(key)
                return hit[1]
        value = compute()
        with self._lock:
            entries = self._by_store.setdefault(store, OrderedDict())
            entries[key] = (now, value)
            while len(entries) > SIZE:
                entries.popitem(last=False)
        return value


baselines = BaselineCache()
