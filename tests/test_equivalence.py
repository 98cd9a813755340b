"""Every speed-up keeps the method identical: the fast path gives the plain path's losses, cell by cell."""
import copy

import numpy as np
import pytest
import torch

from eps.config import defaults
from eps.spaces import get_space
from tests.conftest import DATA_ROOT


def make_task(**search):
    section = copy.deepcopy(defaults()["nb201"])
    section["space"].update(channels=4, cells_per_stage=1)
    section["search"].update(batch_size=32, fitness_batch_size=50, data_subset=400, **search)
    torch.manual_seed(0)
    space = get_space("nb201", section)
    return space, space.search_task(section, DATA_ROOT, torch.device("cpu"), seed=7)


def test_fast_task_equals_plain_task_over_training_and_fitness():
    space, fast = make_task(channels_last=True, skip_dead_edges=True)
    _, plain = make_task(channels_last=False, skip_dead_edges=False)
    rng = np.random.default_rng(0)
    cells = [space.sample(rng) for _ in range(6)] + [(3, 0, 0, 1, 0, 0), (0,) * 6]
    for arch in cells:
        # Same weights and the same batch (both streams are seeded alike) before every step. Weights of edges that
        # cannot affect the output get no update on the fast path (no gradient), a zero gradient on the plain one,
        # so only per-step equality is the method's invariant.
        plain.model.load_state_dict(fast.model.state_dict())
        lf, lp = fast.train_step(arch, 0.05), plain.train_step(arch, 0.05)
        assert torch.allclose(lf, lp, atol=1e-5), arch
    plain.model.load_state_dict(fast.model.state_dict())
    ff, fp = fast.fitness(cells), plain.fitness(cells)
    assert torch.allclose(ff, fp, atol=1e-5)


def test_shared_fitness_scores_each_distinct_cell_once_with_the_same_result():
    space, task = make_task(fitness_shared=True, fitness_batches=2)
    rng = np.random.default_rng(1)
    a, b = space.sample(rng), space.sample(rng)
    state = task.valid.state_dict()
    with_dups = task.fitness([a, b, a, a])
    task.valid.load_state_dict(state)
    distinct = task.fitness([a, b])
    assert torch.equal(with_dups, distinct[[0, 1, 0, 0]])


def test_fitness_uses_next_batch_per_member_when_unshared():
    space, task = make_task()
    arch = space.largest()
    s = task.fitness([arch, arch, arch])
    assert len(set(s.tolist())) == 3  # three different batches -> three different losses
