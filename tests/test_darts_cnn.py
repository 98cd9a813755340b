"""DARTS CNN space and Robust-DARTS S1-S4: genotype notation, sampling/mutation, networks, search via the CLI,
DDP retraining under torchrun (gloo, CPU) and resumable retraining."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eps.model_file import read_model
from eps.params import defaults, load_params
from eps.distributed import state_digest
from eps.errors import ArchError
from eps.spaces.darts_cnn.model import OP_NAMES, NetworkCIFAR, edge_index
from eps.spaces import get_space
from eps.spaces.darts_cnn.space import (EXAMPLE, S1_EDGES, VARIANTS, DartsCNNSpace, drawable_ops, edge_candidates,
                                  format_genotype, parse_genotype)
from tests.conftest import DATA_ROOT, eps_env, run_eps

needs_cifar = pytest.mark.skipif(not (DATA_ROOT / "cifar-10-batches-py").is_dir(),
                                 reason=f"CIFAR-10 not found under {DATA_ROOT} (set EPS_DATA_DIR)")
BIN = Path(sys.executable).parent

DARTS_V2 = EXAMPLE  # the published DARTS (second order) genotype, as DARTS's genotypes.py writes it
DARTS_V2_CANONICAL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('max_pool_3x3', 1), ('skip_connect', 2)], reduce_concat=[2, 3, 4, 5])")


pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


def space(variant="darts", **kw) -> DartsCNNSpace:
    return DartsCNNSpace(variant, **kw)


# --------------------------------------------------------------------------------------------------- notation

def test_darts_v2_round_trip_and_canonical_form():
    sp = space()
    arch = sp.decode(DARTS_V2)
    assert sp.encode(arch) == DARTS_V2_CANONICAL
    assert sp.decode(DARTS_V2_CANONICAL) == arch
    hash(arch)
    # node 2 of the normal cell is written (sep_conv_3x3, 1), (skip_connect, 0) and stored in ascending input order
    assert arch[0][2] == (("skip_connect", 0), ("sep_conv_3x3", 1))


def test_concat_forms_positional_fields_and_whitespace():
    sp = space()
    arch = sp.decode(DARTS_V2)
    text = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)") \
                   .replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2,6)")
    assert sp.decode(text) == arch
    assert sp.decode("  " + text.replace(", ", ",\n  ") + "\n") == arch
    normal, reduce = format_genotype(arch)[len("Genotype(normal="):].split(", normal_concat=[2, 3, 4, 5], reduce=")
    reduce = reduce[: -len(", reduce_concat=[2, 3, 4, 5])")]
    assert sp.decode(f"Genotype({normal}, [2, 3, 4, 5], {reduce}, range(2, 6))") == arch
    assert sp.decode(f"genotypes.Genotype(reduce={reduce}, reduce_concat=[2, 3, 4, 5], normal={normal}, "
                     f"normal_concat=(2, 3, 4, 5))") == arch


@pytest.mark.parametrize("variant", VARIANTS)
def test_samples_round_trip(variant):
    sp = space(variant)
    rng = np.random.default_rng(1)
    for _ in range(200):
        arch = sp.sample(rng)
        assert sp.decode(sp.encode(arch)) == arch
        child = sp.mutate(arch, rng)
        assert sp.decode(sp.encode(child)) == child


BAD = {
    "unknown operation": DARTS_V2.replace("'dil_conv_3x3', 2", "'conv_9x9', 2"),
    "node 0: input index 2 is out of range": DARTS_V2.replace("('sep_conv_3x3', 1)", "('sep_conv_3x3', 2)", 1),
    "input index -1": DARTS_V2.replace("'dil_conv_3x3', 2", "'dil_conv_3x3', -1"),
    "reads input 0 twice": DARTS_V2.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)",
                                            "('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0)", 1),
    "has 9 (op, input) pair(s)": DARTS_V2.replace("('dil_conv_3x3', 2)]", "('dil_conv_3x3', 2), ('skip_connect', 1)]"),
    "has 7 (op, input) pair(s)": DARTS_V2.replace(", ('dil_conv_3x3', 2)]", "]"),
    "expected a pair": DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2, 5)"),
    "not allowed on edge": DARTS_V2.replace("'dil_conv_3x3', 2", "'none', 2"),
    "normal_concat": DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]"),
    "missing field": DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""),
    "unknown field": DARTS_V2.replace("reduce_concat=", "reduced_concat="),
    "not valid syntax": DARTS_V2[:-1],
    "must be of the form Genotype": "[('sep_conv_3x3', 0)]",
    "only literal": "Genotype(normal=__import__('os').system('true'), normal_concat=[2, 3, 4, 5], reduce=[], "
                    "reduce_concat=[2, 3, 4, 5])",
    "normal must be a list": "Genotype(normal=7, normal_concat=[2, 3, 4, 5], reduce=[], reduce_concat=[2, 3, 4, 5])",
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_malformed_genotypes_rejected_with_reason(reason):
    with pytest.raises(ArchError) as err:
        space().decode(BAD[reason])
    assert reason in str(err.value)


def test_ops_must_be_allowed_on_the_edge_of_the_variant():
    # S1 normal edge 0 allows skip_connect / dil_conv_3x3 only
    s1 = space("s1")
    arch = s1.decode(s1.encode(s1.sample(np.random.default_rng(0))))
    normal = list(arch[0])
    normal[0] = (("sep_conv_3x3", 0), normal[0][1])
    with pytest.raises(ArchError, match=r"'sep_conv_3x3' is not allowed on edge 0 .*normal cell in variant s1"):
        s1.decode(format_genotype((tuple(normal), arch[1])))
    with pytest.raises(ArchError, match="variant s2"):
        space("s2").decode(DARTS_V2)
    s4_text = DARTS_V2.replace("max_pool_3x3", "noise").replace("skip_connect", "sep_conv_3x3") \
                      .replace("dil_conv_3x3", "noise")
    assert space("s4").decode(s4_text)
    with pytest.raises(ArchError, match="'noise' is not allowed"):
        space("darts").decode(s4_text)
    s3_text = s4_text.replace("noise", "none")
    assert space("s3").decode(s3_text) == space("s3", s3_reference_none=True).decode(s3_text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text_only_raises_arch_error(text):
    for variant in ("darts", "s1"):
        try:
            space(variant).decode(text)
        except ArchError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["del", "ins", "sub"]), st.integers(0, len(DARTS_V2)),
                          st.sampled_from(list("()[],'=0123456789-_ ") + ["none", "Genotype", "range", "**", "x"])),
                min_size=1, max_size=6))
def test_fuzz_edited_genotypes_only_raise_arch_error(edits):
    text = DARTS_V2
    for kind, pos, piece in edits:
        pos = min(pos, len(text))
        text = text[:pos] + text[pos + 1:] if kind == "del" else \
            text[:pos] + piece + text[pos + (kind == "sub"):]
    try:
        arch = space().decode(text)
    except ArchError:
        return
    assert space().decode(format_genotype(arch)) == arch


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OP_NAMES + ("bogus",)), st.integers(-2, 7)), min_size=6, max_size=10),
       st.lists(st.tuples(st.sampled_from(OP_NAMES), st.integers(0, 5)), min_size=8, max_size=8),
       st.sampled_from(["[2, 3, 4, 5]", "range(2, 6)", "[2, 3, 4]", "[1, 2, 3, 4, 5]", "range(10**9)"]),
       st.sampled_from(VARIANTS))
def test_fuzz_structured_genotypes(normal, reduce, concat, variant):
    text = (f"Genotype(normal={normal!r}, normal_concat={concat}, reduce={reduce!r}, "
            f"reduce_concat=[2, 3, 4, 5])")
    try:
        arch = space(variant).decode(text)
    except ArchError:
        return
    for cell in arch:
        for i, node in enumerate(cell):
            assert len(node) == 2 and node[0][1] < node[1][1] <= i + 1


def test_parse_genotype_rejects_non_strings():
    for value in (None, 3, b"Genotype()", ["Genotype"]):
        with pytest.raises(ArchError):
            parse_genotype(value)


# --------------------------------------------------------------------------------------------- parameter count

def test_darts_v2_has_3_349342_m_parameters():
    sp = space()
    arch = sp.decode(DARTS_V2)
    assert sp.num_params(arch, num_classes=10, channels=36, layers=20) == 3_349_342
    assert sp.num_params(arch) == 3_349_342                      # the defaults are DARTS's C=36, 20 cells, CIFAR-10
    with torch.device("meta"):
        net = NetworkCIFAR(arch, 36, 20, 10, auxiliary=True)
    total = sum(p.numel() for p in net.parameters())
    aux = sum(p.numel() for p in net.auxiliary_head.parameters())
    assert total - aux == 3_349_342 and aux > 0
    assert net.aux_after == 13 and [i for i, c in enumerate(net.cells) if c.reduction] == [6, 13]


@pytest.mark.cli
def test_cli_arch_params(tmp_path):
    out = run_eps("arch", "params", "--space", "darts-cnn", DARTS_V2, cwd=tmp_path, timeout=120)
    assert out.stdout.split()[0] == "3.349342"
    bad = run_eps("arch", "params", "--space", "darts-cnn", BAD["unknown operation"], cwd=tmp_path, check=False,
                  timeout=120)
    assert bad.returncode == 2 and "unknown operation 'conv_9x9'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_largest_is_largest(variant):
    sp = space(variant, eval_channels=8, eval_layers=5)
    big = sp.num_params(sp.largest())
    rng = np.random.default_rng(3)
    for _ in range(25):
        arch = sp.sample(rng)
        assert sp.num_params(arch) <= big
        assert sp.num_params(sp.mutate(sp.largest(), rng)) <= big


# ------------------------------------------------------------------------------------- sampling and mutation

def _check_allowed(sp, arch, drawable):
    for k, cell in enumerate(arch):
        assert len(cell) == 4
        for i, node in enumerate(cell):
            assert len(node) == 2
            (op_a, a), (op_b, b) = node
            assert 0 <= a < b <= i + 1                       # two distinct inputs, ascending
            for op, j in node:
                assert op in drawable[k][edge_index(i, j)], (op, k, i, j)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_samples_and_mutates_only_allowed_ops(variant):
    sp = space(variant)
    drawable = drawable_ops(variant)
    rng = np.random.default_rng(7)
    seen = [[set() for _ in range(14)] for _ in range(2)]
    arch = sp.sample(rng)
    for _ in range(400):
        fresh = sp.sample(rng)
        _check_allowed(sp, fresh, drawable)
        arch = sp.mutate(arch, rng)
        _check_allowed(sp, arch, drawable)
        for a in (fresh, arch):
            for k, cell in enumerate(a):
                for i, node in enumerate(cell):
                    for op, j in node:
                        seen[k][edge_index(i, j)].add(op)
    # every allowed op is reachable on every edge
    for k in (0, 1):
        for e in range(14):
            assert seen[k][e] == set(drawable[k][e]), (variant, k, e)


def test_s1_table_and_shared_lists():
    normal, reduce = edge_candidates("s1")
    assert normal[5] == ("max_pool_3x3", "skip_connect") and normal[10] == ("max_pool_3x3", "skip_connect")
    assert reduce[1] == ("max_pool_3x3", "dil_conv_3x3") and reduce[6] == ("max_pool_3x3", "sep_conv_3x3")
    assert normal[12] == normal[13] == ("dil_conv_3x3", "dil_conv_5x5")
    assert [normal[e] for e in range(14)] == [S1_EDGES[e][0] for e in range(14)]
    assert edge_candidates("s2")[0][0] == ("skip_connect", "sep_conv_3x3")
    assert edge_candidates("s3")[1][13] == ("none", "skip_connect", "sep_conv_3x3")
    assert edge_candidates("s4")[0][7] == ("noise", "sep_conv_3x3")
    assert "none" not in edge_candidates("darts")[0][0] and len(edge_candidates("darts")[0][0]) == 7


def test_s3_none_reachable_by_default_and_not_with_reference_option():
    rng = np.random.default_rng(11)
    default, reference = space("s3"), space("s3", s3_reference_none=True)

    def ops(sp, n=300):
        found, arch = set(), sp.sample(rng)
        for _ in range(n):
            arch = sp.mutate(arch, rng)
            for a in (arch, sp.sample(rng)):
                found |= {op for cell in a for node in cell for op, _ in node}
        return found

    assert ops(default) == {"none", "skip_connect", "sep_conv_3x3"}
    assert ops(reference) == {"skip_connect", "sep_conv_3x3"}
    # the reference option is a params switch
    p = defaults()["darts-cnn"]
    p["space"].update(variant="s3", s3_reference_none=True)
    assert get_space("darts-cnn", p).drawable[0][0] == ("skip_connect", "sep_conv_3x3")


def test_mutation_probabilities():
    rng = np.random.default_rng(5)
    arch = space().sample(rng)
    inputs = lambda a: [tuple(j for _, j in node) for cell in a for node in cell]  # noqa: E731
    # edge-wise only: every node >= 1 moves exactly one input; node 0 never changes
    moved = space(p_opwise=0.0, p_edgewise=1.0).mutate(arch, rng)
    for (old, new), i in zip(zip(inputs(arch), inputs(moved)), [0, 1, 2, 3] * 2):
        assert len(set(old) & set(new)) == (2 if i == 0 else 1)
    # op-wise only: inputs never change; about 0.2 * 6/7 of the ops change
    sp = space(p_opwise=0.2, p_edgewise=0.0)
    changed = total = 0
    for _ in range(300):
        child = sp.mutate(arch, rng)
        assert inputs(child) == inputs(arch)
        changed += sum(a != b for ca, cb in zip(arch, child) for na, nb in zip(ca, cb) for a, b in zip(na, nb))
        total += 16
    assert 0.12 < changed / total < 0.22


# ---------------------------------------------------------------------------------------------------- networks

@pytest.mark.parametrize("variant", VARIANTS)
def test_supernet_forward_backward_on_sampled_paths(variant):
    sp = space(variant, channels=4, layers=5)
    net = sp.build_supernet()
    x = torch.randn(4, 3, 32, 32)
    rng = np.random.default_rng(2)
    for _ in range(2):
        arch = sp.sample(rng)
        out = net(x, arch)
        assert out.shape == (4, 10)
        out.sum().backward()
    # only the active edges' operations get gradients
    net.zero_grad(set_to_none=True)
    net(x, arch).sum().backward()
    active = {(edge_index(i, j), op) for i, node in enumerate(arch[0]) for op, j in node}
    for e, edge in enumerate(net.cells[0].edges):
        for op, module in edge.items():
            grads = [p.grad is not None for p in module.parameters()]
            assert all(grads) if (e, op) in active else not any(grads), (e, op)


def test_s3_node_of_two_none_inputs_and_s4_noise():
    sp = space("s3", channels=4, layers=5)
    node_none = (("none", 0), ("none", 1))
    cell = (node_none, (("skip_connect", 1), ("sep_conv_3x3", 2)), (("none", 2), ("skip_connect", 3)),
            (("sep_conv_3x3", 0), ("none", 4)))
    arch = (cell, cell)
    assert sp.decode(sp.encode(arch)) == arch
    out = sp.build_supernet()(torch.randn(2, 3, 32, 32), arch)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    net = sp.build_network(arch, channels=4, layers=5)
    assert net(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)
    s4 = space("s4", channels=4, layers=5)
    a4 = s4.sample(np.random.default_rng(0))
    net4 = s4.build_network(a4, channels=4, layers=5).eval()
    g = torch.Generator().manual_seed(0)
    net4.generator = g
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y1 = net4(x)[0]
        g.manual_seed(0)
        y2 = net4(x)[0]
    assert torch.equal(y1, y2)   # noise draws come from the network's generator


def test_network_cifar_aux_and_drop_path():
    sp = space()
    arch = sp.decode(DARTS_V2)
    net = sp.build_network(arch, channels=4, layers=5)
    x = torch.randn(3, 3, 32, 32)
    logits, aux = net(x)
    assert logits.shape == aux.shape == (3, 10)
    net.eval()
    assert net(x)[1] is None
    net.train()
    net.drop_path_prob = 0.5
    net.generator = torch.Generator().manual_seed(1)
    a = net(x)[0]
    net.generator.manual_seed(1)
    assert torch.equal(a, net(x)[0])
    assert sp.build_network(arch, channels=4, layers=5, auxiliary=False).auxiliary_head is None


# ------------------------------------------------------------------------------------------ stages through the CLI

def tiny_params(path: Path, variant: str = "s3", **retrain) -> Path:
    params = {
        "seed": 0, "device": "cpu", "spaces": ["darts-cnn"],
        "darts-cnn": {
            "space": {"variant": variant, "channels": 4, "layers": 5},
            "warmup": {"iterations": 4, "batch_size": 16, "checkpoint_every": 2},
            "supernet": {"data_subset": 256, "channels_last": False},
            "search": {"iterations": 40, "val_interval": 10, "population": 8, "group": 4, "parents": 2,
                       "batch_size": 16, "fitness_batch_size": 32, "checkpoint_every": 1},
            "select": {"window": 40},
            "retrain": {"channels": 4, "layers": 5, "epochs": 2, "batch_size": 32, "train_subset": 128,
                        "test_subset": 100, "cutout": 8, **retrain},
        },
    }
    path.write_text(yaml.safe_dump(params))
    return path


def _eps(args, cwd, timeout=300):
    return run_eps(*args, cwd=cwd, one_thread=True, timeout=timeout)


@pytest.mark.e2e
@needs_cifar
def test_cli_search_through_select_and_report(tmp_path):
    p = tiny_params(tmp_path / "tiny.yaml")
    for stage in ("warmup", "search", "select"):
        _eps(["stage", stage, "--space", "darts-cnn", "--params", str(p), "--out", "out"], tmp_path)
    root = tmp_path / "out" / "darts-cnn"
    sel = json.loads((root / "select" / "selection.json").read_text())
    sp = get_space("darts-cnn", load_params(p)["darts-cnn"])
    arch = sp.decode((root / "select" / "arch.txt").read_text().strip())
    assert sp.encode(arch) == sel["arch"] == sel[sel["rule"]]["arch"]
    assert sel["size_prior"]["params"] == sp.num_params(sp.decode(sel["size_prior"]["arch"]))
    assert sel["max_params"] == sp.num_params(sp.largest())
    history = [json.loads(line) for line in (root / "search" / "history.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in history] == [10, 20, 30, 40]
    for h in history:
        for text in h["arch"]:
            sp.decode(text)
    out = _eps(["report", "--space", "darts-cnn", "--params", str(p), "--out", "out"], tmp_path)
    assert "chosen architecture" in out.stdout and "Genotype(normal=" in out.stdout
    assert (root / "report" / "arch.png").stat().st_size > 10_000


@pytest.mark.distributed
@needs_cifar
def test_ddp_retrain_two_processes_gives_identical_weights(tmp_path):
    p = tiny_params(tmp_path / "tiny.yaml", variant="darts")
    arch_file = tmp_path / "out" / "darts-cnn" / "select" / "arch.txt"
    arch_file.parent.mkdir(parents=True)
    arch_file.write_text(DARTS_V2 + "\n")
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "eps.pipeline.cli",
           "stage", "retrain", "--space", "darts-cnn", "--params", str(p), "--out", "out"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=eps_env(one_thread=True), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    d = tmp_path / "out" / "darts-cnn" / "retrain"
    timing = json.loads((d / "timing.json").read_text())
    assert timing["world_size"] == 2 and timing["replicas_identical"]
    digests = timing["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    saved = read_model(d / "model.pt")
    assert state_digest(saved["state_dict"]) == digests[0]
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test_acc"] <= 100
    log = out.stdout + out.stderr
    assert log.count("retrain: 2 epochs") == 1 and log.count("epoch 2 ") == 1   # only rank 0 reports and writes


@pytest.mark.e2e
@needs_cifar
def test_retrain_resumes_after_interruption(tmp_path, monkeypatch):
    from eps.pipeline import stages
    from eps.spaces.darts_cnn.retrain import DartsRetrainTask

    monkeypatch.setenv("EPS_PROGRESS", "0")
    params = load_params(tiny_params(tmp_path / "tiny.yaml", "darts", train_subset=96, test_subset=50))

    stages.retrain("darts-cnn", params, tmp_path / "full", arch=DARTS_V2)

    original = DartsRetrainTask.train_epoch

    def interrupted(self, epoch, bar):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, bar)

    monkeypatch.setattr(DartsRetrainTask, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stages.retrain("darts-cnn", params, tmp_path / "cut", arch=DARTS_V2)
    assert not (tmp_path / "cut" / "darts-cnn" / "retrain" / "model.pt").exists()
    monkeypatch.setattr(DartsRetrainTask, "train_epoch", original)
    stages.retrain("darts-cnn", params, tmp_path / "cut", arch=DARTS_V2)

    full, cut = (read_model(tmp_path / r / "darts-cnn" / "retrain" / "model.pt")["state_dict"] for r in ("full", "cut"))
    assert state_digest(full) == state_digest(cut)
    m_full, m_cut = (json.loads((tmp_path / r / "darts-cnn" / "retrain" / "metrics.json").read_text())
                     for r in ("full", "cut"))
    assert m_full == m_cut
    curve = (tmp_path / "cut" / "darts-cnn" / "retrain" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,") and len(curve) == 3


@needs_cifar
def test_retrain_schedule_lr_and_drop_path(tmp_path):
    from eps.train.common import cosine_lr
    from eps.spaces.darts_cnn.retrain import DartsRetrainTask
    from eps.progress import progress_bar

    cfg = load_params(tiny_params(tmp_path / "tiny.yaml", "darts", epochs=4, train_subset=64,
                                     test_subset=20))["darts-cnn"]
    sp = get_space("darts-cnn", cfg)
    task = sp.retrain_task(sp.decode(DARTS_V2), cfg, DATA_ROOT, torch.device("cpu"), seed=3)
    assert isinstance(task, DartsRetrainTask) and task.steps_per_epoch == 2
    with progress_bar("t", 2) as bar:
        row = task.train_epoch(2, bar)
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(cosine_lr(0.025, 3, 4))
    assert task.model.drop_path_prob == pytest.approx(0.2 * 2 / 4)
    assert set(row) == {"train_loss", "train_acc"} and set(task.evaluate()) == {"test_loss", "test_acc"}
