"""Every speed-up keeps the method identical: the fast path gives the plain path's losses, cell by cell."""
import copy

import numpy as np
import pytest
import torch

from eps.params import defaults
from eps.spaces.nb201.model import BoxMean3x3
from eps.spaces import get_space
from eps.train import common
from eps.train.common import amp_active
from tests.conftest import DATA_ROOT

pytestmark = pytest.mark.unit


def make_task(**keys):
    """A tiny NB201 task; ``keys`` go to the ``supernet`` section when they belong there, else to ``search``."""
    section = copy.deepcopy(defaults()["nb201"])
    section["space"].update(channels=4, cells_per_stage=1)
    section["search"].update(batch_size=32, fitness_batch_size=50)
    section["supernet"].update(data_subset=400)
    for key, value in keys.items():
        section["supernet" if key in section["supernet"] else "search"][key] = value
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


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 16, 32, 32), (5, 2, 3, 7)])
def test_box_mean_equals_avg_pool_values_and_gradients(shape, fmt):
    x = torch.randn(*shape).contiguous(memory_format=fmt).requires_grad_()
    g = torch.randn(*shape)
    ref = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    out = BoxMean3x3()(x)
    assert torch.allclose(out, ref, atol=1e-6)
    (gr,), (go,) = torch.autograd.grad(ref, x, g), torch.autograd.grad(out, x, g)
    assert torch.allclose(go, gr, atol=1e-6)


def test_fitness_before_any_training_step_then_training():
    """Constants built lazily inside fitness's inference_mode must still be usable by a later training step."""
    space, task = make_task()
    pool_cell = (4, 4, 4, 4, 4, 4)
    first = task.fitness([pool_cell])
    loss = task.train_step(pool_cell, 0.05)
    assert torch.isfinite(first).all() and torch.isfinite(loss)


def test_amp_takes_effect_on_cuda_and_on_cpus_with_native_bf16(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not amp_active(cpu, False) and amp_active(cuda, True) and not amp_active(cuda, False)
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    assert not amp_active(cpu, True)
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)
    assert amp_active(cpu, True)


def test_bf16_fast_path_stays_within_bf16_tolerance_of_the_fp32_plain_path(monkeypatch):
    """``amp: true`` (bf16 autocast) changes rounding only: same cells, same batches, losses within bf16 tolerance."""
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)  # exercise bf16 on any CPU (emulated if need be)
    space, fast = make_task(channels_last=True, skip_dead_edges=True, amp=True)
    _, plain = make_task(channels_last=False, skip_dead_edges=False, amp=False)
    rng = np.random.default_rng(3)
    cells = [space.sample(rng) for _ in range(5)] + [(4, 4, 4, 4, 4, 4), (3, 2, 4, 1, 3, 4)]
    for arch in cells:
        plain.model.load_state_dict(fast.model.state_dict())
        lf, lp = fast.train_step(arch, 0.05), plain.train_step(arch, 0.05)
        assert abs(lf.item() - lp.item()) < 2e-2 * max(1.0, abs(lp.item())), arch
    plain.model.load_state_dict(fast.model.state_dict())
    ff, fp = fast.fitness(cells), plain.fitness(cells)
    assert torch.allclose(ff, fp, rtol=2e-2, atol=2e-2)
    assert not torch.equal(ff, fp)  # bf16 really ran: rounding differs from fp32
