"""DARTS RNN space on PTB: notation, sampling/mutation, model, search task, retraining (ASGD switch), resume, and a
tiny end-to-end CPU run of the real CLI (warmup -> search -> select -> retrain -> report)."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eps.checkpoint import CheckpointDir
from eps.params import load_params
from eps.data.ptb import PTB_FILES
from eps.errors import ArchError, ConfigError
from eps.evolution import Controller
from eps.io import AppendLog, read_jsonl
from eps.spaces.darts_rnn.model import STEPS, DartsRNNNetwork, DartsRNNSupernet
from eps.search import run_search
from eps.spaces import get_space
from eps.spaces.darts_rnn.space import EXAMPLE, DartsRNNSpace, check_arch, str_to_arch
from eps.train.common import seed_everything
from eps.spaces.darts_rnn.task import retrain_seq_len, search_seq_len, should_switch_to_asgd
from eps.retrain import run_retrain
from tests.conftest import DATA_ROOT, run_eps

needs_ptb = pytest.mark.skipif(
    not all((DATA_ROOT / rel).is_file() for rel, _ in PTB_FILES.values()),
    reason=f"PTB files not found under {DATA_ROOT} (set EPS_DATA_DIR)",
)
DARTS_V2 = EXAMPLE  # DARTS's published recurrent cell

# Tiny sizes: hidden 16, few columns, short sequences. Weak dropouts so that a few epochs show learning.
TINY = {
    "seed": 0,
    "device": "cpu",
    "spaces": ["darts-rnn"],
    "darts-rnn": {
        "space": {"hidden_size": 16, "dropout": 0.1, "dropouth": 0.05, "dropoutx": 0.1, "dropouti": 0.05,
                  "dropoute": 0.0},
        "warmup": {"iterations": 6, "batch_size": 8, "checkpoint_every": 3},
        "supernet": {"data_subset": 8000},
        "search": {"iterations": 30, "val_interval": 5, "population": 8, "group": 4, "parents": 2,
                   "batch_size": 8, "bptt": 10, "fitness_batch_size": 6, "checkpoint_every": 1},
        "select": {"window": 30},
        "retrain": {"epochs": 3, "batch_size": 16, "bptt": 20, "lr": 1.0, "train_subset": 10000,
                    "valid_subset": 3000, "test_subset": 200, "checkpoint_every": 1},
    },
}


pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


def tiny_params(overrides: dict | None = None) -> dict:
    return load_params(None, {**TINY, "darts-rnn": _merge(TINY["darts-rnn"], overrides or {})})


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture
def space() -> DartsRNNSpace:
    return get_space("darts-rnn", load_params(None, {"spaces": ["darts-rnn"]})["darts-rnn"])


# --- notation ---------------------------------------------------------------------------------------------------

def test_darts_v2_round_trip(space):
    arch = space.decode(DARTS_V2)
    assert arch == ((3, 0), (2, 1), (2, 1), (4, 1), (1, 2), (3, 5), (1, 3), (2, 5))
    assert space.encode(arch) == DARTS_V2


def test_lenient_spellings_parse_to_the_same_cell(space):
    arch = space.decode(DARTS_V2)
    variants = [
        DARTS_V2.replace("'", '"'),
        DARTS_V2.replace(", ", ","),
        DARTS_V2.replace("range(1, 9)", "[1, 2, 3, 4, 5, 6, 7, 8]"),
        DARTS_V2.replace("range(1, 9)", "(1, 2, 3, 4, 5, 6, 7, 8,)"),
        "  " + DARTS_V2.replace("(", " ( ").replace("[", "[\n") + "\n",
        "Genotype(concat=range(1, 9), recurrent=" + DARTS_V2.split("recurrent=")[1].split(", concat")[0] + ")",
    ]
    for text in variants:
        assert space.decode(text) == arch, text


def test_random_archs_round_trip(space):
    rng = np.random.default_rng(0)
    for _ in range(300):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch


@pytest.mark.parametrize("text, reason", [
    ("", "expected 'Genotype('"),
    ("Genotype(recurrent=[('tanh', 0)], concat=range(1, 9))", "1 node(s), expected 8"),
    (DARTS_V2.replace("('sigmoid', 0)", "('none', 0)"), "activation 'none'"),
    (DARTS_V2.replace("('sigmoid', 0)", "('swish', 0)"), "unknown activation 'swish'"),
    (DARTS_V2.replace("('relu', 1), ('relu', 1)", "('relu', 2), ('relu', 1)"), "node 1: predecessor 2"),
    (DARTS_V2.replace("range(1, 9)", "range(0, 8)"), "concat is"),
    (DARTS_V2 + " extra", "unexpected text after"),
    (DARTS_V2.replace("concat=range(1, 9)", "normal=range(1, 9)"), "unknown field 'normal'"),
    (DARTS_V2.replace(", concat=range(1, 9)", ""), "missing field concat"),
    (DARTS_V2.replace("('sigmoid', 0)", "('sigmoid', -1)"), "unexpected character '-'"),
    (DARTS_V2.replace("('sigmoid', 0)", "(sigmoid, 0)"), "quoted activation name"),
    ("__import__('os').system('true')", "unexpected character '.'"),
    ("Genotype", "expected '(' after Genotype"),
    ("recurrent=[]", "expected 'Genotype('"),
])
def test_parse_errors_are_clear(space, text, reason):
    with pytest.raises(ArchError, match="darts-rnn genotype") as err:
        space.decode(text)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


def test_non_string_and_bad_internal_archs(space):
    with pytest.raises(ArchError):
        space.decode(None)  # type: ignore[arg-type]
    with pytest.raises(ArchError):
        space.encode(((0, 0),) * 8)          # 'none' as an activation
    with pytest.raises(ArchError):
        check_arch(((1, 0), (1, 2)) + ((1, 0),) * 6)   # predecessor out of range
    with pytest.raises(ArchError):
        check_arch("tanh")


_ALPHABET = st.sampled_from(list("Genotype(recurrent=[('tanh', 0)], concat=range(1, 9))\"0123456789 \n-_x"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.text(_ALPHABET, max_size=200)))
def test_fuzz_only_arch_errors(text):
    try:
        arch = str_to_arch(text)
    except ArchError:
        return
    assert str_to_arch(DartsRNNSpace().encode(arch)) == arch


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(DARTS_V2)), st.integers(0, 8), st.text(_ALPHABET, max_size=6))
def test_fuzz_edits_of_a_valid_genotype(pos, cut, insert):
    text = DARTS_V2[:pos] + insert + DARTS_V2[pos + cut:]
    try:
        arch = str_to_arch(text)
    except ArchError:
        return
    assert len(arch) == STEPS


# --- sampling and mutation --------------------------------------------------------------------------------------

def _valid(arch) -> bool:
    return len(arch) == STEPS and all(1 <= op <= 4 and 0 <= pred <= i for i, (op, pred) in enumerate(arch))


def test_sampling_covers_the_space_uniformly(space):
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(4000)]
    assert all(_valid(a) for a in archs)
    ops = np.array([[op for op, _ in a] for a in archs])
    preds = np.array([[p for _, p in a] for a in archs])
    for op in range(1, 5):
        assert abs((ops == op).mean() - 0.25) < 0.02
    for i in range(STEPS):
        counts = np.bincount(preds[:, i], minlength=i + 1)
        assert len(counts) == i + 1 and counts.min() > 0
        assert abs(counts / len(archs) - 1 / (i + 1)).max() < 0.04


def test_mutation_rules(space):
    rng = np.random.default_rng(2)
    parent = space.decode(DARTS_V2)
    frozen = DartsRNNSpace(_merge(_plain(), {"space": {"p_opwise": 0.0, "p_edgewise": 0.0}}))
    assert all(frozen.mutate(parent, rng) == parent for _ in range(50))

    edges = DartsRNNSpace(_merge(_plain(), {"space": {"p_opwise": 0.0, "p_edgewise": 1.0}}))
    for _ in range(200):
        child = edges.mutate(parent, rng)
        assert _valid(child)
        assert child[0] == parent[0]                                   # node 0 has a single predecessor
        assert all(c[1] != p[1] and c[0] == p[0] for c, p in zip(child[1:], parent[1:]))  # moved, op kept

    ops_only = DartsRNNSpace(_merge(_plain(), {"space": {"p_opwise": 1.0, "p_edgewise": 0.0}}))
    kids = [ops_only.mutate(parent, rng) for _ in range(400)]
    assert all(_valid(k) and [p for _, p in k] == [p for _, p in parent] for k in kids)
    same = np.mean([k[i][0] == parent[i][0] for k in kids for i in range(STEPS)])
    assert abs(same - 0.25) < 0.04                                    # redrawn uniformly, old op may return

    # Defaults (0.2 / 0.1): activation changes at 0.2 * 3/4, predecessors of nodes >= 1 at 0.1.
    kids = [space.mutate(parent, rng) for _ in range(3000)]
    assert all(_valid(k) for k in kids)
    op_change = np.mean([k[i][0] != parent[i][0] for k in kids for i in range(STEPS)])
    edge_change = np.mean([k[i][1] != parent[i][1] for k in kids for i in range(1, STEPS)])
    assert abs(op_change - 0.15) < 0.015 and abs(edge_change - 0.1) < 0.015


def _plain() -> dict:
    return DartsRNNSpace.Params().model_dump()


def test_params_validation_rejects_meaningless_and_bad_values():
    with pytest.raises(ConfigError) as err:
        load_params(None, {"darts-rnn": {"search": {"amp": True, "label_smoothing": 0.1, "fitness_batch_size": 2000},
                                         "space": {"dropout": 1.0, "p_edgewise": 2.0},
                                         "retrain": {"nonmono": 0, "test_subset": 1}}})
    msg = str(err.value)
    for key in ("search.amp", "search.label_smoothing", "search.fitness_batch_size", "space.dropout",
                "space.p_edgewise", "retrain.nonmono", "retrain.test_subset"):
        assert f"darts-rnn.{key}" in msg, key


# --- model and parameter count ----------------------------------------------------------------------------------

def test_param_count(space):
    arch = space.decode(DARTS_V2)
    # embedding (tied decoder) 10,000 x 850 + decoder bias + W_0 1700 x 1700 + 8 x 850 x 1700
    assert space.num_params(arch) == 10000 * 850 + 10000 + 1700 * 1700 + 8 * 850 * 1700 == 22_960_000
    assert space.num_params(space.largest()) == space.num_params(arch)
    assert space.num_params(arch, num_classes=100, channels=16) == 100 * 16 + 100 + 32 * 32 + 8 * 16 * 32
    with pytest.raises(ConfigError):
        space.num_params(arch, layers=2)


@pytest.mark.cli
def test_cli_arch_params(tmp_path):
    out = run_eps("arch", "params", "--space", "darts-rnn", DARTS_V2, "--channels", "300", cwd=tmp_path,
                  one_thread=True)
    n = 10000 * 300 + 10000 + 600 * 600 + 8 * 300 * 600
    assert out.stdout.split()[0] == f"{n / 1e6:.6f}"
    bad = run_eps("arch", "params", "--space", "darts-rnn", "Genotype(recurrent=[])", cwd=tmp_path, check=False,
                  one_thread=True)
    assert bad.returncode == 2 and "darts-rnn genotype" in bad.stderr and "Traceback" not in bad.stderr


def test_supernet_equals_standalone_and_masks_follow_the_generator(space):
    torch.manual_seed(0)
    arch = space.decode(DARTS_V2)
    sup = DartsRNNSupernet(vocab=50, hidden=8)
    net = DartsRNNNetwork(arch, vocab=50, hidden=8)
    net.load_state_dict(sup.state_dict())
    x = torch.randint(0, 50, (7, 3))
    sup.eval(), net.eval()
    a, b = sup(x, arch), net(x)
    assert torch.equal(a.logits, b.logits) and a.logits.shape == (7, 3, 50) and a.hidden.shape == (3, 8)
    # chunking with a carried state is the same as one pass (what fitness relies on)
    first = sup(x[:4], arch)
    second = sup(x[4:], arch, first.hidden)
    assert torch.allclose(torch.cat([first.logits, second.logits]), a.logits, atol=1e-6)
    sup.train()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sup(x, arch, generator=g1).logits, sup(x, arch, generator=g2).logits)
    assert not torch.equal(sup(x, arch, generator=g1).logits, a.logits)  # dropout active in training mode
    other = space.sample(np.random.default_rng(0))
    sup.eval()
    assert not torch.allclose(sup(x, other).logits, a.logits)           # the genotype matters


def test_sequence_length_draws():
    rng = np.random.default_rng(0)
    lens = np.array([search_seq_len(rng, 35, 0.05) for _ in range(20000)])
    assert set(lens.tolist()) == {35, 17} and abs((lens == 17).mean() - 0.05) < 0.006
    lens = np.array([retrain_seq_len(rng, 35, 0.05, 5.0, 5, 20) for _ in range(20000)])
    assert lens.min() >= 5 and lens.max() <= 55 and 32 < lens.mean() < 35


# --- the SGD -> ASGD switch -------------------------------------------------------------------------------------

def test_switch_rule_on_constructed_histories():
    assert not should_switch_to_asgd([], 5)
    assert not should_switch_to_asgd([5.0, 6, 7, 8, 9, 10], 5)        # only 5 losses before the current one
    assert should_switch_to_asgd([5.0, 6, 7, 8, 9, 10, 11], 5)        # 11 > min([5])
    assert not should_switch_to_asgd([10.0, 9, 8, 7, 6, 5, 4], 5)     # still improving
    assert not should_switch_to_asgd([5.0, 4, 6, 6, 6, 6, 4.5], 5)    # 4.5 < min([5])
    assert should_switch_to_asgd([5.0, 4, 6, 6, 6, 6, 6, 4.5], 5)     # 4.5 > min([5, 4])
    assert not should_switch_to_asgd([5.0, 4, 6, 6, 6, 6, 6, 4.0], 5)  # equal is not worse
    assert should_switch_to_asgd([3.0, 2, 4], 1)


@needs_ptb
def test_retrain_task_switches_to_asgd_and_validates_averaged_weights(tmp_path):
    params = tiny_params({"retrain": {"epochs": 12, "train_subset": 2000, "valid_subset": 300, "test_subset": 60,
                                      "test_every": 0, "nonmono": 2}})
    sec = params["darts-rnn"]
    space = get_space("darts-rnn", sec)
    seed_everything(0)
    task = space.retrain_task(space.decode(DARTS_V2), sec, DATA_ROOT, torch.device("cpu"), 0)
    # nonmono 2: [6, 5, 5.5] has only 2 losses before the current one; [6, 5, 5.5, 5.2]: 5.2 < min([6]);
    # [6, 5, 5.5, 5.2, 5.8]: 5.8 > min([6, 5]) -> switch after epoch 5; epochs 6-8 train and validate under ASGD.
    scripted = iter([6.0, 5.0, 5.5, 5.2, 5.8, 4.0, 3.9, 3.8])
    seen = []
    real = task._mean_nll

    def fake_nll(data):
        if data is task.valid_data:
            ax = task._averaged() if task.asgd else None
            seen.append(None if ax is None else all(torch.equal(p, a) for p, a in zip(task.model.parameters(), ax)))
            return next(scripted)
        return real(data)

    task._mean_nll = fake_nll

    class Bar:
        def advance(self, n=1, info=""):
            pass

    rows = []
    for epoch in range(8):
        rows.append({**task.train_epoch(epoch, Bar()), **task.evaluate()})
    assert [r["asgd"] for r in rows] == [0, 0, 0, 0, 0, 1, 1, 1]        # train_epoch reports the mode it trained in
    assert task.asgd and isinstance(task.optimizer, torch.optim.ASGD)
    assert task.val_history == [6.0, 5.0, 5.5, 5.2, 5.8]               # only SGD-mode losses feed the rule
    assert seen[:5] == [None] * 5 and all(seen[5:])                    # under ASGD: averaged weights in place
    assert rows[-1]["best_epoch"] == 8 and rows[4]["best_epoch"] == 2
    # ASGD really averages: the averaged weights differ from the current ones after a few steps
    assert any(not torch.equal(p, a) for p, a in zip(task.model.parameters(), task._averaged()))


# --- search task ------------------------------------------------------------------------------------------------

@needs_ptb
@pytest.mark.parametrize("reference", [False, True])
def test_hidden_state_reset_on_architecture_change(reference):
    params = tiny_params({"space": {"reference_hidden_state": reference}})
    sec = params["darts-rnn"]
    space = get_space("darts-rnn", sec)
    seed_everything(0)
    task = space.search_task(sec, DATA_ROOT, torch.device("cpu"), 0)
    seen = []
    forward = task.model.forward

    def spy(x, arch, hidden=None, generator=None):
        seen.append(bool(hidden.abs().sum() == 0))
        return forward(x, arch, hidden, generator)

    task.model.forward = spy
    rng = np.random.default_rng(0)
    a, b = space.sample(rng), space.sample(rng)
    for arch in (a, a, b, b, a):
        task.train_step(arch, 20.0)
    # first step: zero state (position 0); same arch: carried; a change resets unless the reference behaviour
    assert seen == ([True, False, True, False, True] if not reference else [True, False, False, False, False])


@needs_ptb
def test_stream_position_and_fitness_value():
    params = tiny_params()
    sec = params["darts-rnn"]
    space = get_space("darts-rnn", sec)
    seed_everything(0)
    task = space.search_task(sec, DATA_ROOT, torch.device("cpu"), 0)
    assert task.train_data.shape == (8000 // 8, 8) and task.valid_data.shape == (72, 1024)
    arch = space.decode(DARTS_V2)
    lens = []
    for _ in range(5):
        before = task.steps
        task.train_step(arch, 20.0)
        lens.append(task.steps - before)
    assert set(lens) <= {10, 5} and task.steps == sum(lens)
    # fitness = mean token NLL over the member's own 6 columns x 71 predictions, eval mode, zero state
    state = task.column_gen.get_state()
    got = task.fitness([arch, arch])
    task.column_gen.set_state(state)
    want = []
    for _ in range(2):
        cols = torch.randperm(1024, generator=task.column_gen)[:6]
        data = task.valid_data[:, cols]
        task.model.eval()
        with torch.no_grad():
            out = task.model(data[:-1], arch)
        want.append(torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)),
                                                      data[1:].reshape(-1)))
    assert torch.allclose(got, torch.stack(want), atol=1e-5)
    assert got[0] != got[1]                                               # unshared: different columns
    shared = space.search_task(_merge(sec, {"search": {"fitness_shared": True}}), DATA_ROOT, torch.device("cpu"), 0)
    f = shared.fitness([arch, arch, space.largest()])
    assert f[0] == f[1] and f[0] != f[2]


def _search_run(workdir: Path, sec: dict, interrupt_at: int | None = None):
    space = get_space("darts-rnn", sec)
    seed_everything(200)
    task = space.search_task(sec, DATA_ROOT, torch.device("cpu"), 200)
    controller = Controller(space, np.random.default_rng([0, 2]), population=8, group=4, parents=2)
    if interrupt_at is not None:
        step, calls = task.train_step, [0]

        def flaky(*args, **kwargs):
            calls[0] += 1
            if calls[0] == interrupt_at:
                raise KeyboardInterrupt
            return step(*args, **kwargs)

        task.train_step = flaky
    history = AppendLog(workdir / "history.jsonl")
    try:
        run_search(space, task, controller, sec["search"], history, CheckpointDir(workdir / "ckpt", {"k": 1}))
    finally:
        history.close()
    return task


@needs_ptb
def test_search_resume_is_exact(tmp_path):
    sec = tiny_params({"search": {"iterations": 20, "checkpoint_every": 1}})["darts-rnn"]
    whole = _search_run(tmp_path / "whole", sec)
    with pytest.raises(KeyboardInterrupt):
        _search_run(tmp_path / "cut", sec, interrupt_at=13)                # inside round 3, after 2 checkpoints
    resumed = _search_run(tmp_path / "cut", sec)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(whole.hidden, resumed.hidden) and whole.steps == resumed.steps
    assert (tmp_path / "whole/history.jsonl").read_bytes() == (tmp_path / "cut/history.jsonl").read_bytes()


@needs_ptb
@pytest.mark.parametrize("start_asgd", [False, True])
def test_retrain_resume_is_exact(tmp_path, start_asgd):
    sec = tiny_params({"retrain": {"epochs": 3, "train_subset": 2000, "valid_subset": 300, "test_subset": 60,
                                   "nonmono": 1}})["darts-rnn"]
    space = get_space("darts-rnn", sec)
    arch = space.decode(DARTS_V2)

    def run(workdir, interrupt_epoch=None):
        seed_everything(300)
        task = space.retrain_task(arch, sec, DATA_ROOT, torch.device("cpu"), 300)
        if start_asgd:  # exercise the averaged optimizer's state (ax, eta, mu, step) in the checkpoint
            task.optimizer, task.asgd = task._asgd(), True
        if interrupt_epoch is not None:
            train = task.train_epoch

            def flaky(epoch, bar):
                if epoch == interrupt_epoch:
                    raise KeyboardInterrupt
                return train(epoch, bar)

            task.train_epoch = flaky
        res = run_retrain(task, 3, 1, CheckpointDir(workdir, {"k": 1}))
        return task, res["history"]

    whole, hist = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", interrupt_epoch=2)
    resumed, hist2 = run(tmp_path / "cut")
    assert hist == hist2
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


# --- the real CLI, end to end -----------------------------------------------------------------------------------

# session-scoped, not module: a module fixture was made twice in full runs (pytest-xdist); tests/conftest.py
# keeps the tests of a session fixture on one worker, where it lives until the end
@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rnn")
    params = root / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY))
    out = root / "out"
    # the four stages and the report in one process (`eps run`)
    run_eps("run", "--space", "darts-rnn", "--params", params, "--out", out, cwd=root, one_thread=True)
    return out / "darts-rnn"


@pytest.mark.e2e
@needs_ptb
def test_cli_search_through_select(pipeline_run):
    space = DartsRNNSpace()
    snaps = list(read_jsonl(pipeline_run / "search" / "history.jsonl"))
    assert [s["iteration"] for s in snaps] == [5, 10, 15, 20, 25, 30]
    for snap in snaps:
        assert len(snap["arch"]) == 8
        for text in snap["arch"]:
            space.decode(text)
    measured = [l for s in snaps for l, c in zip(s["loss"], s["count"]) if c]
    assert measured and all(4.0 < l < 10.0 for l in measured)       # mean token NLL, not a 71x chunk sum
    sel = json.loads((pipeline_run / "select" / "selection.json").read_text())
    assert space.decode(sel["arch"]) and (pipeline_run / "select" / "arch.txt").read_text().strip() == sel["arch"]
    assert sel["size_prior"]["arch"] == sel["prior_free"]["arch"]      # all cells have the same size
    assert sel["max_params"] == space.num_params(space.largest(), channels=16)


@pytest.mark.e2e
@needs_ptb
def test_cli_retrain_perplexity_falls(pipeline_run):
    rows = list(csv.DictReader((pipeline_run / "retrain" / "curve.csv").open()))
    ppl = [float(r["valid_ppl"]) for r in rows]
    assert len(ppl) == 3 and ppl[0] > ppl[1] > ppl[2] and ppl[2] < 0.85 * ppl[0], ppl
    metrics = json.loads((pipeline_run / "retrain" / "metrics.json").read_text())
    assert metrics["test_model_epoch"] == metrics["best_epoch"] == 3 and metrics["test_ppl"] > 1
    assert (pipeline_run / "report" / "retrain_curve.png").exists()
    text = (pipeline_run / "report" / "report.txt").read_text()
    assert "Genotype(recurrent=" in text
