"""The graph engine (eps/train/graph.py, eps/spaces/nb201/graph.py) computes what the path engine computes.

Losses, gradients, optimiser updates (on and off the path, both ``optimizer_updates`` rules), fitness values and a
whole search agree within fp32 rounding, for random cells and for the cells the path engine special-cases (``none``
edges, dead edges, cells with no live edge at all); compiled, one graph serves every path.
"""
import copy
import json

import numpy as np
import pytest
import torch

from eps.checkpoint import CheckpointDir
from eps.config import defaults
from eps.errors import CheckpointError, ConfigError
from eps.evolution import Controller
from eps.io import AppendLog
from eps.search import run_search
from eps.spaces import get_space
from eps.spaces.nb201.graph import NB201Graph
from eps.spaces.nb201.model import live_edges
from eps.train.graph import GraphSupernetTask, choose_engine
from eps.train.image import ImageSupernetTask
from tests.conftest import DATA_ROOT

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

CPU = torch.device("cpu")
ALL_NONE = (0,) * 6
NO_LIVE_EDGE = (0, 0, 3, 0, 0, 3)      # convs only out of nodes that receive nothing: the cell is all zeros
DEAD_EDGES = (3, 2, 0, 1, 0, 0)        # node 1 feeds only `none` edges: its conv is dead
SPECIAL = [ALL_NONE, NO_LIVE_EDGE, DEAD_EDGES, (3,) * 6, (4, 1, 0, 0, 2, 4), (1, 0, 3, 0, 4, 0)]


def section(**keys):
    """A tiny NB201 section (4 channels, 2 cells per stage); ``keys`` go to ``supernet`` or else ``search``."""
    sec = copy.deepcopy(defaults()["nb201"])
    sec["space"].update(channels=4, cells_per_stage=2)
    sec["search"].update(batch_size=32, fitness_batch_size=50, group=4, population=8, parents=2)
    sec["supernet"].update(data_subset=384)  # 12 training batches of 32, 7 full fitness batches of 50 and one of 34
    for key, value in keys.items():
        sec["supernet" if key in sec["supernet"] else "search"][key] = value
    return sec


def pair(compile=False, fitness_chunk=None, **keys):
    """The same supernet (same initial weights, same streams) under both engines."""
    sec = section(**keys)
    space = get_space("nb201", sec)
    net = sec["supernet"]
    build = lambda: space.build_supernet(net["skip_dead_edges"], net["progressive"], net["new_cell_init"])  # noqa: E731
    torch.manual_seed(0)
    path = ImageSupernetTask(build(), sec, "search", DATA_ROOT, CPU, seed=7)
    graph = GraphSupernetTask(build(), sec, "search", DATA_ROOT, CPU, seed=7, form=NB201Graph, compile=compile,
                              fitness_chunk=fitness_chunk)
    graph.model.load_state_dict(path.model.state_dict())
    return space, path, graph


def random_cells(n, seed):
    space = get_space("nb201", section())
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def assert_same_weights(path, graph, atol=1e-6):
    for (name, a), b in zip(path.model.named_parameters(), graph.model.parameters()):
        assert torch.allclose(a, b, atol=atol, rtol=1e-5, equal_nan=True), (name, (a - b).abs().max().item())


def step_both(path, graph, arch, lr=0.05, **kw):
    """One step of each engine from the same weights; each keeps its own optimiser state (momentum buffers, used
    weights), which is what is compared over a sequence. The weights are re-synchronised before the step because
    some tiny supernets amplify a 1e-7 rounding difference in the weights into 1e-4 in the next gradients (on the
    path engine alone as much), which would hide what the test is about."""
    graph.model.load_state_dict(path.model.state_dict())
    lp, lg = path.train_step(arch, lr, **kw), graph.train_step(arch, lr, **kw)
    assert torch.allclose(lp, lg, atol=1e-5, equal_nan=True), arch
    assert_same_weights(path, graph)
    return lp


def test_the_special_cells_are_what_they_claim():
    assert live_edges(ALL_NONE) == () and live_edges(NO_LIVE_EDGE) == ()
    assert 0 not in {e for e, _, _ in live_edges(DEAD_EDGES)}  # the conv into node 1 is dead


@pytest.mark.parametrize("skip_dead", [True, False])
def test_losses_and_gradients_equal_the_path_engine(skip_dead):
    _, path, graph = pair(skip_dead_edges=skip_dead)
    form = graph.form
    x, y = path.train.next()
    for arch in SPECIAL + random_cells(3, 0):
        path.model.zero_grad(set_to_none=True)
        loss = path._loss(arch, x, y)
        loss.backward()
        sel = form.selection(arch)[None]
        grads, value = torch.func.grad_and_value(
            lambda ps: form.losses(ps, x[None], y[None], sel, form.depth, 0.1)[0])(list(form.params))
        assert torch.allclose(value, loss, atol=1e-5), arch
        grad_mask, _ = form.masks(arch, form.depth)
        for k, ((name, p), g) in enumerate(zip(path.model.named_parameters(), grads)):
            assert (p.grad is not None) == bool(grad_mask[k]), (arch, name)
            expected = p.grad if p.grad is not None else torch.zeros_like(g)
            assert torch.allclose(g, expected, atol=2e-5, rtol=1e-4), (arch, name, (g - expected).abs().max())


@pytest.mark.parametrize("updates", ["all_used", "path_only"])
@pytest.mark.parametrize("a, b", [((3,) * 6, (2, 2, 0, 2, 0, 0)), (NO_LIVE_EDGE, DEAD_EDGES), ((1, 3, 4, 2, 0, 3), ALL_NONE)])
def test_updates_on_and_off_the_path_after_a_b_b_a(updates, a, b):
    """The weights a path engine moves, and by how much, after A, B, B, A: off-path momentum and decay under
    all_used, none under path_only; never-used weights (stem and residual blocks when A has no live edge) stay."""
    _, path, graph = pair(optimizer_updates=updates)
    for k, arch in enumerate((a, b, b, a)):
        step_both(path, graph, arch)
        if k == 0 and a == NO_LIVE_EDGE:  # a first step without a live edge reaches only the classifier
            assert not any(n.startswith("stem") or ".conv_" in n or "downsample" in n for n in graph.state_dict()["used"])
    sp, sg = path.state_dict(), graph.state_dict()
    assert sorted(sp["used"]) == sorted(sg["used"])
    assert sp["optimizer"]["state"].keys() == sg["optimizer"]["state"].keys()
    for k, st in sp["optimizer"]["state"].items():
        bp, bg = st["momentum_buffer"], sg["optimizer"]["state"][k]["momentum_buffer"]
        assert torch.allclose(bp, bg, atol=1e-5, rtol=1e-4), (k, (bp - bg).abs().max())


def test_checkpoints_are_interchangeable_between_engines():
    _, path, graph = pair()
    for arch in random_cells(3, 5) + [NO_LIVE_EDGE]:
        path.train_step(arch, 0.05)
    graph.load_state_dict(path.state_dict())
    sp, sg = path.state_dict(), graph.state_dict()
    assert sorted(sp["used"]) == sorted(sg["used"]) and sp["steps"] == sg["steps"]
    assert sp["optimizer"]["state"].keys() == sg["optimizer"]["state"].keys()
    assert all(torch.equal(v["momentum_buffer"], sg["optimizer"]["state"][k]["momentum_buffer"])
               for k, v in sp["optimizer"]["state"].items())
    step_both(path, graph, (3, 0, 4, 2, 1, 3))
    _, path2, _ = pair()
    path2.load_state_dict(graph.state_dict())
    step_both(path2, graph, (2, 2, 0, 2, 0, 0))


def test_progressive_depth_and_skipped_steps_match():
    _, path, graph = pair(progressive=[2])
    for arch in [(3, 1, 2, 4, 3, 1), DEAD_EDGES, (2, 3, 0, 4, 1, 3)]:  # the second cell of each stage joins at step 2
        step_both(path, graph, arch, skip_nonfinite=True)
    # a non-finite step is skipped by both (no weight moves) and still marks the weights it touched as used
    weights = path.model.state_dict()
    weights["classifier.bias"][0] = float("nan")
    path.model.load_state_dict(weights)
    before = [p.detach().clone() for p in path.model.parameters()]
    assert not torch.isfinite(step_both(path, graph, (3,) * 6, skip_nonfinite=True))
    for p, q, r in zip(before, path.model.parameters(), graph.model.parameters()):
        assert torch.equal(p.nan_to_num(), q.nan_to_num()) and torch.equal(p.nan_to_num(), r.nan_to_num())
    assert sorted(path.state_dict()["used"]) == sorted(graph.state_dict()["used"])


@pytest.mark.parametrize("shared, batches", [(False, 1), (False, 2), (True, 2)])
def test_fitness_of_a_group_equals_members_one_by_one(shared, batches):
    cells = SPECIAL + random_cells(2, 2) + [SPECIAL[3]]
    _, path, graph = pair(fitness_shared=shared, fitness_batches=batches, fitness_chunk=3)
    for _ in range(2):  # the second call crosses the end of a pass: a short batch, scored in its own chunk
        fp, fg = path.fitness(cells), graph.fitness(cells)
        assert fg.shape == (len(cells),) and fg.dtype == torch.float32
        assert torch.allclose(fp, fg, atol=2e-5), (fp - fg).abs().max()
    assert path.valid.state_dict()["pos"] == graph.valid.state_dict()["pos"]
    batch = path.validation_batches(2, seed=3)
    assert torch.allclose(path.score(cells, batch), graph.score(cells, batch), atol=2e-5)


def test_a_search_has_the_same_history_with_either_engine(tmp_path):
    """Three rounds of the EPS loop at a small lr: same cells trained, measured, ranked and mutated. The losses
    agree to 2e-3 only: this 4-channel supernet is chaotic (the path engine alone, its stem moved by 1e-7, drifts
    by 1.6e-4 in its weights within 30 steps at lr 1e-4), so rounding differences grow over a run."""
    histories = []
    _, path, graph = pair(iterations=30, val_interval=10, lr=1e-4)
    for name, task in (("path", path), ("graph", graph)):
        sec = section(iterations=30, val_interval=10, lr=1e-4)
        space = get_space("nb201", sec)
        controller = Controller.from_settings(space, np.random.default_rng([0, 2]), sec["search"])
        log = AppendLog(tmp_path / name / "history.jsonl")
        try:
            run_search(space, task, controller, sec["search"], log, CheckpointDir(tmp_path / name / "ckpt", {}))
        finally:
            log.close()
        histories.append([json.loads(line) for line in (tmp_path / name / "history.jsonl").read_text().splitlines()])
    assert len(histories[0]) == len(histories[1]) == 3
    for rp, rg in zip(*histories):
        assert (rp["arch"], rp["count"], rp["age"]) == (rg["arch"], rg["count"], rg["age"])
        assert [v is None for v in rp["loss"]] == [v is None for v in rg["loss"]]
        assert np.allclose([v or 0 for v in rp["loss"]], [v or 0 for v in rg["loss"]], atol=2e-3)
        assert abs(rp["round"]["train_loss"] - rg["round"]["train_loss"]) < 2e-3


def test_engine_choice_and_refusals(tmp_path):
    cuda = torch.device("cuda")
    assert choose_engine("auto", CPU, True) == "path" and choose_engine("auto", cuda, True) == "graph"
    assert choose_engine("auto", cuda, False) == "path" and choose_engine("auto", cuda, True, world=2) == "path"
    assert choose_engine("graph", CPU, True) == "graph" and choose_engine("path", cuda, True) == "path"
    with pytest.raises(ConfigError, match="engine"):
        choose_engine("graph", CPU, True, world=2)
    sec = section(engine="graph")
    assert isinstance(get_space("nb201", sec).search_task(sec, DATA_ROOT, CPU, 0), GraphSupernetTask)
    sec = section()
    assert type(get_space("nb201", sec).search_task(sec, DATA_ROOT, CPU, 0)) is ImageSupernetTask
    with pytest.raises(ConfigError, match="no graph engine"):  # a space without a graph form (DARTS CNN, plug-ins)
        ImageSupernetTask(torch.nn.Linear(1, 1), section(engine="graph"), "search", DATA_ROOT, CPU, 0)
    # a search resumes only with the engine it started with: the supernet section is in the checkpoint identity
    ident = lambda engine: {"supernet": section(engine=engine)["supernet"]}  # noqa: E731
    CheckpointDir(tmp_path, ident("path")).save({"x": 1})
    with pytest.raises(CheckpointError, match=r"changed: supernet\.engine"):
        CheckpointDir(tmp_path, ident("graph")).load_latest()


@pytest.mark.slow
def test_compiled_once_for_every_path_with_no_graph_break(monkeypatch):
    """Inductor on the CPU: one training graph and one fitness graph for 20 different paths (the none-only and
    dead-edge cells among them), any recompilation an error; values still those of the path engine."""
    dynamo = torch._dynamo
    dynamo.reset()
    dynamo.utils.counters.clear()
    monkeypatch.setattr(dynamo.config, "error_on_recompile", True)
    _, path, graph = pair(compile=True, fitness_chunk=4, data_subset=320, fitness_batch_size=40)  # no short batch
    cells = SPECIAL + random_cells(14, 9)
    for arch in cells:
        # from the same weights each step (as step_both): inductor's reordered float sums differ by rounding, which
        # this tiny supernet amplifies over steps; the in-place copy also shows the compiled step reads live weights
        graph.model.load_state_dict(path.model.state_dict())
        lp, lg = path.train_step(arch, 0.05), graph.train_step(arch, 0.05)
        assert torch.allclose(lp, lg, atol=1e-4), arch
    # Each engine keeps its own momentum buffers over the 20 steps, and a rounding difference that flips one ReLU
    # changes a few gradient entries outright, so single weights can drift apart (measured up to 8e-4 on weights of
    # about 0.3); the weights as a whole stay the same (relative difference of the whole parameter vector).
    pairs = list(zip(path.model.parameters(), graph.model.parameters()))
    diff = sum(float(((a - b).detach() ** 2).sum()) for a, b in pairs) ** 0.5
    norm = sum(float((a.detach() ** 2).sum()) for a, _ in pairs) ** 0.5
    assert diff / norm < 1e-3, diff / norm
    fp, fg = path.fitness(cells[:4]), graph.fitness(cells[:4])
    fp2, fg2 = path.fitness(cells[4:8]), graph.fitness(cells[4:8])
    assert torch.allclose(torch.cat([fp, fp2]), torch.cat([fg, fg2]), atol=1e-4)
    counters = dynamo.utils.counters
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 2  # the step and the fitness function, each compiled once
    dynamo.reset()
