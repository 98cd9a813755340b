"""CLI conventions: --version, shell completion, `python -m eps`, the spaces in --help, --redo and --params wiring,
`eps params` reading ./params.yaml, and the study's refusal of a space without a benchmark."""
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
import yaml

from conftest import EPS

pytestmark = pytest.mark.cli

STAGES = ("warmup", "search", "select", "retrain")
BUILTIN_SPACES = ("nb201", "darts-cnn", "darts-rnn")


def eps(*args: str, cwd=None, env=None, program=(EPS,)) -> subprocess.CompletedProcess:
    # wide help pages, so rich never wraps a space name across lines
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*program, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_version_prints_the_installed_version():
    res = eps("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"eps {version('eps')}"


@pytest.mark.parametrize("command", [("stage", s) for s in STAGES] + [("run",)])
def test_space_help_lists_the_registered_spaces_and_redo(command):
    res = eps(*command, "--help")
    assert res.returncode == 0, res.stderr
    for name in BUILTIN_SPACES:
        assert name in res.stdout
    assert "path/to/file.py:Class" in res.stdout
    assert "--redo" in res.stdout and "implies --restart" in res.stdout


def test_python_dash_m_eps_works_without_the_console_script_on_path(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}  # the venv's bin folder, where `eps` lives, is not on PATH
    res = eps("--help", cwd=tmp_path, env=env, program=(sys.executable, "-m", "eps"))
    assert res.returncode == 0, res.stderr
    assert "python -m eps" in res.stdout and "stage" in res.stdout
    res = eps("--version", cwd=tmp_path, env=env, program=(sys.executable, "-m", "eps"))
    assert res.stdout.strip() == f"eps {version('eps')}"


def test_shell_completion_script_and_space_names(tmp_path):
    res = eps(env={"_EPS_COMPLETE": "source_bash"}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "complete " in res.stdout and "_EPS_COMPLETE=complete_bash" in res.stdout
    res = eps(env={"_EPS_COMPLETE": "complete_bash", "COMP_WORDS": "eps stage search --space darts-",
                   "COMP_CWORD": "4"}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["darts-cnn", "darts-rnn"]
    res = eps("--help")
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout


def test_study_on_a_space_without_benchmark_is_one_line_and_makes_nothing(tmp_path):
    out = tmp_path / "runs"
    res = eps("study", "correlation", "--space", "darts-cnn", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "benchmark" in lines[0] and "darts-cnn" in lines[0] and "nb201" in lines[0]
    assert "ground_truth.csv" not in lines[0]  # not a missing NB201 file: the space has no benchmark at all
    assert not out.exists()


def test_params_reads_params_yaml_of_the_working_directory(tmp_path):
    res = eps("params", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["seed"] == 0
    assert "no params file" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "params.yaml").write_text("seed: 7\n")
    res = eps("params", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["seed"] == 7
    assert res.stderr.strip() == "read ./params.yaml (found in the working directory; --params reads another file)"
    (tmp_path / "other.yaml").write_text("seed: 3\n")
    res = eps("params", "--params", "other.yaml", "--space", "nb201", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert list(yaml.safe_load(res.stdout)) == ["nb201"]
    assert res.stderr.strip() == "read other.yaml"


@pytest.mark.unit
def test_redo_and_explicit_params_reach_the_stage_functions(tmp_path, monkeypatch):
    """In-process with the stage functions replaced: what the options turn into, without training anything."""
    from typer.testing import CliRunner
    from eps.pipeline import cli, report, stages
    calls = []
    for name in STAGES:
        monkeypatch.setattr(stages, name, lambda *a, _n=name, **kw: calls.append((_n, kw)))
    monkeypatch.setattr(report, "report", lambda *a, **kw: calls.append(("report", kw)))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    res = runner.invoke(cli.app, ["stage", "search", "--redo", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    # --redo reaches the stage as it is: the stage resumes its own interrupted redo (restart only with --restart)
    assert calls == [("search", {"restart": False, "redo": True})]
    calls.clear()
    res = runner.invoke(cli.app, ["stage", "retrain", "--restart", "--out", str(tmp_path)])
    assert calls == [("retrain", {"restart": True, "redo": False, "arch": None})]
    calls.clear()
    res = runner.invoke(cli.app, ["run", "--redo", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert [c[0] for c in calls] == [*STAGES, "report"]
    assert all(kw == {"restart": False, "redo": True} for _, kw in calls[:4])
    calls.clear()

    (tmp_path / "params.yaml").write_text("seed: 1\n")   # found, not given: the run's recorded params win
    res = runner.invoke(cli.app, ["report", "--space", "nb201", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli.app, ["report", "--space", "nb201", "--params", "params.yaml", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli.app, ["report", "--space", "nb201", "--settings", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls == [("report", {"explicit": False, "settings": False}),
                     ("report", {"explicit": True, "settings": False}), ("report", {"explicit": False, "settings": True})]


def test_unknown_space_is_one_line_listing_the_choices(tmp_path):
    res = eps("arch", "params", "--space", "nope", "x", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in BUILTIN_SPACES), res.stderr
