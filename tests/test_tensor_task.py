"""The generic tensor tasks (eps/train/tensor.py) and the example space built on them (examples/tensor_space.py):
every stage through the CLI, exact resume, the all_used / path_only optimiser semantics (spec §6 item 7), fitness
batching (spec §6 item 3), non-finite skipping, typed or plain settings, and two torchrun ranks against one process."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from eps.errors import DataError, SpaceError
from eps.spaces import register_ref
from eps.train.tensor import TensorRetrainTask, TensorSupernetTask
from tests.conftest import REPO, eps_env, run_eps

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]
EXAMPLE = REPO / "examples" / "tensor_space.py"
PARAMS = REPO / "examples" / "tensor.yaml"
SPACE_REF = f"{EXAMPLE}:GlyphSpace"
CPU = torch.device("cpu")


def _example():
    """The example module and its defaults section (plain dicts, as the core passes them today)."""
    register_ref(SPACE_REF)
    mod = sys.modules[next(m for m in sys.modules if m.startswith("eps_plugin_") and m.endswith("tensor_space_py"))]
    return mod, mod.GlyphParams().model_dump()


def _section(**search):
    mod, section = _example()
    section["space"]["samples"] = 400   # 240 train, 80 valid
    section["search"].update({"batch_size": 32, "fitness_batch_size": 20, **search})
    return mod, section


def _task(section, seed=0, model=None, **kw):
    mod, _ = _example()
    space = mod.GlyphSpace.from_params(section)
    data = mod.glyphs(section["space"]["samples"])
    torch.manual_seed(seed)
    net = model if model is not None else space.build_network(space.largest())
    return space, TensorSupernetTask(net, section, "search", data["train"], data["valid"], CPU, seed,
                                     transform=mod.jitter, **kw)


def test_example_is_at_most_150_lines():
    assert len(EXAMPLE.read_text().splitlines()) <= 150


@pytest.mark.e2e
def test_example_runs_every_stage_through_the_cli(tmp_path):
    out = tmp_path / "runs"
    run_eps("run", "--space", SPACE_REF, "--params", PARAMS, "--out", out, one_thread=True)  # the stages, the report
    root = out / "glyph"
    hist = [json.loads(line) for line in (root / "search/history.jsonl").read_text().splitlines()]
    cfg = yaml.safe_load(PARAMS.read_text())["glyph"]["search"]
    assert [h["iteration"] for h in hist] == list(range(cfg["val_interval"], cfg["iterations"] + 1,
                                                         cfg["val_interval"]))
    assert all(h["round"]["measured"] == cfg["group"] and h["round"]["fitness_best"] <= h["round"]["fitness_mean"]
               for h in hist)
    mod, _ = _example()
    arch = (root / "select/arch.txt").read_text().strip()
    mod.GlyphSpace().decode(arch)
    metrics = json.loads((root / "retrain/metrics.json").read_text())
    assert metrics["test_acc"] > 25.0     # 10 classes: chance is 10 %; the glyphs are learnable in 3 epochs
    assert metrics["params"] == mod.GlyphSpace().num_params(mod.GlyphSpace().decode(arch))


def _run(task, space, steps, rng):
    """``steps`` training steps on random paths and a fitness call after every 4: all losses, on the host."""
    out = []
    for k in range(steps):
        out.append(task.train_step(space.sample(rng), 0.05))
        if k % 4 == 3:
            out.extend(task.fitness([space.sample(rng) for _ in range(3)]))
    return torch.stack(out)


def test_checkpoint_and_reload_continues_exactly():
    _, section = _section()
    space, ref = _task(section)
    rng = np.random.default_rng(0)
    expected = _run(ref, space, 24, rng)

    _, first = _task(section)
    rng = np.random.default_rng(0)
    before = _run(first, space, 12, rng)  # a whole number of fitness periods, as the reference
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    _, resumed = _task(section, seed=0, model=space.build_network(space.largest()))
    torch.manual_seed(123)  # the global generator is not part of the task's state: it must not matter
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    after = _run(resumed, space, 12, rng)
    assert torch.equal(torch.cat([before, after]), expected)
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


class TwoOps(nn.Module):
    """A supernet of one choice between two linear ops; arch 2 makes the loss NaN."""

    def __init__(self):
        super().__init__()
        self.ops = nn.ModuleList(nn.Linear(64, 10) for _ in range(2))

    def forward(self, x, arch):
        out = self.ops[arch % 2](x.flatten(1))
        return out * float("nan") if arch == 2 else out


@pytest.mark.parametrize("mode", ["all_used", "path_only"])
def test_a_weight_used_once_keeps_moving_only_under_all_used(mode):
    _, section = _section(momentum=0.9, weight_decay=0.01)
    section["supernet"]["optimizer_updates"] = mode
    _, task = _task(section, model=TwoOps())
    w, b = task.model.ops[0].weight, task.model.ops[0].bias
    never = task.model.ops[1].weight.detach().clone()
    lr = 0.1
    task.train_step(0, lr)
    for _ in range(3):
        w1, b1 = w.detach().clone(), b.detach().clone()
        state = task.optimizer.state
        buf_w, buf_b = state[w]["momentum_buffer"].clone(), state[b]["momentum_buffer"].clone()
        task.train_step(1, lr)
        if mode == "path_only":
            assert torch.equal(w, w1) and torch.equal(b, b1)
        else:  # SGD with a zero gradient: decay (weights only, eps.train.common.decay_groups) and momentum
            torch.testing.assert_close(w.detach(), w1 - lr * (0.9 * buf_w + 0.01 * w1), rtol=0, atol=1e-7)
            torch.testing.assert_close(b.detach(), b1 - lr * 0.9 * buf_b, rtol=0, atol=1e-7)
            assert not torch.equal(w, w1)
    assert not torch.equal(never, task.model.ops[1].weight)   # the op on the path moved


@pytest.mark.parametrize("shared", [False, True])
def test_fitness_batches_and_sharing(shared):
    _, section = _section(fitness_batches=3, fitness_shared=shared)
    space, task = _task(section)
    archs = [space.sample(np.random.default_rng(k)) for k in range(3)]
    archs = [archs[0], archs[1], archs[0]]
    state = task.valid.state_dict()
    draws = 3 if shared else 9
    batches = [task.valid.next() for _ in range(draws)]
    task.valid.load_state_dict(state)
    got = task.fitness(archs)
    # 80 valid samples: a pass holds 4 batches of 20
    assert got.shape == (3,) and (task.valid.passes - 1) * 4 + task.valid.pos // 20 == draws
    if shared:
        want = task.score(archs, batches)
        assert torch.equal(got, want) and got[0] == got[2]
    else:
        want = torch.stack([task.score([a], batches[3 * i:3 * i + 3])[0] for i, a in enumerate(archs)])
        assert torch.equal(got, want) and got[0] != got[2]  # the same arch, other batches
    assert task.describe_scoring(3) == ("label-smoothed (0.1) cross-entropy (nats) on 3 batches of 20 validation "
                                        "samples per cell")


def test_scoring_caption_names_partial_batches():
    _, section = _section(fitness_batch_size=60)
    section["supernet"]["label_smoothing"] = 0.0
    _, task = _task(section)
    assert task.describe_scoring(2) == "cross-entropy (nats) on 2 batches of 60 or 20 validation samples per cell"
    assert [len(y) for _, y in task.validation_batches(2, seed=5)] == [60, 20]


def test_nonfinite_steps_are_skipped_without_touching_weights_or_momentum():
    _, section = _section()
    _, task = _task(section, model=TwoOps())
    task.train_step(0, 0.1)
    weights = {k: v.clone() for k, v in task.model.state_dict().items()}
    momentum = [s["momentum_buffer"].clone() for s in task.optimizer.state.values()]
    loss = task.train_step(2, 0.1, skip_nonfinite=True)
    assert not torch.isfinite(loss)
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(a, s["momentum_buffer"]) for a, s in zip(momentum, task.optimizer.state.values()))
    assert torch.isfinite(task.train_step(0, 0.1, skip_nonfinite=True))
    task.train_step(2, 0.1)  # without skipping, the NaN reaches the weights
    assert not torch.isfinite(task.model.ops[0].weight).all()


def test_typed_and_plain_settings_train_alike():
    mod, section = _section()
    typed = mod.GlyphParams.model_validate(section)
    space, plain_task = _task(section)
    _, typed_task = _task(typed)
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert torch.equal(_run(plain_task, space, 5, rng1), _run(typed_task, space, 5, rng2))
    data = mod.glyphs(200)
    retrain = TensorRetrainTask(space.build_network(space.largest()), typed.retrain, data["train"], data["test"], CPU,
                                0, network={"channels": 32})
    assert retrain.input_spec == {"kind": "tensor", "shape": [8, 8], "dtype": "float32"}


def test_bad_data_and_missing_network_are_one_line_errors():
    _, section = _section()
    mod, _ = _example()
    x, y = mod.glyphs(100)["train"]
    net = mod.GlyphSpace().build_network(mod.GlyphSpace().largest())
    with pytest.raises(DataError, match="valid data have 60 inputs but 59 labels"):
        TensorSupernetTask(net, section, "search", (x, y), (x, y[:-1]), CPU, 0)
    with pytest.raises(DataError, match="labels y must be a 1-D tensor of integer"):
        TensorSupernetTask(net, section, "search", (x, y.float()), (x, y), CPU, 0)
    with pytest.raises(SpaceError, match="network="):
        TensorRetrainTask(net, section["retrain"], (x, y), (x, y), CPU, 0)


TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.distributed
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_two_ranks_follow_one_process(tmp_path):
    """Search and retrain of the example under torchrun (2 CPU ranks, gloo): the same paths and, up to float
    rounding, the same losses and test metrics as one process."""
    cfg = yaml.safe_load(PARAMS.read_text())
    cfg["plugins"] = [f"{EXAMPLE}:GlyphSpace"]
    cfg["glyph"]["warmup"]["iterations"] = 0
    cfg["glyph"]["search"].update(iterations=60, lr=0.001)
    cfg["glyph"]["retrain"].update(epochs=1, lr=0.001)
    params = tmp_path / "dp.yaml"
    params.write_text(yaml.safe_dump(cfg))
    env = {**eps_env(True), "PATH": f"{TORCHRUN.parent}:{os.environ['PATH']}"}
    for stage in ("search", "select", "retrain"):
        run_eps("stage", stage, "--params", params, "--out", tmp_path / "one", one_thread=True)
        cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--no-python", "eps", "stage", stage,
               "--params", str(params), "--out", str(tmp_path / "two")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = ([json.loads(line) for line in (tmp_path / d / "glyph/search/history.jsonl").read_text().splitlines()]
                for d in ("one", "two"))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["arch"] == b["arch"] and a["count"] == b["count"]
        for key in ("train_loss", "fitness_best", "fitness_mean"):
            assert abs(a["round"][key] - b["round"][key]) < 1e-4, (a["iteration"], key)
    m1, m2 = (json.loads((tmp_path / d / "glyph/retrain/metrics.json").read_text()) for d in ("one", "two"))
    for key in ("train_loss", "test_loss"):
        assert abs(m1[key] - m2[key]) < 1e-4, key
    assert m1["test_acc"] == m2["test_acc"]
