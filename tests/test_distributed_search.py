"""The search data parallel under torchrun (2 CPU processes, gloo): the same controller decisions and, up to float
rounding, the same losses as one process; a SIGKILLed 2-rank run resumes to exactly the uninterrupted 2-rank run."""
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_ROOT, TINY_NB201, eps_env, kill_at_random_moments, run_eps

TORCHRUN = Path(sys.executable).parent / "torchrun"
pytestmark = [pytest.mark.distributed, pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")]


def _params(tmp_path, **search) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["nb201"]["warmup"]["iterations"] = 0
    cfg["nb201"]["search"].update(search)
    path = tmp_path / "dp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(*args, check=True, **popen):
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--no-python", "eps", *map(str, args)]
    env = {**eps_env(True), "OMP_NUM_THREADS": "1", "PATH": f"{TORCHRUN.parent}:{os.environ['PATH']}"}
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _history(out):
    return [json.loads(line) for line in (out / "nb201/search/history.jsonl").read_text().splitlines()]


def test_two_ranks_follow_one_process(tmp_path):
    """Same paths, same population, the same train and fitness losses within 1e-4 (a small lr keeps the float
    rounding of split batches from being amplified, as it is between any two thread counts)."""
    params = _params(tmp_path, batch_size=64, lr=0.0003, iterations=30)
    run_eps("stage", "search", "--params", params, "--out", tmp_path / "one", one_thread=True)
    proc = _torchrun("stage", "search", "--params", params, "--out", tmp_path / "two")
    assert "search: 30 iterations, 3 rounds" in proc.stderr + proc.stdout
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert [h["iteration"] for h in one] == [h["iteration"] for h in two] == [10, 20, 30]
    for a, b in zip(one, two):
        assert a["arch"] == b["arch"] and a["count"] == b["count"] and a["age"] == b["age"]
        for x, y in zip(a["loss"], b["loss"]):
            assert (x is None) == (y is None) and (x is None or abs(x - y) < 1e-4), (a["iteration"], x, y)
        for key in ("train_loss", "fitness_best", "fitness_mean"):
            assert abs(a["round"][key] - b["round"][key]) < 1e-4, (a["iteration"], key)
    # one writer: rank 0's outputs, the record says nothing of ranks; the checkpoint does (resume with 2 ranks)
    assert json.loads((tmp_path / "two/nb201/search/metrics.json").read_text())["rounds"] == 3


def test_two_rank_run_killed_resumes_exactly(tmp_path):
    # 12 rounds, a checkpoint after each: two kills at random moments past start-up (two interpreters, gloo
    # rendezvous; each kill advances the run by at most about 4 rounds), mid-search, then the rest
    params = _params(tmp_path, iterations=120, checkpoint_every=1)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _torchrun("stage", "search", "--params", params, "--out", ref)
    kills, finished = kill_at_random_moments(
        lambda: _torchrun("stage", "search", "--params", params, "--out", killed, start_new_session=True),
        killed / "nb201/.work/search/last.pt", random.Random(1),
        kill=lambda proc: _kill_tree(proc.pid),  # torchrun and both ranks at once, as a lost node would
        attempts=2)
    if not finished:
        _torchrun("stage", "search", "--params", params, "--out", killed)
    assert kills >= 1, "the 2-rank search was never interrupted; make it longer"
    for name in ("history.jsonl", "population.csv", "metrics.json", "dvclive/plots/metrics/train/loss.tsv"):
        assert (ref / "nb201/search" / name).read_bytes() == (killed / "nb201/search" / name).read_bytes(), name
    from eps import checkpoint
    a, b = (checkpoint.load(r / "nb201/search/supernet.pt")["model"] for r in (ref, killed))
    assert all((a[k] == b[k]).all() for k in a)


def test_resume_with_another_number_of_ranks_is_refused(tmp_path):
    params = _params(tmp_path, iterations=20, checkpoint_every=1)
    out = tmp_path / "r"
    _torchrun("stage", "search", "--params", params, "--out", out)
    (out / "nb201/search/params.yaml").unlink()  # as if unfinished: the checkpoint decides
    proc = run_eps("stage", "search", "--params", params, "--out", out, check=False)
    assert proc.returncode == 2 and "world_size" in proc.stderr and "--restart" in proc.stderr


def test_darts_cnn_search_two_ranks_follow_one_process(tmp_path):
    from tests.test_darts_cnn import tiny_params
    path = tiny_params(tmp_path / "cnn.yaml")
    cfg = yaml.safe_load(path.read_text())
    cfg["darts-cnn"]["warmup"]["iterations"] = 0
    cfg["darts-cnn"]["search"].update(lr=0.0003, batch_size=32, iterations=20)
    path.write_text(yaml.safe_dump(cfg))
    run_eps("stage", "search", "--space", "darts-cnn", "--params", path, "--out", tmp_path / "one", one_thread=True)
    _torchrun("stage", "search", "--space", "darts-cnn", "--params", path, "--out", tmp_path / "two")
    one, two = ([json.loads(line) for line in (r / "darts-cnn/search/history.jsonl").read_text().splitlines()]
                for r in (tmp_path / "one", tmp_path / "two"))
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a["arch"] == b["arch"]
        assert all(abs(x - y) < 1e-4 for x, y in zip(a["loss"], b["loss"]) if x is not None)


def test_darts_rnn_retrains_under_torchrun(tmp_path):
    """Data parallel over the training columns, evaluation whole on every rank: the replicas end identical and the
    model learns (the validation perplexity falls)."""
    from tests.test_darts_rnn import DARTS_V2, TINY
    path = tmp_path / "rnn.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "r"
    _torchrun("stage", "retrain", "--space", "darts-rnn", "--params", path, "--out", out, "--arch", DARTS_V2)
    d = out / "darts-rnn/retrain"
    timing = json.loads((d / "timing.json").read_text())
    assert timing["world_size"] == 2 and timing["replicas_identical"]
    rows = [line.split(",") for line in (d / "curve.csv").read_text().splitlines()]
    valid = [float(r[rows[0].index("valid_ppl")]) for r in rows[1:]]
    assert len(valid) == 3 and valid[-1] < valid[0]
    import eps
    assert eps.load_model(out / "darts-rnn") is not None
