"""Rank-correlation metrics: how well a supernet's ranking of architectures agrees with a benchmark's ground truth.

The coefficients themselves are SciPy's (``scipy.stats.kendalltau``, tau-b by default, and ``scipy.stats.spearmanr``,
average ranks for ties); this module only fixes what eps needs around them:

- ``kendall_tau``: Kendall's tau-b, the tie-corrected variant (benchmark accuracies are rounded to 0.01 %, so ties are
  common); SciPy's is O(n log n), so all 15,625 NAS-Bench-201 cells take milliseconds;
- ``spearman_rho``: Pearson's correlation of average ranks (ties share the mean of the ranks they span).

Both return ``float('nan')`` when the coefficient is undefined: fewer than two observations, a constant side, or a
NaN among the inputs (a missing accuracy must not silently become a number). These cases are decided here, before
SciPy is called, rather than left to SciPy: its answer to them (NaN plus a ``ConstantInputWarning`` or
``SmallSampleWarning``, or an error for empty input, depending on its version) is not a stable contract, and a study
computes thousands of these coefficients where a warning per degenerate case would bury the log.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["kendall_tau", "spearman_rho", "rank_average"]


def _stats():
    """``scipy.stats``, imported on first use: its import takes about a second, which every eps command would pay."""
    from scipy import stats
    return stats


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float arrays of equal length; a length mismatch is a caller bug (``ValueError``)."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    return xa, ya


def _undefined(xa: np.ndarray, ya: np.ndarray) -> bool:
    """Whether a rank correlation of ``xa`` and ``ya`` is undefined: n < 2, a NaN, or a constant side."""
    if xa.size < 2 or np.isnan(xa).any() or np.isnan(ya).any():
        return True
    # exact comparison: a constant side has no pair that is not tied, whatever the values' magnitude
    return bool((xa == xa[0]).all() or (ya == ya[0]).all())


def rank_average(x) -> np.ndarray:
    """1-based ranks of ``x`` (shape (n,)) in ascending order, tied values sharing the average of the ranks they
    occupy: ``scipy.stats.rankdata(x, method="average")`` as float64, empty for an empty ``x``."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    if xa.size == 0:
        return np.empty(0, dtype=np.float64)
    return np.asarray(_stats().rankdata(xa, method="average"), dtype=np.float64)


def _clipped(value: float) -> float:
    # Rounding can push a perfect agreement a hair past +-1.
    return float(min(1.0, max(-1.0, value))) if math.isfinite(value) else float("nan")


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between ``x`` and ``y`` (1-D, same length); NaN if n < 2, a side is constant, or an input is
    NaN. ``ValueError`` when the lengths differ.

    tau-b = (C - D) / sqrt((n0 - n1) (n0 - n2)), with C / D the concordant / discordant pairs, n0 = n(n-1)/2 and
    n1 / n2 the pairs tied in x / y (Kendall 1945; ``scipy.stats.kendalltau(variant="b")``, which computes it).
    """
    xa, ya = _as_pair(x, y)
    if _undefined(xa, ya):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate inputs are already excluded above
        return _clipped(float(_stats().kendalltau(xa, ya, variant="b").statistic))


def spearman_rho(x, y) -> float:
    """Spearman's rho (Pearson correlation of average ranks) between ``x`` and ``y`` (1-D, same length); NaN if
    n < 2, a side is constant, or an input is NaN. ``ValueError`` when the lengths differ.
    Computed by ``scipy.stats.spearmanr``."""
    xa, ya = _as_pair(x, y)
    if _undefined(xa, ya):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _clipped(float(_stats().spearmanr(xa, ya).statistic))
