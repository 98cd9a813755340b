"""ImageNet16-120 as uint8 tensors: the 16x16 downsampled ImageNet that NAS-Bench-201 trains on, cut to 120 classes.

The files are the official pickled batches of Chrabaszcz et al. (2017), in the folder ``ImageNet16`` under the data
root, as NAS-Bench-201 (xautodl's ``ImageNet16``) reads them: ``train_data_batch_1`` .. ``train_data_batch_10`` and
``val_data``, each a pickled dict with ``data`` (N x 768 uint8: a 3 x 16 x 16 image flattened channel by channel) and
``labels`` (ImageNet class ids 1..1000). ImageNet16-120 keeps the images of classes 1..120 and relabels them 0..119:
151,700 training and 6,000 validation images. Each file's md5 is checked against the official release before it is
read. Downloading them needs an ImageNet account, so eps never fetches them.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from eps.data.files import note_read
from eps.errors import DataError

FOLDER = "ImageNet16"
# md5 of the official files (the ones xautodl's ImageNet16 checks)
TRAIN_FILES = {
    "train_data_batch_1": "27846dcaa50de8e21a7d1a35f30f0e91",
    "train_data_batch_2": "c7254a054e0e795c69120a5727050e3f",
    "train_data_batch_3": "4333d3df2e5ffb114b05d2ffc19b1e87",
    "train_data_batch_4": "1620cdf193304f4a92677b695d70d10f",
    "train_data_batch_5": "348b3c2fdbb3940c4e9e834affd3b18d",
    "train_data_batch_6": "6e765307c242a1b3d7d5ef9139b48945",
    "train_data_batch_7": "564926d8cbf8fc4818ba23d2faac7564",
    "train_data_batch_8": "f4755871f718ccb653440b9dd0ebac66",
    "train_data_batch_9": "bb6dd660c38c58552125b1a92f86b5d4",
    "train_data_batch_10": "8f03f34ac4b42271a294f91bf480f29b",
}
VAL_FILES = {"val_data": "3410e3017fdaefba8d5073aaa65e4bd6"}
SIDE = 16
NUM_IMAGENET_CLASSES = 1000
# NAS-Bench-201's statistics for every ImageNet16 variant (xautodl's get_datasets)
IMAGENET16_MEAN = (122.68 / 255, 116.66 / 255, 104.01 / 255)
IMAGENET16_STD = (63.22 / 255, 61.26 / 255, 65.09 / 255)
SOURCE = ("the pickled 16x16 downsampled ImageNet (Imagenet16_train.zip and Imagenet16_val.zip from image-net.org's "
          "'Downsampled ImageNet' downloads, as NAS-Bench-201 uses them)")


def _numpy_globals() -> dict:
    """The globals a pickled batch may name: NumPy's array and dtype reconstruction (written by NumPy 1 or 2, with
    any pickle protocol) and ``_codecs.encode`` (bytes in a protocol-2 pickle written by Python 3). Nothing that
    could run code."""
    import codecs
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy < 1.26
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a batch without ever calling a global outside ``_numpy_globals`` (a pickle can name any
    callable, and unpickling calls it)."""
    allowed: dict | None = None

    def find_class(self, module, name):
        if _BatchUnpickler.allowed is None:
            _BatchUnpickler.allowed = _numpy_globals()
        try:
            return _BatchUnpickler.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a batch of images never holds") from None


def _read_batch(path: Path, md5: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 [M, 768], labels int64 [M] in 0..classes-1) of one file: the images of classes 1..classes."""
    if not path.is_file():
        raise DataError(f"ImageNet16-120 not found: {path} is missing; put {SOURCE} (train_data_batch_1..10 and "
                        f"val_data) in {path.parent}, or set EPS_DATA_DIR or data_root to the folder that holds "
                        f"{FOLDER}")
    try:
        note_read(path)
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read ImageNet16 file {path} ({err.strerror}); check its permissions") from None
    got = hashlib.md5(raw).hexdigest()
    if got != md5:
        raise DataError(f"ImageNet16 file {path} is corrupt or not the official one: md5 {got}, expected {md5}; "
                        f"replace it with the file from {SOURCE}")
    fix = f"replace it with the file from {SOURCE}"
    try:
        # latin1: the official files were pickled by Python 2, whose byte strings hold the raw pixels
        entry = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as err:  # UnpicklingError, EOFError, ValueError ... on anything but a batch
        raise DataError(f"ImageNet16 file {path} is not a pickled batch ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); {fix}") from None
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise DataError(f"ImageNet16 file {path} holds a {type(entry).__name__} without 'data' and 'labels', not a "
                        f"batch; {fix}")
    data = entry["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * SIDE * SIDE):
        shape = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"ImageNet16 file {path}: 'data' is a {shape}, expected uint8 N x {3 * SIDE * SIDE} "
                        f"(3 x {SIDE} x {SIDE} images); {fix}")
    try:
        labels = np.asarray(entry["labels"])
    except Exception:
        labels = np.asarray(None)
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"ImageNet16 file {path}: 'labels' is not a list of {len(data)} integer class ids, one per "
                        f"image; {fix}")
    if len(labels) and not (labels.min() >= 1 and labels.max() <= NUM_IMAGENET_CLASSES):
        raise DataError(f"ImageNet16 file {path}: class ids run {labels.min()}..{labels.max()}, outside ImageNet's "
                        f"1..{NUM_IMAGENET_CLASSES}; {fix}")
    keep = labels <= classes
    return data[keep], labels[keep].astype(np.int64) - 1


def load_imagenet16(root: str | Path, train: bool = True, classes: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 3, 16, 16], labels int64 [N] in 0..classes-1) from ``root/ImageNet16``.

    ``train``: the ten training batches, else ``val_data`` (the set NAS-Bench-201 tests on). Only the images of
    ImageNet classes 1..``classes`` are kept, relabelled 0..classes-1 (ImageNet16-120: 151,700 and 6,000 images).
    A missing, unreadable or corrupt file (md5 mismatch) is a one-line DataError that says where to get it.
    """
    if not 1 <= classes <= NUM_IMAGENET_CLASSES:
        raise ValueError(f"classes must be in 1..{NUM_IMAGENET_CLASSES}, got {classes}")
    folder = Path(root) / FOLDER
    parts = [_read_batch(folder / name, md5, classes) for name, md5 in (TRAIN_FILES if train else VAL_FILES).items()]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, SIDE, SIDE)))
    return images, torch.from_numpy(labels)
