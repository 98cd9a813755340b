"""The image datasets a NAS-Bench-201-style search runs on, and what each needs: loader, statistics, class count,
image size, search split and augmentation (the values of ``nb201.space.dataset``).

Search split (spec §1.3): the supernet trains on one half of the training set and fitness is measured on the other;
the test set is never touched. The EPS reference uses NAS-Bench-201's CIFAR-10 split (``cifar10-split.json``) for
CIFAR-100 too (both have 50,000 training images), and its own split of the ImageNet16-120 training set; without a
split file under the data root, the halves are derived deterministically (a seed-0 permutation of the training set).
NAS-Bench-201's own search scripts (xautodl) instead train on the whole CIFAR-100 / ImageNet16-120 training set and
score on the x-valid half of the test set; eps follows the EPS reference, so the benchmark's test halves stay unseen.

Augmentation: pad-and-crop plus horizontal flip on the supernet half and in retraining, as NAS-Bench-201 trains its
networks (pad 4 at 32x32, pad 2 at 16x16), except the ImageNet16-120 supernet half, which the EPS reference feeds
without augmentation (spec §5 item 15).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from eps.data.cifar import CIFAR10_STATS, CIFAR100_STATS, SPLIT_FILE, load_cifar10, load_cifar100
from eps.data.imagenet16 import IMAGENET16_MEAN, IMAGENET16_STD, load_imagenet16


@dataclass(frozen=True)
class ImageDataset:
    name: str                 # as written in params
    title: str                # for messages
    load: Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (root, train=True) -> uint8 [N, 3, S, S], int64 [N]
    mean: tuple[float, float, float]  # per channel, of images scaled to 0..1
    std: tuple[float, float, float]
    classes: int
    size: int                 # S, the image side in pixels
    split_file: str           # the search split under the data root (JSON {"train": [...], "valid": [...]})
    split_source: str         # what belongs in split_file, for messages
    search_pad: int | None    # supernet half: crop padding with flips, None = no augmentation
    retrain_pad: int          # retraining: crop padding, with flips


DATASETS: dict[str, ImageDataset] = {
    "cifar10": ImageDataset("cifar10", "CIFAR-10", load_cifar10, *CIFAR10_STATS["nb201"], classes=10, size=32,
                            split_file=SPLIT_FILE, split_source="NAS-Bench-201's cifar10-split.json",
                            search_pad=4, retrain_pad=4),
    "cifar100": ImageDataset("cifar100", "CIFAR-100", load_cifar100, *CIFAR100_STATS["nb201"], classes=100, size=32,
                             split_file=SPLIT_FILE,
                             split_source="NAS-Bench-201's cifar10-split.json (the EPS reference splits CIFAR-100 "
                                          "with it)",
                             search_pad=4, retrain_pad=4),
    "imagenet16-120": ImageDataset("imagenet16-120", "ImageNet16-120", load_imagenet16, IMAGENET16_MEAN,
                                   IMAGENET16_STD, classes=120, size=16, split_file="nb201/imagenet16-120-split.json",
                                   split_source="the EPS reference's split of the ImageNet16-120 training set",
                                   search_pad=None, retrain_pad=2),
}
