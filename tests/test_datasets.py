"""NB201 on CIFAR-100 and ImageNet16-120: loaders on small synthetic files written in the official formats (shapes,
labels, split sizes, normalisation), class counts of the supernet and the standalone network, the dataset's
ground-truth columns, and a tiny search on each dataset through the pipeline stages.

The synthetic files cannot have the official md5s, so each test registers its files' md5s in place of the official
ones (torchvision's CIFAR100 lists, eps.data.imagenet16's tables); a file that does not match is refused.
"""
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR100

import eps.data.imagenet16 as in16
from eps.params import load_params
from eps.data.augment import Normalize
from eps.data.cifar import CIFAR100_URL, SPLIT_FILE, load_cifar100, load_split
from eps.data.datasets import DATASETS
from eps.errors import DataError
from eps.spaces import get_space
from eps.spaces.nb201.groundtruth import GROUND_TRUTH_FILE, GroundTruth
from eps.spaces.nb201.space import NB201Space
from eps.train.image import ImageSupernetTask
from tests.conftest import DATA_ROOT, TINY_NB201

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]
CPU = torch.device("cpu")
GT_CSV = DATA_ROOT / GROUND_TRUTH_FILE
needs_gt = pytest.mark.skipif(not GT_CSV.is_file(), reason="no NAS-Bench-201 ground truth under the data root")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# ------------------------------------------------------------------------------------------- synthetic files

def write_cifar100(root: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> dict:
    """``root/cifar-100-python/{train,test,meta}`` as in the official python release: pickled dicts with ``data``
    (N x 3072 uint8, channel by channel), ``fine_labels`` and ``coarse_labels``. Returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name}ing batch 1 of 1",
                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        out[name] = (data.reshape(n, 3, 32, 32), np.array(fine))
    meta = {"fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def accept_cifar100(monkeypatch, root: Path) -> None:
    """Make torchvision's md5 check expect the synthetic files under ``root``."""
    folder = root / "cifar-100-python"
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})


def write_imagenet16(root: Path, per_batch: int = 60, n_val: int = 150, seed: int = 0, protocol: int = 2) -> dict:
    """``root/ImageNet16/{train_data_batch_1..10, val_data}`` as in the official release: pickled dicts with
    ``data`` (N x 768 uint8, channel by channel), ``labels`` (ImageNet ids 1..1000, two thirds of them in 1..120
    here) and ``mean``. Returns (all images [N, 3, 16, 16], all 1-based labels) per split."""
    rng = np.random.default_rng(seed)
    folder = root / in16.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], []), "val": ([], [])}
    for name, n in [(name, per_batch) for name in in16.TRAIN_FILES] + [("val_data", n_val)]:
        kept = 2 * n // 3
        labels = np.concatenate([rng.integers(1, 121, kept), rng.integers(121, 1001, n - kept)])
        labels = [int(v) for v in rng.permutation(labels)]
        data = rng.integers(0, 256, (n, 768), dtype=np.uint8)
        entry = {"data": data, "labels": labels, "mean": data.mean(0)}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
        split = "val" if name == "val_data" else "train"
        out[split][0].append(data.reshape(n, 3, 16, 16))
        out[split][1].append(np.array(labels))
    return {k: (np.concatenate(x), np.concatenate(y)) for k, (x, y) in out.items()}


def accept_imagenet16(monkeypatch, root: Path) -> None:
    for table in (in16.TRAIN_FILES, in16.VAL_FILES):
        for name in table:
            monkeypatch.setitem(table, name, _md5(root / in16.FOLDER / name))


# ------------------------------------------------------------------------------------------- loaders

def test_cifar100_loader_reads_the_official_format(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path)
    accept_cifar100(monkeypatch, tmp_path)
    for train, name, n in ((True, "train", 400), (False, "test", 100)):
        images, labels = load_cifar100(tmp_path, train=train, download=False)
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert np.array_equal(images.numpy(), written[name][0])  # CHW, as the rows are stored
        assert np.array_equal(labels.numpy(), written[name][1])  # the fine labels, 0..99


def test_cifar100_missing_or_corrupt_is_one_line_with_where_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path, download=False)
    _one_line(err, str(tmp_path / "cifar-100-python"), CIFAR100_URL, "EPS_DATA_DIR")
    write_cifar100(tmp_path)  # the official md5s: the synthetic files do not match them
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path, download=False)
    _one_line(err, "md5", CIFAR100_URL)
    accept_cifar100(monkeypatch, tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"cut short")
    with pytest.raises(DataError):
        load_cifar100(tmp_path, train=False, download=False)


@pytest.mark.parametrize("protocol", [2, 4])
def test_imagenet16_loader_keeps_classes_1_to_120_relabelled(tmp_path, monkeypatch, protocol):
    written = write_imagenet16(tmp_path, protocol=protocol)
    accept_imagenet16(monkeypatch, tmp_path)
    for train, split in ((True, "train"), (False, "val")):
        images, labels = in16.load_imagenet16(tmp_path, train=train)
        all_x, all_y = written[split]
        keep = all_y <= 120
        assert images.dtype == torch.uint8 and images.shape == (int(keep.sum()), 3, 16, 16)
        assert labels.dtype == torch.int64 and labels.shape == (int(keep.sum()),)
        assert np.array_equal(images.numpy(), all_x[keep])          # file order kept, images unchanged
        assert np.array_equal(labels.numpy(), all_y[keep] - 1)      # 1..120 -> 0..119
        assert 0 <= labels.min() and labels.max() <= 119
    assert len(written["train"][1]) == 600 and len(in16.load_imagenet16(tmp_path)[1]) == 400


def test_imagenet16_missing_corrupt_or_malformed_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / in16.FOLDER
    with pytest.raises(DataError) as err:
        in16.load_imagenet16(tmp_path)
    _one_line(err, str(folder / "train_data_batch_1"), "Imagenet16_train.zip", "EPS_DATA_DIR")
    write_imagenet16(tmp_path)
    with pytest.raises(DataError) as err:  # official md5s expected
        in16.load_imagenet16(tmp_path)
    _one_line(err, str(folder / "train_data_batch_1"), "md5", in16.TRAIN_FILES["train_data_batch_1"])

    marker = tmp_path / "ran"

    class Shell:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    bad = {
        "not a pickle": (b"\x00garbage", "not a pickled batch"),
        "runs code": (pickle.dumps({"data": Shell(), "labels": []}), "posix.system"),
        "a list": (pickle.dumps([1, 2]), "without 'data' and 'labels'"),
        "wrong width": (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}), "N x 768"),
        "float pixels": (pickle.dumps({"data": np.zeros((2, 768)), "labels": [1, 2]}), "expected uint8"),
        "labels short": (pickle.dumps({"data": np.zeros((2, 768), np.uint8), "labels": [1]}), "'labels'"),
        "label 0": (pickle.dumps({"data": np.zeros((2, 768), np.uint8), "labels": [0, 5]}), "outside ImageNet"),
    }
    path = folder / "val_data"
    for name, (payload, needle) in bad.items():
        path.write_bytes(payload)
        monkeypatch.setitem(in16.VAL_FILES, "val_data", _md5(path))
        with pytest.raises(DataError) as err:
            in16.load_imagenet16(tmp_path, train=False)
        _one_line(err, str(path), needle)
    assert not marker.exists()  # refused before anything ran


# ------------------------------------------------------------------------------------------- splits, statistics

def _section(dataset: str, **supernet) -> dict:
    cfg = json.loads(json.dumps(TINY_NB201))
    cfg["nb201"]["space"]["dataset"] = dataset
    cfg["nb201"]["supernet"].update(supernet)
    return load_params(None, cfg)["nb201"]


def _task(dataset: str, root: Path, **supernet) -> ImageSupernetTask:
    section = _section(dataset, **supernet)
    space = get_space("nb201", section)
    return space.search_task(section, root, CPU, seed=0, stage="warmup")


def _rows(stream, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of ``stream``, the raw images it was drawn from and their indices."""
    x, y = stream.next()
    idx = stream.perm[stream.pos - len(y):stream.pos].cpu()
    return x, images[idx], idx


def test_cifar100_search_uses_the_nb201_split_file(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path)
    accept_cifar100(monkeypatch, tmp_path)
    rng = np.random.default_rng(1)
    perm = [int(v) for v in rng.permutation(400)]
    train_idx, valid_idx = sorted(perm[:200]), sorted(perm[200:])
    (tmp_path / SPLIT_FILE).parent.mkdir(parents=True)
    (tmp_path / SPLIT_FILE).write_text(json.dumps({"train": train_idx, "valid": valid_idx}))
    task = _task("cifar100", tmp_path, data_subset=0)
    images = torch.from_numpy(written["train"][0])
    labels = torch.from_numpy(written["train"][1])
    assert len(task.train.labels) == len(task.valid.labels) == 200
    assert torch.equal(task.train.images, images[train_idx]) and torch.equal(task.train.labels, labels[train_idx])
    assert torch.equal(task.valid.images, images[valid_idx]) and torch.equal(task.valid.labels, labels[valid_idx])
    # fitness batches: no augmentation, CIFAR-100's NB201 statistics
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (DATASETS["cifar100"].mean, DATASETS["cifar100"].std))
    x, raw, _ = _rows(task.valid, task.valid.images)
    assert torch.allclose(x, (raw.float() / 255 - mean) / std, atol=1e-5)
    # supernet batches are augmented (pad-4 crop and flip): most rows differ from the plain image
    x, raw, _ = _rows(task.train, task.train.images)
    assert x.shape == raw.shape and not torch.allclose(x, (raw.float() / 255 - mean) / std, atol=1e-3)


def test_imagenet16_search_split_halves_and_no_augmentation(tmp_path, monkeypatch, capsys):
    write_imagenet16(tmp_path)
    accept_imagenet16(monkeypatch, tmp_path)
    images, labels = in16.load_imagenet16(tmp_path)
    n = len(labels)
    task = _task("imagenet16-120", tmp_path, data_subset=0)
    assert "derived deterministically" in capsys.readouterr().err  # no split file: the documented derived halves
    train, valid = load_split(tmp_path, n=n, file=DATASETS["imagenet16-120"].split_file, log=lambda m: None)
    assert (len(train), len(valid)) == (n // 2, n - n // 2) and not np.intersect1d(train, valid).size
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(n))
    assert torch.equal(task.train.images, images[train]) and torch.equal(task.valid.labels, labels[valid])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (in16.IMAGENET16_MEAN, in16.IMAGENET16_STD))
    for stream in (task.train, task.valid):  # the EPS reference feeds both halves unaugmented (spec §5 item 15)
        x, raw, _ = _rows(stream, stream.images)
        assert x.shape[1:] == (3, 16, 16)
        assert torch.allclose(x, (raw.float() / 255 - mean) / std, atol=1e-5)
    # a split file, when present, is used as it is
    split = tmp_path / DATASETS["imagenet16-120"].split_file
    split.parent.mkdir()
    split.write_text(json.dumps({"train": [3, 1, 2], "valid": [0, n - 1]}))
    task = _task("imagenet16-120", tmp_path, data_subset=0)
    assert torch.equal(task.train.images, images[[3, 1, 2]]) and torch.equal(task.valid.labels, labels[[0, n - 1]])


@pytest.mark.parametrize("dataset, mean, std", [
    ("cifar10", (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    ("cifar100", (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    ("imagenet16-120", (122.68, 116.66, 104.01), (63.22, 61.26, 65.09)),
])
def test_normalisation_statistics(dataset, mean, std):
    data = DATASETS[dataset]
    assert data.mean == pytest.approx([m / 255 for m in mean]) and data.std == pytest.approx([s / 255 for s in std])
    norm = Normalize(data.mean, data.std, CPU)
    side = data.size
    # an image whose every pixel is the channel mean becomes ~0 (up to the uint8 rounding of the mean) ...
    at_mean = torch.tensor([round(m) for m in mean], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, side, side)
    out = norm(at_mean)
    assert out.shape == (2, 3, side, side) and out.abs().max() <= 0.5 / min(std) + 1e-6
    # ... one standard deviation above it becomes ~1, and black becomes -mean/std
    above = torch.tensor([round(m + s) for m, s in zip(mean, std)], dtype=torch.uint8).view(1, 3, 1, 1)
    assert torch.allclose(norm(above).flatten(), torch.ones(3), atol=0.5 / min(std) + 1e-6)
    black = norm(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    assert torch.allclose(black, -torch.tensor(mean) / torch.tensor(std), atol=1e-5)


# ------------------------------------------------------------------------------------------- networks, ground truth

@pytest.mark.parametrize("dataset, classes, side", [("cifar10", 10, 32), ("cifar100", 100, 32),
                                                    ("imagenet16-120", 120, 16)])
def test_class_count_of_supernet_and_standalone_network(dataset, classes, side):
    section = _section(dataset)
    space = get_space("nb201", section)
    arch = space.largest()
    supernet = space.build_supernet()
    net = space.build_network(arch)
    assert supernet.classifier.out_features == classes and net.classifier.out_features == classes
    x = torch.randn(2, 3, side, side)
    assert supernet(x, arch).shape == (2, classes) and net(x).shape == (2, classes)
    # the size prior's parameter counts use the dataset's classifier (4C = 16 inputs + a bias per class at C = 4)
    assert space.num_params(arch) - get_space("nb201", _section("cifar10")).num_params(arch) == (classes - 10) * 17
    assert space._network()["num_classes"] == classes  # what the retrain stage builds and saves
    assert NB201Space(dataset=dataset).num_classes == classes
    # full size (C = 16, 64 features into the classifier): CIFAR-10's largest network has 1,531,546 parameters (spec
    # §1.2); each further class adds 65
    assert NB201Space(dataset=dataset).num_params(arch) == 1_531_546 + (classes - 10) * 65


@needs_gt
def test_ground_truth_columns_follow_the_dataset(tmp_path):
    full = GroundTruth.load(DATA_ROOT)
    arch = full.archs[1]
    expected = {"cifar10": (["cifar10_valid", "cifar10_test", "nats_cifar10_test"], "cifar10_test"),
                "cifar100": (["nats_cifar100_test"], "nats_cifar100_test"),
                "imagenet16-120": (["nats_imagenet16_test"], "nats_imagenet16_test")}
    for dataset, (columns, primary) in expected.items():
        bench = NB201Space(dataset=dataset).benchmark(DATA_ROOT)
        assert bench.columns == columns and bench.primary == primary
        assert bench.rank(arch, primary) == full.rank(arch, primary)
        assert bench.accuracy(arch, "cifar10_test") == full.accuracy(arch, "cifar10_test")  # still queryable
    assert full.primary == "cifar10_test" and len(full.columns) == 5  # the table itself is unchanged
    assert NB201Space(dataset="imagenet16-120").benchmark(DATA_ROOT).best() == pytest.approx(47.3111)

    # an imported table's own columns come first, and a valid column is shown where the table has one
    a0, a1 = full.archs[:2]
    table = tmp_path / GROUND_TRUTH_FILE
    table.parent.mkdir(parents=True)
    table.write_text("index,arch,cifar10_valid,cifar10_test,cifar100_valid,cifar100_test,nats_cifar100_test\n"
                     f"0,{a0},80,85,60,61,62\n1,{a1},81,86,50,70,40\n")
    bench = NB201Space(dataset="cifar100").benchmark(tmp_path)
    assert bench.columns == ["cifar100_valid", "cifar100_test", "nats_cifar100_test"]
    assert bench.primary == "cifar100_test" and bench.rank(a1, bench.primary) == 1
    # a table without any column for the dataset cannot judge the search: one line saying so
    table.write_text(f"index,arch,cifar10_valid,cifar10_test\n0,{a0},80,85\n")
    with pytest.raises(DataError) as err:
        NB201Space(dataset="imagenet16-120").benchmark(tmp_path)
    _one_line(err, str(table), "imagenet16_test or nats_imagenet16_test", "eps nb201 import FILE")


# ------------------------------------------------------------------------------------------- tiny searches

@pytest.mark.e2e
@needs_gt
@pytest.mark.parametrize("dataset", ["cifar100", "imagenet16-120"])
def test_tiny_search_on_each_dataset(dataset, tmp_path, monkeypatch):
    from eps.pipeline import report, stages

    data = tmp_path / "data"
    if dataset == "cifar100":
        write_cifar100(data)
        accept_cifar100(monkeypatch, data)
    else:
        write_imagenet16(data)
        accept_imagenet16(monkeypatch, data)
    (data / "nb201").mkdir(parents=True, exist_ok=True)
    shutil.copy(GT_CSV, data / GROUND_TRUTH_FILE)
    cfg = json.loads(json.dumps(TINY_NB201))
    cfg["data_root"] = str(data)
    cfg["nb201"]["space"]["dataset"] = dataset
    cfg["nb201"]["search"].update(iterations=40, val_interval=10)
    cfg["nb201"]["select"]["window"] = 20
    cfg["nb201"]["retrain"].update(epochs=1, train_subset=64, test_subset=60)
    params = load_params(None, cfg)
    out = tmp_path / "runs"
    for stage in (stages.warmup, stages.search, stages.select, stages.retrain):
        stage("nb201", params, out)
    root = out / "nb201"

    column = {"cifar100": "nats_cifar100_test", "imagenet16-120": "nats_imagenet16_test"}[dataset]
    full = GroundTruth.load(DATA_ROOT)
    sel = json.loads((root / "select/selection.json").read_text())
    for rule in ("size_prior", "prior_free"):
        gt = sel[rule]["ground_truth"]
        assert set(gt) == {column, "rank", "rank_of"}  # only the dataset's benchmark columns
        assert gt[column] == full.accuracy(sel[rule]["arch"], column)
        assert gt["rank"] == full.rank(sel[rule]["arch"], column)
    metrics = json.loads((root / "select/metrics.json").read_text())
    assert metrics["chosen_acc"] == full.accuracy(sel["arch"], column)
    assert sel["population"]["metric"] == column
    header = (root / "select/candidates.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == column and "cifar10_test" not in header
    # the size prior counted the dataset's classifier
    classes = DATASETS[dataset].classes
    assert sel["max_params"] == get_space("nb201", params["nb201"]).num_params((3,) * 6)
    retrain_metrics = json.loads((root / "retrain/metrics.json").read_text())
    assert 0 <= retrain_metrics["test_acc"] <= 100
    from eps.model_file import read_model
    saved = read_model(root / "retrain/model.pt")
    assert saved["network"]["num_classes"] == classes and saved["state_dict"]["classifier.weight"].shape[0] == classes

    text = " ".join(report.report("nb201", params, out).split())  # a caption may wrap
    short = {"cifar100": "C100 test", "imagenet16-120": "IN16-120 test"}[dataset]
    assert f"benchmark {short} (%)" in text and f"benchmark rank by {short}" in text and "C10 " not in text


@pytest.mark.cli
def test_missing_imagenet16_through_the_cli_is_one_line(tmp_path):
    import os
    import subprocess
    import yaml
    from tests.conftest import EPS
    cfg = json.loads(json.dumps(TINY_NB201))
    cfg["nb201"]["space"]["dataset"] = "imagenet16-120"
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "EPS_DATA_DIR": str(tmp_path / "nodata"), "EPS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([EPS, "stage", "warmup", "--params", params, "--out", tmp_path / "r"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and str(tmp_path / "nodata" / "ImageNet16") in err and "Imagenet16_train.zip" in err
