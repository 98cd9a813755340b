"""Rank-correlation metrics, in pure NumPy.

These measure how well a supernet's ranking of architectures agrees with the benchmark's ground truth. SciPy is
deliberately not a dependency, so the two coefficients are implemented here:

- ``kendall_tau``: Kendall's tau-b (the tie-corrected variant SciPy also computes by default), in O(n log^2 n)
  through a vectorised bottom-up merge count, so that all 15,625 NAS-Bench-201 cells take milliseconds;
- ``spearman_rho``: Pearson's correlation of average ranks (ties share the mean of the ranks they span).

Both return ``float('nan')`` when the coefficient is undefined: fewer than two observations, a constant side, or a
NaN among the inputs (a missing accuracy must not silently become a number).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kendall_tau", "spearman_rho", "rank_average"]


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float arrays of equal length; a length mismatch is a caller bug."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    return xa, ya


def rank_average(x) -> np.ndarray:
    """1-based ranks of ``x`` in ascending order, tied values sharing the average of the ranks they occupy.

    Equivalent to ``scipy.stats.rankdata(x, method="average")``.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    n = xa.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(xa, kind="stable")
    sorted_x = xa[order]
    # A tie group is a maximal run of equal values in sorted order; every member gets the mean of the 1-based
    # positions first+1 .. last+1 of its run.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _tied_pairs(sorted_codes: np.ndarray) -> int:
    """Number of pairs sharing a value, i.e. sum of t(t-1)/2 over tie groups, for an already sorted array."""
    if sorted_codes.size == 0:
        return 0
    boundaries = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    t = np.diff(boundaries).astype(np.int64)
    return int((t * (t - 1) // 2).sum())


def _count_inversions(a: np.ndarray) -> int:
    """Number of pairs i < j with a[i] > a[j] (strictly), for non-negative integer codes ``a``.

    Bottom-up merge sort, one NumPy pass per level: at width w the array is sorted within blocks of w, and each
    right block is merged with the left block before it. Offsetting every value by ``pair_id * m`` makes the
    concatenation of all left blocks one globally sorted array, so a single ``searchsorted`` counts, for every
    right-block element, the left-block elements <= it; the rest of the (full) left block is strictly greater.
    """
    n = a.size
    if n < 2:
        return 0
    a = a.astype(np.int64, copy=True)
    m = int(a.max()) + 1
    idx = np.arange(n, dtype=np.int64)
    total = 0
    w = 1
    while w < n:
        pair = idx // (2 * w)
        is_right = (idx // w) % 2 == 1
        key = pair * m + a
        left_keys = key[~is_right]
        right_keys = key[is_right]
        right_pair_base = pair[is_right] * m
        # A right block exists only after a full left block, so each left block has exactly w elements.
        not_greater = np.searchsorted(left_keys, right_keys, side="right") - np.searchsorted(
            left_keys, right_pair_base, side="left"
        )
        total += int((w - not_greater).sum())
        # Sorting the offset keys sorts within every merged block and leaves blocks in place.
        a = np.sort(key, kind="stable") - pair * m
        w *= 2
    return total


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between ``x`` and ``y``; NaN if n < 2, a side is constant, or an input is NaN.

    tau-b = (C - D) / sqrt((n0 - n1) (n0 - n2)), with C / D the concordant / discordant pairs, n0 = n(n-1)/2 and
    n1 / n2 the pairs tied in x / y.
    """
    xa, ya = _as_pair(x, y)
    n = xa.size
    if n < 2 or np.isnan(xa).any() or np.isnan(ya).any():
        return float("nan")
    # Dense integer codes keep the comparisons exact and the merge count's offsets small.
    xc = np.unique(xa, return_inverse=True)[1].ravel().astype(np.int64)
    yc = np.unique(ya, return_inverse=True)[1].ravel().astype(np.int64)

    n0 = n * (n - 1) // 2
    n1 = _tied_pairs(np.sort(xc))
    n2 = _tied_pairs(np.sort(yc))
    if n0 == n1 or n0 == n2:
        return float("nan")

    # Sorted by x then y, a pair tied in x is never inverted (y ascends inside the tie) and a pair tied in y is not
    # a strict inversion, so the strict inversions of y are exactly the discordant pairs.
    order = np.lexsort((yc, xc))
    xs, ys = xc[order], yc[order]
    n3 = _tied_pairs(xs * (int(yc.max()) + 1) + ys)  # pairs tied in both
    discordant = _count_inversions(ys)
    concordant = n0 - n1 - n2 + n3 - discordant
    tau = (concordant - discordant) / math.sqrt(float(n0 - n1) * float(n0 - n2))
    # Rounding can push a perfect agreement a hair past +-1.
    return float(min(1.0, max(-1.0, tau)))


def spearman_rho(x, y) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN if n < 2, a side is constant, or an input is NaN."""
    xa, ya = _as_pair(x, y)
    n = xa.size
    if n < 2 or np.isnan(xa).any() or np.isnan(ya).any():
        return float("nan")
    rx = rank_average(xa)
    ry = rank_average(ya)
    rx -= rx.mean()
    ry -= ry.mean()
    sxx = float(np.dot(rx, rx))
    syy = float(np.dot(ry, ry))
    # Ranks are multiples of 0.5, so a constant side gives exactly zero spread, not a rounding residue.
    if sxx == 0.0 or syy == 0.0:
        return float("nan")
    rho = float(np.dot(rx, ry)) / math.sqrt(sxx * syy)
    return float(min(1.0, max(-1.0, rho)))
