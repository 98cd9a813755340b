"""Import of reference-implementation run folders (NNNNNN-ep.txt population snapshots)."""

import itertools
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eps.errors import ArchError, DataError
from eps.spaces.nb201.records import (
    Snapshot,
    _arch_str_to_ops,
    _ops_to_arch_str,
    _ops_to_structure,
    _structure_to_ops,
    import_records,
    parse_record_file,
    read_history,
)

pytestmark = pytest.mark.unit

DATA_ROOT = os.environ.get("EPS_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

SPEC_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def write_record(folder: Path, iteration: int, members) -> Path:
    """Write a snapshot exactly as the reference searcher does: json.dump(results, f) to '%06d-ep.txt'."""
    path = folder / ("%06d-ep.txt" % iteration)
    with open(path, "w") as f:
        json.dump(members, f)
    return path


# Five members, oldest first; the last two are fresh children (sentinel loss 15, count 0).
ROUND_100 = [
    [[[3], [3, 3], [1, 3, 3]], 0.8123, 4],
    [[[0], [0, 0], [0, 0, 0]], 2.302585, 1],
    [[[4], [2, 1], [1, 1, 0]], 1.0001 + 1e-4, 2],
    [[[2], [4, 3], [0, 1, 2]], 15, 0],
    [[[1], [1, 1], [1, 1, 1]], 15, 0],
]


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "record_cifar10_17_16_80000_0_256_64_4_1_50_0.5_0.0_111"
    folder.mkdir()
    write_record(folder, 50, [[s, 15, 0] for s, _, _ in ROUND_100])
    write_record(folder, 100, ROUND_100)
    write_record(folder, 1000, ROUND_100[::-1])  # '001000' must sort after '000100' numerically too
    (folder / "train.log").write_text("not a record\n")
    (folder / "checkpoint-ep.txt.bak").write_text("ignored\n")
    return folder


# ---------------------------------------------------------------------------------------------- encoding helpers


def test_spec_example_encoding():
    assert _ops_to_arch_str(_structure_to_ops([[3], [3, 3], [1, 3, 3]])) == SPEC_EXAMPLE
    assert _ops_to_structure(_arch_str_to_ops(SPEC_EXAMPLE)) == [[3], [3, 3], [1, 3, 3]]


def test_all_cells_round_trip_and_match_benchmark_strings():
    strings = set()
    for ops in itertools.product(range(5), repeat=6):
        arch = _ops_to_arch_str(ops)
        assert _arch_str_to_ops(arch) == ops
        assert _structure_to_ops(_ops_to_structure(ops)) == ops
        strings.add(arch)
    assert len(strings) == 15625
    gt = os.path.join(DATA_ROOT, "nb201", "ground_truth.csv")
    if os.path.isfile(gt):
        with open(gt) as f:
            next(f)
            assert strings == {line.split(",")[1] for line in f}


@pytest.mark.parametrize("bad", ["", "|none~0|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "none~0+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_bad_arch_strings(bad):
    with pytest.raises(ValueError):
        _arch_str_to_ops(bad)


@pytest.mark.parametrize("bad", [[[3], [3, 3]], [[3], [3], [1, 3, 3]], [[5], [3, 3], [1, 3, 3]],
                                 [[-1], [3, 3], [1, 3, 3]], [[True], [3, 3], [1, 3, 3]], "abc", [[3.5], [3, 3], [1, 3, 3]]])
def test_bad_structures(bad):
    with pytest.raises(ValueError):
        _structure_to_ops(bad)


# ---------------------------------------------------------------------------------------------- parsing


def test_parse_record_file(run_dir):
    snap = parse_record_file(run_dir / "000100-ep.txt")
    assert snap.iteration == 100
    assert len(snap) == 5
    assert snap.arch[0] == SPEC_EXAMPLE
    assert snap.arch[1] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert snap.loss == [0.8123, 2.302585, 1.0001 + 1e-4, None, None]  # sentinel 15 is not a loss
    assert snap.count == [4, 1, 2, 0, 0]
    assert snap.age == [None] * 5


def test_parse_tolerates_whitespace_bom_and_integral_floats(tmp_path):
    path = tmp_path / "000050-ep.txt"
    path.write_text("\ufeff  [ [ [[3],[3,3],[1,3,3]] , 1 , 2.0 ] ]\n\n", encoding="utf-8")
    snap = parse_record_file(path)
    assert snap.loss == [1.0] and snap.count == [2] and isinstance(snap.loss[0], float)


def test_parse_pretty_printed_record(tmp_path):
    path = tmp_path / "000200-ep.txt"
    path.write_text(json.dumps(ROUND_100, indent=2))
    assert parse_record_file(path).count == [4, 1, 2, 0, 0]
    path.write_text(json.dumps([ROUND_100[0], [[[9], [3, 3], [1, 3, 3]], 0.5, 1]], indent=2))
    with pytest.raises(DataError, match=r"000200-ep\.txt, document, member 1: bad structure"):
        parse_record_file(path)


def test_custom_encoder_is_used_and_its_errors_become_data_errors(run_dir):
    snap = parse_record_file(run_dir / "000100-ep.txt", lambda ops: "".join(map(str, ops)))
    assert snap.arch[0] == "333133"

    def reject(ops):
        raise ArchError("no")

    with pytest.raises(DataError, match="member 0"):
        parse_record_file(run_dir / "000100-ep.txt", reject)


# ---------------------------------------------------------------------------------------------- import


def test_import_records_writes_exact_history(run_dir, tmp_path):
    out = tmp_path / "out" / "history.jsonl"
    snaps = import_records(run_dir, out)
    assert [s.iteration for s in snaps] == [50, 100, 1000]
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == ["iteration", "arch", "loss", "count", "age"]
    assert first["iteration"] == 50 and first["loss"] == [None] * 5 and first["count"] == [0] * 5
    second = json.loads(lines[1])
    assert second == {
        "iteration": 100,
        "arch": [_ops_to_arch_str(_structure_to_ops(s)) for s, _, _ in ROUND_100],
        "loss": [0.8123, 2.302585, 1.0001 + 1e-4, None, None],
        "count": [4, 1, 2, 0, 0],
        "age": [None] * 5,
    }
    assert json.loads(lines[2])["arch"] == second["arch"][::-1]
    assert read_history(out) == snaps
    assert sorted(p.name for p in out.parent.iterdir()) == ["history.jsonl"]  # no temp files left


def test_bad_record_leaves_no_partial_output(run_dir, tmp_path):
    out = tmp_path / "history.jsonl"
    out.write_text("previous\n")
    (run_dir / "000150-ep.txt").write_text('[[[[3],[3,3],[1,3,3]], "oops", 1]]')
    with pytest.raises(DataError, match=r"000150-ep\.txt, line 1, member 0: loss 'oops' is not a number"):
        import_records(run_dir, out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl", run_dir.name]


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no reference snapshot files"):
        import_records(tmp_path, tmp_path / "h.jsonl")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no reference snapshot files"):
        import_records(tmp_path, tmp_path / "h.jsonl")
    with pytest.raises(DataError, match="not a folder"):
        import_records(tmp_path / "missing", tmp_path / "h.jsonl")
    with pytest.raises(DataError, match="not a folder"):
        import_records(tmp_path / "notes.txt", tmp_path / "h.jsonl")


def test_duplicate_iterations(tmp_path):
    write_record(tmp_path, 50, ROUND_100)
    (tmp_path / "50-ep.txt").write_text(json.dumps(ROUND_100))
    with pytest.raises(DataError, match="both hold iteration 50"):
        import_records(tmp_path, tmp_path / "h.jsonl")


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"line 1 column 1: not valid JSON"),
        ('[[[[3],[3,3],[1,3,3]], 0.5, 1], [[[3],[3', r"line 1 column \d+: not valid JSON.*truncated"),
        ("{}", "expected a JSON list"),
        ("[]", "population is empty"),
        ("[[1, 2]]", r"member 0: expected \[structure, loss, count\]"),
        ('[[[[3],[3,3],[1,3,3]], 0.5, 1], [[[3],[3,5],[1,3,3]], 0.5, 1]]', r"member 1: bad structure.*op index 5"),
        ('[[[[3],[3,3]], 0.5, 1]]', "member 0: bad structure"),
        ('[[[[3],[3,3],[1,3,3]], "0.5", 1]]', "loss '0.5' is not a number"),
        ('[[[[3],[3,3],[1,3,3]], null, 2]]', "loss None is not a number"),
        ('[[[[3],[3,3],[1,3,3]], NaN, 2]]', "not finite"),
        ('[[[[3],[3,3],[1,3,3]], 1e999, 2]]', "not finite"),
        ('[[[[3],[3,3],[1,3,3]], 0.5, -1]]', "count -1 is not a non-negative integer"),
        ('[[[[3],[3,3],[1,3,3]], 0.5, 1.5]]', "count 1.5"),
        ('[[[[3],[3,3],[1,3,3]], 0.5, true]]', "count True"),
        ("[" * 100000, "not"),
    ],
)
def test_malformed_records(tmp_path, text, match):
    path = tmp_path / "000050-ep.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        parse_record_file(path)
    message = str(err.value)
    assert "000050-ep.txt" in message and "\n" not in message


def test_unreadable_inputs(tmp_path):
    bad_name = tmp_path / "snapshot.json"
    bad_name.write_text("[]")
    with pytest.raises(DataError, match="NNNNNN-ep.txt"):
        parse_record_file(bad_name)
    with pytest.raises(DataError, match="not found"):
        parse_record_file(tmp_path / "000050-ep.txt")
    binary = tmp_path / "000100-ep.txt"
    binary.write_bytes(b"[\xff\xfe]")
    with pytest.raises(DataError, match="not UTF-8"):
        parse_record_file(binary)
    folder = tmp_path / "000150-ep.txt"
    folder.mkdir()
    with pytest.raises(DataError, match="cannot read"):
        parse_record_file(folder)


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"iteration": 1}',
        '{"iteration": 1, "arch": ["x"], "loss": [null], "count": [0], "age": [null]}',
        '{"iteration": 1, "arch": [], "loss": [null], "count": [0], "age": [null]}',
        f'{{"iteration": 1, "arch": ["{SPEC_EXAMPLE}"], "loss": [0.5], "count": [0], "age": [null]}}',
        f'{{"iteration": 1, "arch": ["{SPEC_EXAMPLE}"], "loss": [NaN], "count": [1], "age": [null]}}',
        f'{{"iteration": 1, "arch": ["{SPEC_EXAMPLE}"], "loss": [0.5], "count": [1], "age": [-2]}}',
    ],
)
def test_read_history_rejects_bad_lines(tmp_path, line):
    path = tmp_path / "h.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match="h.jsonl, line 1"):
        read_history(path)


def test_read_history_requires_increasing_iterations(tmp_path):
    snap = Snapshot(100, [SPEC_EXAMPLE], [0.5], [1], [3])
    path = tmp_path / "h.jsonl"
    path.write_text(snap.to_json() + "\n" + snap.to_json() + "\n")
    with pytest.raises(DataError, match="line 2: iteration 100 does not increase"):
        read_history(path)


# ---------------------------------------------------------------------------------------------- fuzzing

VALID_TEXT = json.dumps(ROUND_100)

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**30), st.floats(allow_nan=True),
                          st.text(max_size=5))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=30)


def _parse_text(text: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "000050-ep.txt"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            snap = parse_record_file(path)
        except DataError as e:
            assert "000050-ep.txt" in str(e) and "\n" not in str(e)
            return None
    # Whatever parsed must serialise to strict JSON in the history format.
    json.loads(snap.to_json())
    assert all(l is None or math.isfinite(l) for l in snap.loss)
    return snap


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.text(max_size=300))
def test_fuzz_random_text(text):
    _parse_text(text)


@_FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID_TEXT)), st.integers(0, 3), st.text(max_size=4)), max_size=6))
def test_fuzz_mutated_valid_record(edits):
    text = VALID_TEXT
    for pos, kind, chunk in edits:
        pos = min(pos, len(text))
        if kind == 0:  # insert
            text = text[:pos] + chunk + text[pos:]
        elif kind == 1:  # delete
            text = text[:pos] + text[pos + len(chunk) + 1:]
        elif kind == 2:  # replace
            text = text[:pos] + chunk + text[pos + len(chunk):]
        else:  # truncate
            text = text[:pos]
    _parse_text(text)


@_FUZZ
@given(st.lists(st.tuples(_json_values, _json_values, _json_values), max_size=4) | _json_values)
def test_fuzz_random_json_structures(value):
    _parse_text(json.dumps(value))


@_FUZZ
@given(st.lists(st.tuples(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=3), min_size=3, max_size=3),
                          st.floats(0, 20), st.integers(0, 50)), min_size=1, max_size=8))
def test_fuzz_well_typed_members(members):
    snap = _parse_text(json.dumps([list(m) for m in members]))
    shapes_ok = all([len(node) for node in s] == [1, 2, 3] for s, _, _ in members)
    assert (snap is not None) == shapes_ok
    if snap is not None:
        assert snap.count == [c for _, _, c in members]
        assert snap.loss == [None if c == 0 else l for _, l, c in members]


@pytest.mark.e2e
def test_cli_import_then_select_and_report(run_dir, tmp_path):
    """The paper's own runs can be analysed: import the records, then select and report on them."""
    from tests.conftest import run_eps

    out = tmp_path / "runs"
    proc = run_eps("import-records", run_dir, "--out", out)
    n = len(list(Path(run_dir).glob("*-ep.txt")))
    # one short line with the count, never the imported snapshots themselves (47 MB for a reference run)
    assert proc.stdout.startswith(f"imported {n} snapshots into ") and len(proc.stdout.splitlines()) == 1
    assert len(proc.stdout) < 400
    params = tmp_path / "p.yaml"
    params.write_text("nb201:\n  select: {window: 100000}\n")
    run_eps("stage", "select", "--params", params, "--out", out)
    sel = json.loads((out / "nb201/select/selection.json").read_text())
    assert sel["arch"] and sel["size_prior"]["ground_truth"]["rank"] >= 1
    again = run_eps("import-records", run_dir, "--out", out, check=False)
    assert again.returncode == 2 and "--force" in again.stderr
    report = run_eps("report", "--space", "nb201", "--params", params, "--out", out)
    assert "chosen architecture" in report.stdout
