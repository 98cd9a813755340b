"""The space contract (eps/space.py), checked on every registered space and on the example kept outside eps
(examples/chain_space.py): notation round trips, sampling and mutation stay in the space, ``largest`` is the largest,
parameter counts, params sections from the space's own defaults, and a tiny warm-up -> search -> select -> retrain
-> report through the real CLI on real data. Also: how a broken or half-written space is reported, and the
regression on the reference implementation's published run."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from eps.params import load_params
from eps.errors import ArchError, SpaceError
from eps.spaces import BUILTIN, check_space, get_space, register_ref, registered
from tests.conftest import DATA_ROOT, REPO, TINY_NB201, eps_env, run_eps
from tests.test_darts_rnn import TINY as TINY_RNN

pytestmark = pytest.mark.unit

EXAMPLE = "examples/chain_space.py:ChainSpace"
GLYPH = "examples/tensor_space.py:GlyphSpace"    # the generic tensor tasks on data that is not CIFAR
PLUGINS = {"chain": EXAMPLE, "glyph": GLYPH}
for _ref in PLUGINS.values():
    register_ref(str(REPO / _ref))
SPACES = [*BUILTIN, *PLUGINS]


def tiny(name: str) -> dict:
    """A tiny params file for one space: real data subsets, seconds per stage on a CPU."""
    if name == "nb201":
        return yaml.safe_load(yaml.safe_dump(TINY_NB201))
    if name == "darts-rnn":
        return yaml.safe_load(yaml.safe_dump(TINY_RNN))
    if name == "glyph":
        cfg = yaml.safe_load((REPO / "examples" / "tensor.yaml").read_text())
        cfg["plugins"] = [str(REPO / GLYPH)]
        cfg["glyph"].update(space={"channels": 16, "samples": 600}, warmup={"iterations": 20, "batch_size": 32},
                            search={"iterations": 60, "val_interval": 10, "population": 8, "group": 4, "parents": 2,
                                    "batch_size": 32, "fitness_batch_size": 50, "checkpoint_every": 1},
                            select={"window": 40}, retrain={"epochs": 1, "batch_size": 32})
        return cfg
    loop = {"iterations": 30, "val_interval": 10, "population": 8, "group": 4, "parents": 2, "batch_size": 16,
            "fitness_batch_size": 32, "checkpoint_every": 1}
    section = {"warmup": {"iterations": 0}, "supernet": {"data_subset": 256, "channels_last": False},
               "search": loop, "select": {"window": 30}}
    if name == "darts-cnn":
        section.update(space={"variant": "s3", "channels": 4, "layers": 5},
                       retrain={"channels": 4, "layers": 5, "epochs": 1, "batch_size": 32, "train_subset": 128,
                                "test_subset": 100, "cutout": 8})
    else:
        section.update(space={"channels": 8}, retrain={"epochs": 1, "batch_size": 32, "train_subset": 128,
                                                       "test_subset": 100})
    out = {"seed": 0, "device": "cpu", "spaces": [name], name: section}
    if name == "chain":
        out["plugins"] = [EXAMPLE]
    return out


@pytest.fixture(scope="module", params=SPACES)
def space(request):
    name = request.param
    return get_space(name, load_params(None, tiny(name))[name])


def test_every_builtin_space_and_the_example_are_registered():
    assert set(SPACES) <= set(registered())


def test_notation_round_trips_and_mutation_stays_in_the_space(space):
    rng = np.random.default_rng(0)
    for _ in range(30):
        arch = space.sample(rng)
        hash(arch)
        text = space.encode(arch)
        assert isinstance(text, str) and space.decode(text) == arch
        child = space.mutate(arch, rng)
        assert space.decode(space.encode(child)) == child
    with pytest.raises(ArchError):
        space.decode("certainly not an architecture")


def test_mutation_changes_something_over_many_draws(space):
    rng = np.random.default_rng(1)
    arch = space.sample(rng)
    assert any(space.mutate(arch, rng) != arch for _ in range(50))


def test_largest_is_the_largest_and_counts_are_positive_integers(space):
    rng = np.random.default_rng(2)
    biggest = space.num_params(space.largest())
    assert isinstance(biggest, int) and biggest > 0
    for _ in range(15):
        n = space.num_params(space.sample(rng))
        assert isinstance(n, int) and 0 < n <= biggest


@pytest.mark.cli
@pytest.mark.parametrize("name", SPACES)
def test_params_section_comes_from_the_space_defaults_and_pastes_back(name, tmp_path):
    args = ["params", "--space", f"{REPO / PLUGINS[name]}" if name in PLUGINS else name]
    printed = run_eps(*args, cwd=tmp_path).stdout
    section = yaml.safe_load(printed)
    assert list(section) == [name]
    pasted = tmp_path / "params.yaml"
    pasted.write_text(yaml.safe_dump({"spaces": [name], "plugins": [str(REPO / PLUGINS[name])] if name in PLUGINS else [],
                                      **section}))
    assert load_params(pasted)[name] == section[name]


@pytest.mark.e2e
@pytest.mark.parametrize("name", SPACES)
def test_tiny_pipeline_through_the_cli(name, tmp_path):
    params = tmp_path / "tiny.yaml"
    cfg = tiny(name)
    if name == "chain":
        shutil.copytree(REPO / "examples", tmp_path / "examples")
    params.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    # `eps run`: the four stages and the report in one process (each stage as its own command: tests/test_stages.py,
    # tests/test_dvc.py)
    run_eps("run", "--space", name, "--params", params, "--out", out, cwd=tmp_path, one_thread=True, timeout=600)
    root = out / name
    sp = get_space(name, load_params(params)[name])
    chosen = (root / "select" / "arch.txt").read_text().strip()
    assert sp.encode(sp.decode(chosen)) == chosen
    metrics = json.loads((root / "retrain" / "metrics.json").read_text())
    assert json.loads((root / "retrain" / "run.json").read_text())["arch"] == chosen
    assert metrics["params"] == sp.num_params(sp.decode(chosen))
    # a rebuilt trained network from the plain model file (a fresh process: this one's registry may hold another
    # copy of a plugin space under the same name)
    given = str(REPO / PLUGINS[name]) if name in PLUGINS else None  # a plugin's model file imports nothing itself
    code = (f"import eps; print(sum(p.numel() for p in eps.load_model({str(root)!r}, space={given!r})"
            f".parameters()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=eps_env(True))
    assert proc.returncode == 0 and int(proc.stdout.strip()) >= metrics["params"], proc.stderr
    assert (root / "report" / "report.txt").read_text().strip()


@pytest.mark.e2e
def test_warmup_of_zero_iterations_is_optional_and_changes_nothing(tmp_path):
    cfg = tiny("chain")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(cfg))
    run_eps("stage", "warmup", "--space", "chain", "--params", params, "--out", "with", cwd=tmp_path, one_thread=True)
    for out in ("with", "without"):
        run_eps("stage", "search", "--space", "chain", "--params", params, "--out", out, cwd=tmp_path,
                one_thread=True)
    assert not (tmp_path / "without" / "chain" / "warmup").exists()
    a, b = (tmp_path / d / "chain" / "search" / "history.jsonl" for d in ("with", "without"))
    assert a.read_bytes() == b.read_bytes()


# ------------------------------------------------------------------------------------------ broken spaces

class _Half:
    name = "half"

    def sample(self, rng):
        return 0


def test_a_half_written_space_is_named_with_what_it_lacks():
    with pytest.raises(SpaceError) as err:
        check_space(_Half, "my_space.py:_Half")
    msg = str(err.value)
    assert "my_space.py:_Half" in msg and "mutate" in msg and "\n" not in msg


def test_a_space_whose_defaults_do_not_validate_is_refused(tmp_path):
    bad = tmp_path / "bad_space.py"
    text = (REPO / "examples" / "chain_space.py").read_text()
    bad.write_text(text.replace('name = "chain"', 'name = "badchain"')
                   .replace("channels: int = Field(16, ge=1)", "channels: int = Field(-3, ge=1)"))
    with pytest.raises(SpaceError) as err:
        register_ref(f"{bad}:ChainSpace")
    assert "badchain" in str(err.value) and "defaults do not validate" in str(err.value)
    assert "badchain" not in registered() and "nb201" in registered()
    load_params()  # every other space still validates


@pytest.mark.cli
def test_cli_broken_or_missing_space_is_one_line_and_others_keep_working(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy\nraise RuntimeError('half written')\n")
    for ref, needle in ((f"{broken}:Space", "failed to import"), ("nope.py:Space", "not found"),
                        ("examples/chain_space.py:Nope", "no attribute"), ("nb20", "unknown search space")):
        proc = run_eps("params", "--space", ref, cwd=REPO, check=False)
        assert proc.returncode == 2 and needle in proc.stderr, (ref, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert run_eps("params", "--space", "nb201", cwd=tmp_path).stdout.startswith("nb201:")


# ------------------------------------------------------------------------------------------ reference regression

REFERENCE_RUN = DATA_ROOT / "reference-runs" / "nb201-cifar10-seed111"


@pytest.mark.e2e
@pytest.mark.skipif(not (REFERENCE_RUN.is_dir() and (DATA_ROOT / "nb201" / "ground_truth.csv").exists()),
                    reason="reference run or NAS-Bench-201 ground truth not under the data root")
def test_reference_run_selects_the_published_cell(tmp_path):
    """The reference implementation's published run (seed 111, 1,600 snapshots): the paper's rule picks the cell
    its README names (CIFAR-10 test 94.3633, valid 91.5533, rank 3 of 15,625); the prior-free rule one at 93.66."""
    run_eps("import-records", REFERENCE_RUN, "--out", tmp_path / "runs", cwd=tmp_path)
    run_eps("stage", "select", "--space", "nb201", "--out", tmp_path / "runs", cwd=tmp_path)
    sel = json.loads((tmp_path / "runs" / "nb201" / "select" / "selection.json").read_text())
    gt = sel["size_prior"]["ground_truth"]
    assert (gt["cifar10_test"], gt["cifar10_valid"], gt["rank"]) == (94.3633, 91.5533, 3)
    assert sel["prior_free"]["ground_truth"]["cifar10_test"] == 93.66
    assert sel["arch"] == sel["size_prior"]["arch"]


def test_shipped_params_yaml_is_exactly_the_defaults():
    """params.yaml documents the paper protocol: it must hold every key with the code's default value."""
    from eps.params import defaults
    assert load_params(REPO / "params.yaml") == defaults()
