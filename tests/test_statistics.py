"""Drift's statistics (collector/analytics_common.py) against the textbook forms they replace for speed: the same
values on random samples with and without ties, sorted or not."""

from __future__ import annotations

import numpy as np
import pytest

from agentwatch.collector import analytics_common as C


def _samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n1, n2 = rng.integers(2, 400, 2)
    if seed % 3 == 0:  # integer metrics (steps, tokens): many ties
        return rng.integers(0, 25, n1).astype(float), rng.integers(0, 28, n2).astype(float)
    if seed % 3 == 1:
        return rng.lognormal(size=n1), rng.lognormal(0.2, size=n2)
    return np.round(rng.normal(size=n1), 2), np.round(rng.normal(0.1, size=n2), 2)


def _psi_by_value(baseline: np.ndarray, current: np.ndarray, bins: int = 10) -> tuple[float, int]:
    """PSI over the baseline's deciles, each value binned on its own (the form before sorted samples)."""
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)[1:-1]))
    bc = np.bincount(np.searchsorted(edges, baseline, side="right"), minlength=len(edges) + 1)
    cc = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    return C.psi(bc.astype(float), cc.astype(float)), len(edges) + 1


def _ks_by_search(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    allv = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, allv, side="right") / len(a)
                               - np.searchsorted(b, allv, side="right") / len(b))))  # fmt: skip


@pytest.mark.parametrize("seed", range(60))
def test_sorted_sample_statistics_equal_numpy_and_the_textbook_forms(seed):
    a, b = _samples(seed)
    sa, sb = C.sorted_sample(a), C.sorted_sample(b)
    qs = np.linspace(0, 1, 11)[1:-1]
    assert np.array_equal(C.quantiles_sorted(sa, qs), np.quantile(a, qs))
    assert C.median_sorted(sa) == np.median(a)
    want = _psi_by_value(a, b)
    assert C.psi_continuous(sa, sb) == want
    assert C.psi_continuous(a, b) == want  # unsorted samples are sorted first, not binned wrong
    d = _ks_by_search(a, b)
    assert C.ks_2samp(sa, sb)[0] == pytest.approx(d, abs=1e-12)
    assert C.ks_2samp(a, b)[0] == pytest.approx(d, abs=1e-12)
