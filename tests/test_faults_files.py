"""Faults around files, run folders and numeric bounds (issue 22, causes 5, 7, 8, 9, 10, 11, 13): a partial
benchmark, an interrupted --redo, temp files of killed writes, non-regular files where data or records belong,
forged checkpoints, a second writer through import-records, settings beyond what a machine can meet.

Processes are stopped at exact points by a wrapper that patches one function of eps in the child process and
SIGKILLs it there (``run_killed``): the run itself is the real CLI, nothing in eps knows about the test.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from eps import checkpoint
from eps.errors import CheckpointError, ConfigError, DataError, EpsError
from tests.conftest import DATA_ROOT, EPS, SHORT_SEARCH as SHORT, eps_env, run_eps, write_tiny_params

pytestmark = pytest.mark.e2e

# SHORT (tests/conftest.py: no warm-up, 6 rounds, a checkpoint after each) with another learning rate
OTHER = dict(warmup=SHORT["warmup"], search={**SHORT["search"], "lr": 0.05})
OUTPUTS = ["history.jsonl", "supernet.pt", "metrics.json", "population.csv"]


def one_line_error(proc, *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def same_search_outputs(a: Path, b: Path):
    import torch
    for rel in OUTPUTS:
        if rel.endswith(".pt"):
            sa, sb = checkpoint.load(a / rel)["model"], checkpoint.load(b / rel)["model"]
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def temps(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tmp") if p.name.startswith("."))


# ---- stopping a real eps process at an exact point ---------------------------------------------------------------

_WRAPPER = """
import os, signal, sys
{setup}
from eps.pipeline import cli
sys.argv = ["eps", *sys.argv[1:]]
cli.main()
"""

# SIGKILL after the N-th checkpoint of the run is on disk
AFTER_CHECKPOINTS = """
from eps import checkpoint
_save, _n = checkpoint.CheckpointDir.save, [0]
def save(self, state):
    _save(self, state)
    _n[0] += 1
    if _n[0] >= {n}:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.CheckpointDir.save = save
"""

# SIGKILL when a stage starts to publish its outputs (all its work done, nothing swapped in)
BEFORE_SWAP = """
from eps import io as eio
def publish(final):
    os.kill(os.getpid(), signal.SIGKILL)
eio.publish = publish
"""

# SIGKILL in the middle of the N-th atomic write whose temp file's path contains MARK: the temp file is written and
# flushed (full size), not yet renamed
DURING_WRITE = """
_fsync, _n = os.fsync, [0]
def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{{fd}}")
    if {mark!r} in name and name.endswith(".tmp"):
        _n[0] += 1
        if _n[0] >= {n}:
            os.kill(os.getpid(), signal.SIGKILL)
    _fsync(fd)
os.fsync = fsync
"""


def run_killed(setup: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """``eps ARGS`` in a child process that ``setup`` SIGKILLs at its point; asserts it was killed there."""
    code = _WRAPPER.format(setup=textwrap.dedent(setup))
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=eps_env(True), capture_output=True,
                          text=True, cwd=cwd, timeout=900)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def other_search(tmp_path_factory):
    """An undisturbed tiny search of OTHER (SHORT with another lr): (params, out)."""
    d = tmp_path_factory.mktemp("other")
    params = write_tiny_params(d, **OTHER)
    run_eps("stage", "search", "--params", params, "--out", d / "runs", one_thread=True)
    return params, d / "runs"


@pytest.fixture
def ref(short_search, other_search):
    """Undisturbed tiny searches as (params, out): "short" (SHORT_SEARCH of tests/conftest.py, made once for this
    module and tests/test_faults_run.py) and "other"."""
    return {"short": short_search, "other": other_search}


def copy_run(ref, tmp_path, name="short") -> tuple[Path, Path, Path]:
    params, out = ref[name]
    shutil.copytree(out, tmp_path / "runs", symlinks=True)
    return params, tmp_path / "runs", tmp_path / "runs/nb201/.work/search"


# ---- 5. a partial benchmark ----------------------------------------------------------------------------------------

def _truncated_ground_truth(root: Path, rows: int) -> Path:
    """The real ground truth cut to its header and first ``rows`` rows (as an interrupted copy or a subset would)."""
    from eps.spaces.nb201.groundtruth import GROUND_TRUTH_FILE
    lines = (DATA_ROOT / GROUND_TRUTH_FILE).read_text().splitlines(keepends=True)
    path = root / GROUND_TRUTH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[: rows + 1]))
    return path


@pytest.mark.unit
def test_a_partial_benchmark_is_refused_and_the_complete_one_is_used(tmp_path):
    from eps.space import benchmark_of
    from eps.spaces.nb201.space import NB201Space
    path = _truncated_ground_truth(tmp_path, 10_000)
    with pytest.raises(DataError) as err:
        benchmark_of(NB201Space(), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "10,000 of the 15,625 architectures" in msg and "eps nb201 import FILE" in msg
    bench = benchmark_of(NB201Space(), DATA_ROOT)  # the real, complete table
    assert len(bench) == bench.size == 15_625


def test_cli_select_refuses_a_partial_benchmark(tmp_path):
    from tests.test_faults_data import _records_run
    data = tmp_path / "data"
    out, params = _records_run(tmp_path, data)
    path = _truncated_ground_truth(data, 10_000)
    proc = run_eps("stage", "select", "--params", params, "--out", out, check=False)
    one_line_error(proc, str(path), "10,000 of the 15,625")
    assert not (out / "nb201/select").exists()


# ---- 8. --redo resumes its own interrupted redo ---------------------------------------------------------------------

def test_interrupted_redo_resumes_from_its_checkpoints(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    other = ref["other"][0]
    # killed after 5 of its 6 checkpoints
    run_killed(AFTER_CHECKPOINTS.format(n=5), "stage", "search", "--params", other, "--out", out, "--redo")
    assert checkpoint.load(work / "last.pt")["state"]["iteration"] == 50
    same_search_outputs(ref["short"][1] / "nb201/search", out / "nb201/search")  # still the old set
    proc = run_eps("stage", "search", "--params", other, "--out", out, "--redo", one_thread=True)
    assert "resuming the interrupted --redo" in proc.stderr and "resumed from iteration 50" in proc.stderr
    same_search_outputs(ref["other"][1] / "nb201/search", out / "nb201/search")
    assert json.loads((out / "nb201/search/timing.json").read_text())["resumed_from"] == 50
    assert not (work / "redo.json").exists()
    # the redo is published: another --redo recomputes from scratch, as --redo promises
    proc = run_eps("stage", "search", "--params", other, "--out", out, "--redo", one_thread=True)
    assert "resuming" not in proc.stderr and "resumed from" not in proc.stderr
    assert json.loads((out / "nb201/search/timing.json").read_text())["resumed_from"] == 0


def test_redo_killed_before_the_swap_completes_it_without_recomputing(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    other = ref["other"][0]
    run_killed(BEFORE_SWAP, "stage", "search", "--params", other, "--out", out, "--redo")
    assert checkpoint.load(work / "last.pt")["state"]["iteration"] == 60  # all training done
    same_search_outputs(ref["short"][1] / "nb201/search", out / "nb201/search")
    proc = run_eps("stage", "search", "--params", other, "--out", out, "--redo", one_thread=True)
    assert "resuming the interrupted --redo" in proc.stderr and "resumed from iteration 60" in proc.stderr
    assert json.loads((out / "nb201/search/timing.json").read_text())["resumed_from"] == 60  # nothing trained
    same_search_outputs(ref["other"][1] / "nb201/search", out / "nb201/search")


def test_an_interrupted_redo_with_other_params_is_not_resumed(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    run_killed(AFTER_CHECKPOINTS.format(n=2), "stage", "search", "--params", ref["other"][0], "--out", out, "--redo")
    # a --redo with yet other params (the original ones): the interrupted redo's checkpoints are not its own
    proc = run_eps("stage", "search", "--params", params, "--out", out, "--redo", one_thread=True)
    assert "resuming" not in proc.stderr and "resumed from" not in proc.stderr
    same_search_outputs(ref["short"][1] / "nb201/search", out / "nb201/search")


# ---- 9. temp files of killed writes --------------------------------------------------------------------------------

def test_temp_file_of_a_killed_checkpoint_write_is_removed_on_resume(ref, tmp_path):
    params, _ = ref["short"]
    out = tmp_path / "runs"
    run_killed(DURING_WRITE.format(mark="/.last.pt.", n=3), "stage", "search", "--params", params, "--out", out)
    left = temps(out)
    assert len(left) == 1 and left[0].name.startswith(".last.pt.")
    assert checkpoint.load(left[0])["state"]["iteration"] == 30  # a whole checkpoint, written, never renamed
    proc = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert "removed 1 temp file(s)" in proc.stderr
    assert temps(out) == []
    same_search_outputs(ref["short"][1] / "nb201/search", out / "nb201/search")


def test_temp_file_of_a_killed_report_is_removed_by_the_next_report(ref, tmp_path):
    params, out, _ = copy_run(ref, tmp_path)
    run_killed(DURING_WRITE.format(mark="/report/.", n=1), "report", "--space", "nb201", "--out", out, cwd=tmp_path)
    assert [p.parent.name for p in temps(out)] == ["report"]
    run_eps("report", "--space", "nb201", "--out", out, cwd=tmp_path)
    assert temps(out) == [] and (out / "nb201/report/report.txt").is_file()


@pytest.mark.unit
def test_temp_files_are_left_alone_while_another_writer_holds_the_run_folder(tmp_path):
    from eps.pipeline.runfolder import RunPaths, locked
    paths = RunPaths(tmp_path / "runs", "nb201")
    live = paths.work("search") / ".last.pt.0123abcd.tmp"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"a live write")
    lock = paths.lock_file("search")
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time\n"
                               f"l = filelock.FileLock({str(lock)!r}); l.acquire(); print('held', flush=True)\n"
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EpsError, match="another eps process is writing"):
            with locked(paths, "select"):
                pass
        assert live.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    other = paths.stage("report") / ".report.txt.89abcdef.tmp"  # a name of eps's pattern; others are not touched
    other.parent.mkdir(parents=True)
    other.write_text("x")
    mine = paths.stage("report") / "notes.tmp"
    mine.write_text("a user's file")
    with locked(paths, "select"):
        pass
    assert not live.exists() and not other.exists() and mine.exists()


# ---- 10. non-regular files are refused, not read -----------------------------------------------------------------

@pytest.mark.unit
def test_a_fifo_as_the_split_file_is_refused_at_once(tmp_path):
    from eps.data.cifar import SPLIT_FILE, load_split
    split = tmp_path / SPLIT_FILE
    split.parent.mkdir(parents=True)
    os.mkfifo(split)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_split(tmp_path)
    assert time.monotonic() - start < 10
    assert str(split) in str(err.value) and "FIFO" in str(err.value) and "\n" not in str(err.value)


def test_cli_search_with_a_fifo_as_the_split_file_is_one_line(tmp_path):
    from eps.data.cifar import SPLIT_FILE
    data = tmp_path / "data"
    (data / "nb201").mkdir(parents=True)
    (data / "cifar-10-batches-py").symlink_to(DATA_ROOT / "cifar-10-batches-py")
    os.mkfifo(data / SPLIT_FILE)
    params = write_tiny_params(tmp_path, **SHORT)
    cfg = yaml.safe_load(params.read_text())
    cfg["data_root"] = str(data)
    params.write_text(yaml.safe_dump(cfg))
    proc = run_eps("stage", "search", "--params", params, "--out", tmp_path / "runs", check=False, one_thread=True,
                   timeout=300)
    one_line_error(proc, str(data / SPLIT_FILE), "FIFO")


def test_history_linked_to_dev_zero_is_refused_at_once(ref, tmp_path):
    params, out, _ = copy_run(ref, tmp_path)
    history = out / "nb201/search/history.jsonl"
    history.unlink()
    history.symlink_to("/dev/zero")
    start = time.monotonic()
    proc = run_eps("stage", "select", "--params", params, "--out", out, check=False, one_thread=True, timeout=300)
    one_line_error(proc, str(history), "/dev/zero", "character device")
    assert time.monotonic() - start < 120
    assert not (out / "nb201/select").exists()


def test_last_checkpoint_as_a_folder_falls_back_to_prev(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    (out / "nb201/search/params.yaml").unlink()  # not finished: the rerun reads its checkpoints
    (work / "last.pt").unlink()
    (work / "last.pt").mkdir()
    proc = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert "using the previous checkpoint" in proc.stderr and "is a folder" in proc.stderr
    assert (work / "last.pt").is_file() and checkpoint.load(work / "last.pt")["state"]["iteration"] == 60
    same_search_outputs(ref["short"][1] / "nb201/search", out / "nb201/search")
    # a folder with files in it is not eps's to delete: one line before any work
    (out / "nb201/search/params.yaml").unlink()
    (work / "last.pt").unlink()
    (work / "last.pt").mkdir()
    (work / "last.pt/keep.txt").write_text("mine")
    proc = run_eps("stage", "search", "--params", params, "--out", out, check=False, one_thread=True)
    one_line_error(proc, str(work / "last.pt"), "folder")
    assert (work / "last.pt/keep.txt").read_text() == "mine"


@pytest.mark.parametrize("iteration", [10**9, -40, 55, 50])
def test_a_forged_checkpoint_iteration_is_refused_and_prev_is_used(ref, tmp_path, iteration):
    """A valid checksum is not a valid state: the iteration must lie in 0..search.iterations at a round's end, and
    be where the history it belongs to ends (50: a round's end, but last.pt's history ends at 60)."""
    params, out, work = copy_run(ref, tmp_path)
    (out / "nb201/search/params.yaml").unlink()
    ckpt = checkpoint.load(work / "last.pt")
    ckpt["state"]["iteration"] = iteration
    checkpoint.save(work / "last.pt", ckpt)
    proc = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert "using the previous checkpoint" in proc.stderr and f"iteration {iteration}" in proc.stderr
    assert "resumed from iteration 50" in proc.stderr
    same_search_outputs(ref["short"][1] / "nb201/search", out / "nb201/search")


@pytest.mark.unit
def test_a_forged_retrain_epoch_is_refused(tmp_path):
    from eps.checkpoint import CheckpointDir
    from eps.retrain import run_retrain
    ckpt = CheckpointDir(tmp_path, {"k": 1}, log=lambda m: None)
    ckpt.save({"task": {}, "global_rng": {}, "history": [], "epoch": 10**9})
    with pytest.raises(CheckpointError, match=r"epoch 1000000000, outside 0\.\.3"):
        run_retrain(object(), 3, 1, ckpt)


@pytest.mark.unit
def test_non_regular_files_are_refused_by_the_readers(tmp_path):
    from eps import io as eio
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    for read in (lambda p: list(eio.read_jsonl(p)), eio.read_json, checkpoint.file_digest,
                 lambda p: eio.copy_file(p, tmp_path / "copy"), eio.AppendLog):
        for path, kind in ((fifo, "FIFO"), (link, "character device"), (tmp_path, "folder")):
            with pytest.raises(EpsError, match=kind) as err:
                read(path)
            assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="FIFO"):
        checkpoint.load(fifo)


# ---- 11. a second writer through import-records ------------------------------------------------------------------

def test_import_records_is_refused_while_a_search_runs(tmp_path):
    from tests.test_records import ROUND_100, write_record
    records = tmp_path / "records"
    records.mkdir()
    write_record(records, 100, ROUND_100)
    params = write_tiny_params(tmp_path, warmup=dict(iterations=0),
                               search=dict(iterations=2000, val_interval=10, checkpoint_every=1))
    out = tmp_path / "runs"
    search = subprocess.Popen([EPS, "stage", "search", "--params", params, "--out", out], env=eps_env(True),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not (out / "nb201/.work/search/history.jsonl").exists():
            assert search.poll() is None, search.stderr.read()
            time.sleep(0.05)
        search.send_signal(signal.SIGSTOP)  # holds the lock mid-search, and leaves the cores to import-records
        proc = run_eps("import-records", records, "--out", out, "--force", check=False)
        assert search.poll() is None, "the search ended before import-records tried; make it longer"
        one_line_error(proc, "another eps process is writing", str(out / "nb201"))
        assert not (out / "nb201/search").exists()
    finally:
        search.kill()
        search.wait()
    # the search is gone: the import goes ahead
    run_eps("import-records", records, "--out", out, "--force")
    assert (out / "nb201/search/history.jsonl").is_file()


# ---- 13 and 7. numeric bounds --------------------------------------------------------------------------------------

# Integer settings without an upper bound, each with the reason; empty: every one has a bound.
UNBOUNDED_ALLOWED: dict[str, str] = {}


def _numeric(annotation) -> bool:
    if annotation in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(annotation))


def _has_upper(metadata) -> bool:
    return any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in metadata)


def _items_bounded(annotation) -> bool:
    """For ``list[Annotated[int, Field(...)]]`` (or Optional of it): whether the items carry an upper bound."""
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is list:
            return all(_items_bounded_one(a) for a in typing.get_args(arg))
        if typing.get_origin(arg) is typing.Annotated:
            return _items_bounded_one(arg)
    return _items_bounded_one(annotation) if typing.get_origin(annotation) is typing.Annotated else False


def _items_bounded_one(annotation) -> bool:
    if annotation in (int, float):
        return False
    metadata = []
    for m in typing.get_args(annotation)[1:]:
        metadata += list(getattr(m, "metadata", [m]))
    return _has_upper(metadata)


def _numeric_fields(model, prefix=""):
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        ann = field.annotation
        models = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            for sub in models:
                yield from _numeric_fields(sub, key + ".")
        elif _numeric(ann):
            yield key, field


@pytest.mark.unit
def test_every_numeric_setting_has_an_upper_bound():
    from eps.params import params_model
    fields = dict(_numeric_fields(params_model()))
    assert "nb201.search.iterations" in fields and "darts-rnn.retrain.bptt" in fields and len(fields) > 90
    unbounded = [key for key, field in fields.items()
                 if not _has_upper(field.metadata) and not _items_bounded(field.annotation)
                 and key not in UNBOUNDED_ALLOWED]
    assert not unbounded, f"numeric settings without an upper bound (add le=... or a documented reason): {unbounded}"


@pytest.mark.unit
@pytest.mark.parametrize("key, value, bound", [
    ("nb201.search.iterations", 10**23, "1000000000"),
    ("nb201.search.population", 10**8, "1000000"),
    ("nb201.search.predictor_candidates", 10**9, "1000000"),
    ("nb201.space.channels", 10**30, "100000"),
    ("nb201.space.cells_per_stage", 100_000, "1000"),
    ("darts-cnn.space.channels", 10**30, "100000"),
    ("darts-rnn.space.hidden_size", 10**12, "100000"),
    ("study.iterations", 10**23, "1000000000"),
])
def test_values_beyond_the_bound_are_one_line(key, value, bound):
    from eps.params import load_params
    overrides: dict = {}
    node = overrides
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError) as err:
        load_params(None, overrides)
    assert f"{key}: got {value}, must be <= {bound}" in str(err.value)


@pytest.mark.cli
def test_cli_channels_beyond_the_bound_is_one_line_not_a_type_error(tmp_path):
    params = write_tiny_params(tmp_path, space=dict(channels=10**30, cells_per_stage=100_000))
    proc = run_eps("stage", "warmup", "--params", params, "--out", tmp_path / "runs", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "TypeError" not in proc.stderr, proc.stderr
    assert "nb201.space.channels: got 10" in proc.stderr and "must be <= 100000" in proc.stderr
    assert "nb201.space.cells_per_stage: got 100000, must be <= 1000" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.unit
@pytest.mark.parametrize("schedule, iterations, needle", [
    ([100, 200], 150, "step(s) [200] lie at or beyond search.iterations 150"),
    ([150], 150, "step(s) [150] lie at or beyond"),
    ([10, 20, 30, 40, 50], 150, "5 steps, but space.cells_per_stage 5 leaves room for 4"),
])
def test_a_progressive_schedule_that_can_never_apply_is_refused(schedule, iterations, needle):
    from eps.params import load_params
    with pytest.raises(ConfigError) as err:
        load_params(None, {"nb201": {"supernet": {"progressive": schedule}, "search": {"iterations": iterations}}})
    assert str(err.value).count("\n") == 1 and f"nb201.supernet.progressive: {needle}" in str(err.value)
    ok = load_params(None, {"nb201": {"supernet": {"progressive": [10, 20]}, "search": {"iterations": 150}}})
    assert ok["nb201"]["supernet"]["progressive"] == [10, 20]


@pytest.mark.unit
def test_last_record_of_a_history_prefix(tmp_path):
    from eps import io as eio
    log = eio.AppendLog(tmp_path / "h.jsonl")
    ends = []
    for i in range(4):  # records larger than one read block, so the backwards reading joins blocks
        log.append({"iteration": i, "pad": "x" * (50_000 * i)})
        ends.append(log.commit())
    assert [log.last_record(n)["iteration"] for n in ends] == [0, 1, 2, 3] and log.last_record(0) is None
    log.close()
    mem = eio.MemoryLog()
    for i in range(3):
        mem.append({"iteration": i})
    assert mem.last_record(2) == {"iteration": 1} and mem.last_record(0) is None


@pytest.mark.unit
def test_a_fifo_as_a_cifar_batch_is_refused_before_torchvision_reads_it(tmp_path):
    from eps.data.cifar import load_cifar10
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in (DATA_ROOT / "cifar-10-batches-py").iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "test_batch").unlink()
    os.mkfifo(folder / "test_batch")
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path, train=False, download=False)
    assert str(folder / "test_batch") in str(err.value) and "FIFO" in str(err.value)
