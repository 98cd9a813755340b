"""Faults in what a user hands eps: params files, `eps arch params` options and strings, odd artifacts read by
`select` and `report`, colour and Ctrl-C at the terminal, and the completeness of dvc.yaml's dependencies.

Every user error is one line on stderr (naming the problem and the fix), exit code 2, no traceback, and leaves what
was already computed as it was. Real CLI subprocesses and real files; the tiny NB201 config from conftest.
"""
import ast
import json
import math
import os
import pty
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from eps.errors import EpsError
from eps.selection import check_snapshot, collect_candidates, snapshot_winner
from tests.conftest import EPS, REPO, TINY_NB201, eps_env, resign, run_eps

pytestmark = pytest.mark.cli

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RNN_ARCH = ("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
            "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")


def one_line_error(proc, *needles: str) -> str:
    """The single stderr line of a user error (exit 2, no traceback), checked to contain every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# ------------------------------------------------------------------------------------------------ 4. params files

def test_params_naming_a_directory(tmp_path):
    (tmp_path / "cfg").mkdir()
    one_line_error(run_eps("params", "--params", tmp_path / "cfg", check=False), "not a regular file", "--params")


def test_params_not_utf8(tmp_path):
    p = write(tmp_path / "p.yaml", b"seed: 1\nnb201: {search: {lr: \xff\xfe}}\n")
    one_line_error(run_eps("params", "--params", p, check=False), "not UTF-8", "save it as UTF-8")


def test_params_alias_bomb_fails_fast(tmp_path):
    """Nine levels of nine aliases (9**9 nodes once expanded): refused at the first alias, well within the timeout."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    p = write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    proc = run_eps("params", "--params", p, check=False, timeout=120)
    one_line_error(proc, "aliases", "not allowed")


def test_params_unknown_space():
    one_line_error(run_eps("params", "--space", "nb20", check=False), "unknown search space 'nb20'", "nb201")


def test_params_negative_seed(tmp_path):
    p = write(tmp_path / "p.yaml", "seed: -1\n")
    one_line_error(run_eps("params", "--params", p, check=False), "seed: got -1, must be >= 0", "p.yaml")


def test_params_nan_alpha(tmp_path):
    p = write(tmp_path / "p.yaml", "nb201:\n  select:\n    alpha: .nan\n")
    one_line_error(run_eps("params", "--params", p, check=False), "nb201.select.alpha", "finite number")


def test_params_yaml11_exponent_is_accepted_as_a_number(tmp_path):
    """YAML 1.1 reads `1e-3` (no dot) as text; eps takes it as 0.001."""
    p = write(tmp_path / "p.yaml", "nb201:\n  search:\n    lr: 1e-3\n")
    proc = run_eps("params", "--params", p, "--space", "nb201")
    lr = yaml.safe_load(proc.stdout)["nb201"]["search"]["lr"]
    assert isinstance(lr, float) and lr == 0.001


def test_params_several_problems_are_one_line_each(tmp_path):
    """More than one problem: a header and one `key: message` line per problem, all reported at once."""
    p = write(tmp_path / "p.yaml", "seed: -1\nnb201: {search: {lr: 0}}\n")
    proc = run_eps("params", "--params", p, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[1:] == ["  seed: got -1, must be >= 0",
                                                     "  nb201.search.lr: got 0, must be > 0.0"]


# ------------------------------------------------------------------------------------------------ 5. eps arch params

@pytest.mark.parametrize("space,option,value,arch", [
    ("nb201", "--channels", "-1", NB201_ARCH),
    ("darts-rnn", "--classes", "-5", RNN_ARCH),
    ("nb201", "--channels", "0", NB201_ARCH),      # 0 used to fall back silently to the default
    ("nb201", "--layers", "0", NB201_ARCH),
    ("nb201", "--classes", "0", NB201_ARCH),
    ("nb201", "--channels", "1000000000", NB201_ARCH),  # a count that would take long even on the meta device
])
def test_arch_params_sizes_are_checked(space, option, value, arch):
    proc = run_eps("arch", "params", "--space", space, option, value, arch, check=False)
    one_line_error(proc, f"{option} {value}", "must be between 1 and", f"leave {option} out")


def test_arch_params_counts_unchanged_and_explicit_default_is_the_default():
    proc = run_eps("arch", "params", "--space", "nb201", NB201_ARCH)
    explicit = run_eps("arch", "params", "--space", "nb201", "--channels", "16", "--layers", "5", "--classes", "10",
                       NB201_ARCH)
    assert proc.stdout.split()[0] == explicit.stdout.split()[0] == "1.288506"


@pytest.mark.unit
def test_nb201_num_params_counts_on_the_meta_device_exactly():
    """Same count as a real network, and a size no real network would fit in memory is counted without allocating."""
    from eps.spaces.nb201.model import NB201Network
    from eps.spaces.nb201.space import NB201Space, str_to_arch
    arch = str_to_arch(NB201_ARCH)
    real = NB201Network(arch, 8, 2, 10)
    assert NB201Space().num_params(arch, channels=8, layers=2) == sum(p.numel() for p in real.parameters())
    # C=20000 in the last stage is 80000 channels: ~10^11 weights, far beyond this machine's memory if real
    assert NB201Space().num_params(arch, channels=20000, layers=1) > 10 ** 11


@pytest.mark.parametrize("space,text,needle", [
    ("nb201", "|nor_conv_3x3~0|+|bogus~0|nor_conv_3x3~1|+", "NB201 arch"),
    ("darts-cnn", "Genotype(normal=[('sep_conv_3x3', 0)]", "DARTS genotype"),
    ("darts-rnn", "Genotype(recurrent=" + "(" * 3000, "darts-rnn genotype"),
    ("darts-rnn", "line one\nline two", "darts-rnn genotype"),
])
def test_arch_params_malformed_arch_is_one_line(space, text, needle):
    one_line_error(run_eps("arch", "params", "--space", space, "--", text, check=False), needle)


# ------------------------------------------------------------------------------------------------ 7. odd artifacts

def copy_run(finished_run, tmp_path) -> tuple[Path, Path]:
    params, out = finished_run
    shutil.copytree(out, tmp_path / "runs")
    return params, tmp_path / "runs"


def snapshot_of(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_select_history_record_without_columns(finished_run, tmp_path):
    params, out = copy_run(finished_run, tmp_path)
    with (out / "nb201/search/history.jsonl").open("a") as f:
        f.write('{"iteration": 70, "arch": 5}\n')
    before = snapshot_of(out / "nb201/select")
    # the search's record knows its history: an appended line makes it another file
    proc = run_eps("stage", "select", "--params", params, "--out", out, "--redo", check=False)
    one_line_error(proc, "history.jsonl is not the file the stage wrote", "eps stage search")
    assert snapshot_of(out / "nb201/select") == before
    # a history without a record (imported, or written by an older eps) is read, and the bad record named
    for name in ("params.yaml", "run.json"):
        (out / "nb201/search" / name).unlink()
    proc = run_eps("stage", "select", "--params", params, "--out", out, "--redo", check=False)
    one_line_error(proc, "iteration 70", "missing key(s) loss, count", "eps stage search")
    assert snapshot_of(out / "nb201/select") == before


@pytest.mark.unit
@pytest.mark.parametrize("record,problem", [
    ({"iteration": 70, "arch": 5, "loss": [], "count": []}, "'arch' is 5, expected a list of architecture strings"),
    ({"iteration": 70, "arch": ["a", "b"], "loss": [1.0], "count": [1, 1]}, "'loss' is a list of 1, expected a list of 2"),
    ({"iteration": 70, "arch": ["a"], "loss": [math.nan], "count": [1]}, "'loss' of member 0 is nan"),
    ({"iteration": 70, "arch": ["a"], "loss": ["low"], "count": [1]}, "'loss' of member 0 is 'low'"),
    ({"iteration": 70, "arch": ["a"], "loss": [1.0], "count": [True]}, "'count' of member 0 is True"),
    ({"iteration": "70", "arch": ["a"], "loss": [1.0], "count": [1]}, "'iteration' is '70'"),
    ([70, ["a"]], "expected an object"),
])
def test_malformed_snapshot_records_name_iteration_and_problem(record, problem):
    good = {"iteration": 60, "arch": ["a"], "loss": [1.0], "count": [1]}
    with pytest.raises(EpsError) as err:
        collect_candidates([good, record], window=100)
    text = str(err.value)
    assert "\n" not in text and problem in text and "record 2" in text and "eps stage search" in text
    if isinstance(record, dict) and isinstance(record["iteration"], int):
        assert "iteration 70" in text
    with pytest.raises(EpsError):
        snapshot_winner(record)
    assert check_snapshot(good) is good and snapshot_winner(good) == ("a", 1.0)


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _drop_key(path: Path, *keys):
    data = json.loads(path.read_text())
    for k in keys:
        data.pop(k)
    path.write_text(json.dumps(data))


@pytest.mark.e2e
@pytest.mark.parametrize("rel,damage,needles", [
    ("search/metrics.json", _truncate, ["search/metrics.json", "not valid JSON", "eps stage search"]),
    ("retrain/metrics.json", lambda p: p.write_text("[1, 2]"), ["retrain/metrics.json", "JSON object",
                                                                  "eps stage retrain"]),
    ("retrain/curve.csv", lambda p: p.write_text("epoch,test_acc\n1,seven\n"), ["curve.csv", "'seven' is not a number",
                                                                               "eps stage retrain"]),
    ("retrain/curve.csv", lambda p: p.write_text("just some text\nin a file\n"), ["curve.csv", "'epoch' column",
                                                                                 "eps stage retrain"]),
    ("select/selection.json", lambda p: _drop_key(p, "rule", "candidates"), ["selection.json", "no key 'rule'",
                                                                            "eps stage select"]),
    ("search/history.jsonl", lambda p: p.open("a").write('{"iteration": 70, "arch": 5}\n'),
     ["history.jsonl", "iteration 70", "eps stage search"]),
])
def test_report_names_a_damaged_artifact_and_keeps_the_old_report(finished_run, tmp_path, rel, damage, needles):
    """The documented choice (pipeline/report.py): a damaged file stops the report with one line; nothing of the
    previous report is overwritten."""
    params, out = copy_run(finished_run, tmp_path)
    damage(out / "nb201" / rel)
    before = snapshot_of(out / "nb201/report")
    assert "report.txt" in before and "retrain_curve.png" in before
    proc = run_eps("report", "--space", "nb201", "--params", params, "--out", out, check=False)
    one_line_error(proc, *needles)
    assert snapshot_of(out / "nb201/report") == before


@pytest.mark.e2e
def test_report_shows_values_from_files_verbatim(finished_run, tmp_path):
    """Text in an artifact is never read as rich markup (a closing tag used to crash the report)."""
    params, out = copy_run(finished_run, tmp_path)
    path = out / "nb201/select/selection.json"
    data = json.loads(path.read_text())
    data["prior_free"]["arch"] = "[/bold] [red]x"
    path.write_text(json.dumps(data))
    resign(path.parent)
    run_eps("report", "--space", "nb201", "--params", params, "--out", out)
    assert "[/bold] [red]x" in (out / "nb201/report/report.txt").read_text()


@pytest.mark.e2e
def test_corrupt_warmup_supernet_says_to_rerun_warmup(finished_run, tmp_path):
    params, out = copy_run(finished_run, tmp_path)
    (out / "nb201/warmup/supernet.pt").write_bytes(b"not a checkpoint at all")
    proc = run_eps("stage", "search", "--params", params, "--out", out, check=False)
    line = one_line_error(proc, "supernet.pt", "eps stage warmup")
    assert "--restart" not in line


# ------------------------------------------------------------------------------------------------ 9. terminal

def _stderr_on_a_terminal(*args, env) -> bytes:
    """Run eps with stderr on a pseudo-terminal; return what it wrote there."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([EPS, *args], stdout=subprocess.DEVNULL, stderr=slave, env=env, timeout=120)
    finally:
        os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.returncode == 2
    return out


def test_no_color_is_respected_on_the_error_line():
    env = {k: v for k, v in eps_env().items() if k != "NO_COLOR"}
    coloured = _stderr_on_a_terminal("params", "--space", "nb20", env=env)
    assert b"\x1b[" in coloured and b"unknown search space" in coloured  # a terminal gets colour by default
    plain = _stderr_on_a_terminal("params", "--space", "nb20", env={**env, "NO_COLOR": "1"})
    assert b"\x1b" not in plain and b"unknown search space" in plain


def test_no_colour_when_stderr_is_not_a_terminal():
    env = {k: v for k, v in eps_env().items() if k != "NO_COLOR"}
    proc = subprocess.run([EPS, "params", "--space", "nb20"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "\x1b" not in proc.stderr and "unknown search space" in proc.stderr


LONG_SEARCH = {**TINY_NB201, "nb201": {**TINY_NB201["nb201"], "warmup": {"iterations": 0},
                                       "search": {**TINY_NB201["nb201"]["search"], "iterations": 10 ** 6}}}


@pytest.mark.parametrize("gap", [0.005, 0.3])
def test_double_ctrl_c_exits_quietly_with_130(tmp_path, gap):
    """Ctrl-C twice: the second one lands while eps shuts down (atexit handlers, interpreter teardown)."""
    params = write(tmp_path / "long.yaml", yaml.safe_dump(LONG_SEARCH))
    out = tmp_path / "runs"
    # SIGINT as a terminal delivers it: a shell's background job (nohup, `&`) ignores it, and Python keeps that
    proc = subprocess.Popen([EPS, "stage", "search", "--params", params, "--out", out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=eps_env(one_thread=True),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "nb201/.work/search/last.pt").exists():  # the search loop is running
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(gap)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "interrupted; run the same command again" in err


# ------------------------------------------------------------------------------------------------ 10. DVC deps

def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[:2] == ["eps", "pipeline"]:  # installed as eps.pipeline, kept in the repository as pipeline/
        parts = parts[1:]
    p = REPO.joinpath(*parts)
    if (p / "__init__.py").exists():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").exists() else None


def _imports(nodes, modname: str, is_package: bool) -> set[str]:
    """eps/pipeline modules imported anywhere in ``nodes`` (module level and inside functions), with their parent
    packages; a ``"eps.x.y:Class"`` string (the spaces registry) counts as importing ``eps.x.y``."""
    found = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = modname.split(".")
                    base = base[:len(base) - node.level + (1 if is_package else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module
                found |= {mod} | {f"{mod}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("eps.") \
                    and ":" in node.value:
                found.add(node.value.split(":")[0])
    out = set()
    for name in found:
        parts = name.split(".")
        if parts[0] in ("eps", "pipeline"):
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if _module_file(".".join(parts[:i]))}
    return out


def _closure(roots: set[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            f = _module_file(name)
            todo += _imports([ast.parse(f.read_text())], name, f.name == "__init__.py")
    return seen


def _cli_command_modules(command: str) -> set[Path]:
    """Files a CLI command runs: pipeline/cli.py itself (its module level, its helpers and this command, not the
    other commands' bodies), then everything those import, transitively, including imports inside functions."""
    tree = ast.parse((REPO / "pipeline/cli.py").read_text())

    def is_command(fn) -> bool:
        return fn.name == "_stage" or any(".command" in ast.unparse(d) for d in fn.decorator_list)
    kept = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and is_command(n) and n.name != command)]
    roots = _imports(kept, "eps.pipeline.cli", False) - {"eps.pipeline.cli"}
    return {REPO / "pipeline/cli.py"} | {_module_file(m) for m in _closure(roots)}


def _command_of(cmd: str) -> str:
    words = cmd.split()
    assert words[0] == "eps", cmd
    return {"stage": "_stage", "report": "report", "study": "study_correlation"}[words[1]]


def _dvc_stages() -> dict:
    """The stages of the main pipeline (dvc.yaml) and of the study's (generated by `eps dvc init --study` into
    study/dvc.yaml, run from the repo root)."""
    from eps.pipeline.dvcfiles import study_pipeline
    stages = dict(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    stages.update(study_pipeline("nb201", checkout=True, plugin_deps=[])["stages"])
    return {name: st.get("do", st) for name, st in stages.items()}


@pytest.mark.unit
def test_dvc_stages_depend_on_every_module_they_run():
    """Adding an import to a stage's code path without adding the file (or its folder) to the stage's deps fails."""
    for name, st in _dvc_stages().items():
        deps = [REPO / d for d in st["deps"] if not d.startswith("runs/")]
        for d in deps:
            assert d.exists(), f"stage {name}: dependency {d.relative_to(REPO)} does not exist"
        needed = _cli_command_modules(_command_of(st["cmd"]))
        missing = sorted(str(f.relative_to(REPO)) for f in needed
                         if not any(f == d or d in f.parents for d in deps))
        assert not missing, f"stage {name} runs {missing} but does not list them in deps"


@pytest.mark.unit
def test_dvc_module_walk_sees_the_stage_code():
    """The walk itself: stages run the spaces (through the registry's strings), the report its own modules only."""
    stage = {f.relative_to(REPO).as_posix() for f in _cli_command_modules("_stage")}
    assert {"pipeline/stages.py", "eps/spaces/nb201/space.py", "eps/spaces/darts_rnn/task.py", "eps/train/image.py",
            "eps/settings.py", "eps/params.py", "eps/api.py", "eps/selection.py"} <= stage
    assert "pipeline/report.py" not in stage and "eps/report.py" not in stage
    assert "pipeline/report.py" in {f.relative_to(REPO).as_posix() for f in _cli_command_modules("report")}


@pytest.mark.unit
def test_dvc_stages_declare_the_params_they_read():
    """Every stage goes through the CLI, which loads `plugins`; the rest is each stage's reads (see dvc.yaml)."""
    expected = {
        "warmup": {"seed", "deterministic", "plugins", "space", "supernet", "warmup", "search.on_nonfinite"},
        "search": {"seed", "deterministic", "plugins", "space", "supernet", "search", "warmup.iterations"},
        "select": {"plugins", "space", "select", "retrain"},
        "retrain": {"seed", "deterministic", "plugins", "space", "retrain"},
        "report": {"seed", "plugins", "space", "warmup", "search", "select", "retrain"},
        "study": {"deterministic", "plugins", "space", "supernet", "search", "study"},
    }
    for name, st in _dvc_stages().items():
        got = {str(p).replace("${item}.", "").replace("nb201.", "") for p in st["params"]}
        assert expected[name] <= got, (name, expected[name] - got)


class _Recorder(dict):
    """A params dict that records every key path read through it (not while ``paused``: validation reads all)."""
    paused = False

    def __init__(self, data: dict, path: str, log: set):
        super().__init__(data)
        self._path, self._log = path, log

    def __getitem__(self, key):
        value = super().__getitem__(key)
        path = f"{self._path}.{key}" if self._path else str(key)
        if not _Recorder.paused:
            self._log.add(path)
        return _Recorder(value, path, self._log) if isinstance(value, dict) else value

    def get(self, key, default=None):
        return self[key] if key in self else default


@pytest.mark.e2e
def test_dvc_params_cover_what_the_nb201_stages_read(tmp_path, one_thread, monkeypatch):
    """Run the stages in this process on params that record each key read: every key (but the machine's `device`
    and `data_root`) is covered by the stage's params in dvc.yaml."""
    from eps.params import load_params
    from eps.pipeline import record, report, stages
    # The check that an upstream stage was made with the current params reads the upstream's keys; DVC tracks those
    # through the upstream's outputs, so they are not this stage's params.
    monkeypatch.setattr(record, "check_upstream", lambda *args, **kwargs: None)
    plain = load_params(write(tmp_path / "tiny.yaml", yaml.safe_dump(TINY_NB201)))
    # Each stage records the whole space's params beside its outputs (a description, not an input of the result)
    run_params = record.run_params
    monkeypatch.setattr(record, "run_params", lambda params, space: run_params(plain, space))
    declared = {name: [str(p).replace("${item}", "nb201") for p in st["params"]]
                for name, st in _dvc_stages().items()}
    # The stages hand the params to the API, which reads the space's section through typed settings objects: their
    # reads are recorded too (attribute reads of fields, mapped back to key paths).
    from eps.api import Experiment
    from eps.settings import Settings
    made, reads = [], []
    init, get = Experiment.__init__, Settings.__getattribute__

    def recording_init(self, *args, **kwargs):
        _Recorder.paused = True  # validating the params reads every key; what the stage then reads is recorded
        try:
            init(self, *args, **kwargs)
        finally:
            _Recorder.paused = False
        made.append(self)

    def recording_get(self, name):
        if not _Recorder.paused and not name.startswith("_") and name in type(self).model_fields:
            reads.append((id(self), name))
        return get(self, name)

    monkeypatch.setattr(Experiment, "__init__", recording_init)
    monkeypatch.setattr(Settings, "__getattribute__", recording_get)

    def paths(obj, prefix: str, out: dict) -> dict:
        out[id(obj)] = prefix
        for field in type(obj).model_fields:
            value = get(obj, field)
            if isinstance(value, Settings):
                paths(value, f"{prefix}.{field}", out)
        return out

    for name in ("warmup", "search", "select", "retrain", "report"):
        log: set = set()
        params = _Recorder(plain, "", log)
        made.clear(), reads.clear()
        (report.report if name == "report" else getattr(stages, name))("nb201", params, tmp_path / "runs")
        where: dict = {}
        for exp in made:
            paths(exp.settings, exp.name, where)
        log |= {f"{where[i]}.{field}" for i, field in reads if i in where}
        # The supernet task builds its fitness stream (own generator, seed + 2) and chunking when it is made, in
        # the warm-up too, which never scores a member: those keys cannot change a warm-up's result.
        unused = {f"nb201.search.{k}" for k in ("fitness_batch_size", "fitness_batches", "fitness_shared", "group")}
        uncovered = sorted(k for k in log - {"device", "data_root", "nb201"} - (unused if name == "warmup" else set())
                           if not any(k == q or k.startswith(q + ".") or q.startswith(k + ".")
                                      for q in declared[name]))
        assert not uncovered, f"stage {name} reads {uncovered}, not in its dvc.yaml params"
        assert any(k.startswith("nb201.") for k in log), name  # the recorder did see the reads


# ------------------------------------------------------------------------------------------------ found by the attack pass

def test_ground_truth_import_never_replaces_a_file_without_force(tmp_path):
    target = write(tmp_path / "precious.csv", "keep me\n")
    proc = run_eps("nb201", "import", tmp_path / "whatever.pth", "--out", target, check=False)
    one_line_error(proc, "precious.csv", "--force")
    assert target.read_text() == "keep me\n"


@pytest.mark.e2e
def test_search_refuses_a_warmup_file_of_another_supernet(finished_run, tmp_path):
    params, out = copy_run(finished_run, tmp_path)
    cfg = yaml.safe_load(params.read_text())
    cfg["nb201"]["space"]["channels"] = 8
    other = write(tmp_path / "other.yaml", yaml.safe_dump(cfg))
    proc = run_eps("stage", "search", "--params", other, "--out", out, "--redo", check=False)
    one_line_error(proc, "warmup was made with other params", "space.channels", "eps stage warmup")
    # a warm-up file without its record (an older eps): its tensors tell
    for name in ("params.yaml", "run.json"):
        (out / "nb201/warmup" / name).unlink()
    proc = run_eps("stage", "search", "--params", other, "--out", out, "--redo", check=False)
    one_line_error(proc, "supernet.pt", "eps stage warmup")


@pytest.mark.parametrize("key,value", [("lr", 1e39), ("weight_decay", 1e300)])
def test_numbers_beyond_float32_are_refused_at_validation(tmp_path, key, value):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["nb201"]["search"][key] = value
    proc = run_eps("params", "--params", write(tmp_path / "p.yaml", yaml.safe_dump(cfg)), check=False)
    one_line_error(proc, f"nb201.search.{key}", "must be <=")


def test_first_round_longer_than_the_search_is_refused(tmp_path):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_NB201))
    cfg["nb201"]["search"]["first_round_steps"] = 1000
    proc = run_eps("params", "--params", write(tmp_path / "p.yaml", yaml.safe_dump(cfg)), check=False)
    one_line_error(proc, "first_round_steps")


@pytest.mark.e2e
@pytest.mark.parametrize("edit", ["infinite loss", "out of order"])
def test_select_refuses_infinite_losses_and_reordered_histories(finished_run, tmp_path, edit):
    params, out = copy_run(finished_run, tmp_path)
    path = out / "nb201/search/history.jsonl"
    lines = path.read_text().splitlines()
    if edit == "infinite loss":
        rec = json.loads(lines[-1])
        rec["loss"] = [-1e400 if l is not None else None for l in rec["loss"]]
        lines[-1] = json.dumps(rec)
    else:
        lines = lines[::-1]
    path.write_text("\n".join(lines) + "\n")
    before = (out / "nb201/select/arch.txt").read_bytes()
    proc = run_eps("stage", "select", "--params", params, "--out", out, check=False)
    one_line_error(proc, "history")
    assert (out / "nb201/select/arch.txt").read_bytes() == before


def test_plugin_that_exits_at_import_is_a_failed_import(tmp_path):
    plug = write(tmp_path / "exits.py", "import sys\nsys.exit(0)\n")
    proc = run_eps("params", "--space", f"{plug}:X", check=False)
    one_line_error(proc, "failed to import", "SystemExit")


def test_an_unanticipated_error_is_one_line_without_a_traceback(tmp_path):
    """The last line of defence: nested input deeper than Python's recursion limit."""
    deep = "seed: " + "[" * 3000 + "]" * 3000 + "\n"
    proc = run_eps("params", "--params", write(tmp_path / "deep.yaml", deep), check=False)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.e2e
def test_import_records_never_lands_beside_a_finished_search(finished_run, tmp_path):
    params, out = copy_run(finished_run, tmp_path)
    before = snapshot_of(out / "nb201/search")
    proc = run_eps("import-records", tmp_path / "records", "--out", out, "--force", check=False)
    one_line_error(proc, "another --out")
    assert snapshot_of(out / "nb201/search") == before
