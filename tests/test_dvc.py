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

from eps.params import load_params
from tests.conftest import DATA_ROOT, REPO, TINY_NB201

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
    repo = make_repo(tmp_path, "study")
    full = load_params(tiny_params)  # every key the pipeline declares must exist in params.yaml
    (repo / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    sh("git init -q && git config user.email t@t && git config user.name t && git add -A && git commit -qm init", repo)

    first = sh("dvc repro", repo)
    # the study is a pipeline of its own (study/dvc.yaml), not part of the default DAG
    assert ran(first) == {f"{s}@nb201" for s in ("warmup", "search", "select", "retrain", "report")}, first
    assert (repo / "runs/nb201/retrain/metrics.json").exists()

    second = sh("dvc repro", repo)
    assert ran(second) == set(), second

    # the declared curves render: one plot per curve, a point per round (search) or epoch (retrain)
    plots = json.loads(sh("dvc plots show --json", repo, stdout_only=True))
    data = plots["data"]
    for name, points in (("search/dvclive/plots/metrics/train/loss.tsv", 6),
                         ("search/dvclive/plots/metrics/population/tau.tsv", 6),
                         ("retrain/dvclive/plots/metrics/test/acc.tsv", 2)):
        rendered = data[f"runs/nb201/{name}"]
        assert len(rendered[0]["content"]["data"]["values"]) == points, name
    assert not plots.get("errors"), plots.get("errors")
    sh("dvc plots show -o plots_html", repo)
    assert "vega" in (repo / "plots_html/index.html").read_text()

    # what the README says to commit (dvc.lock and runs/: DVC's .gitignore files keep the cached outputs out of
    # git) lets a clone get everything with `dvc pull`, with nothing to rerun
    sh("dvc remote add -d -q local ../remote && dvc push -q && git add -A dvc.lock runs .dvc/config "
       "&& git commit -qm run", repo)
    assert "runs/nb201/.work" not in sh("git ls-files", repo)
    clone = tmp_path / "clone"
    sh(f"git clone -q {repo} {clone}", tmp_path)
    sh("dvc pull -q dvc.yaml", clone)  # the main chain (the on-request study has not run)
    assert "up to date" in sh("dvc status dvc.yaml", clone)
    assert ran(sh("dvc repro", clone)) == set()

    full["nb201"]["retrain"]["epochs"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    third = sh("dvc repro", repo)
    # warmup and search come from the cache; select reruns (seconds) because the size prior counts parameters of
    # the network the retrain section builds, then retrain and the report that shows it
    assert ran(third) == {"select@nb201", "retrain@nb201", "report@nb201"}, third
    assert '"epochs": 1' in (repo / "runs/nb201/retrain/metrics.json").read_text()
    status = sh("dvc status dvc.yaml", repo)  # the main chain; the on-request study pipeline has not run
    assert "up to date" in status
    assert ran(sh("dvc repro study/dvc.yaml", repo)) == {"study/dvc.yaml:study"}
    assert (repo / "runs/nb201/study/metrics.json").exists()


def test_dvc_repro_runs_a_space_kept_outside_eps(tmp_path):
    """The example space (examples/chain_space.py) through `dvc repro`: registered by `plugins`, its section pasted
    from `eps params --space`, no file of eps touched."""
    repo = make_repo(tmp_path, "examples")
    ref = "examples/chain_space.py:ChainSpace"
    section = yaml.safe_load(sh(f"eps params --space {ref}", repo, stdout_only=True))
    section["chain"]["supernet"]["data_subset"] = 256
    section["chain"]["search"].update(iterations=30, val_interval=10, population=8, group=4, parents=2,
                                      batch_size=16, fitness_batch_size=32, checkpoint_every=1)
    section["chain"]["select"]["window"] = 30
    section["chain"]["retrain"].update(epochs=1, batch_size=32, train_subset=128, test_subset=100)
    tiny_nb201 = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    params = {**load_params(None, tiny_nb201), "spaces": ["chain"], "plugins": [ref], **section}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && git config user.email t@t && git config user.name t && git add -A && git commit -qm init", repo)
    first = sh("dvc repro", repo)
    assert {f"{s}@chain" for s in ("warmup", "search", "select", "retrain", "report")} <= ran(first), first
    assert (repo / "runs/chain/retrain/metrics.json").exists()
    assert ran(sh("dvc repro", repo)) == set()
