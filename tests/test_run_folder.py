"""A run folder describes itself: each stage keeps the params it ran with (`params.yaml`) and its inputs (`run.json`);
a finished stage rerun is up to date and untouched; other params are refused in one line unless --redo; curves are
DVCLive files, identical for a resumed run."""
import json
import shutil

import pytest
import yaml

from eps.params import load_params
from tests.conftest import run_eps

pytestmark = pytest.mark.e2e

STAGE_FILES = {
    "warmup": ["supernet.pt", "metrics.json", "params.yaml", "run.json", "timing.json"],
    "search": ["supernet.pt", "history.jsonl", "population.csv", "metrics.json", "params.yaml", "run.json",
               "timing.json", "dvclive/plots/metrics/train/loss.tsv", "dvclive/plots/metrics/train/lr.tsv",
               "dvclive/plots/metrics/fitness/best.tsv", "dvclive/plots/metrics/fitness/mean.tsv",
               "dvclive/plots/metrics/population/mean_acc.tsv", "dvclive/plots/metrics/population/max_acc.tsv",
               "dvclive/plots/metrics/population/tau.tsv"],
    "select": ["selection.json", "candidates.csv", "arch.txt", "metrics.json", "params.yaml", "run.json"],
    "retrain": ["model.pt", "curve.csv", "metrics.json", "params.yaml", "run.json", "timing.json",
                "dvclive/plots/metrics/train/loss.tsv", "dvclive/plots/metrics/train/acc.tsv",
                "dvclive/plots/metrics/test/loss.tsv", "dvclive/plots/metrics/test/acc.tsv"],
}


@pytest.fixture
def finished(finished_run):
    """A finished tiny nb201 run (all four stages and the report, made in process by tests/conftest.py: the CLI's own
    behaviour is what the tests below call) and its params file: (runs, params). Tests that change it copy it."""
    params, runs = finished_run
    return runs, params


def _copy(finished, tmp_path):
    runs, params = finished
    shutil.copytree(runs, tmp_path / "runs", symlinks=True)
    shutil.copy(params, tmp_path / "tiny.yaml")
    return tmp_path / "runs", tmp_path / "tiny.yaml"


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and ".work" not in p.parts}


def test_a_run_folder_holds_its_params_inputs_metrics_and_curves(finished):
    runs, params = finished
    root = runs / "nb201"
    for stage, names in STAGE_FILES.items():
        for name in names:
            assert (root / stage / name).is_file(), f"{stage}/{name}"
        # metrics are numbers only (dvc exp show gets one column per headline figure, no strings)
        metrics = json.loads((root / stage / "metrics.json").read_text())
        assert metrics and all(isinstance(v, (int, float)) for v in metrics.values()), (stage, metrics)
        # the recorded params load as a params file and are the run's own
        recorded = load_params(root / stage / "params.yaml")
        assert recorded["nb201"]["space"] == load_params(params)["nb201"]["space"]
        run = json.loads((root / stage / "run.json").read_text())
        assert run["stage"] == stage and run["space"] == "nb201" and "eps_version" in run
    assert json.loads((root / "search/run.json").read_text())["strategy"] == "eps"
    assert json.loads((root / "retrain/run.json").read_text())["arch"] == (root / "select/arch.txt").read_text().strip()
    # a curve per round, step = iteration; the last point of a curve is the headline figure
    rows = (root / "search/dvclive/plots/metrics/population/tau.tsv").read_text().splitlines()
    assert rows[0] == "step\ttau" and [int(r.split("\t")[0]) for r in rows[1:]] == [10, 20, 30, 40, 50, 60]
    metrics = json.loads((root / "search/metrics.json").read_text())
    assert float(rows[-1].split("\t")[1]) == pytest.approx(metrics["population_tau"])
    assert metrics["rounds"] == 6
    epochs = (root / "retrain/dvclive/plots/metrics/test/acc.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in epochs[1:]] == [1, 2]
    assert float(epochs[-1].split("\t")[1]) == pytest.approx(
        json.loads((root / "retrain/metrics.json").read_text())["test_acc"])


def test_rerun_of_a_finished_run_is_up_to_date_and_touches_nothing(finished, tmp_path):
    runs, params = _copy(finished, tmp_path)
    before = _snapshot(runs / "nb201")
    proc = run_eps("run", "--params", params, "--out", runs)
    for stage in ("warmup", "search", "select", "retrain"):
        assert f"{stage}: up to date" in proc.stderr, proc.stderr
    after = _snapshot(runs / "nb201")
    changed = sorted(str(k) for k in before if before[k] != after.get(k) and k.parts[0] != "report")
    assert not changed, changed  # timings included: nothing was recomputed


def test_other_params_are_refused_in_one_line_and_redo_replaces(finished, tmp_path):
    runs, params = _copy(finished, tmp_path)
    cfg = yaml.safe_load(params.read_text())
    cfg["nb201"]["select"]["window"] = 30
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    selection = (runs / "nb201/select/selection.json").read_bytes()
    proc = run_eps("stage", "select", "--params", other, "--out", runs, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "select.window: 40 there, 30 here" in proc.stderr and "--redo" in proc.stderr
    assert (runs / "nb201/select/selection.json").read_bytes() == selection
    run_eps("stage", "select", "--params", other, "--out", runs, "--redo")
    assert json.loads((runs / "nb201/select/selection.json").read_text())["window"] == 30
    assert yaml.safe_load((runs / "nb201/select/params.yaml").read_text())["nb201"]["select"]["window"] == 30


def test_a_stage_refuses_an_upstream_made_with_other_params(finished, tmp_path):
    """The paper params (no --params, no ./params.yaml) on a tiny run: select names the search's differing keys
    and the file with the run's own params; nothing is written."""
    runs, params = _copy(finished, tmp_path)
    shutil.rmtree(runs / "nb201/select")
    proc = run_eps("stage", "select", "--out", runs, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "nb201/search was made with other params" in proc.stderr
    assert "--params" in proc.stderr and "search/params.yaml" in proc.stderr
    assert not (runs / "nb201/select").exists()
    # the run's own params, as the message says, work
    run_eps("stage", "select", "--params", runs / "nb201/search/params.yaml", "--out", runs, cwd=tmp_path)
    # retrain with another retrain section: the selection counted parameters of another network; rerun select
    cfg = yaml.safe_load(params.read_text())
    cfg["nb201"]["retrain"]["epochs"] = 1
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    proc = run_eps("stage", "retrain", "--params", other, "--out", runs, check=False)
    assert proc.returncode == 2 and "nb201/select was made with other params" in proc.stderr
    assert "retrain.epochs: 2 there, 1 here" in proc.stderr  # the recorded file holds the whole run's params


def test_report_shows_the_params_the_run_recorded(finished, tmp_path):
    """`eps report --out RUN` without --params (and no ./params.yaml) describes RUN with its own settings, not the
    paper's; explicit params that the run was not made with are refused and report.txt is left as it was."""
    runs, params = _copy(finished, tmp_path)
    report = runs / "nb201/report/report.txt"
    report.unlink()
    run_eps("report", "--space", "nb201", "--out", runs, cwd=tmp_path)
    rows = {tuple(line.replace("│", " ").split()[:2]) for line in report.read_text().splitlines() if "│" in line}
    assert ("search.iterations", "60") in rows and ("search.population", "8") in rows, report.read_text()
    before = report.read_bytes()
    paper = tmp_path / "paper.yaml"
    paper.write_text("seed: 0\n")
    proc = run_eps("report", "--space", "nb201", "--params", paper, "--out", runs, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "was made with other params" in proc.stderr and "leave out --params" in proc.stderr
    assert report.read_bytes() == before


# ---- found by trying it as a user: damaged records and outputs, DVC-style partial reruns, empty folders

def test_a_damaged_record_is_one_line_and_redo_rewrites_it(finished, tmp_path):
    runs, params = _copy(finished, tmp_path)
    (runs / "nb201/select/params.yaml").write_bytes(b"\x00\xff garbage")
    proc = run_eps("stage", "select", "--params", params, "--out", runs, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "select/params.yaml is damaged" in proc.stderr and "--redo" in proc.stderr
    run_eps("stage", "select", "--params", params, "--out", runs, "--redo")  # what the line says: it works
    # a truncated (still loadable) record is caught by its digest, not filled with the paper's defaults
    text = (runs / "nb201/retrain/params.yaml").read_text()
    (runs / "nb201/retrain/params.yaml").write_text(text[: len(text) // 2].rsplit("\n", 1)[0] + "\n")
    proc = run_eps("report", "--space", "nb201", "--out", runs, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "retrain/params.yaml is damaged" in proc.stderr, proc.stderr


def test_a_damaged_output_is_restored_from_the_checkpoint_never_used(finished, tmp_path):
    runs, params = _copy(finished, tmp_path)
    history = runs / "nb201/search/history.jsonl"
    good = history.read_bytes()
    history.write_bytes(b"".join(good.splitlines(keepends=True)[:2]))  # two whole lines: still readable
    selection = (runs / "nb201/select/selection.json").read_bytes()
    # downstream refuses to use it, naming the file and the command that restores it
    proc = run_eps("stage", "select", "--params", params, "--out", runs, "--redo", check=False)
    assert proc.returncode == 2 and "history.jsonl is not the file the stage wrote" in proc.stderr, proc.stderr
    assert (runs / "nb201/select/selection.json").read_bytes() == selection
    proc = run_eps("report", "--space", "nb201", "--out", runs, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "history.jsonl" in proc.stderr
    # the search is not "up to date": it restores its outputs from its final checkpoint (no training)
    proc = run_eps("stage", "search", "--params", params, "--out", runs)
    assert "up to date" not in proc.stderr and "restoring" in proc.stderr
    assert history.read_bytes() == good
    assert "select: up to date" in run_eps("stage", "select", "--params", params, "--out", runs).stderr
    # without a checkpoint to restore from, hours of recomputation happen only when asked
    shutil.rmtree(runs / "nb201/.work/search")
    (runs / "nb201/search/dvclive/plots/metrics/train/lr.tsv").unlink()
    proc = run_eps("stage", "search", "--params", params, "--out", runs, check=False)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr and "--redo" in proc.stderr


def test_report_after_a_partial_rerun_shows_each_stage_its_own_settings(finished, tmp_path):
    """As `dvc repro` does after select.window changed: select reruns, retrain does not (same arch). The report
    shows the window select used, and a rerun touches neither report.txt nor the plots."""
    runs, params = _copy(finished, tmp_path)
    cfg = yaml.safe_load(params.read_text())
    cfg["nb201"]["select"]["window"] = 30
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    run_eps("stage", "select", "--params", other, "--out", runs, "--redo")
    retrained = json.loads((runs / "nb201/retrain/run.json").read_text())["arch"]
    assert retrained == (runs / "nb201/select/arch.txt").read_text().strip(), "the other window chose another cell"
    run_eps("report", "--space", "nb201", "--out", runs, cwd=tmp_path)
    text = (runs / "nb201/report/report.txt").read_text()
    rows = {tuple(line.replace("│", " ").split()[:2]) for line in text.splitlines() if "│" in line}
    assert ("select.window", "30") in rows and ("retrain.epochs", "2") in rows, text
    before = {p.name: p.stat().st_mtime_ns for p in (runs / "nb201/report").iterdir()}
    run_eps("report", "--space", "nb201", "--out", runs, cwd=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in (runs / "nb201/report").iterdir()} == before


def test_report_of_nothing_and_a_garbage_arch_are_one_line(finished, tmp_path):
    proc = run_eps("report", "--space", "nb201", "--out", tmp_path / "nowhere", check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "no finished stage" in proc.stderr and not (tmp_path / "nowhere").exists()
    runs, params = _copy(finished, tmp_path)
    shutil.rmtree(runs / "nb201/retrain")
    (runs / "nb201/select/arch.txt").write_text("|foo~0|\n")
    proc = run_eps("stage", "retrain", "--params", params, "--out", runs, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "select/arch.txt" in proc.stderr
