"""Fidelity to the reference implementation (spec §6 items 7 and 8, issue 12): off-path optimiser updates, selection
ties, the DARTS RNN's first round, the DARTS retrain precision, and exact restore of every global RNG."""
import copy
import random

import numpy as np
import pytest
import torch

from eps.params import defaults
from eps.selection import Candidate, choose
from eps.spaces import get_space
from eps.spaces.nb201.model import OPS
from eps.train.common import rng_state, set_rng_state
from tests.conftest import DATA_ROOT, run_eps, write_tiny_params

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

A = (OPS.index("nor_conv_3x3"),) * 6   # every edge a 3x3 conv
B = (OPS.index("nor_conv_1x1"),) * 6   # every edge a 1x1 conv
LRS = (0.1, 0.099, 0.097, 0.094)       # four steps of a decaying schedule


def make_task(mode: str, skip_dead_edges: bool = True):
    section = copy.deepcopy(defaults()["nb201"])
    section["space"].update(channels=4, cells_per_stage=1)
    section["search"].update(batch_size=32, fitness_batch_size=50)
    section["supernet"].update(data_subset=200, optimizer_updates=mode, skip_dead_edges=skip_dead_edges)
    torch.manual_seed(0)
    space = get_space("nb201", section)
    return section, space.search_task(section, DATA_ROOT, torch.device("cpu"), seed=7)


def conv3(task):
    """The 3x3 conv weight of edge 0 of the first cell: on path A, off path B."""
    cell = next(layer for layer, is_cell in zip(task.model.layers, task.model.is_cell) if is_cell)
    return cell.edges[0][OPS.index("nor_conv_3x3")][1].weight


@pytest.mark.parametrize("skip_dead_edges", [True, False])
def test_off_path_weights_decay_and_carry_momentum_as_the_reference(skip_dead_edges):
    """Reference semantics (PyTorch 1.x zero_grad zero-fills): after a weight was used once, every step applies
    d = g + wd*w, buf = m*buf + d, w -= lr*buf with g = 0 while it is off the path."""
    section, task = make_task("all_used", skip_dead_edges)
    wd, m = section["search"]["weight_decay"], section["search"]["momentum"]
    w = conv3(task)
    task.train_step(A, LRS[0])
    w1 = w.detach().clone()
    buf = task.optimizer.state[w]["momentum_buffer"].clone()
    expect = w1.clone()
    for lr in LRS[1:3]:                       # two steps on B: A's 3x3 conv is off the path
        task.train_step(B, lr)
        buf = m * buf + wd * expect
        expect = expect - lr * buf
    assert not torch.equal(w.detach(), w1)    # it moved although it was not on the path
    torch.testing.assert_close(w.detach(), expect, rtol=0, atol=1e-7)
    task.train_step(A, LRS[3])                # back on the path: a real gradient again
    assert not torch.equal(w.detach(), expect)


def test_path_only_mode_leaves_off_path_weights_untouched():
    _, task = make_task("path_only")
    w = conv3(task)
    task.train_step(A, LRS[0])
    w1 = w.detach().clone()
    task.train_step(B, LRS[1])
    task.train_step(B, LRS[2])
    assert torch.equal(w.detach(), w1)
    task.train_step(A, LRS[3])
    assert not torch.equal(w.detach(), w1)


def test_dead_edges_count_as_used_as_the_reference_computes_them():
    """Edges 1..5 of this cell hang off node 1, which receives only `none`: the fast path skips them, the reference
    computed them and so zero-filled their gradients; both semantics agree on the weights afterwards."""
    none = OPS.index("none")
    dead = (none, *A[1:])
    trained = {}
    for skip in (True, False):
        _, task = make_task("all_used", skip)
        task.train_step(dead, LRS[0])
        task.train_step(B, LRS[1])
        trained[skip] = {k: v.clone() for k, v in task.model.state_dict().items()}
    for k in trained[True]:
        torch.testing.assert_close(trained[True][k], trained[False][k], rtol=0, atol=1e-6, msg=k)


def test_used_weights_survive_a_checkpoint():
    _, a = make_task("all_used")
    a.train_step(A, LRS[0])
    state = copy.deepcopy(a.state_dict())
    _, b = make_task("all_used")
    b.load_state_dict(state)
    for task in (a, b):
        task.train_step(B, LRS[1])
    torch.testing.assert_close(conv3(a), conv3(b), rtol=0, atol=0)


def test_selection_ties_go_to_the_last_op_index_list():
    """Spec §6 item 8: exact (score, params) ties go to the candidate whose list of op indices is last in ascending
    order, as the notebook's scan; the arch strings sort the other way (avg_pool_3x3 is index 4, first as text)."""
    space = get_space("nb201", defaults()["nb201"])
    pool, conv = OPS.index("avg_pool_3x3"), OPS.index("nor_conv_1x1")
    a = space.encode((pool,) + (1,) * 5)       # "|avg_pool_3x3~0|..." : first as text, last by op index
    b = space.encode((conv,) + (1,) * 5)
    assert a < b
    cands = [Candidate(a, 1.0), Candidate(b, 1.0)]
    chosen = choose(cands, lambda arch: 1000, 2000, 1.4, 5.2, order=space.decode)
    assert chosen["size_prior"].arch == a and chosen["prior_free"].arch == a


def test_global_rng_restores_exactly_where_it_was_saved():
    device = torch.device("cpu")
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal(7)               # leaves a cached gaussian and a mid-block position
    np.random.random(5)
    saved = rng_state(device)
    expect = (np.random.random(10).tolist(), np.random.standard_normal(3).tolist(), random.random(),
              torch.rand(3).tolist())
    np.random.seed(99)
    random.seed(99)
    torch.manual_seed(99)
    set_rng_state(saved, device)
    got = (np.random.random(10).tolist(), np.random.standard_normal(3).tolist(), random.random(),
           torch.rand(3).tolist())
    assert got == expect


def test_darts_retrain_is_fp32_by_default():
    assert defaults()["darts-cnn"]["retrain"]["amp"] is False


@pytest.mark.e2e
def test_first_round_can_be_longer_as_the_rnn_reference(tmp_path):
    """search.first_round_steps: 11 then rounds of 10 (the DARTS RNN reference: first fitness after 51 batches)."""
    import json
    params = write_tiny_params(tmp_path, warmup={"iterations": 0},
                               search={"iterations": 41, "val_interval": 10, "first_round_steps": 11})
    run_eps("stage", "search", "--params", params, "--out", tmp_path / "r", one_thread=True)
    lines = (tmp_path / "r" / "nb201" / "search" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [11, 21, 31, 41]
    assert defaults()["darts-rnn"]["search"]["first_round_steps"] == 0
