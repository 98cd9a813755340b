"""The NB201 chain through the real CLI, exact resume after SIGKILL, and artifacts."""
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from eps import checkpoint
from eps.model_file import read_model
from eps.spaces.nb201.space import str_to_arch
from tests.conftest import EPS, eps_env, kill_at_random_moments, run_eps, write_tiny_params

pytestmark = pytest.mark.e2e

OUTPUTS = ["search/history.jsonl", "search/supernet.pt", "search/metrics.json", "search/population.csv",
           "search/params.yaml", "search/run.json", "search/dvclive/plots/metrics/train/loss.tsv",
           "search/dvclive/plots/metrics/fitness/best.tsv", "search/dvclive/plots/metrics/population/tau.tsv"]


def test_full_chain_and_report(tiny_params, tmp_path):
    out = tmp_path / "runs"
    run_eps("run", "--space", "nb201", "--params", tiny_params, "--out", out)
    root = out / "nb201"
    hist = [json.loads(l) for l in (root / "search/history.jsonl").read_text().splitlines()]
    # one snapshot per round, written when the round ends, with the round's statistics
    assert [h["iteration"] for h in hist] == [10, 20, 30, 40, 50, 60]
    assert all(set(h["round"]) == {"train_loss", "lr", "fitness_best", "fitness_mean", "measured"} for h in hist)
    assert all(h["round"]["fitness_best"] <= h["round"]["fitness_mean"] for h in hist)
    assert json.loads((root / "search/metrics.json").read_text())["rounds"] == 6
    assert all(len(h["arch"]) == 8 for h in hist)
    for h in hist:
        for a in h["arch"]:
            str_to_arch(a)
        assert all((l is None) == (c == 0) for l, c in zip(h["loss"], h["count"]))
    sel = json.loads((root / "select/selection.json").read_text())
    assert sel["arch"] == (root / "select/arch.txt").read_text().strip()
    assert {"size_prior", "prior_free"} <= set(sel)
    gt = sel["size_prior"]["ground_truth"]
    assert 1 <= gt["rank"] <= 15625 and 0 < gt["cifar10_test"] < 100
    pop = sel["population"]
    assert pop["members"] == 8 and 0 <= pop["top_share"] <= 1
    metrics = json.loads((root / "retrain/metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test_acc"] <= 100
    for png in ("population_accuracy.png", "loss_vs_accuracy.png", "retrain_curve.png"):
        assert (root / "report" / png).stat().st_size > 1000
        assert (root / "report" / png).with_suffix(".svg").stat().st_size > 1000
    text = (root / "report/report.txt").read_text()
    assert "chosen architecture" in text and "Kendall tau" in text and "retrain details" in text


@pytest.mark.cli
def test_stage_without_upstream_says_what_to_run(tiny_params, tmp_path):
    proc = run_eps("stage", "search", "--params", tiny_params, "--out", tmp_path, check=False)
    assert proc.returncode == 2
    assert "eps stage warmup --space nb201" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.cli
def test_missing_data_is_one_line_error(tiny_params, tmp_path):
    env = {**os.environ, "EPS_DATA_DIR": str(tmp_path / "nodata"), "EPS_PROGRESS": "0"}
    proc = subprocess.run([EPS, "stage", "warmup", "--params", tiny_params, "--out", tmp_path / "r"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "CIFAR-10" in proc.stderr and "EPS_DATA_DIR" in proc.stderr


def _same_outputs(a: Path, b: Path):
    for rel in OUTPUTS:
        if rel.endswith(".pt"):
            sa, sb = checkpoint.load(a / rel)["model"], checkpoint.load(b / rel)["model"]
            assert sa.keys() == sb.keys()
            for k in sa:
                assert torch.equal(sa[k], sb[k]), k
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_search_killed_at_random_moments_resumes_exactly(tmp_path):
    # 18 rounds, a checkpoint after each: three kills at random moments past start-up (each advances the run by at
    # most about 4 rounds), then the rest; no warm-up stage (a warm-up of 0 iterations), one OpenMP thread
    params = write_tiny_params(tmp_path, warmup=dict(iterations=0),
                               search=dict(iterations=180, val_interval=10, checkpoint_every=1))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_eps("stage", "search", "--params", params, "--out", ref, one_thread=True)
    kills, finished = kill_at_random_moments(
        lambda: subprocess.Popen([EPS, "stage", "search", "--params", params, "--out", killed], env=eps_env(True),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        killed / "nb201/.work/search/last.pt", random.Random(0))
    if not finished:
        run_eps("stage", "search", "--params", params, "--out", killed, one_thread=True)
    assert kills >= 2, "the test never interrupted the search; make it longer"
    _same_outputs(ref / "nb201", killed / "nb201")


def test_changed_params_refuse_checkpoint_without_restart(tiny_params, tmp_path):
    out = tmp_path / "r"
    run_eps("stage", "warmup", "--params", tiny_params, "--out", out)
    cfg = yaml.safe_load(tiny_params.read_text())
    cfg["nb201"]["warmup"]["lr"] = 0.05
    tiny_params.write_text(yaml.safe_dump(cfg))
    # the finished outputs were made with the other lr: not replaced unless asked
    before = (out / "nb201/warmup/supernet.pt").read_bytes()
    proc = run_eps("stage", "warmup", "--params", tiny_params, "--out", out, check=False)
    assert proc.returncode == 2 and "warmup.lr" in proc.stderr and "--redo" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (out / "nb201/warmup/supernet.pt").read_bytes() == before
    # outputs gone (as `dvc repro` removes them), the checkpoint of the old params is refused, unless --restart
    (out / "nb201/warmup/params.yaml").unlink()
    proc = run_eps("stage", "warmup", "--params", tiny_params, "--out", out, check=False)
    assert proc.returncode == 2 and "warmup.lr" in proc.stderr and "--restart" in proc.stderr
    run_eps("stage", "warmup", "--params", tiny_params, "--out", out, "--restart")
    assert (out / "nb201/warmup/supernet.pt").read_bytes() != before


def test_retrain_killed_at_random_moments_resumes_exactly(tmp_path):
    # 12 epochs, a checkpoint after each: three kills at random moments past start-up (each advances the run by at
    # most about 4 epochs), then the rest; one upstream run for both retrains (a copied run folder is the same run),
    # one OpenMP thread. (It also covers a resume after a finished epoch that an earlier deterministic test checked.)
    params = write_tiny_params(tmp_path, warmup=dict(iterations=0),
                               retrain=dict(epochs=12, train_subset=384, checkpoint_every=1))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for stage in ("search", "select"):
        run_eps("stage", stage, "--params", params, "--out", ref, one_thread=True)
    shutil.copytree(ref, killed)
    run_eps("stage", "retrain", "--params", params, "--out", ref, one_thread=True)
    kills, finished = kill_at_random_moments(
        lambda: subprocess.Popen([EPS, "stage", "retrain", "--params", params, "--out", killed], env=eps_env(True),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        killed / "nb201/.work/retrain/last.pt", random.Random(1))
    if not finished:
        run_eps("stage", "retrain", "--params", params, "--out", killed, one_thread=True)
    assert kills >= 2, "the test never interrupted the retrain; make it longer"
    a = read_model(ref / "nb201/retrain/model.pt")["state_dict"]
    b = read_model(killed / "nb201/retrain/model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for rel in ("retrain/metrics.json", "retrain/curve.csv"):
        assert (ref / "nb201" / rel).read_bytes() == (killed / "nb201" / rel).read_bytes()
