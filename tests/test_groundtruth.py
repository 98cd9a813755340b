"""NAS-Bench-201 ground truth: loading the shared table, rank semantics, and import from a benchmark .pth."""

import csv
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

from eps.errors import ConfigError, DataError, EpsError
from eps.spaces.nb201.groundtruth import GROUND_TRUTH_FILE, GroundTruth, import_benchmark

pytestmark = pytest.mark.unit

DATA_ROOT = os.environ.get("EPS_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
needs_data = pytest.mark.skipif(not os.path.isfile(os.path.join(DATA_ROOT, GROUND_TRUTH_FILE)),
                                reason=f"no ground truth under {DATA_ROOT} (set EPS_DATA_DIR)")

BEST_TEST = 94.3733
# The two cells that tie for the best CIFAR-10 test accuracy in NAS-Bench-201 v1.0.
BEST_ARCHS = {
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
}


@pytest.fixture(scope="module")
def gt():
    return GroundTruth.load(DATA_ROOT)


# ---------------------------------------------------------------------------------------------- the shared table


@needs_data
def test_loads_all_cells(gt):
    assert len(gt) == 15625
    assert gt.columns[:2] == ["cifar10_valid", "cifar10_test"]
    assert "nats_cifar100_test" in gt.columns  # optional extra columns are kept
    assert sorted(gt.index.tolist()) == list(range(15625))
    assert gt.column("cifar10_valid").max() == pytest.approx(91.6067)


@needs_data
def test_best_cells_share_rank_one(gt):
    for arch in BEST_ARCHS:
        assert gt.has(arch)
        assert gt.accuracy(arch, "cifar10_test") == pytest.approx(BEST_TEST)
        assert gt.rank(arch) == 1
    # The next cell is third: two cells are strictly better.
    col = gt.column("cifar10_test")
    third = gt.archs[int(np.argsort(-col, kind="stable")[2])]
    assert third not in BEST_ARCHS
    assert gt.rank(third) == 3


@needs_data
def test_rank_is_one_plus_strictly_better(gt):
    col = gt.column("cifar10_valid")
    rng = np.random.default_rng(0)
    for row in rng.integers(0, len(gt), size=50):
        arch = gt.archs[row]
        assert gt.rank(arch, "cifar10_valid") == 1 + int((col > col[row]).sum())


@needs_data
def test_top_fraction_mask(gt):
    mask = gt.top_fraction_mask(gt.archs, "cifar10_valid", 0.2)
    col = gt.column("cifar10_valid")
    threshold = np.sort(col)[::-1][int(np.ceil(0.2 * len(gt))) - 1]
    np.testing.assert_array_equal(mask, col >= threshold)
    assert mask.sum() >= 3125  # ties at the threshold are included
    best = gt.archs[int(np.argmax(col))]
    worst = gt.archs[int(np.argmin(col))]
    np.testing.assert_array_equal(gt.top_fraction_mask([best, worst, best]), [True, False, True])
    assert gt.top_fraction_mask(gt.archs, fraction=1.0).all()


@needs_data
def test_query_errors(gt):
    with pytest.raises(DataError, match="not in the ground truth"):
        gt.accuracy("|none~0|+|none~0|none~1|+|none~0|none~1|bogus~2|")
    with pytest.raises(DataError, match="no column"):
        gt.accuracy(next(iter(BEST_ARCHS)), "cifar11_test")
    with pytest.raises(ConfigError):
        gt.top_fraction_mask([], fraction=0)
    with pytest.raises(ConfigError):
        gt.top_fraction_mask([], fraction=1.5)


# ---------------------------------------------------------------------------------------------- malformed tables

A0 = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
A1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def write_table(root, text):
    path = root / GROUND_TRUTH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return root


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="eps nb201 import") as err:
        GroundTruth.load(tmp_path)
    assert "EPS_DATA_DIR" in str(err.value)


def test_small_table_with_optional_column(tmp_path):
    root = write_table(tmp_path, f"index,arch,cifar10_valid,cifar10_test,extra\n0,{A0},10.0,10.0,\n"
                                 f"7,{A1},90.5,93.75,70.1\n")
    gt = GroundTruth.load(root)
    assert len(gt) == 2
    assert gt.columns == ["cifar10_valid", "cifar10_test", "extra"]
    assert np.isnan(gt.accuracy(A0, "extra"))
    assert gt.rank(A1, "extra") == 1
    with pytest.raises(DataError, match="no extra value"):
        gt.rank(A0, "extra")
    assert gt.rank(A0) == 2 and gt.rank(A1) == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("index,arch,cifar10_valid\n", "missing column"),
        ("index,arch,cifar10_valid,cifar10_test\n", "no rows"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A0},1.0\n", "line 2: expected 4 fields"),
        (f"index,arch,cifar10_valid,cifar10_test\nzero,{A0},1.0,2.0\n", "line 2: index"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A0},abc,2.0\n", "line 2: column cifar10_valid"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A0},1.0,\n", "line 2: column cifar10_test"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A0},nan,2.0\n", "finite"),
        ("index,arch,cifar10_valid,cifar10_test\n0,|conv~0|,1.0,2.0\n", "not a NAS-Bench-201 arch"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A0},1.0,2.0\n1,{A0},1.0,2.0\n", "appears twice"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A0},1.0,2.0\n0,{A1},1.0,2.0\n", "index 0 already used"),
        (f"index,arch,cifar10_valid,cifar10_test,x,x\n0,{A0},1,2,3,4\n", "duplicate column"),
    ],
)
def test_malformed_tables_raise_data_error(tmp_path, text, match):
    write_table(tmp_path, text)
    with pytest.raises(DataError, match=match) as err:
        GroundTruth.load(tmp_path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- import from .pth

ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]
# Final-epoch accuracy per (arch, dataset, eval set, seed). Earlier epochs get a different, wrong value so that a
# reader using the wrong epoch is caught.
FINAL = {
    "cifar10-valid": {"x-valid": [[90.1, 90.5, 90.9], [81.2, 82.0], [10.0]], "ori-test": [[93.1, 93.3, 93.8], [85.5, 85.1], [10.0]]},
    "cifar10": {"ori-test": [[93.5, 93.7, 93.9], [85.9, 85.7], [10.0]]},
    "cifar100": {"x-valid": [[70.0, 70.2, 70.4], [52.0, 53.0], [1.0]], "x-test": [[70.1, 70.3, 70.5], [52.5, 53.5], [1.0]],
                 "ori-test": [[70.0, 70.2, 70.4], [52.2, 53.2], [1.0]]},
}
SEEDS = [777, 888, 999]


def make_result(arch, dataset, seed, epochs, finals):
    """One trial, built with the package's own ResultsCount, with per-epoch evaluation records."""
    from nas_201_api import ResultsCount

    train = OrderedDict((i, 50.0 + i * 0.1) for i in range(epochs))
    result = ResultsCount(dataset, None, train, OrderedDict((i, 1.0) for i in range(epochs)), 1.0, 100.0,
                          {"arch_str": arch, "channel": 16, "num_cells": 5, "class_num": 10}, seed, epochs, [0.01])
    accs, losses, times = {}, {}, {}
    for setname, final in finals.items():
        for i in range(epochs):
            key = f"{setname}@{i}"
            accs[key] = final if i == epochs - 1 else 1.234
            losses[key], times[key] = 0.5, 1.0
    result.update_eval(accs, losses, times)
    return result


def make_benchmark(path, numpy_scalars=False):
    from nas_201_api import ArchResults

    arch2infos = {}
    for idx, arch in enumerate(ARCHS):
        per_hp = {}
        for key, epochs in (("less", 12), ("full", 200)):
            results = ArchResults(idx, arch)
            for dataset, sets in FINAL.items():
                for s, seed in enumerate(SEEDS[: len(sets[next(iter(sets))][idx])]):
                    finals = {name: per_arch[idx][s] for name, per_arch in sets.items()}
                    if key == "less":  # 12-epoch results must never leak into the 200-epoch table
                        finals = {name: 99.99 for name in finals}
                    if numpy_scalars:  # like the official files, which the safe torch loader refuses
                        finals = {name: np.float64(v) for name, v in finals.items()}
                    results.update(dataset, seed, make_result(arch, dataset, seed, epochs, finals))
            per_hp[key] = results.state_dict()
        arch2infos[idx] = per_hp
    data = {"meta_archs": list(ARCHS), "arch2infos": arch2infos, "evaluated_indexes": list(range(len(ARCHS)))}
    torch.save(data, path)
    return data


@pytest.mark.parametrize("numpy_scalars", [False, True])
def test_import_tiny_benchmark(tmp_path, numpy_scalars):
    pth = tmp_path / "NAS-Bench-201-tiny.pth"
    data = make_benchmark(pth, numpy_scalars)
    out = tmp_path / "data" / GROUND_TRUTH_FILE
    assert import_benchmark(pth, out) == 3

    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "arch", "cifar10_valid", "cifar10_test", "cifar100_test"]
    expected_valid = [np.mean(v) for v in FINAL["cifar10-valid"]["x-valid"]]
    expected_test = [np.mean(v) for v in FINAL["cifar10"]["ori-test"]]
    expected_c100 = [np.mean(v) for v in FINAL["cifar100"]["x-test"]]
    for idx, row in enumerate(rows[1:]):
        assert row == [str(idx), ARCHS[idx], f"{expected_valid[idx]:.4f}", f"{expected_test[idx]:.4f}",
                       f"{expected_c100[idx]:.4f}"]
    assert rows[1][2] == "90.5000" and rows[2][3] == "85.8000"

    # Same numbers as the package's own high-level query.
    from nas_201_api import NASBench201API

    api = NASBench201API(data, verbose=False)
    gt = GroundTruth.load(tmp_path / "data")
    for idx, arch in enumerate(ARCHS):
        valid = api.get_more_info(idx, "cifar10-valid", hp="200", is_random=False)["valid-accuracy"]
        test = api.get_more_info(idx, "cifar10", hp="200", is_random=False)["test-accuracy"]
        c100 = api.get_more_info(idx, "cifar100", hp="200", is_random=False)["test-accuracy"]
        assert gt.accuracy(arch, "cifar10_valid") == pytest.approx(round(valid, 4))
        assert gt.accuracy(arch, "cifar10_test") == pytest.approx(round(test, 4))
        assert gt.accuracy(arch, "cifar100_test") == pytest.approx(round(c100, 4))
    assert gt.rank(ARCHS[0]) == 1 and gt.rank(ARCHS[2]) == 3
    # No temporary files left beside the output.
    assert sorted(p.name for p in out.parent.iterdir()) == ["ground_truth.csv"]


def test_import_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        import_benchmark(tmp_path / "nope.pth", tmp_path / "out.csv")


@pytest.mark.parametrize(
    "payload",
    [
        b"this is not a torch file at all\x00\x01\x02",
        b"",
        b"PK\x03\x04 truncated zip",
    ],
)
def test_import_garbage_file(tmp_path, payload):
    pth = tmp_path / "garbage.pth"
    pth.write_bytes(payload)
    with pytest.raises(DataError, match="not a NAS-Bench-201 benchmark file"):
        import_benchmark(pth, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        {"meta_archs": ARCHS},
        {"meta_archs": ARCHS, "arch2infos": {}, "evaluated_indexes": [0]},
        {"meta_archs": ARCHS, "arch2infos": {0: {"full": {"bogus": 1}}}, "evaluated_indexes": [0]},
        {"meta_archs": ARCHS, "arch2infos": {}, "evaluated_indexes": []},
        {"meta_archs": ARCHS, "arch2infos": {}, "evaluated_indexes": "abc"},
    ],
)
def test_import_wrong_content(tmp_path, obj):
    pth = tmp_path / "wrong.pth"
    torch.save(obj, pth)
    with pytest.raises(EpsError):
        import_benchmark(pth, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
