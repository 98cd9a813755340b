"""retrain/model.pt as a plain PyTorch file and ``eps.load_model``: tiny retrain runs of the three built-in spaces
write a file ``torch.load(weights_only=True)`` reads; the network rebuilt from the file alone reproduces the run's
test metrics exactly; damaged, foreign and old-format files are refused with one line; plugin spaces are found
again by their reference."""
from __future__ import annotations

import importlib.metadata
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import eps
from eps import checkpoint
from eps.params import load_params
from eps.distributed import state_digest
from eps.errors import EpsError, SpaceError
from eps.model_file import FORMAT, KEYS, model_path, read_model, save_model, weights_digest
from eps.spaces import get_space, register_ref
from eps.train.common import SEED_OFFSET
from tests.conftest import DATA_ROOT, REPO, TINY_NB201, eps_env
from tests.test_darts_cnn import needs_cifar
from tests.test_darts_rnn import TINY as TINY_RNN
from tests.test_darts_rnn import needs_ptb

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

CPU = torch.device("cpu")
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
# An S3 genotype with `none` on an edge: only a darts-cnn space of variant s3 decodes it (the default `darts` variant
# refuses `none`), so loading must build the space from the settings saved in the file.
S3_ARCH = ("Genotype(normal=[('sep_conv_3x3', 0), ('none', 1), ('skip_connect', 0), ('sep_conv_3x3', 2), "
           "('sep_conv_3x3', 1), ('skip_connect', 3), ('none', 0), ('sep_conv_3x3', 4)], normal_concat=[2, 3, 4, 5], "
           "reduce=[('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2), "
           "('none', 1), ('sep_conv_3x3', 3), ('skip_connect', 2), ('sep_conv_3x3', 4)], reduce_concat=[2, 3, 4, 5])")
RNN_ARCH = ("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
            "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")

TINY_CNN = {
    "seed": 0, "device": "cpu", "spaces": ["darts-cnn"],
    "darts-cnn": {"space": {"variant": "s3", "channels": 4, "layers": 5},
                  "retrain": {"channels": 4, "layers": 5, "epochs": 1, "batch_size": 32, "train_subset": 96,
                              "test_subset": 50, "cutout": 8}},
}
RNN_RETRAIN = {"epochs": 2, "train_subset": 2000, "valid_subset": 300, "test_subset": 60}


def _retrain(tmp_path_factory, space: str, cfg: dict, arch: str) -> tuple[dict, Path]:
    """(params, output root) of an in-process retrain stage of ``arch`` with the tiny ``cfg``."""
    from eps.pipeline import stages
    params = load_params(None, {**cfg, "data_root": str(DATA_ROOT)})
    out = tmp_path_factory.mktemp(space)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EPS_PROGRESS", "0")
        stages.retrain(space, params, out, arch=arch)
    return params, out


def _task_again(space_name: str, params: dict, arch: str):
    """The retrain task of the run, built again (same params, seed and data) for evaluating a loaded network."""
    section = params[space_name]
    space = get_space(space_name, section)
    return space.retrain_task(space.decode(arch), section, DATA_ROOT, CPU, params["seed"] + SEED_OFFSET["retrain"])


def _metrics(out: Path, space: str) -> dict:
    return json.loads((out / space / "retrain" / "metrics.json").read_text())


def _one_line_error(fn, *args, kind=EpsError) -> str:
    with pytest.raises(kind) as err:
        fn(*args)
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    return _retrain(tmp_path_factory, "nb201", cfg, NB201_ARCH)


# ------------------------------------------------------------------------------------------------ the file

@pytest.mark.e2e
def test_model_file_is_plain_torch_with_every_key(nb201_run):
    params, out = nb201_run
    path = out / "nb201" / "retrain" / "model.pt"
    with open(path, "rb") as f:
        assert f.read(len(checkpoint.MAGIC)) != checkpoint.MAGIC
    record = torch.load(path, weights_only=True)
    assert set(KEYS) <= set(record)
    assert record["format"] == FORMAT == "eps-model/1"
    assert record["space"] == "nb201" and record["arch"] == NB201_ARCH
    assert record["eps_version"] == eps.__version__
    # the tiny run's own sizes (not the space's defaults of 16 channels, 5 cells) travel with the file
    assert record["network"] == {"num_classes": 10, "channels": 4, "cells_per_stage": 1}
    assert record["space_settings"] == json.loads(json.dumps(params["nb201"]["space"]))
    state = record["state_dict"]
    assert state and all(t.device.type == "cpu" and t.is_contiguous() for t in state.values())
    assert len(record["weights_sha256"]) == 64 and record["weights_sha256"] == weights_digest(state)
    assert record["weights_sha256"][:16] == state_digest(state)   # comparable with the DDP replica digests
    assert read_model(path)["weights_sha256"] == record["weights_sha256"]


@pytest.mark.e2e
def test_load_model_reproduces_the_test_metrics_exactly(nb201_run):
    params, out = nb201_run
    rng = torch.get_rng_state()
    net = eps.load_model(out / "nb201")
    assert torch.equal(rng, torch.get_rng_state())   # loading leaves the caller's random state alone
    assert not net.training and next(net.parameters()).device.type == "cpu"
    task = _task_again("nb201", params, NB201_ARCH)
    before = task.evaluate()
    task.model = net.to(CPU, memory_format=task.memory_format)
    after = task.evaluate()
    m = _metrics(out, "nb201")
    assert (after["test_acc"], after["test_loss"]) == (m["test_acc"], m["test_loss"])
    assert before["test_loss"] != after["test_loss"]   # the fresh network of the task is not the trained one
    # without eps's data code: the file says how to feed the network (uint8 / scale, then per-channel mean/std)
    spec = torch.load(out / "nb201/retrain/model.pt", weights_only=True)["input"]
    assert spec["kind"] == "image" and spec["shape"] == [3, 32, 32] and spec["scale"] == 255
    from eps.data.cifar import load_cifar10
    images, labels = load_cifar10(DATA_ROOT, train=False)
    n = params["nb201"]["retrain"]["test_subset"]
    x = (images[:n].float() / spec["scale"] - torch.tensor(spec["mean"]).view(1, 3, 1, 1)) / \
        torch.tensor(spec["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        correct = int((net(x).argmax(1) == labels[:n]).sum())
    assert 100.0 * correct / n == pytest.approx(m["test_acc"], abs=1e-9)


@pytest.mark.e2e
def test_every_way_of_naming_the_run_finds_the_same_file(nb201_run):
    _, out = nb201_run
    file = out / "nb201" / "retrain" / "model.pt"
    for path in (out, out / "nb201", out / "nb201" / "retrain", file, str(file)):
        assert model_path(path) == file
    a, b = eps.load_model(out).state_dict(), eps.load_model(file).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.e2e
@needs_cifar
def test_darts_cnn_model_file_reproduces_the_test_metrics(tmp_path_factory):
    params, out = _retrain(tmp_path_factory, "darts-cnn", TINY_CNN, S3_ARCH)
    record = read_model(out / "darts-cnn")
    assert record["network"] == {"num_classes": 10, "channels": 4, "layers": 5, "auxiliary": True}
    assert record["space_settings"]["variant"] == "s3"
    net = eps.load_model(out / "darts-cnn")
    assert net.auxiliary_head is not None and not net.training
    task = _task_again("darts-cnn", params, S3_ARCH)
    task.model = net.to(CPU, memory_format=task.memory_format)
    result, m = task.evaluate(), _metrics(out, "darts-cnn")
    assert (result["test_acc"], result["test_loss"]) == (m["test_acc"], m["test_loss"])


@pytest.mark.e2e
@needs_ptb
def test_darts_rnn_model_file_reproduces_the_perplexities(tmp_path_factory):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_RNN))
    cfg["darts-rnn"]["retrain"].update(RNN_RETRAIN)
    params, out = _retrain(tmp_path_factory, "darts-rnn", cfg, RNN_ARCH)
    record = read_model(out / "darts-rnn")
    sp = params["darts-rnn"]["space"]
    assert record["network"] == {"num_classes": 10000, "channels": 16,
                                 **{k: sp[k] for k in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute",
                                                       "init_range")}}
    net = eps.load_model(out / "darts-rnn")
    assert (net.hidden, net.vocab, net.dropout) == (16, 10000, sp["dropout"])
    task = _task_again("darts-rnn", params, RNN_ARCH)
    task.model = net
    m = _metrics(out, "darts-rnn")
    # the saved model is the best-validation one, which the test perplexity belongs to
    valid, test = task._mean_nll(task.valid_data), task._mean_nll(task.test_data)
    assert (test, math.exp(test)) == (m["test_loss"], m["test_ppl"])
    assert math.exp(valid) == m["best_valid_ppl"]


# ------------------------------------------------------------------------------------------------ refusals

@pytest.mark.e2e
def test_a_changed_weight_is_refused_with_one_line(nb201_run, tmp_path):
    _, out = nb201_run
    record = torch.load(out / "nb201" / "retrain" / "model.pt", weights_only=True)
    name = next(k for k, t in record["state_dict"].items() if t.dtype == torch.float32 and t.numel() > 8)
    record["state_dict"][name].reshape(-1).view(torch.uint8)[5] ^= 1   # one byte of one weight
    bad = tmp_path / "model.pt"
    torch.save(record, bad)
    msg = _one_line_error(eps.load_model, bad)
    assert str(bad) in msg and "weights_sha256" in msg


@pytest.mark.e2e
def test_a_flipped_byte_in_the_file_is_refused_with_one_line(nb201_run, tmp_path):
    _, out = nb201_run
    data = bytearray((out / "nb201" / "retrain" / "model.pt").read_bytes())
    weight = read_model(out / "nb201")["state_dict"]["classifier.weight"]
    at = bytes(data).find(weight.numpy().tobytes())
    assert at > 0
    data[at + 3] ^= 0xFF
    bad = tmp_path / "model.pt"
    bad.write_bytes(bytes(data))
    msg = _one_line_error(eps.load_model, bad)
    assert str(bad) in msg and ("corrupt" in msg)


@pytest.mark.e2e
def test_a_checkpoint_format_file_is_named_as_such(nb201_run, tmp_path):
    _, out = nb201_run
    old = tmp_path / "old" / "model.pt"
    old.parent.mkdir()
    checkpoint.save(old, {"model": read_model(out / "nb201")["state_dict"], "arch": NB201_ARCH})
    msg = _one_line_error(eps.load_model, old.parent)
    assert str(old) in msg and "checkpoint format" in msg and "eps stage retrain" in msg
    last = tmp_path / "last.pt"
    checkpoint.save(last, {"task": {}})
    assert "training checkpoint" in _one_line_error(read_model, last)


def test_missing_and_foreign_files_are_one_line(tmp_path):
    assert "does not exist" in _one_line_error(eps.load_model, tmp_path / "nowhere")
    assert "no model.pt" in _one_line_error(eps.load_model, tmp_path)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    assert "not an eps model file" in _one_line_error(eps.load_model, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("not a torch file")
    assert "corrupt or not an eps model file" in _one_line_error(eps.load_model, text)
    for name in ("a", "b"):
        (tmp_path / "runs" / name / "retrain").mkdir(parents=True)
        torch.save({}, tmp_path / "runs" / name / "retrain" / "model.pt")
    assert "2 spaces (a, b)" in _one_line_error(eps.load_model, tmp_path / "runs")


@pytest.mark.e2e
def test_an_unknown_space_or_newer_format_is_refused(nb201_run, tmp_path):
    _, out = nb201_run
    record = read_model(out / "nb201")
    path = tmp_path / "model.pt"
    torch.save({**record, "space": "no-such-space"}, path)
    msg = _one_line_error(eps.load_model, path, kind=SpaceError)
    assert str(path) in msg and "no-such-space" in msg
    torch.save({**record, "format": "eps-model/2"}, path)
    assert "upgrade eps" in _one_line_error(eps.load_model, path)
    torch.save({**record, "network": {**record["network"], "width_multiplier": 2}}, path)
    assert "cannot rebuild its network" in _one_line_error(eps.load_model, path)


# ------------------------------------------------------------------------------------------------ contract

def test_a_plugin_space_is_saved_under_its_reference_and_loads_back(tmp_path):
    ref = f"{REPO / 'examples' / 'chain_space.py'}:ChainSpace"
    name = register_ref(ref)
    space = get_space(name, load_params(None, {"plugins": [ref]})[name])
    arch = space.decode("conv_3x3-max_pool_3x3-conv_1x1-skip_connect")
    network = {"num_classes": 7, "channels": 5}
    trained = space.build_network(arch, **network)
    path = tmp_path / "model.pt"
    save_model(path, space=name, arch=space.encode(arch), network=network, state_dict=trained.state_dict(),
               space_settings={"channels": 16, "p_mutate": 0.25})
    # the reference the space was first registered from in this process (absolute here, relative when another
    # test registered it from the repository): either names this file
    target, _, cls = torch.load(path, weights_only=True)["space"].rpartition(":")
    assert cls == "ChainSpace" and (REPO / target).resolve() == (REPO / "examples" / "chain_space.py").resolve()
    net = eps.load_model(path)
    assert net.head.out_features == 7 and net.stem[0].out_channels == 5
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), trained.eval()(x))


def test_a_relative_plugin_reference_loads_from_any_working_directory(tmp_path):
    """A run started in a project with ``--space examples/chain_space.py:ChainSpace`` keeps that reference; the
    model loads from elsewhere once the loading process registers the space or names it (fresh processes, so this
    process's registry plays no part). The file's reference alone imports nothing (tests/test_faults_code.py)."""
    project = tmp_path / "project"
    (project / "examples").mkdir(parents=True)
    (project / "examples" / "chain_space.py").write_text((REPO / "examples" / "chain_space.py").read_text())
    save = (
        "import torch; from eps.spaces import register_ref, get_space; from eps.params import load_params\n"
        "from eps.model_file import save_model\n"
        "ref = 'examples/chain_space.py:ChainSpace'; name = register_ref(ref)\n"
        "space = get_space(name, load_params(None, {'plugins': [ref]})[name])\n"
        "net = space.build_network(space.decode('conv_1x1-conv_3x3-skip_connect-conv_3x3'), channels=3)\n"
        "save_model('runs/chain/retrain/model.pt', space=name, arch='conv_1x1-conv_3x3-skip_connect-conv_3x3', "
        "network={'num_classes': 10, 'channels': 3}, state_dict=net.state_dict())\n")
    (project / "runs" / "chain" / "retrain").mkdir(parents=True)
    subprocess.run([sys.executable, "-c", save], cwd=project, check=True,
                   env={**eps_env(True), "PYTHONPATH": str(REPO)})
    assert read_model(project / "runs" / "chain")["space"] == "examples/chain_space.py:ChainSpace"
    ref = "project/examples/chain_space.py:ChainSpace"
    for load in (f"import eps; print(type(eps.load_model({str(project / 'runs')!r}, space={ref!r})).__name__)",
                 f"import eps, eps.spaces; eps.spaces.register_ref({ref!r}); "
                 f"print(type(eps.load_model({str(project / 'runs')!r})).__name__)"):
        out = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, capture_output=True, text=True,
                             env=eps_env(True))
        assert out.returncode == 0 and out.stdout.strip() == "ChainStandalone", out.stderr


def test_a_space_without_build_network_is_refused(tmp_path):
    src = (REPO / "examples" / "chain_space.py").read_text()
    bad = tmp_path / "no_build.py"
    bad.write_text(src.replace('name = "chain"', 'name = "nobuild"').replace("def build_network", "def _build"))
    msg = _one_line_error(register_ref, f"{bad}:ChainSpace", kind=SpaceError)
    assert "build_network" in msg


def test_image_retrain_task_requires_the_network_keywords():
    from eps.train.image import ImageRetrainTask
    msg = _one_line_error(ImageRetrainTask, torch.nn.Linear(1, 1), {}, DATA_ROOT, CPU, 0, kind=SpaceError)
    assert "network=" in msg


def test_builders_keep_their_positional_calls():
    nb = get_space("nb201", load_params()["nb201"])
    arch = nb.decode(NB201_ARCH)
    assert nb.build_network(arch).classifier.out_features == 10
    assert nb.build_network(arch, 100).classifier.out_features == 100
    rnn = get_space("darts-rnn", load_params()["darts-rnn"])
    with torch.device("meta"):
        net = rnn.build_network(rnn.decode(RNN_ARCH), 50, 8)
    assert (net.vocab, net.hidden, net.dropout) == (50, 8, 0.75)


def test_import_eps_stays_light_and_version_comes_from_the_package():
    code = "import sys, eps; print('torch' in sys.modules, eps.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", importlib.metadata.version("eps")]
