"""What a fresh user and an attacker found (issues 21 and 22, follow-ups): notes that say what eps does, params
suggestions that name the spaces in use, several runs of one seed refused, help and report text within 80 columns,
one benchmark row per figure, a tutorial whose first run is short, one not-regular-file check, and one-line refusals
of odd ``--out`` values. Real CLI subprocesses and real files on the tiny NB201 config from conftest.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import EPS, REPO, eps_env, run_eps

pytestmark = pytest.mark.cli

CHAIN = REPO / "examples" / "chain_space.py"


def eps_at(columns: int, *args) -> subprocess.CompletedProcess:
    """The eps command as on a terminal COLUMNS wide (stdout is a pipe; rich reads COLUMNS)."""
    proc = subprocess.run([EPS, *map(str, args)], env={**eps_env(one_thread=True), "COLUMNS": str(columns)},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------------ --restart note

@pytest.mark.e2e
def test_restart_over_a_checkpoint_of_other_params_says_it_starts_afresh(tiny_params, tmp_path):
    """Under `dvc repro` every stage runs with --restart: the note about a checkpoint of other params says the
    stage starts afresh, not to rerun with --restart (which it already was); without --restart the hint stays."""
    out = tmp_path / "r"
    run_eps("stage", "warmup", "--params", tiny_params, "--out", out, one_thread=True)
    cfg = yaml.safe_load(tiny_params.read_text())
    cfg["nb201"]["warmup"]["lr"] = 0.05
    tiny_params.write_text(yaml.safe_dump(cfg))
    (out / "nb201/warmup/params.yaml").unlink()  # the outputs gone, as `dvc repro` removes them: the checkpoint stays
    refused = one_line(run_eps("stage", "warmup", "--params", tiny_params, "--out", out, check=False))
    assert "warmup.lr" in refused and "rerun with --restart" in refused
    proc = run_eps("stage", "warmup", "--params", tiny_params, "--out", out, "--restart", one_thread=True)
    text = proc.stdout + proc.stderr
    notes = [line for line in text.splitlines() if "different params" in line]
    assert len(notes) == 1, text
    assert "warmup.lr" in notes[0] and "starting afresh" in notes[0], notes[0]
    assert "rerun with --restart" not in text and "restore them" not in text, text


# ------------------------------------------------------------------------------------------------ params suggestions

def _chain_params(tmp_path: Path, section: str, spaces: list[str]) -> Path:
    cfg = yaml.safe_load((REPO / "examples" / "chain.yaml").read_text())
    cfg["plugins"] = [f"{CHAIN}:ChainSpace"]
    cfg["spaces"] = spaces
    cfg[section] = cfg.pop("chain")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_space_section_under_another_name_names_the_sections_of_the_spaces_in_use(tmp_path):
    """`myspace:` for a plugin registered as `chain` is nearest to `spaces` by spelling, which is no section: the
    line says a section is named by the space's registered name and lists the spaces in use, closest first."""
    line = one_line(run_eps("params", "--params", _chain_params(tmp_path, "myspace", ["chain"]), check=False))
    assert line.startswith("error: ") and "myspace: unknown key" in line, line
    assert "did you mean spaces" not in line and "registered name" in line and "closest first: chain" in line, line
    line = one_line(run_eps("params", "--params", _chain_params(tmp_path, "chains", ["nb201", "chain"]), check=False))
    assert "closest first: chain, nb201" in line, line


def test_a_space_key_without_its_prefix_suggests_the_prefixed_key(tiny_params, tmp_path):
    """`-S search.iterations=3` names the key under each space in use; a misspelt `study` and other keys still get
    the closest key."""
    line = one_line(run_eps("params", "--params", tiny_params, "-S", "search.iterations=3", check=False,
                            cwd=tmp_path))
    assert "search: unknown key; did you mean nb201.search.iterations?" in line, line
    line = one_line(run_eps("params", "--params", tiny_params, "-S", "search.iterations=3", "-S",
                            "spaces=[nb201, darts-cnn]", check=False, cwd=tmp_path))
    assert "did you mean nb201.search.iterations or darts-cnn.search.iterations?" in line, line
    line = one_line(run_eps("params", "--params", tiny_params, "-S", "stduy.seeds=[1]", check=False, cwd=tmp_path))
    assert "did you mean study?" in line, line
    line = one_line(run_eps("params", "--params", tiny_params, "-S", "nb201.serch.iterations=3", check=False,
                            cwd=tmp_path))
    assert "did you mean nb201.search?" in line, line


# ------------------------------------------------------------------------------------------------ report

@pytest.mark.e2e
def test_two_runs_of_one_seed_are_refused(finished_run, tmp_path):
    """A copy of a run folder reported with the original as two seeds would give a std of 0 over one measurement:
    one line naming both folders and the seed, nothing written."""
    copy = tmp_path / "copy"
    shutil.copytree(finished_run[1], copy)
    line = one_line(run_eps("report", "--space", "nb201", "--out", finished_run[1], "--out", copy, "--into",
                            tmp_path / "agg", check=False))
    assert str(finished_run[1] / "nb201") in line and str(copy / "nb201") in line and "seed 0" in line, line
    assert not (tmp_path / "agg").exists()


@pytest.mark.e2e
def test_report_lines_fit_80_columns_and_show_each_benchmark_figure_once(finished_run):
    """At COLUMNS=80 no line is longer, and none is a terminal's wrap of a longer one (the list of files written
    is broken and indented by eps); the NATS-Bench re-run of CIFAR-10 test, the same figure, is not a second row."""
    proc = eps_at(80, "report", "--space", "nb201", "--out", finished_run[1])
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) <= 80, proc.stdout
    tail = lines[next(i for i, line in enumerate(lines) if line.startswith("report written to")) + 1:]
    assert tail and all(line.startswith("  ") for line in tail), tail
    assert any("retrain_curve" in line for line in tail), tail
    assert proc.stdout.count("benchmark C10 test (%)") == 1 and "NATS" not in proc.stdout, proc.stdout


@pytest.mark.unit
def test_a_nats_figure_that_differs_is_kept_and_named():
    """When the re-run's figure differs, both rows stay and the re-run says it is one."""
    from eps import report as rep
    from rich.console import Console
    sel = {"rule": "size_prior", "arch": "a",
           "size_prior": {"arch": "a", "loss": 2.0, "params": 1000,
                          "ground_truth": {"cifar10_valid": 90.0, "cifar10_test": 93.0, "nats_cifar10_test": 92.5,
                                           "rank": 3, "rank_of": 10}}}
    console = Console(width=100, record=True)
    console.print(rep.results_table({"a": "A"}, sel, None, None, "cifar10_test"))
    text = console.export_text()
    assert "benchmark C10 test (%)" in text and "benchmark C10 test (NATS) (%)" in text, text
    sel["size_prior"]["ground_truth"]["nats_cifar10_test"] = 93.0
    console = Console(width=100, record=True)
    console.print(rep.results_table({"a": "A"}, sel, None, None, "cifar10_test"))
    assert "NATS" not in console.export_text()


# ------------------------------------------------------------------------------------------------ help, docs

def test_help_pages_show_no_metavar_on_flags():
    for args in (["--help"], ["stage", "warmup", "--help"], ["run", "--help"], ["report", "--help"]):
        proc = eps_at(100, *args)
        assert "--restart" in proc.stdout or "--version" in proc.stdout or "--settings" in proc.stdout, proc.stdout
        assert "<bool>" not in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------------------------ one check

@pytest.mark.unit
def test_one_not_regular_check_for_artifacts_and_data(tmp_path):
    """eps.io and eps.data share one function (in eps.errors): a data file linked to /dev/zero is named with its
    target, as an artifact is."""
    import eps.data.files
    import eps.errors
    import eps.io
    from eps.errors import DataError
    assert eps.io.not_regular is eps.errors.not_regular and not hasattr(eps.data.files, "_not_regular")
    link = tmp_path / "ground_truth.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"ground_truth.csv -> /dev/zero is a character device, not a regular file"):
        eps.data.files.note_read(link)


# ------------------------------------------------------------------------------------------------ attack pass

def test_out_that_is_empty_or_a_file_is_refused_naming_out(tiny_params, tmp_path):
    """`--out ""` would be the current folder, silently; `--out afile` named the API's run_dir."""
    (tmp_path / "afile").write_text("mine\n")
    for cmd in (["stage", "warmup"], ["run"], ["report"]):
        line = one_line(run_eps(*cmd, "--params", tiny_params, "--out", "", check=False, cwd=tmp_path))
        assert line.startswith("error: --out is empty; give a folder"), line
    for cmd in (["stage", "warmup"], ["stage", "retrain"], ["run"]):
        line = one_line(run_eps(*cmd, "--params", tiny_params, "--out", "afile", check=False, cwd=tmp_path))
        assert line.startswith("error: --out afile is a file, not a folder") and "run_dir" not in line, line
    assert (tmp_path / "afile").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "tiny.yaml"]


def test_version_with_anything_else_is_a_usage_error():
    assert run_eps("--version").stdout.startswith("eps ")
    line = one_line(run_eps("--version", "extra", check=False))
    assert "--version takes nothing else" in line and "extra" in line, line


def test_params_nested_too_deeply_name_the_file_or_the_override(tmp_path):
    for name, text in (("flow.yaml", "seed: " + "[" * 20000 + "]" * 20000 + "\n"),
                       ("block.yaml", "nb201: " + "{a: " * 800 + "1" + "}" * 800 + "\n")):
        (tmp_path / name).write_text(text)
        line = one_line(run_eps("params", "--params", tmp_path / name, check=False))
        assert f"params file {tmp_path / name} is nested too deeply" in line, line
    line = one_line(run_eps("params", "-S", "nb201.x=" + "[" * 3000 + "]" * 3000, check=False, cwd=tmp_path))
    assert line.startswith("error: -S nb201.x=...: the value is nested too deeply"), line


@pytest.mark.unit
def test_a_ground_truth_linked_to_a_device_is_called_so(tmp_path):
    from eps.errors import DataError
    from eps.spaces.nb201.groundtruth import GroundTruth
    (tmp_path / "nb201").mkdir()
    link = tmp_path / "nb201" / "ground_truth.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError) as err:
        GroundTruth.load(tmp_path)
    assert "-> /dev/zero is a character device, not a regular file" in str(err.value)
    assert "broken link" not in str(err.value)
    link.unlink()
    link.symlink_to(tmp_path / "gone.csv")
    with pytest.raises(DataError, match="is a broken link"):
        GroundTruth.load(tmp_path)


# ------------------------------------------------------------------------------------------------ second fresh-user pass

@pytest.mark.e2e
@pytest.mark.parametrize("record", ["deleted", "not a stage record"])
def test_a_forged_result_without_its_stage_record_is_refused(finished_run, tmp_path, record):
    """A retrain metrics.json edited after its run.json was removed (or replaced by another JSON object) must not be
    reported: one line naming run.json and the stage to rerun, no summary written."""
    copy = tmp_path / "copy"
    shutil.copytree(finished_run[1], copy)
    (copy / "nb201" / "summary.json").unlink(missing_ok=True)
    metrics = copy / "nb201" / "retrain" / "metrics.json"
    data = json.loads(metrics.read_text())
    data["test_acc"] = 99.0
    metrics.write_text(json.dumps(data))
    run_json = copy / "nb201" / "retrain" / "run.json"
    if record == "deleted":
        run_json.unlink()
    else:
        run_json.write_text('{"seed": "x"}')
    line = one_line(run_eps("report", "--space", "nb201", "--out", copy, check=False))
    assert "run.json" in line and "eps stage retrain" in line, line
    assert not (copy / "nb201" / "summary.json").exists()


@pytest.mark.unit
def test_overrides_as_key_value_strings_in_the_api_and_a_dotted_key_in_a_mapping():
    import eps
    from eps.errors import ConfigError
    assert eps.load_params(None, ["nb201.search.iterations=2000"])["nb201"]["search"]["iterations"] == 2000
    exp = eps.Experiment("nb201", overrides=["nb201.search.iterations=7"])
    assert exp.params["nb201"]["search"]["iterations"] == 7
    with pytest.raises(ConfigError, match=r"a dotted key in a mapping; nest it \(nb201: \{search: \{iterations: "
                                          r"VALUE\}\}\) or give it as 'nb201.search.iterations=VALUE'"):
        eps.load_params(None, {"nb201.search.iterations": 5})


@pytest.mark.cli
def test_dvc_init_outside_a_dvc_repository_says_to_create_one(tmp_path):
    out = run_eps("dvc", "init", "--dir", tmp_path, cwd=tmp_path).stdout
    assert "is not in a DVC repository: `git init && dvc init` there" in out, out
    (tmp_path / ".dvc").mkdir()
    assert run_eps("dvc", "init", "--dir", tmp_path, "--force", cwd=tmp_path).stdout.splitlines()[-1] == \
        "next: dvc repro"


@pytest.mark.cli
def test_a_non_utf8_arch_file_is_one_line_naming_the_select_redo(finished_run, tmp_path):
    """Fresh-user finding: bytes that are not UTF-8 in select/arch.txt made `eps stage retrain` an unexpected error
    (exit 1); like any other content that is not an architecture, it is one line naming the select --redo, exit 2."""
    params, runs = finished_run
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    arch = copy / "nb201/select/arch.txt"
    arch.write_bytes(b"caf\xe9|\x85\xff")
    model = (copy / "nb201/retrain/model.pt").read_bytes()
    line = one_line(run_eps("stage", "retrain", "--params", params, "--out", copy, check=False))
    assert str(arch) in line and "does not hold an architecture" in line and "--redo" in line, line
    assert (copy / "nb201/retrain/model.pt").read_bytes() == model
