import math

import pytest

from eps.selection import choose, collect_candidates, snapshot_winner

pytestmark = pytest.mark.unit

A, B, C, D = "a" * 3, "b" * 3, "c" * 3, "d" * 3
PARAMS = {A: 100, B: 50, C: 100, D: 25}


def snap(it, members):
    arch, loss, count = zip(*members)
    return {"iteration": it, "arch": list(arch), "loss": list(loss), "count": list(count), "age": [0] * len(arch)}


HISTORY = [
    snap(50, [(D, 0.1, 1), (A, 2.0, 1)]),            # outside the window (final 200, window 120 -> > 80)
    snap(100, [(A, 1.0, 1), (B, 0.9, 1), (D, None, 0)]),   # winner B @0.9; unmeasured D ignored
    snap(150, [(A, 0.8, 2), (B, 0.95, 2), (C, 0.8, 1)]),   # tie at 0.8 -> first in queue order: A
    snap(200, [(B, 0.7, 3), (C, 0.85, 2), (A, 0.75, 3)]),  # winner B again -> latest loss 0.7
]


def test_snapshot_winner_ignores_unmeasured():
    assert snapshot_winner(snap(1, [(A, None, 0), (B, 3.0, 1)])) == (B, 3.0)
    assert snapshot_winner(snap(1, [(A, None, 0)])) is None


def test_candidates_keep_latest_winning_loss():
    cands, final = collect_candidates(HISTORY, window=120)
    assert final == 200
    got = {c.arch: (c.loss, c.wins) for c in cands}
    assert got == {B: (0.7, 2), A: (0.8, 1)}


def test_both_rules():
    cands, _ = collect_candidates(HISTORY, window=120)
    chosen = choose(cands, PARAMS.get, max_params=100, alpha=1.4, beta=5.2)
    # prior-free: lowest latest loss -> B (0.7)
    assert chosen["prior_free"].arch == B
    # size prior: A 0.8 + 1.4 e^-5.2 = 0.8077; B 0.7 + 1.4 e^-2.6 = 0.8040 -> B
    assert chosen["size_prior"].score == pytest.approx(0.7 + 1.4 * math.exp(-2.6))
    assert chosen["size_prior"].arch == B
    # a stronger prior flips it to the larger model
    assert choose(cands, PARAMS.get, 100, alpha=3.0, beta=5.2)["size_prior"].arch == A


def test_ties_go_to_the_larger_model():
    hist = [snap(10, [(A, 1.0, 1)]), snap(20, [(D, 1.0, 1)])]
    cands, _ = collect_candidates(hist, window=100)
    chosen = choose(cands, PARAMS.get, 100, alpha=0.0, beta=5.2)
    assert chosen["size_prior"].arch == A and chosen["prior_free"].arch == A
