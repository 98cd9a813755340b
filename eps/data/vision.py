"""Image datasets for retraining a DARTS-space genotype: CIFAR-10, CIFAR-100 and SVHN as uint8 tensors.

CIFAR-100 and SVHN come through torchvision (md5-checked; downloaded when missing and the network allows). The
statistics are the ones the DARTS / Robust-DARTS training scripts normalise with (NAS-Bench-201's are in
eps.data.datasets).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eps.data.cifar import CIFAR10_STATS, CIFAR100_STATS, load_cifar10, load_cifar100
from eps.errors import DataError

DARTS_CIFAR10_MEAN, DARTS_CIFAR10_STD = CIFAR10_STATS["darts"]
CIFAR100_MEAN, CIFAR100_STD = CIFAR100_STATS["darts"]
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)


def _torchvision(name: str, make, root: Path, where: str):
    try:
        return make(False)
    except RuntimeError:
        pass
    except ImportError as err:
        raise DataError(f"{name} needs {err.name} to read its files; pip install {err.name}") from None
    try:
        root.mkdir(parents=True, exist_ok=True)
        return make(True)
    except ImportError as err:
        raise DataError(f"{name} needs {err.name} to read its files; pip install {err.name}") from None
    except Exception as err:
        raise DataError(f"{name} not found or corrupt under {where} and the download failed ({type(err).__name__}); "
                        f"put the files there or set EPS_DATA_DIR / data_root") from None


def load_svhn(root, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import SVHN
    root = Path(root) / "svhn"
    split = "train" if train else "test"
    ds = _torchvision("SVHN", lambda dl: SVHN(str(root), split=split, download=dl), root,
                      f"{root}/{split}_32x32.mat")
    return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64))


# name -> (loader(root, train), mean, std, horizontal flips make sense)
RETRAIN_DATASETS = {
    "cifar10": (load_cifar10, DARTS_CIFAR10_MEAN, DARTS_CIFAR10_STD, True),
    "cifar100": (load_cifar100, CIFAR100_MEAN, CIFAR100_STD, True),
    "svhn": (load_svhn, SVHN_MEAN, SVHN_STD, False),
}
