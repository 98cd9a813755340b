"""A real `dvc repro` of the pipeline in a temporary git repository with tiny params."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_ROOT, REPO

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def sh(cmd, cwd, check=True, stdout_only=False):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "EPS_DATA_DIR": str(DATA_ROOT), "EPS_PROGRESS": "0"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def make_repo(tmp_path, *extra: str):
    """A copy of the project's code and pipeline files (plus ``extra`` folders) in ``tmp_path/repo``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("eps", "pipeline", *extra, ".dvc", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, repo / item, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp"))
        else:
            shutil.copy(src, repo / item)
    return repo


def test_dvc_repro_caches_and_reruns_only_what_changed(tiny_params, tmp_path):
    repo = make_repo(tmp_path, "plots")
    # the checkout's own pipeline, regenerated over the copy (the same file: tests/test_dvc_init.py), with the tiny
    # params written as DVC tracks them (what differs from the defaults, every tracked key)
    sh(f"eps dvc init --params {tiny_params} --force", repo)
    assert (repo / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    full = yaml.safe_load((repo / "params.yaml").read_text())
    assert {"seed", "deterministic", "spaces", "plugins", "nb201"} <= set(full) and "eps_version" not in full
    assert set(full["nb201"]) == {"space", "supernet", "warmup", "search", "select", "retrain"}
    sh("git init -q && git config user.email t@t && git config user.name t && git add -A && git commit -qm init", repo)

    first = sh("dvc repro", repo)
    assert ran(first) == {f"{s}@nb201" for s in ("warmup", "search", "select", "retrain", "report")}, first
    assert (repo / "runs/nb201/retrain/metrics.json").exists()
    summary = json.loads((repo / "runs/nb201/summary.json").read_text())
    assert set(summary) == {"search", "select", "retrain"} and "test_acc" in summary["retrain"], summary
    metrics = json.loads(sh("dvc metrics show --json", repo, stdout_only=True))
    assert "runs/nb201/summary.json" in json.dumps(metrics) and "search/metrics.json" not in json.dumps(metrics)

    second = sh("dvc repro", repo)
    assert ran(second) == set(), second

    # the grouped plots render: one chart per quantity with its series, titles and axis labels from dvc.yaml
    plots = json.loads(sh("dvc plots show --json", repo, stdout_only=True))
    assert not plots.get("errors"), plots.get("errors")
    data = plots["data"]
    for name, files, points in (("search training loss", 1, 6), ("search fitness of the scored group", 2, 12),
                                ("population ground-truth accuracy", 2, 12), ("population ranking quality", 1, 6),
                                ("retrain loss", 2, 4), ("retrain accuracy", 2, 4)):
        content = data[f"nb201: {name}"][0]["content"]
        values = content["data"]["values"]
        assert len(values) == points, name
        series = {v.get("filename") or v.get("filename::field") for v in values}   # one series per file
        assert len(series) == files, (name, series)
        assert all(str(v["step"]).isdigit() for v in values), name   # integer steps and epochs in the TSVs
        title = content["title"]
        assert (title["text"] if isinstance(title, dict) else title) == f"nb201: {name}"
        assert content["encoding"]["x"]["axis"] == {"format": "d", "tickMinStep": 1}
    sh("dvc plots show -o plots_html", repo)
    assert "nb201: retrain loss" in (repo / "plots_html/index.html").read_text()

    # what the README says to commit (dvc.lock and runs/: DVC's .gitignore files keep the cached outputs out of
    # git) lets a clone get everything with `dvc pull`, with nothing to rerun
    sh("dvc remote add -d -q local ../remote && dvc push -q && git add -A dvc.lock runs .dvc/config "
       "&& git commit -qm run", repo)
    tracked = sh("git ls-files", repo)
    assert "runs/nb201/.work" not in tracked and "runs/nb201/summary.json" in tracked
    assert "supernet.pt" not in tracked and "history.jsonl" not in tracked
    clone = tmp_path / "clone"
    sh(f"git clone -q {repo} {clone}", tmp_path)
    sh("dvc pull -q", clone)
    assert "up to date" in sh("dvc status", clone)  # no study pipeline until asked for
    assert ran(sh("dvc repro", clone)) == set()

    full["nb201"]["retrain"]["epochs"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    third = sh("dvc repro", repo)
    # warmup and search come from the cache; select reruns (seconds) because the size prior counts parameters of
    # the network the retrain section builds, then retrain and the report that shows it
    assert ran(third) == {"select@nb201", "retrain@nb201", "report@nb201"}, third
    assert '"epochs": 1' in (repo / "runs/nb201/retrain/metrics.json").read_text()
    status = sh("dvc status", repo)
    assert "up to date" in status and "study" not in status, status

    # the study, on request: its pipeline and params section are written next to the existing ones
    sh(f"eps dvc init --study --params {tiny_params}", repo)
    assert "study" in yaml.safe_load((repo / "params.yaml").read_text())
    assert ran(sh("dvc repro study/dvc.yaml", repo)) == {"study/dvc.yaml:study"}
    assert (repo / "runs/nb201/study/metrics.json").exists()
