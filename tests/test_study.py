"""`eps study correlation` on a tiny budget: outputs, every metric recomputed independently, exact resume, and
arms: any two settings compared, each validated against the space, each cached on its own."""
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
from eps.params import load_params
from eps.errors import CheckpointError, ConfigError
from eps.evolution import Controller
from eps.search import run_search
from eps.spaces import get_space
from eps.train.common import seed_everything
from eps.pipeline import study as study_stage
from tests.conftest import DATA_ROOT, EPS, TINY_NB201, run_eps

pytestmark = pytest.mark.unit

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


# session-scoped, not module: a module fixture was made twice in full runs (pytest-xdist); tests/conftest.py
# keeps the tests of a session fixture on one worker, where it lives until the end
@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    params = tmp / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY_NB201))
    out = tmp / "runs"
    proc = run_eps("study", "correlation", "--space", "nb201", "--params", params, "--out", out)
    return out / "nb201", proc


@pytest.mark.e2e
def test_cli_outputs_and_table(cli_run):
    root, proc = cli_run
    d = root / "study"
    for png in ("scores_vs_accuracy.png", "tau_over_time.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (d / png).stat().st_size > 1000
    text = (d / "report.txt").read_text()
    assert text in proc.stdout
    # the default arms are today's comparison, labelled by their names
    # the caption says what the task measures (ScoringTask.describe_scoring), the same batches for every cell
    assert "random vs eps supernet" in text and "2 batches of 20 validation samples" in " ".join(text.split())
    assert "the same batches for every cell" in " ".join(text.split())
    assert "random: search.strategy=random; eps: search.strategy=eps" in " ".join(text.split())
    for label in ("uniform (whole space)", "top 20% (ground truth)", "eps population", "Kendall tau over training",
                  "random uniform", "eps top"):
        assert label in text
    # one table row per set x arm, plus the tau table's rows
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert sum(("│ random " in r or "│ eps " in r) and "population" in r for r in rows) == 2
    res = json.loads((d / "study.json").read_text())
    assert res["arms"] == {"random": {"overrides": {"search": {"strategy": "random"}}, "strategy": "random",
                                      "iterations": 60, "images_per_cell": 40},
                           "eps": {"overrides": {"search": {"strategy": "eps"}}, "strategy": "eps",
                                   "iterations": 60, "images_per_cell": 40}}
    assert res["population_arm"] == "eps" and list(res["seeds"][0]["supernets"]) == ["random", "eps"]
    assert res["settings"]["fitness_batches"] == 2 and res["settings"]["images_per_cell"] == 40
    # study.column null: the benchmark's primary column (NB201 on CIFAR-10: cifar10_test)
    assert res["column"] == "cifar10_test" and res["top_fraction"] == 0.2
    metrics = json.loads((d / "metrics.json").read_text())
    assert_numbers_only(metrics)
    assert metrics == st.numbers_only({"summary": res["summary"]})
    assert metrics["summary"]["eps"]["top"]["tau"]["mean"] == res["summary"]["eps"]["top"]["tau"]["mean"]


def assert_numbers_only(obj):
    """Every leaf a number (what `dvc exp show` makes columns of)."""
    for v in obj.values():
        if isinstance(v, dict):
            assert v
            assert_numbers_only(v)
        else:
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), v


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.cli
def test_study_params_are_validated(tmp_path):
    with pytest.raises(ConfigError) as err:
        _tiny_params(seeds=[], n_top=1, top_fraction=0.0, tau_every=-1)
    msg = str(err.value)
    for needle in ("study.seeds", "study.n_top: got 1", "study.top_fraction", "study.tau_every"):
        assert needle in msg
    with pytest.raises(ConfigError) as err:
        _tiny_params(arms={"a": {}, "b": {}, "c": {}})
    assert "study.arms: got 3 arm(s) (a, b, c); the study compares exactly two" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _tiny_params(arms={"a/b": {}, "c": {}})
    assert "study.arms: arm name 'a/b'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _tiny_params(arms={"a": {}, "c": {"search": 3}})
    assert "study.arms.c.search: got 3, expected a mapping of keys" in str(err.value)
    proc = run_eps("study", "correlation", "--seeds", "0,x", check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "--seeds" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.cli
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


# ---------------------------------------------------------------------------------------------------- arms

@pytest.mark.cli
def test_bad_arm_is_one_line_exit_2_before_any_folder(tmp_path):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["study"]["arms"] = {"mut": {"search": {"proposer": "mutation"}}, "pred": {"search": {"proposr": "predictor"}}}
    params = tmp_path / "bad.yaml"
    params.write_text(yaml.safe_dump(cfg))
    proc = run_eps("study", "correlation", "--space", "nb201", "--params", params, "--out", tmp_path / "r",
                   check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "study.arms.pred.search.proposr: unknown key (allowed here:" in proc.stderr and "proposer" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_arms_are_validated_against_the_space():
    params = _tiny_params()
    section, study = params["nb201"], params["study"]
    model = get_space("nb201", section).Params
    arms = st.arm_sections(model, section, {**study, "arms": {
        "a": {"search": {"proposer": "predictor"}, "supernet": {"progressive": [20, 40]},
              "space": {"cells_per_stage": 3}}, "b": {}}})  # a schedule needs cells to add
    # the space's section, the study's budget, then the arm's overrides
    assert arms["a"]["search"]["proposer"] == "predictor" and arms["a"]["supernet"]["progressive"] == [20, 40]
    assert arms["a"]["search"]["iterations"] == arms["b"]["search"]["iterations"] == 60
    assert arms["b"]["search"]["strategy"] == "eps" and arms["b"]["space"] == section["space"]
    assert arms["b"]["search"]["population"] == section["search"]["population"] == 8
    own_budget = st.arm_sections(model, section, {**study, "arms": {"a": {"search": {"iterations": 30}}, "b": {}}})
    assert own_budget["a"]["search"]["iterations"] == 30
    with pytest.raises(ConfigError) as err:
        st.arm_sections(model, section, {**study, "arms": {
            "a": {"search": {"lr": "fast", "group": 50}}, "b": {"retrain": {"epochs": 3}}}})
    lines = str(err.value).splitlines()
    assert lines[0] == "3 problem(s) with params:"
    assert "  study.arms.a.search.lr: got 'fast', expected a number" in lines
    assert "  study.arms.a.search.group: 50 is larger than search.population 8; the trained group is drawn from " \
           "the population" in lines
    assert any(line.startswith("  study.arms.b.retrain: the study builds and trains its supernets from space, "
                               "supernet, search only") for line in lines)
    with pytest.raises(ConfigError) as err:
        st.arm_sections(model, section, {**study, "arms": {"a": {"supernet": {"progressive": [40, 20]}}, "b": {}}})
    assert str(err.value) == ("params: study.arms.a.supernet.progressive: got [40, 20], expected increasing "
                              "iterations, e.g. [15000, 30000]")


def test_an_arm_with_another_ground_truth_is_refused(tmp_path):
    params = _tiny_params(arms={"c10": {}, "c100": {"space": {"dataset": "cifar100"}}})
    with pytest.raises(ConfigError) as err:
        study_stage.correlation("nb201", params, tmp_path)
    assert str(err.value).startswith("params: study.arms.c100.space: gives the supernet another ground truth "
                                     "(nats_cifar100_test) than the study's (cifar10_test)")


def test_column_defaults_to_the_benchmarks_primary_column():
    params = _tiny_params(n_top=200)
    assert params["study"]["column"] is None
    section = load_params(overrides={"nb201": {"space": {"dataset": "cifar100"}}})["nb201"]
    bench = get_space("nb201", section).benchmark(DATA_ROOT)
    assert bench.primary == "nats_cifar100_test"
    top = st.draw_sets(bench, params["study"], 0)["top"]
    gt100, gt10 = ground_truth("nats_cifar100_test"), ground_truth("cifar10_test")
    assert len(top) == 200 and all(gt100[a] >= threshold(gt100) for a in top)
    assert not all(gt10[a] >= threshold(gt10) for a in top)  # so it is not ranked by cifar10_test
    assert st.draw_sets(bench, {**params["study"], "column": "cifar10_test"}, 0)["top"] != top


def threshold(gt: dict[str, float], fraction: float = 0.2) -> float:
    values = np.array(sorted(gt.values()))
    return values[len(values) - math.ceil(fraction * len(values))]


ARMS = {"mut": {"search": {"proposer": "mutation"}},
        "pred": {"search": {"proposer": "predictor", "predictor_candidates": 16}}}
SMALL = {"iterations": 20, "n_uniform": 8, "n_top": 8, "tau_cells": 4}  # scoring is most of a tiny study's time


@pytest.mark.e2e
def test_two_eps_variants_compared_and_changing_one_arm_reuses_the_other(tmp_path, monkeypatch):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["study"].update(SMALL, arms=ARMS)
    params = tmp_path / "arms.yaml"
    params.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "runs"
    proc = run_eps("study", "correlation", "--space", "nb201", "--params", params, "--out", out)
    d, work = out / "nb201/study", out / "nb201/.work/study/seed0"
    text = (d / "report.txt").read_text()
    assert text in proc.stdout and "mut vs pred supernet" in text
    caption = " ".join(text.split())
    assert "arms: mut: search.proposer=mutation; pred: search." in caption
    assert "search.proposer=predictor" in caption and "search.predictor_candidates=16" in caption
    rows = [line for line in text.splitlines() if line.startswith("│")]
    for name in ("uniform (whole space)", "top 20% (ground truth)", "mut population"):
        assert sum(r.startswith(f"│ {name}") and ("│ mut " in r or "│ pred " in r) for r in rows) == 2
    first = json.loads((d / "study.json").read_text())
    assert first["population_arm"] == "mut"
    assert {n: a["strategy"] for n, a in first["arms"].items()} == {"mut": "eps", "pred": "eps"}
    assert first["arms"]["pred"]["overrides"] == ARMS["pred"]
    # both are EPS runs, and the proposer made a difference; the population set is the first arm's
    mut_hist = list(eio.read_jsonl(work / "mut/history.jsonl"))
    pred_hist = list(eio.read_jsonl(work / "pred/history.jsonl"))
    assert mut_hist[0]["arch"] == pred_hist[0]["arch"] and mut_hist[-1]["arch"] != pred_hist[-1]["arch"]
    population = first["seeds"][0]["sets"]["population"]["arch"]
    assert population == list(dict.fromkeys(mut_hist[-1]["arch"]))
    metrics = json.loads((d / "metrics.json").read_text())
    assert_numbers_only(metrics)
    assert set(metrics["summary"]) == {"mut", "pred"}
    assert set(metrics["summary"]["pred"]) == {"uniform", "top", "population"}

    trained = []
    original = st.run_search

    def recording(space, task, controller, cfg, history, ckpt, **kw):
        res = original(space, task, controller, cfg, history, ckpt, **kw)
        trained.append((ckpt.dir.name, res.resumed_from, res.iterations))
        return res

    monkeypatch.setattr(st, "run_search", recording)
    pred_history = (work / "pred/history.jsonl").read_bytes()
    # a change of the population arm (here its space section): only it trains; the other resumes from its final
    # checkpoint, keeps its scores of the unchanged sets and scores the new population with the same weights
    arms = {"mut": {"search": {"proposer": "mutation"}, "space": {"p_opwise": 0.9}}, "pred": ARMS["pred"]}
    with pytest.raises(CheckpointError, match=r"mut/last.pt was made with different params .*space.p_opwise"):
        study_stage.correlation("nb201", _tiny_params(**SMALL, arms=arms), out)  # as any resume: --restart
    trained.clear()
    second = study_stage.correlation("nb201", _tiny_params(**SMALL, arms=arms), out, restart=True)
    assert trained == [("mut", 0, 20), ("pred", 20, 20)]
    assert (work / "pred/history.jsonl").read_bytes() == pred_history
    old, new = first["seeds"][0], second["seeds"][0]
    for name in ("uniform", "top"):
        assert new["supernets"]["pred"]["scores"][name] == old["supernets"]["pred"]["scores"][name]
    assert new["supernets"]["pred"]["tau_over_time"] == old["supernets"]["pred"]["tau_over_time"]
    assert new["sets"]["population"]["arch"] == list(dict.fromkeys(
        list(eio.read_jsonl(work / "mut/history.jsonl"))[-1]["arch"]))
    assert new["sets"]["population"]["arch"] != old["sets"]["population"]["arch"]
    before = dict(zip(old["sets"]["population"]["arch"], old["supernets"]["pred"]["scores"]["population"]))
    after = dict(zip(new["sets"]["population"]["arch"], new["supernets"]["pred"]["scores"]["population"]))
    assert len(after) == len(new["sets"]["population"]["arch"])
    common = before.keys() & after.keys()  # the initial members both populations still hold
    assert common
    for arch in common:
        assert after[arch] == pytest.approx(before[arch], rel=1e-6)

    # a change of the other arm: the population arm's cached result is used as it is, without building its task
    trained.clear()
    mut_scores = (work / "mut/scores.json").read_bytes()
    arms["pred"] = {"search": {"proposer": "predictor", "predictor_candidates": 32}}
    third = study_stage.correlation("nb201", _tiny_params(**SMALL, arms=arms), out, restart=True)
    assert trained == [("pred", 0, 20)]
    assert (work / "mut/scores.json").read_bytes() == mut_scores
    assert third["seeds"][0]["supernets"]["mut"] == second["seeds"][0]["supernets"]["mut"]
    assert third["arms"]["pred"]["overrides"] == arms["pred"]
