"""`eps study correlation` on a tiny budget: outputs, every metric recomputed independently, exact resume."""
import csv
import itertools
import json
import math
import os
import subprocess

import numpy as np
import pytest
import torch
import yaml

from eps import io as eio
from eps import study as st
from eps.checkpoint import CheckpointDir
from eps.config import load_params
from eps.errors import ConfigError
from eps.evolution import Controller
from eps.search import run_search
from eps.spaces import get_space
from eps.train.common import seed_everything
from pipeline import study as study_stage
from tests.conftest import DATA_ROOT, EPS, TINY_NB201, run_eps

SETS = ("uniform", "top", "population")


def brute_tau_b(x, y) -> float:
    """Kendall tau-b by enumerating every pair."""
    n0 = n1 = n2 = c = d = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        n0 += 1
        n1 += dx == 0
        n2 += dy == 0
        c += dx * dy > 0
        d += dx * dy < 0
    return (c - d) / math.sqrt((n0 - n1) * (n0 - n2))


def brute_rho(x, y) -> float:
    def ranks(v):
        v = list(v)
        return np.array([sum(w < a for w in v) + (sum(w == a for w in v) + 1) / 2 for a in v])
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def ground_truth(column="cifar10_test") -> dict[str, float]:
    with open(DATA_ROOT / "nb201/ground_truth.csv", newline="") as f:
        return {row["arch"]: float(row[column]) for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def gt():
    return ground_truth()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    params = tmp / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY_NB201))
    out = tmp / "runs"
    proc = run_eps("study", "correlation", "--space", "nb201", "--params", params, "--out", out)
    return out / "nb201", proc


def test_cli_outputs_and_table(cli_run):
    root, proc = cli_run
    d = root / "study"
    for png in ("scores_vs_accuracy.png", "tau_over_time.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (d / png).stat().st_size > 1000
    text = (d / "report.txt").read_text()
    assert text in proc.stdout
    assert "RandomNAS vs EPS" in text and "2 shared batches of 20 images" in text
    for label in ("uniform (whole space)", "top 20% (ground truth)", "EPS population", "Kendall tau over training"):
        assert label in text
    # one table row per set x supernet, plus the tau table's rows
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert sum(("RandomNAS" in r or " EPS " in r) and "population" in r for r in rows) == 2
    res = json.loads((d / "study.json").read_text())
    assert res["settings"]["fitness_batches"] == 2 and res["settings"]["images_per_cell"] == 40
    assert res["column"] == "cifar10_test" and res["top_fraction"] == 0.2
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["summary"] == res["summary"]


def test_every_metric_matches_an_independent_computation(cli_run, gt):
    root, _ = cli_run
    res = json.loads((root / "study/study.json").read_text())
    values = np.array(sorted(gt.values()))
    threshold = values[len(values) - math.ceil(0.2 * len(values))]
    assert [s["seed"] for s in res["seeds"]] == [0]
    seed = res["seeds"][0]
    sets = seed["sets"]
    assert len(sets["uniform"]["arch"]) == len(set(sets["uniform"]["arch"])) == 12
    assert len(sets["top"]["arch"]) == len(set(sets["top"]["arch"])) == 12
    assert all(gt[a] >= threshold for a in sets["top"]["arch"])
    # the third set is the EPS run's final population, distinct cells
    hist = list(eio.read_jsonl(root / ".work/study/seed0/eps/history.jsonl"))
    assert hist[-1]["iteration"] == 60
    assert sets["population"]["arch"] == list(dict.fromkeys(hist[-1]["arch"]))
    for name in SETS:
        assert sets[name]["accuracy"] == [gt[a] for a in sets[name]["arch"]]
    checked = 0
    for strategy in ("random", "eps"):
        sn = seed["supernets"][strategy]
        for name in SETS:
            archs, acc = sets[name]["arch"], np.array(sets[name]["accuracy"])
            scores = np.array(sn["scores"][name])
            assert scores.shape == acc.shape and np.isfinite(scores).all() and (scores > 0).all()
            m = sn["metrics"][name]
            assert m["n"] == len(archs)
            assert m["tau"] == pytest.approx(brute_tau_b(-scores, acc), abs=1e-12)
            assert m["rho"] == pytest.approx(brute_rho(-scores, acc), abs=1e-12)
            for k in (5, 10, 50):
                if k >= len(archs):
                    assert m["precision_at"][str(k)] is None
                    continue
                top_score = np.argsort(scores, kind="stable")[:k]
                kth = sorted(acc, reverse=True)[k - 1]
                assert m["precision_at"][str(k)] == pytest.approx(np.mean(acc[top_score] >= kth))
            best = int(np.argmin(scores))
            assert m["best_scored"]["arch"] == archs[best]
            assert m["best_scored"]["accuracy"] == acc[best]
            assert m["best_scored"]["rank"] == 1 + int((values > acc[best]).sum())
            s = res["summary"][strategy][name]
            assert s["tau"]["mean"] == m["tau"] and s["tau"]["n"] == 1
            checked += 1
        # tau over training: every 2 rounds of 10 iterations and at the end, on the first 6 cells of two sets
        records = sn["tau_over_time"]
        assert [r["iteration"] for r in records] == [20, 40, 60]
        for r in records:
            for name in ("uniform", "top"):
                acc = np.array(sets[name]["accuracy"][:6])
                assert len(r["scores"][name]) == 6
                assert r["tau"][name] == pytest.approx(brute_tau_b(-np.array(r["scores"][name]), acc), abs=1e-12)
        # the last tau point scores the same cells with the final weights and batches as the final scoring
        assert records[-1]["scores"]["uniform"] == pytest.approx(sn["scores"]["uniform"][:6], rel=1e-6)
    assert checked == 6


def _tiny_params(**study):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["study"].update(study)
    return load_params(overrides=cfg)


def _without_timing(res: dict) -> dict:
    res = json.loads(json.dumps(res))
    for seed in res["seeds"]:
        for sn in seed["supernets"].values():
            sn.pop("timing")
    return res


def test_interrupted_study_resumes_exactly(tmp_path, monkeypatch):
    params = _tiny_params()
    ref = study_stage.correlation("nb201", params, tmp_path / "ref")

    calls = []
    original = st.TauTracker.__call__

    def interrupt_in_the_eps_run(self, t):
        calls.append(t)
        if calls.count(40) == 1 and t == 40:  # the EPS run, after the tau point at 20 and the checkpoint at 30
            raise KeyboardInterrupt
        return original(self, t)

    monkeypatch.setattr(st.TauTracker, "__call__", interrupt_in_the_eps_run)
    with pytest.raises(KeyboardInterrupt):
        study_stage.correlation("nb201", params, tmp_path / "cut")
    assert not (tmp_path / "cut/nb201/study").exists()
    monkeypatch.setattr(st.TauTracker, "__call__", original)
    resumed = study_stage.correlation("nb201", params, tmp_path / "cut")
    assert resumed["seeds"][0]["supernets"]["eps"]["timing"]["resumed_from"] == 30
    assert _without_timing(resumed) == _without_timing(ref)


def test_search_hook_does_not_change_the_search_and_its_state_is_restored(tmp_path):
    params = _tiny_params()
    section = params["nb201"]
    space = get_space("nb201", section)
    cfg = {**section["search"], "iterations": 30}

    def search(work, hooked):
        seed_everything(5)
        task = space.search_task(section, DATA_ROOT, torch.device("cpu"), 5, "search")
        ctrl = Controller(space, np.random.default_rng([5, 2]), population=8, group=4, parents=2)
        hook = None
        if hooked:
            batches = task.validation_batches(2, 9)
            rng = np.random.default_rng(1)
            archs = [space.sample(rng) for _ in range(4)]
            hook = st.TauTracker(task, {"uniform": archs}, {"uniform": np.arange(4.0)}, batches, 1, 10, 30)
        log = eio.AppendLog(work / "history.jsonl")
        try:
            res = run_search(space, task, ctrl, cfg, log, CheckpointDir(work, {}, log=lambda m: None), on_round=hook)
        finally:
            log.close()
        return res, hook, (work / "history.jsonl").read_bytes()

    _, _, plain = search(tmp_path / "plain", False)
    res, hook, hooked = search(tmp_path / "hooked", True)
    assert hooked == plain
    assert [r["iteration"] for r in hook.records] == [10, 20, 30]
    # the same command again resumes from the final checkpoint: same history, last loss and hook records
    again, hook2, history2 = search(tmp_path / "hooked", True)
    assert again.resumed_from == 30 and history2 == hooked
    assert again.last_train_loss == res.last_train_loss and math.isfinite(res.last_train_loss)
    assert json.dumps(hook2.records) == json.dumps(hook.records)
    assert all(math.isfinite(r["tau"]["uniform"]) for r in hook.records)


def test_precision_at_k_definition():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    acc = [90, 80, 95, 70, 95, 60]
    # the two best-scored cells (90, 80) vs the two most accurate (95, 95): none shared
    assert st.precision_at_k(scores, acc, 2) == 0.0
    # top 3 by accuracy: 95, 95, 90; best-scored three: 90, 80, 95 -> 2 of 3
    assert st.precision_at_k(scores, acc, 3) == pytest.approx(2 / 3)
    assert st.precision_at_k(scores, acc, 6) is None
    # ties at the k-th accuracy count as inside
    assert st.precision_at_k([0.1, 0.2, 0.3], [50, 50, 40], 1) == 1.0


def test_study_params_are_validated(tmp_path):
    with pytest.raises(ConfigError) as err:
        _tiny_params(seeds=[], n_top=1, top_fraction=0.0, tau_every=-1)
    msg = str(err.value)
    for needle in ("study.seeds", "study.n_top: got 1", "study.top_fraction", "study.tau_every"):
        assert needle in msg
    proc = run_eps("study", "correlation", "--seeds", "0,x", check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "--seeds" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_study_without_ground_truth_is_one_line_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-batches-py").symlink_to(DATA_ROOT / "cifar-10-batches-py")
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY_NB201))
    env = {**os.environ, "EPS_DATA_DIR": str(data), "EPS_PROGRESS": "0"}
    proc = subprocess.run([EPS, "study", "correlation", "--params", params, "--out", tmp_path / "r"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "ground_truth.csv" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
