"""The predictor variant (spec §1.8, §5 item 13): shapes, learning, the controller with it, resume."""
import numpy as np
import pytest
import torch

from eps import checkpoint
from eps.params import defaults
from eps.evolution import Controller
from eps.metrics import kendall_tau
from eps.predictor import Predictor
from eps.spaces import get_space

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def space():
    return get_space("nb201", defaults()["nb201"])


def planted(space, archs):
    """A synthetic fitness loss: a fixed cost per (edge, op), plus an interaction of two edges."""
    w = np.random.default_rng(42).normal(size=(6, 5))
    return np.array([sum(w[e, op] for e, op in enumerate(a)) + 0.5 * (a[0] == a[5]) for a in archs])


def test_features_shapes(space):
    arch = space.sample(np.random.default_rng(0))
    assert space.features(arch).shape == (6,) and space.features(arch).dtype == np.float32
    hot = space.features(arch, "one_hot")
    assert hot.shape == (30,) and hot.sum() == 6


def test_fixed_shapes_compare_each_prediction_with_its_own_target():
    p = Predictor(6, seed=0)
    x, y = torch.randn(8, 6), torch.randn(8)
    out = p.net(x).squeeze(-1)
    assert out.shape == y.shape
    torch.testing.assert_close(p.loss(x, y), ((out - y) ** 2).mean())
    ref = Predictor(6, seed=0, reference_shapes=True)
    torch.testing.assert_close(ref.loss(x, y), ((ref.net(x) - y[None, :]) ** 2).mean())  # the B x B broadcast


@pytest.mark.parametrize("kind,least", [("ordinal", 0.2), ("one_hot", 0.6)])
def test_predictor_ranks_a_planted_fitness_better_than_chance(space, kind, least):
    """Kendall tau on 256 held-out cells; under chance it is 0 with a standard deviation of about 0.04, so 0.2 is
    five of them. One-hot inputs make the planted per-(edge, op) costs linear, and the fit much better."""
    rng = np.random.default_rng(1)
    train = [space.sample(rng) for _ in range(256)]
    test = [space.sample(rng) for _ in range(256)]
    p = Predictor(len(space.features(train[0], kind)), seed=3, steps=600)
    p.fit(np.array([space.features(a, kind) for a in train]), planted(space, train))
    tau = kendall_tau(p.predict(np.array([space.features(a, kind) for a in test])), planted(space, test))
    assert tau > least, tau


def test_controller_with_predictor_proposes_the_best_predicted_and_resumes_exactly(space):
    cfg = {**defaults()["nb201"]["search"], "population": 16, "group": 8, "parents": 2, "proposer": "predictor",
           "predictor_candidates": 32}
    a = Controller.from_settings(space, np.random.default_rng([0, 2]), cfg)
    rng = np.random.default_rng(5)

    def run(ctrl, rounds):
        for _ in range(rounds):
            idx = ctrl.to_measure()
            ctrl.record_fitness(idx, (planted(space, [ctrl.population[i].arch for i in idx])
                                      + rng.normal(0, 0.01, len(idx))).tolist())
            ctrl.evolve()

    run(a, 3)
    state = checkpoint.loads(checkpoint.dumps(a.state_dict()))  # through a real checkpoint (weights_only load)
    b = Controller.from_settings(space, np.random.default_rng([9, 9]), cfg)
    b.load_state_dict(state)
    rng_state = rng.bit_generator.state
    run(a, 2)
    rng.bit_generator.state = rng_state
    run(b, 2)
    assert [m.as_state() for m in a.population] == [m.as_state() for m in b.population]
    assert a.round == 5 and len(a.population) == 16


def test_predictor_needs_a_featurizable_space():
    from eps.errors import ConfigError

    class Bare:
        name = "bare"

        def sample(self, rng):
            return 0

    cfg = {**defaults()["nb201"]["search"], "population": 4, "group": 2, "parents": 1, "proposer": "predictor"}
    with pytest.raises(ConfigError, match="proposer"):
        Controller.from_settings(Bare(), np.random.default_rng(0), cfg)
