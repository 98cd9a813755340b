"""Faults around a run folder: two writers, checkpoints out of step with the history or the data, OS errors (disk
full, read-only, --out a file), outputs as one set, strict JSON, file modes. Real CLI calls on the tiny NB201 config.
"""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from eps import checkpoint
from eps import io as eio
from tests.conftest import DATA_ROOT, EPS, SHORT_SEARCH as SHORT, eps_env, resign, run_eps, write_tiny_params

pytestmark = pytest.mark.e2e

OUTPUTS = ["history.jsonl", "supernet.pt", "metrics.json", "population.csv"]


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def same_search_outputs(a: Path, b: Path):
    """Two search folders with identical outputs (weights compared tensor by tensor, the rest byte for byte)."""
    for rel in OUTPUTS:
        if rel.endswith(".pt"):
            sa, sb = checkpoint.load(a / rel)["model"], checkpoint.load(b / rel)["model"]
            assert sa.keys() == sb.keys()
            assert all(torch.equal(sa[k], sb[k]) for k in sa), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture
def ref(short_search):
    """One undisturbed tiny search of SHORT (tests/conftest.py, shared with tests/test_faults_files.py): (params,
    out). Tests copy its folder to start from a finished run."""
    return short_search


def copy_run(ref, tmp_path, finished: bool = True) -> tuple[Path, Path, Path]:
    """A copy of the finished reference run: (params, out, .work/search). ``finished=False``: without the search's
    record, so a rerun goes through its checkpoints (as after `dvc repro` removed the outputs, or an older eps)
    instead of being up to date."""
    params, out = ref
    shutil.copytree(out, tmp_path / "runs")
    if not finished:
        (tmp_path / "runs/nb201/search/params.yaml").unlink()
    return params, tmp_path / "runs", tmp_path / "runs/nb201/.work/search"


def iteration_of(path: Path) -> int:
    return checkpoint.load(path)["state"]["iteration"]


# ---- 1. one writer per run folder and stage ------------------------------------------------------------------------

def test_second_writer_fails_at_once_and_first_finishes_undisturbed(ref, tmp_path):
    params, ref_out = ref
    out = tmp_path / "busy"
    first = subprocess.Popen([EPS, "stage", "search", "--params", params, "--out", out], env=eps_env(True),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # the in-progress history is created once the first process holds the lock (no timing assumed, only order);
        # stopped there, it holds the lock mid-search for as long as the others take
        while not (out / "nb201/.work/search/history.jsonl").exists():
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first search ended before the others tried; make it longer"
        second = run_eps("stage", "search", "--params", params, "--out", out, check=False, one_thread=True)
        # another stage on the same folder is a second writer too (one writer per run folder)
        other = run_eps("stage", "warmup", "--params", params, "--out", out, "--restart", check=False,
                        one_thread=True)
        first.send_signal(signal.SIGCONT)
        line = one_line_error(second)
        assert "another eps process is writing" in line and str(out / "nb201") in line
        line = one_line_error(other)
        assert "another eps process is writing" in line and "stage search" in line
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    same_search_outputs(ref_out / "nb201/search", out / "nb201/search")
    # the lock is released: the same command runs again (resuming from the final checkpoint)
    run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    same_search_outputs(ref_out / "nb201/search", out / "nb201/search")


# ---- 2. checkpoints that do not fit the history, the data, or the run ----------------------------------------------

def test_history_shorter_than_checkpoint_is_refused_never_padded(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path, finished=False)
    (work / "last.pt").unlink()
    (work / "history.jsonl").unlink()  # prev.pt stays: it records more history than there is
    proc = run_eps("stage", "search", "--params", params, "--out", out, check=False, one_thread=True)
    line = one_line_error(proc)
    assert "--restart" in line and "history" in line
    assert b"\0" not in (work / "history.jsonl").read_bytes()
    same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")  # the previous outputs are untouched
    run_eps("stage", "search", "--params", params, "--out", out, "--restart", one_thread=True)
    assert b"\0" not in (work / "history.jsonl").read_bytes()
    same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")


def test_history_cut_falls_back_to_the_checkpoint_it_fits_and_other_content_is_refused(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    prev = checkpoint.load(work / "prev.pt")["state"]
    with open(work / "history.jsonl", "r+b") as f:  # the history of prev.pt only: last.pt no longer fits
        f.truncate(prev["history_bytes"])
    shutil.rmtree(out / "nb201/search")
    proc = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert "using the previous checkpoint" in proc.stderr
    same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")
    # same length, other content: no checkpoint belongs to it (outputs unfinished, so the checkpoints decide)
    (out / "nb201/search/params.yaml").unlink()
    data = bytearray((work / "history.jsonl").read_bytes())
    data[10:14] = b"9999" if data[10:14] != b"9999" else b"8888"
    (work / "history.jsonl").write_bytes(bytes(data))
    line = one_line_error(run_eps("stage", "search", "--params", params, "--out", out, check=False, one_thread=True))
    assert "content differs" in line and "--restart" in line


def test_checkpoint_missing_keys_or_corrupt_uses_prev_and_keeps_it(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path, finished=False)
    assert iteration_of(work / "prev.pt") == 50 and iteration_of(work / "last.pt") == 60
    good_prev = (work / "prev.pt").read_bytes()
    # a valid checksum, but no controller state
    ckpt = checkpoint.load(work / "last.pt")
    del ckpt["state"]["controller"]
    checkpoint.save(work / "last.pt", ckpt)
    proc = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert "lacks controller" in proc.stderr and "Traceback" not in proc.stderr
    same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")
    # the bad last.pt was replaced, not rotated over the good prev.pt
    assert (work / "prev.pt").read_bytes() == good_prev and iteration_of(work / "last.pt") == 60
    # a corrupt last.pt (checksum): the same (the outputs unfinished again, so the rerun reads its checkpoints)
    (out / "nb201/search/params.yaml").unlink()
    data = bytearray((work / "last.pt").read_bytes())
    data[-10] ^= 0xFF
    (work / "last.pt").write_bytes(bytes(data))
    proc = run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert "corrupt" in proc.stderr
    assert (work / "prev.pt").read_bytes() == good_prev and iteration_of(work / "last.pt") == 60
    same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")


def test_resume_after_the_split_file_changed_is_refused(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    data = tmp_path / "data"
    (data / "nb201").mkdir(parents=True)
    (data / "cifar-10-batches-py").symlink_to(DATA_ROOT / "cifar-10-batches-py")
    split = data / "nb201/cifar10-split.json"
    shutil.copy(DATA_ROOT / "nb201/cifar10-split.json", split)
    cfg = yaml.safe_load(params.read_text())
    cfg["data_root"] = str(data)
    moved = tmp_path / "p.yaml"
    moved.write_text(yaml.safe_dump(cfg))
    # the same files under another root: the run is the same, it resumes (from its final checkpoint)
    run_eps("stage", "search", "--params", moved, "--out", out, one_thread=True)
    s = json.loads(split.read_text())
    s["train"] = s["train"][::-1]  # still a valid split, other content
    split.write_text(json.dumps(s))
    line = one_line_error(run_eps("stage", "search", "--params", moved, "--out", out, check=False, one_thread=True))
    assert "data.nb201/cifar10-split.json" in line and "--restart" in line


# ---- 3. OS errors: one line, and outputs as one set ----------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_is_one_line_and_the_run_resumes_exactly(ref, tmp_path):
    params = ref[0]
    with tmpfs(tmp_path / "small", "3m") as mnt:
        out = mnt / "runs"
        filler = mnt / "filler"
        st = os.statvfs(mnt)
        # room for one checkpoint (~0.3 MB) but not for two
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 400_000))
        line = one_line_error(run_eps("stage", "search", "--params", params, "--out", out, check=False,
                                      one_thread=True))
        assert "No space left on device" in line and str(mnt) in line and "run the same command again" in line
        assert not (out / "nb201/search").exists() and not (out / "nb201/.search.staging").exists()
        filler.unlink()
        run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
        same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")
        work = out / "nb201/.work/search"
        assert b"\0" not in (work / "history.jsonl").read_bytes()


def test_read_only_out_is_one_line(ref, tmp_path):
    params = ref[0]
    if os.geteuid() != 0:
        out = tmp_path / "ro"
        shutil.copytree(ref[1], out)
        for p in [out, *out.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        try:
            line = one_line_error(run_eps("stage", "search", "--params", params, "--out", out, check=False))
        finally:
            for p in [out, *out.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o755)
        assert str(out) in line and "Permission denied" in line
        return
    with tmpfs(tmp_path / "ro", "4m") as mnt:
        shutil.copytree(ref[1], mnt / "runs")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        line = one_line_error(run_eps("stage", "search", "--params", params, "--out", mnt / "runs", check=False))
        assert "Read-only file system" in line and str(mnt / "runs") in line
        line = one_line_error(run_eps("stage", "select", "--params", params, "--out", mnt / "fresh", check=False))
        assert "Read-only file system" in line and str(mnt / "fresh") in line


@pytest.mark.cli
def test_out_naming_a_regular_file_is_one_line(tmp_path):
    params = write_tiny_params(tmp_path, **SHORT)
    target = tmp_path / "afile"
    target.write_text("not a folder\n")
    for stage in ("warmup", "search", "select", "retrain"):
        line = one_line_error(run_eps("stage", stage, "--params", params, "--out", target, check=False))
        assert str(target) in line and "not a folder" in line
    assert target.read_text() == "not a folder\n"


@pytest.mark.unit
def test_oserror_at_the_cli_is_one_line_naming_the_path(tmp_path, monkeypatch):
    from typer.testing import CliRunner
    from eps.pipeline import cli, stages

    def boom(*a, **k):
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "x"))
    monkeypatch.setattr(stages, "select", boom)
    res = CliRunner().invoke(cli.app, ["stage", "select", "--params", str(write_tiny_params(tmp_path, **SHORT)),
                                       "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {tmp_path / 'x'}: Input/output error"


def test_failed_restart_leaves_the_previous_outputs_as_one_set(ref, tmp_path, monkeypatch):
    """search --redo with other params fails while writing its outputs (disk full at supernet.pt): the folder
    keeps the previous run's complete set, never a new history beside the old supernet."""
    from typer.testing import CliRunner
    from eps.pipeline import cli
    params, out, work = copy_run(ref, tmp_path)
    other = write_tiny_params(tmp_path, warmup=dict(iterations=0),
                              search=dict(iterations=20, val_interval=10, checkpoint_every=1, lr=0.05))
    real_save = checkpoint.save

    def save(path, state):
        if Path(path).name == "supernet.pt":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, state)
    monkeypatch.setattr(checkpoint, "save", save)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(cli.app, ["stage", "search", "--params", str(other), "--out", str(out), "--redo"])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1] and "supernet.pt" in lines[-1]
    assert "Traceback" not in res.stderr
    # the new history was written to .work, but the published folder is the old set, whole
    assert (work / "history.jsonl").read_bytes() != (ref[1] / "nb201/search/history.jsonl").read_bytes()
    same_search_outputs(ref[1] / "nb201/search", out / "nb201/search")
    assert sorted(p.name for p in (out / "nb201").iterdir()) == [".work", "search"]


def test_swap_interrupted_by_a_crash_is_finished_or_undone(ref, tmp_path):
    params, out, work = copy_run(ref, tmp_path)
    root = out / "nb201"
    # killed between the two renames: the old set moved aside, the complete new set still in staging
    os.rename(root / "search", root / ".search.old")
    shutil.copytree(root / ".search.old", root / ".search.staging")
    (root / ".search.staging/timing.json").write_text('{"new": true}\n')
    resign(root / ".search.staging")  # a complete new set carries its own record
    run_eps("stage", "select", "--params", params, "--out", out, one_thread=True)  # reads search/, finishes the swap
    assert json.loads((root / "search/timing.json").read_text()) == {"new": True}
    assert not (root / ".search.old").exists() and not (root / ".search.staging").exists()
    # killed while writing the staging folder: discarded, the outputs stay the old set until the stage completes
    (root / ".search.staging").mkdir()
    (root / ".search.staging/history.jsonl").write_text("partial")
    run_eps("stage", "search", "--params", params, "--out", out, one_thread=True)
    assert not (root / ".search.staging").exists() and not (root / ".search.old").exists()
    same_search_outputs(ref[1] / "nb201/search", root / "search")


# ---- 9. strict JSON, file modes ------------------------------------------------------------------------------------

def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_metrics_never_hold_nan(tmp_path):
    params = write_tiny_params(tmp_path, **SHORT)
    run_eps("stage", "warmup", "--params", params, "--out", tmp_path / "r", one_thread=True)
    metrics = _strict((tmp_path / "r/nb201/warmup/metrics.json").read_text())
    assert metrics["iterations"] == 0 and metrics["last_train_loss"] is None
    eio.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"), 2)],
                                         "c": {"d": {"e": float("nan")}}, "f": "nan", "g": 3})
    assert _strict((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.5, None, [None, 2]],
                                                          "c": {"d": {"e": None}}, "f": "nan", "g": 3}


def test_outputs_respect_the_umask(tmp_path):
    params = write_tiny_params(tmp_path, warmup=dict(iterations=2, checkpoint_every=1))
    out = tmp_path / "r"
    run_eps("stage", "warmup", "--params", params, "--out", out, one_thread=True, preexec_fn=lambda: os.umask(0o027))
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "supernet.pt" for p in files) and any(p.name == "last.pt" for p in files)
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o640, (p, oct(p.stat().st_mode))
    old = os.umask(0o022)
    try:
        eio.write_text(tmp_path / "a.txt", "x")
        checkpoint.save(tmp_path / "b.pt", {"x": 1})
        log = eio.AppendLog(tmp_path / "h.jsonl")
        log.close()
    finally:
        os.umask(old)
    for name in ("a.txt", "b.pt", "h.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
