"""CIFAR-10 and CIFAR-100 as uint8 tensors, and the NAS-Bench-201 train/valid split of a training set.

torchvision reads and md5-checks the original python batches; we keep the whole set as one uint8 tensor so batches
are gathered and augmented on the training device (eps.data.augment), never image by image in PIL.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from eps.data.files import note_read
from eps.errors import DataError

# CIFAR-10 channel statistics (mean, std), as each reference code normalises with them; the two differ in the
# third decimal and are kept apart so each protocol matches its reference exactly.
CIFAR10_STATS = {
    "nb201": ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),  # NB201, EPS code
    "darts": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),    # DARTS utils.py
}
CIFAR10_MEAN, CIFAR10_STD = CIFAR10_STATS["nb201"]
# CIFAR-100 likewise: NAS-Bench-201 (xautodl's get_datasets) and the DARTS / Robust-DARTS scripts differ in the fourth
# decimal.
CIFAR100_STATS = {
    "nb201": ((129.3 / 255, 124.1 / 255, 112.4 / 255), (68.2 / 255, 65.4 / 255, 70.4 / 255)),  # xautodl, NB201
    "darts": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),                              # Robust-DARTS
}
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
SPLIT_FILE = "nb201/cifar10-split.json"


def load_cifar10(root: str | Path, train: bool = True, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) from ``root/cifar-10-batches-py``.

    Files are md5-checked by torchvision; when they are missing or corrupt and ``download`` is set, torchvision
    fetches the archive (md5-checked too). Offline, a clear DataError says where the files must go.
    """
    from torchvision.datasets import CIFAR10
    return _torchvision(CIFAR10, "CIFAR-10", "cifar-10-batches-py", root, train, download,
                        "set EPS_DATA_DIR or data_root to the folder that holds it",
                        "put the python batches there or set EPS_DATA_DIR")


def _torchvision(cls, name: str, folder: str, root, train: bool, download: bool, fix: str, fix_download: str):
    """A torchvision CIFAR dataset as (uint8 [N, 3, 32, 32], int64 [N]); torchvision checks the md5s. Missing or
    corrupt files: downloaded when ``download`` is set, else (or when that fails) one DataError line with the fix."""
    root = Path(root)
    # refused before torchvision's md5 check opens them (a FIFO would block it forever); noted again below
    note_read(*(root / folder / f for f, _ in (cls.train_list if train else cls.test_list)),
              root / folder / cls.meta["filename"])
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise DataError(f"{name} not found or corrupt (md5 mismatch) under {root}/{folder}; {fix}") from None
        try:
            root.mkdir(parents=True, exist_ok=True)
            ds = cls(str(root), train=train, download=True)
        except Exception as err:
            raise DataError(f"{name} not found or corrupt under {root}/{folder} and the download failed "
                            f"({type(err).__name__}); {fix_download}") from None
    note_read(*(root / folder / f for f, _ in (ds.train_list if train else ds.test_list)),
              root / folder / ds.meta["filename"])
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return images, labels


def load_cifar100(root: str | Path, train: bool = True, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N] in 0..99, the fine labels) from ``root/cifar-100-python``.

    As ``load_cifar10``: torchvision md5-checks ``train``, ``test`` and ``meta``; when they are missing or corrupt and
    ``download`` is set, it fetches the official archive (md5-checked). Otherwise a one-line DataError says where the
    files come from and where they must go.
    """
    from torchvision.datasets import CIFAR100
    fix = (f"download {CIFAR100_URL} and unpack it under {root}, or set EPS_DATA_DIR or data_root to the folder "
           f"that holds cifar-100-python")
    return _torchvision(CIFAR100, "CIFAR-100", "cifar-100-python", root, train, download, fix, fix)


def load_split(root: str | Path, n: int = 50000, log=None, file: str = SPLIT_FILE,
               official: str = "NAS-Bench-201's cifar10-split.json") -> tuple[np.ndarray, np.ndarray]:
    """(train half, valid half) of a training set of ``n`` images: int64 index arrays, in the order of ``file``
    under ``root`` (NAS-Bench-201's 25k/25k ``cifar10-split.json`` by default). Absent file: halves derived
    deterministically (a permutation of the ``n`` images with seed 0, each half sorted), with a note through ``log``.
    ``official`` names the file that belongs there, for messages. A present but malformed file is a one-line
    DataError."""
    path = Path(root) / file
    if not path.exists():
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"note: {path} not found; using a split derived deterministically (permutation with seed 0), "
            f"not {official}, so numbers are not comparable to runs on that split")
        perm = np.random.default_rng(0).permutation(n)
        return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    what = (f"a NAS-Bench-201 split file (a JSON object {{\"train\": [...], \"valid\": [...]}} of distinct integer "
            f"indices in 0..{n - 1})")
    fix = f"replace it with {official}, or delete it to use a derived split"
    try:
        note_read(path)
        split = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the split file ({type(err).__name__}: {err}); {fix}") from None
    except ValueError as err:  # json.JSONDecodeError: garbage, an empty or a truncated file
        raise DataError(f"{path} is not valid JSON ({err}), so it is not {what}; {fix}") from None
    if not isinstance(split, dict) or any(k not in split for k in ("train", "valid")):
        found = (f"a JSON {_json_type(split)}" if not isinstance(split, dict) else
                 f"an object with keys {', '.join(split)}" if split else "an empty JSON object")
        raise DataError(f"{path} holds {found}, not {what}; {fix}")
    halves = {}
    for key in ("train", "valid"):
        values = split[key]
        if not isinstance(values, list):
            raise DataError(f"{path}: '{key}' is a JSON {_json_type(values)}, not a list of indices; {fix}")
        if not values:
            raise DataError(f"{path}: '{key}' is an empty list, so the supernet would have no images to "
                            f"{'train' if key == 'train' else 'validate'} on; {fix}")
        for pos, v in enumerate(values):
            # JSON true/false are Python bools, a subclass of int; 3.0 would be silently truncated by an int cast
            if type(v) is not int:
                raise DataError(f"{path}: '{key}'[{pos}] is {json.dumps(v)}, not an integer index; {fix}")
            if not 0 <= v < n:
                raise DataError(f"{path}: '{key}'[{pos}] is {v}, outside the {n} training images (0..{n - 1}); {fix}")
        arr = np.asarray(values, dtype=np.int64)
        uniq, counts = np.unique(arr, return_counts=True)
        if uniq.size != arr.size:
            dup = uniq[counts > 1]
            raise DataError(f"{path}: '{key}' lists index {int(dup[0])} more than once ({dup.size} duplicated "
                            f"indices); {fix}")
        halves[key] = arr
    train, valid = halves["train"], halves["valid"]
    common = np.intersect1d(train, valid)
    if common.size:
        raise DataError(f"{path}: index {int(common[0])} is in both 'train' and 'valid' ({common.size} shared); the "
                        f"halves must be disjoint; {fix}")
    return train, valid


def _json_type(value) -> str:
    """JSON's name for the type of a decoded value, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
