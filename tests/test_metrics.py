"""Rank correlations (SciPy's, behind eps.metrics) against brute-force pair-counting definitions written out here."""

import math

import numpy as np
import pytest

from eps.metrics import kendall_tau, rank_average, spearman_rho

pytestmark = pytest.mark.unit


def brute_kendall_tau_b(x, y):
    """tau-b straight from the definition: O(n^2) loop over all pairs."""
    n = len(x)
    conc = disc = tie_x = tie_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = np.sign(x[i] - x[j])
            dy = np.sign(y[i] - y[j])
            if dx == 0:
                tie_x += 1
            if dy == 0:
                tie_y += 1
            if dx != 0 and dy != 0:
                if dx == dy:
                    conc += 1
                else:
                    disc += 1
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - tie_x) * (n0 - tie_y))
    return (conc - disc) / denom if denom > 0 else float("nan")


def brute_average_rank(x):
    """Rank of x[i] = 1 + #smaller + (#equal others) / 2."""
    x = list(x)
    return np.array([1 + sum(v < xi for v in x) + (sum(v == xi for v in x) - 1) / 2 for xi in x])


def brute_spearman(x, y):
    rx, ry = brute_average_rank(x), brute_average_rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / math.sqrt((rx * rx).sum() * (ry * ry).sum()))


@pytest.mark.parametrize("seed", range(20))
def test_kendall_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    # Few distinct values force many ties in each variable and jointly.
    x = rng.integers(0, int(rng.integers(1, 8)) + 1, size=n).astype(float)
    y = rng.integers(0, int(rng.integers(1, 8)) + 1, size=n).astype(float)
    expected = brute_kendall_tau_b(x, y)
    got = kendall_tau(x, y)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_kendall_matches_brute_force_continuous(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 200))
    x = rng.normal(size=n)
    y = x + rng.normal(scale=float(rng.uniform(0.1, 3)), size=n)
    assert kendall_tau(x, y) == pytest.approx(brute_kendall_tau_b(x, y), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_spearman_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    x = rng.integers(0, 5, size=n).astype(float)
    y = rng.integers(0, 5, size=n) + 0.5 * x
    if len(set(x)) < 2 or len(set(y)) < 2:
        assert math.isnan(spearman_rho(x, y))
    else:
        assert spearman_rho(x, y) == pytest.approx(brute_spearman(x, y), abs=1e-12)


def test_rank_average_matches_brute_force():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 6, size=50)
    np.testing.assert_allclose(rank_average(x), brute_average_rank(x))
    np.testing.assert_allclose(rank_average([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert rank_average([]).size == 0


def test_known_small_cases():
    a = [1, 2, 3, 4, 5]
    # SciPy divides by two square roots, so a perfect agreement may come out a rounding step short of 1
    assert kendall_tau(a, a) == pytest.approx(1.0, abs=1e-12)
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0, abs=1e-12)
    assert spearman_rho(a, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman_rho(a, a[::-1]) == pytest.approx(-1.0)
    # Monotone but non-linear: both rank measures are still exactly 1.
    assert kendall_tau(a, np.exp(a)) == pytest.approx(1.0, abs=1e-12)
    assert spearman_rho(a, np.exp(a)) == pytest.approx(1.0)
    # Textbook tau-b with ties: x = (1,2,2,3), y = (1,3,2,3): C=4, D=0, tied x 1 pair, tied y 1 pair -> 4/5.
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 3]) == pytest.approx(4 / 5)


@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho])
@pytest.mark.filterwarnings("error")  # decided before SciPy is called: no ConstantInputWarning in a study's log
def test_undefined_cases_are_nan(fn):
    assert math.isnan(fn([], []))
    assert math.isnan(fn([1.0], [2.0]))
    assert math.isnan(fn([1, 1, 1], [1, 2, 3]))
    assert math.isnan(fn([1, 2, 3], [4, 4, 4]))
    assert math.isnan(fn([1, float("nan"), 3], [1, 2, 3]))
    assert math.isnan(fn([2.0, 2.0], [1.0, 1.0]))


@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho])
def test_length_mismatch_is_rejected(fn):
    with pytest.raises(ValueError):
        fn([1, 2, 3], [1, 2])


def test_kendall_on_full_benchmark_size():
    rng = np.random.default_rng(0)
    n = 15625
    x = np.round(rng.normal(90, 3, size=n), 2)  # rounded like benchmark accuracies -> real ties
    y = x + rng.normal(scale=2, size=n)
    tau = kendall_tau(x, y)
    assert 0.3 < tau < 1.0
    # Cross-check on a subsample with the brute-force definition.
    assert kendall_tau(x[:300], y[:300]) == pytest.approx(brute_kendall_tau_b(x[:300], y[:300]), abs=1e-12)
