"""Shared pieces of the analytics queries: parameter validation, time buckets, percentile definition and the
small statistics (robust scores, PSI, KS, chi-square) the detectors use.

Percentiles are ClickHouse ``quantilesExactInclusive``: exact, linearly interpolated between the two nearest
ranks, the same definition as ``numpy.percentile``'s default (R-7 / Excel PERCENTILE.INC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentwatch.collector.queries import QueryError, Scope

PCT_LEVELS = (0.5, 0.95, 0.99)
# the one percentile definition of the analytics (and of the overview, see queries.py)
PCTS = "quantilesExactInclusive(0.5, 0.95, 0.99)"
PCTS_IF = "quantilesExactInclusiveIf(0.5, 0.95, 0.99)"

AUTO_INTERVALS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 10_000
DEFAULT_POINTS = 300


def rnd(v: float | None, n: int = 6) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else round(f, n)


def pcts(vals: Sequence[float] | None, n: int = 6) -> dict[str, float | None]:
    if not vals or len(vals) != 3:
        return {"p50": None, "p95": None, "p99": None}
    return {"p50": rnd(vals[0], n), "p95": rnd(vals[1], n), "p99": rnd(vals[2], n)}


def interval_seconds(scope: Scope, interval: str | int | None) -> int:
    """Bucket width in seconds: ``auto`` (or absent) picks a round width giving at most ~300 buckets; ``0`` or
    ``window`` is one bucket for the whole window; otherwise whole seconds, at most 10,000 buckets."""
    span_s = max(1, (scope.end_ms - scope.start_ms) // 1000)
    if interval is None or interval == "" or interval == "auto":
        for iv in AUTO_INTERVALS:
            if span_s / iv <= DEFAULT_POINTS:
                return iv
        return AUTO_INTERVALS[-1]
    if interval in ("0", 0, "window"):
        return 0
    try:
        iv = int(interval)
    except (TypeError, ValueError):
        raise QueryError(f"interval must be auto, window or whole seconds, got {str(interval)[:64]!r}") from None
    if iv < 1:
        raise QueryError(f"interval must be at least 1 second, got {iv}")
    if span_s / iv > MAX_BUCKETS:
        raise QueryError(f"interval {iv}s gives more than {MAX_BUCKETS} buckets over this window; widen it")
    return iv


def bucket_sql(column: str = "Timestamp") -> str:
    """Bucket start in epoch ms for an interval bound as ``{interval_ms:Int64}`` (0 = the window's start)."""
    return (
        f"if({{interval_ms:Int64}} = 0, {{from_ms:Int64}}, "
        f"intDiv(toUnixTimestamp64Milli(toDateTime64({column}, 3)), {{interval_ms:Int64}}) * {{interval_ms:Int64}})"
    )


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi) or value != value:
        raise QueryError(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")


# --- statistics ------------------------------------------------------------------------------------
MAD_SCALE = 1.4826  # MAD * 1.4826 estimates the standard deviation of a normal distribution


def psi(baseline: np.ndarray, current: np.ndarray, *, eps: float = 1e-4) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    b = baseline / max(baseline.sum(), 1)
    c = current / max(current.sum(), 1)
    b = np.clip(b, eps, None)
    c = np.clip(c, eps, None)
    return float(np.sum((c - b) * np.log(c / b)))


def psi_continuous(baseline: np.ndarray, current: np.ndarray, *, bins: int = 10) -> tuple[float, int]:
    """(PSI over the baseline's deciles, bins used): ties collapse bins, integer metrics get fewer, wider ones.
    Sorted samples (``sorted_sample``, as drift keeps them) are read in order: a bin's count is two binary searches,
    not one per value; others are sorted first."""
    baseline, current = _ascending(baseline), _ascending(current)
    edges = np.unique(quantiles_sorted(baseline, np.linspace(0, 1, bins + 1)[1:-1]))
    # value x falls in bin k when edges[k-1] <= x < edges[k]: counts are differences of "values below the edge"
    bc = np.diff(np.searchsorted(baseline, edges, side="left"), prepend=0, append=len(baseline))
    cc = np.diff(np.searchsorted(current, edges, side="left"), prepend=0, append=len(current))
    return psi(bc.astype(float), cc.astype(float)), len(edges) + 1


def sorted_sample(values: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(values, dtype=float))


def _ascending(x: np.ndarray) -> np.ndarray:
    """``x`` if it is sorted already (an O(n) check), else sorted."""
    x = np.asarray(x, dtype=float)
    return x if len(x) < 2 or bool(np.all(x[1:] >= x[:-1])) else np.sort(x)


def quantiles_sorted(x: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """``np.quantile(x, qs)`` (its default, linear method) of a sorted sample, without partitioning it again."""
    return np.quantile(x, qs, method="linear") if len(x) < 2 else _lerp_sorted(x, qs)


def _lerp_sorted(x: np.ndarray, qs: np.ndarray) -> np.ndarray:
    pos = np.asarray(qs, dtype=float) * (len(x) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(x) - 1)
    t = pos - lo
    a, b = x[lo], x[hi]
    # numpy's lerp: from the nearer end, so equal neighbours give exactly their value
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def median_sorted(x: np.ndarray) -> float:
    n = len(x)
    return float(x[n // 2]) if n % 2 else float((x[n // 2 - 1] + x[n // 2]) / 2)


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D, asymptotic p-value with Stephens' small-sample correction). Ties make it
    conservative (a smaller D), never anti-conservative. Fastest on sorted samples (the merge below is then one
    pass), right on any."""
    n1, n2 = len(a), len(b)
    # the two samples merged in order (a stable sort of two sorted runs is a merge); the CDFs' difference walks up
    # 1/n1 at each point of a and down 1/n2 at each of b, and is compared where a run of equal values ends
    allv = np.concatenate([a, b])
    order = np.argsort(allv, kind="stable")
    walk = np.cumsum(np.where(order < n1, 1.0 / n1, -1.0 / n2))
    ends = np.flatnonzero(np.diff(allv[order]) != 0)
    d = float(max(np.max(np.abs(walk[ends]), initial=0.0), abs(walk[-1])))
    en = math.sqrt(n1 * n2 / (n1 + n2))
    return d, kolmogorov_q((en + 0.12 + 0.11 / en) * d)


def kolmogorov_q(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution."""
    if lam < 0.2:
        return 1.0
    s, sign = 0.0, 1.0
    for j in range(1, 101):
        term = sign * math.exp(-2.0 * j * j * lam * lam)
        s += term
        if abs(term) < 1e-12:
            break
        sign = -sign
    return float(min(1.0, max(0.0, 2.0 * s)))


def chi2_homogeneity(baseline: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two count vectors come from one distribution: (statistic, p-value by the
    Wilson-Hilferty normal approximation)."""
    keep = (baseline + current) > 0
    table = np.vstack([baseline[keep], current[keep]]).astype(float)
    if table.shape[1] < 2 or table.sum(axis=1).min() == 0:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    df = table.shape[1] - 1
    return stat, chi2_sf(stat, df)


def chi2_sf(x: float, df: int) -> float:
    if x <= 0:
        return 1.0
    z = ((x / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def robust_center(values: np.ndarray) -> tuple[float, float]:
    """(median, MAD) of the values."""
    med = float(np.median(values))
    return med, float(np.median(np.abs(values - med)))


def as_dict_rows(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}
