"""Faults in data files and untrusted benchmark files.

Rule for data files under the data root: an ABSENT file is fine (no ground truth / the documented derived split); a
PRESENT-BUT-BAD file is a one-line ``DataError`` that names the file, what is wrong and the fix.

Rule for ``eps nb201 import FILE``: the file is read with torch's weights-only loader and an allowlist of exactly the
NumPy types a benchmark holds; anything else is refused, with one line naming the global, before any of it runs.
"""

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eps.data.cifar import SPLIT_FILE, load_split
from eps.errors import DataError
from eps.spaces.nb201.groundtruth import GROUND_TRUTH_FILE, GroundTruth, import_benchmark
from eps.spaces.nb201.records import import_records
from eps.spaces.nb201.space import NB201Space
from tests.conftest import DATA_ROOT, run_eps
from tests.test_groundtruth import A0, A1, ARCHS, make_benchmark, write_table
from tests.test_records import ROUND_100, write_record

pytestmark = pytest.mark.unit

HEADER = "index,arch,cifar10_valid,cifar10_test"
GOOD_TABLE = f"{HEADER}\n0,{A0},10.0,10.0\n7,{A1},90.5,93.75\n"


def one_line_naming(err: str, path: Path) -> str:
    """The message, after checking it is one line that names ``path``."""
    err = err.strip()
    assert "\n" not in err, err
    assert str(path) in err, err
    return err


# ---------------------------------------------------------------------------------------------- ground truth CSV

BAD_TABLES = {
    "garbage-binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\xfd", "cannot read"),
    "garbage-text": (b"hello world\nthis is not a table\n", "missing column"),
    "empty": (b"", "empty"),
    "header-only": (f"{HEADER}\n".encode(), "no rows"),
    "missing-columns": (f"index,arch,cifar10_valid\n0,{A0},10.0\n".encode(), "missing column(s) cifar10_test"),
    "nan-cell": (f"{HEADER}\n0,{A0},nan,10.0\n".encode(), "finite"),
    "empty-required-cell": (f"{HEADER}\n0,{A0},10.0,\n".encode(), "column cifar10_test"),
    # an interrupted copy: cut mid-row, and cut mid-number (which would otherwise parse as a wrong accuracy)
    "truncated-mid-row": (GOOD_TABLE.encode()[:-30], "truncated"),
    "truncated-mid-number": (GOOD_TABLE.encode()[:-3], "truncated"),
    "index-out-of-range": (f"{HEADER}\n15625,{A0},10.0,10.0\n".encode(), "outside NAS-Bench-201's 0..15624"),
    "accuracy-not-percent": (f"{HEADER}\n0,{A0},10.0,937.5\n".encode(), "0..100"),
}


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_present_but_bad_ground_truth_raises_one_line(tmp_path, name):
    payload, match = BAD_TABLES[name]
    path = tmp_path / GROUND_TRUTH_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    for load in (GroundTruth.load, NB201Space().benchmark):  # the space no longer turns it into "no benchmark"
        with pytest.raises(DataError) as err:
            load(tmp_path)
        msg = one_line_naming(str(err.value), path)
        assert match in msg and "eps nb201 import FILE" in msg


def test_ground_truth_path_that_is_a_folder_or_broken_link(tmp_path):
    path = tmp_path / GROUND_TRUTH_FILE
    path.mkdir(parents=True)
    with pytest.raises(DataError, match="not a regular file"):
        NB201Space().benchmark(tmp_path)
    path.rmdir()
    path.symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(DataError, match="broken link") as err:
        NB201Space().benchmark(tmp_path)
    one_line_naming(str(err.value), path)


def test_absent_ground_truth_is_no_benchmark_and_good_one_loads(tmp_path):
    assert NB201Space().benchmark(tmp_path) is None
    write_table(tmp_path, GOOD_TABLE)
    gt = NB201Space().benchmark(tmp_path)
    assert len(gt) == 2 and gt.rank(A1) == 1
    # A table without a final newline at all is cut short; one with CRLF endings (as the shared one) is complete.
    write_table(tmp_path, GOOD_TABLE.replace("\n", "\r\n"))
    assert len(NB201Space().benchmark(tmp_path)) == 2


def _records_run(tmp_path: Path, data: Path) -> tuple[Path, Path]:
    """An imported reference-run history under tmp/runs and params whose data root is ``data``."""
    folder = tmp_path / "record"
    folder.mkdir()
    write_record(folder, 100, ROUND_100)
    out = tmp_path / "runs"
    import_records(folder, out / "nb201/search/history.jsonl")  # as `eps import-records`, without its start-up
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"data_root": str(data), "nb201": {"select": {"window": 100000}}}))
    return out, params


@pytest.mark.e2e
def test_cli_select_refuses_bad_ground_truth_and_runs_without_absent_one(tmp_path):
    data = tmp_path / "data"
    out, params = _records_run(tmp_path, data)
    # absent: the documented behaviour, a selection without ground truth
    run_eps("stage", "select", "--params", params, "--out", out)
    sel = json.loads((out / "nb201/select/selection.json").read_text())
    assert sel["arch"] and sel["size_prior"]["ground_truth"] is None
    # present but garbage: exit 2 and one line, where this used to exit 0 without ground truth or a word
    bad = data / GROUND_TRUTH_FILE
    bad.parent.mkdir(parents=True)
    bad.write_text(f"{HEADER}\n0,{A0},10.0,nan\n")
    proc = run_eps("stage", "select", "--params", params, "--out", out, check=False)
    assert proc.returncode == 2, proc.stderr
    msg = one_line_naming(proc.stderr, bad)
    assert "line 2" in msg and "cifar10_test" in msg and "eps nb201 import FILE" in msg


# ---------------------------------------------------------------------------------------------- split file

N = 100  # a small training set, so that out-of-range indices are easy to write


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"train": [], "valid": []}', "'train' is an empty list"),
        ('{"train": [0, 1], "valid": []}', "'valid' is an empty list"),
        ('{"train": [0, 1.7], "valid": [2]}', "'train'[1] is 1.7, not an integer index"),
        ('{"train": [0, 1.0], "valid": [2]}', "'train'[1] is 1.0, not an integer index"),
        ('{"train": [0, true], "valid": [2]}', "'train'[1] is true, not an integer index"),
        ('{"train": [0, "1"], "valid": [2]}', "not an integer index"),
        ('{"train": [0, [1]], "valid": [2]}', "not an integer index"),
        ('{"train": [0, 1, 1], "valid": [2]}', "'train' lists index 1 more than once"),
        ('{"train": [0, 1], "valid": [3, 1]}', "index 1 is in both 'train' and 'valid'"),
        ('{"train": [0, -1], "valid": [2]}', "'train'[1] is -1, outside the 100 training images (0..99)"),
        ('{"train": [0, 1], "valid": [100]}', "'valid'[0] is 100, outside"),
        ('{"train": [0, 1]}', "an object with keys train"),
        ('{}', "an empty JSON object"),
        ('[[0, 1], [2]]', "a JSON array"),
        ('{"train": {"0": 1}, "valid": [2]}', "'train' is a JSON object, not a list"),
        ('', "not valid JSON"),
        ('{"train": [0, 1], "valid": [2', "not valid JSON"),
        ('\x00\x01garbage', "not valid JSON"),
    ],
)
def test_present_but_bad_split_raises_one_line(tmp_path, text, match):
    path = tmp_path / SPLIT_FILE
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_split(tmp_path, n=N)
    msg = one_line_naming(str(err.value), path)
    assert match in msg and "replace it" in msg


def test_split_absent_is_derived_and_good_one_is_used(tmp_path):
    notes = []
    train, valid = load_split(tmp_path, n=N, log=notes.append)
    assert len(notes) == 1 and "derived deterministically" in notes[0]
    assert len(train) == len(valid) == N // 2 and not np.intersect1d(train, valid).size
    path = tmp_path / SPLIT_FILE
    path.parent.mkdir(parents=True)
    path.write_text('{"train": [5, 0, 3], "valid": [99, 1]}')
    train, valid = load_split(tmp_path, n=N, log=notes.append)
    assert train.tolist() == [5, 0, 3] and valid.tolist() == [99, 1] and train.dtype == np.int64
    assert len(notes) == 1


@pytest.mark.cli
@pytest.mark.skipif(not (DATA_ROOT / "cifar-10-batches-py").is_dir(), reason="no CIFAR-10 under the data root")
def test_cli_empty_split_is_named_not_a_training_loss(tmp_path, tiny_params):
    """An empty split used to end the warm-up with 'non-finite training loss ... lower the lr'."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-batches-py").symlink_to(DATA_ROOT / "cifar-10-batches-py")
    split = data / SPLIT_FILE
    split.parent.mkdir()
    split.write_text('{"train": [], "valid": []}')
    cfg = yaml.safe_load(tiny_params.read_text())
    cfg["data_root"] = str(data)
    tiny_params.write_text(yaml.safe_dump(cfg))
    proc = run_eps("stage", "warmup", "--params", tiny_params, "--out", tmp_path / "runs", check=False,
                   one_thread=True)
    assert proc.returncode == 2, proc.stderr
    msg = one_line_naming(proc.stderr, split)
    assert "'train' is an empty list" in msg and "non-finite" not in msg


# ---------------------------------------------------------------------------------------------- untrusted .pth


class _System:
    """Unpickling this runs a shell command (``os.system`` pickles as ``posix.system``, a blocked module)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _Exec:
    """Unpickling this runs Python (``builtins.exec``, in no blocked module)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize(
    "payload, refused, legacy",
    [(_System, "posix.system", False), (_Exec, "exec", True), (_System, "posix.system", True), (_Exec, "exec", False)],
    ids=["os.system-zip", "exec-legacy", "os.system-legacy", "exec-zip"],
)
def test_import_refuses_code_without_running_it(tmp_path, payload, refused, legacy):
    marker = tmp_path / "MARKER"
    pth = tmp_path / "NAS-Bench-201-evil.pth"
    # Looks like a benchmark at the top, with the payload deep inside, where a late check would be too late.
    torch.save({"meta_archs": list(ARCHS), "arch2infos": {0: {"full": payload(marker)}}, "evaluated_indexes": [0]},
               pth, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(DataError) as err:
        import_benchmark(pth, tmp_path / "out.csv")
    assert not marker.exists(), "the payload ran"
    msg = one_line_naming(str(err.value), pth)
    assert f"disallowed global {refused} " in msg and "refused without running" in msg
    assert not (tmp_path / "out.csv").exists()
    # The payload is live: a full unpickle (what the import used to fall back to) runs it.
    torch.load(pth, weights_only=False)
    assert marker.exists()


@pytest.mark.cli
@pytest.mark.parametrize("payload, refused", [(_System, "posix.system"), (_Exec, "exec")], ids=["os.system", "exec"])
def test_cli_import_refuses_code_without_running_it(tmp_path, payload, refused):
    """Through the real command line: exit 2, one line on stderr, and the payload never ran."""
    marker = tmp_path / "MARKER"
    pth = tmp_path / "NAS-Bench-201-evil.pth"
    torch.save({"meta_archs": list(ARCHS), "arch2infos": {0: {"full": payload(marker)}}, "evaluated_indexes": [0]},
               pth, _use_new_zipfile_serialization=False)  # the official files' (legacy) format
    out = tmp_path / "out.csv"
    proc = run_eps("nb201", "import", pth, "--out", out, cwd=tmp_path, check=False)
    assert not marker.exists(), "the payload ran"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    msg = one_line_naming(proc.stderr, pth)
    assert msg.startswith("error: ") and f"disallowed global {refused} " in msg
    assert not out.exists() and proc.stdout == ""


def test_import_refuses_numpy_object_arrays(tmp_path):
    """Object arrays can hold anything; only the dtypes of plain data are allowed."""
    pth = tmp_path / "objects.pth"
    torch.save({"meta_archs": list(ARCHS), "arch2infos": {}, "evaluated_indexes": np.array([0, "x"], dtype=object)},
               pth)
    with pytest.raises(DataError) as err:
        import_benchmark(pth, tmp_path / "out.csv")
    assert "disallowed global numpy.dtypes.ObjectDType" in one_line_naming(str(err.value), pth)


def test_import_refuses_results_given_as_a_file_path(tmp_path):
    """nas_201_api would torch.load a string 'full' entry as a path, outside the guarded loader."""
    target = tmp_path / "other.pth"
    torch.save({"x": 1}, target)
    pth = tmp_path / "indirect.pth"
    torch.save({"meta_archs": list(ARCHS), "arch2infos": {0: {"full": str(target)}}, "evaluated_indexes": [0]}, pth)
    with pytest.raises(DataError, match="'full' results are a str, not a dict"):
        import_benchmark(pth, tmp_path / "out.csv")


def _with_numpy_everywhere(data: dict) -> dict:
    """The official files' NumPy content: np.float64 parameter counts and FLOPs, arrays, NumPy integers."""
    for per_hp in data["arch2infos"].values():
        for state in per_hp.values():
            for result in state["all_results"].values():
                result["params"] = np.float64(result["params"])
                result["flop"] = np.float32(result["flop"])
                result["latency"] = np.asarray(result["latency"], dtype=np.float64)
                result["epochs"] = np.int64(result["epochs"])
                result["arch_config"]["channel"] = np.int32(result["arch_config"]["channel"])
    data["evaluated_indexes"] = np.arange(len(data["meta_archs"]), dtype=np.int64)
    return data


def _numpy_benchmark(tmp_path: Path, variant: str) -> tuple[Path, Path]:
    """(a benchmark in the official format, full of NumPy values, written as ``variant``; the CSV its plain-Python
    twin imports to)."""
    reference = tmp_path / "reference.csv"
    make_benchmark(tmp_path / "plain.pth")
    assert import_benchmark(tmp_path / "plain.pth", reference) == len(ARCHS)
    data = _with_numpy_everywhere(make_benchmark(tmp_path / "tmp.pth", numpy_scalars=True))
    pth = tmp_path / f"NAS-Bench-201-{variant}.pth"
    torch.save(data, pth, _use_new_zipfile_serialization=variant == "zip")
    if variant == "legacy-numpy1-names":
        # The official files were written by NumPy 1, whose pickles name numpy.core.multiarray (NumPy 2:
        # numpy._core.multiarray). Protocol-2 GLOBALs are newline-ended text, so renaming them keeps a valid pickle.
        raw = pth.read_bytes()
        assert raw.count(b"numpy._core.multiarray\n") > 0
        pth.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
        assert b"numpy._core" not in pth.read_bytes()
    with pytest.raises(pickle.UnpicklingError, match="numpy"):  # torch's defaults refuse it: the allowlist is needed
        torch.load(pth, weights_only=True)
    return pth, reference


@pytest.mark.parametrize("variant", ["zip", "legacy", "legacy-numpy1-names"])
def test_import_official_format_with_numpy(tmp_path, variant):
    pth, reference = _numpy_benchmark(tmp_path, variant)
    out = tmp_path / "out.csv"
    assert import_benchmark(pth, out) == len(ARCHS)
    assert out.read_text() == reference.read_text()


@pytest.mark.cli
def test_cli_import_official_format_with_numpy(tmp_path):
    pth, reference = _numpy_benchmark(tmp_path, "legacy-numpy1-names")
    out = tmp_path / "data" / GROUND_TRUTH_FILE
    proc = run_eps("nb201", "import", pth, "--out", out)
    assert f"wrote {len(ARCHS)} cells" in proc.stdout and proc.stderr == ""
    assert out.read_text() == reference.read_text()
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1][2] == "90.5000" and rows[2][3] == "85.8000"
    assert len(GroundTruth.load(tmp_path / "data")) == len(ARCHS)
