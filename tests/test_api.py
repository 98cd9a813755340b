"""The Python API (eps.api, re-exported from eps): the example script, in-memory and run-folder runs giving the
CLI's results, exact resume through a run folder, callbacks, and the enforced parts of the contract (a task whose
state does not round-trip is refused at its first checkpoint; a task that is not data parallel is refused under
torchrun)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import eps
from eps.errors import ConfigError, EpsError, SpaceError
from tests.conftest import DATA_ROOT, REPO, TINY_NB201, eps_env, run_eps

pytestmark = pytest.mark.e2e

TORCHRUN = Path(sys.executable).parent / "torchrun"


def _tiny(**search) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["nb201"]["search"].update(search)
    return cfg


def test_the_api_example_script_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "api_search.py"), "--run-dir", str(tmp_path)],
                          env=eps_env(one_thread=True), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("iteration ") for line in lines) == 6          # one callback per round
    assert any(line.startswith("size_prior: |") for line in lines)          # an NB201 cell, with ground truth
    assert "rank" in next(line for line in lines if line.startswith("size_prior"))
    assert lines[-1].startswith("retrained |") and "test accuracy" in lines[-1]
    assert (tmp_path / "nb201" / ".work" / "search" / "last.pt").is_file()   # the run folder was used


def test_api_in_memory_gives_the_cli_results(tmp_path, one_thread):
    """The CLI stages and the API run the same code: same history, same choice, same retrained metrics."""
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(TINY_NB201))
    run_eps("run", "--params", params, "--out", tmp_path / "runs", one_thread=True)
    exp = eps.Experiment("nb201", params)
    rounds = []
    found = exp.search(callbacks=[rounds.append])
    cli_history = eps.api.read_history(tmp_path / "runs" / "nb201" / "search" / "history.jsonl")
    assert found.history == cli_history
    assert rounds == [r for r in cli_history if "round" in r]
    assert found.population["arch"] == cli_history[-1]["arch"]
    chosen = exp.select(found)
    cli_choice = (tmp_path / "runs" / "nb201" / "select" / "arch.txt").read_text().strip()
    assert chosen.arch == cli_choice
    assert chosen.choices["size_prior"].ground_truth["rank"] >= 1       # NB201's benchmark is under the data root
    assert set(chosen.choices) == {"size_prior", "prior_free"}
    trained = exp.retrain(chosen)
    import json
    cli_metrics = json.loads((tmp_path / "runs" / "nb201" / "retrain" / "metrics.json").read_text())
    assert trained.metrics["test_acc"] == cli_metrics["test_acc"]
    assert trained.metrics["train_loss"] == cli_metrics["train_loss"]
    assert not trained.model.training


def test_run_dir_resumes_exactly(tmp_path, one_thread):
    """A search stopped in a callback after round 3 resumes from its checkpoint to the uninterrupted history."""
    whole = eps.Experiment("nb201", _tiny()).search()

    class Stop(Exception):
        pass

    def stop_at_round_3(record):
        if record["iteration"] == 30:
            raise Stop

    with pytest.raises(Stop):
        eps.Experiment("nb201", _tiny(), run_dir=tmp_path).search(callbacks=[stop_at_round_3])
    notes = []
    resumed = eps.Experiment("nb201", _tiny(), run_dir=tmp_path, log=notes.append).search()
    assert any("resumed from iteration" in n for n in notes)
    assert resumed.resumed_from > 0
    assert resumed.history == whole.history
    assert resumed.population == whole.population


def test_list_build_and_load(tmp_path):
    assert {"nb201", "darts-cnn", "darts-rnn"} <= set(eps.list_spaces())
    space = eps.build_space("nb201", {"space": {"channels": 8}})
    assert space.encode(space.largest()).startswith("|")
    params = eps.load_params(overrides={"nb201": {"search": {"iterations": 10}}})
    assert params["nb201"]["search"]["iterations"] == 10
    with pytest.raises(ConfigError, match="nb201.search.lr"):
        eps.Experiment("nb201", overrides={"nb201": {"search": {"lr": -1}}})
    with pytest.raises(EpsError, match="select needs a search"):
        eps.Experiment("nb201").select()


PLUGIN = textwrap.dedent('''
    import importlib.util
    import sys
    import numpy as np

    _spec = importlib.util.spec_from_file_location("chain_example_for_api_tests", {example!r})
    _chain = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _chain   # its pydantic settings resolve their annotations through the module
    _spec.loader.exec_module(_chain)


    class Whole:
        """A supernet task that computes the whole run in every process: not data parallel."""
        supports_distributed = False

        def __init__(self, inner):
            self.inner, self.model, self.device = inner, inner.model, inner.device

        def __getattr__(self, name):
            return getattr(self.inner, name)


    class NumpyState(Whole):
        """A task whose state holds a NumPy float: torch.load(weights_only=True) refuses it."""
        def state_dict(self):
            return {{**self.inner.state_dict(), "lr": np.float64(0.1)}}


    class WholeSpace(_chain.ChainSpace):
        name = "chain-whole"

        def search_task(self, *args, **kwargs):
            return Whole(super().search_task(*args, **kwargs))


    class NumpyStateSpace(_chain.ChainSpace):
        name = "chain-numpy"

        def search_task(self, *args, **kwargs):
            return NumpyState(super().search_task(*args, **kwargs))
''')


def _plugin(tmp_path) -> Path:
    path = tmp_path / "odd_spaces.py"
    path.write_text(PLUGIN.format(example=str(REPO / "examples" / "chain_space.py")))
    return path


def _chain_params(name: str) -> dict:
    loop = {"iterations": 20, "val_interval": 10, "population": 8, "group": 4, "parents": 2, "batch_size": 16,
            "fitness_batch_size": 32, "checkpoint_every": 1}
    return {"seed": 0, "device": "cpu", name: {
        "space": {"channels": 4}, "warmup": {"iterations": 4, "batch_size": 16, "checkpoint_every": 2},
        "supernet": {"data_subset": 128, "channels_last": False}, "search": loop, "select": {"window": 20}}}


def test_task_state_that_does_not_round_trip_is_refused_at_the_first_save(tmp_path):
    ref = f"{_plugin(tmp_path)}:NumpyStateSpace"
    exp = eps.Experiment(ref, _chain_params("chain-numpy"), run_dir=tmp_path / "runs")
    with pytest.raises(SpaceError) as err:
        exp.warmup()
    msg = str(err.value)
    assert "\n" not in msg
    assert "state.task.lr" in msg and "numpy.float64" in msg
    assert not (tmp_path / "runs" / "chain-numpy" / ".work" / "warmup" / "last.pt").exists()


@pytest.mark.distributed
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_torchrun_refuses_a_task_that_is_not_data_parallel(tmp_path):
    ref = f"{_plugin(tmp_path)}:WholeSpace"
    params = tmp_path / "p.yaml"
    cfg = _chain_params("chain-whole")
    cfg["chain-whole"]["warmup"]["iterations"] = 0
    params.write_text(yaml.safe_dump(cfg))
    env = {**eps_env(True), "PATH": f"{TORCHRUN.parent}:{os.environ['PATH']}"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--no-python", "eps", "stage", "search",
           "--space", ref, "--params", str(params), "--out", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "does not support several processes" in proc.stdout + proc.stderr
    assert not (tmp_path / "runs" / "chain-whole" / "search").exists()


@pytest.mark.unit
def test_using_one_space_builds_and_checks_no_other():
    code = ("import eps, eps.spaces as s; eps.Experiment('nb201').space; "
            "print(sorted(s._checked), sorted(s.broken()))")
    proc = subprocess.run([sys.executable, "-c", code], env=eps_env(True), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("]")[0] == "['nb201'", proc.stdout   # darts-cnn and darts-rnn were never built


@pytest.mark.unit
def test_eps_leaves_the_host_process_alone():
    """No audit hook (eps used one to see which data files a task opened): loaders name their files instead."""
    sources = [p for p in (REPO / "eps").rglob("*.py")] + [p for p in (REPO / "pipeline").rglob("*.py")]
    assert not [p for p in sources if "addaudithook" in p.read_text()]
    from eps import checkpoint
    from eps.data.cifar import load_split
    with checkpoint.data_fingerprint(DATA_ROOT) as found:
        load_split(DATA_ROOT)
    assert list(found) == ["nb201/cifar10-split.json"]
    with checkpoint.data_fingerprint(DATA_ROOT) as outside:
        pass
    load_split(DATA_ROOT)               # a read outside any fingerprint block is noted nowhere
    assert outside == {}


def test_api_and_cli_share_a_run_folder_and_the_defaults_follow_the_last_results(tmp_path, one_thread):
    """Found by the fresh-user pass: `eps run` after an API search without warm-up resumes the API's checkpoint;
    select() and retrain() default to the object's last search and selection; a Choice retrains."""
    cfg = _tiny()
    cfg["nb201"]["warmup"]["iterations"] = 0
    cfg["nb201"]["retrain"]["epochs"] = 1
    exp = eps.Experiment("nb201", cfg, run_dir=tmp_path / "runs")
    found = exp.search()
    chosen = exp.select()                                  # the search just run
    assert chosen.arch == exp.select(found).arch
    trained = exp.retrain(chosen.choices["prior_free"])   # a Choice
    assert trained.arch == chosen.choices["prior_free"].arch
    assert exp.retrain().arch == chosen.arch               # the last selection
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(cfg))
    proc = run_eps("run", "--params", params, "--out", tmp_path / "runs", one_thread=True)
    assert "resumed from iteration 60" in proc.stdout + proc.stderr
    assert eps.api.read_history(tmp_path / "runs" / "nb201" / "search" / "history.jsonl") == found.history
    with pytest.raises(EpsError, match="is a file, not a folder"):
        eps.Experiment("nb201", cfg, run_dir=params)
    with pytest.raises(SpaceError, match="unknown search space 'nb2O1'"):
        eps.Experiment("nb2O1")
    with pytest.raises(EpsError, match="callbacks must be functions"):
        eps.Experiment("nb201", cfg).search(callbacks=[1])
