"""Image classification any CNN space can use: the tensor tasks (``eps.train.tensor``) with images kept uint8 on the
device, normalised (and cropped/flipped for training) per batch there, and the dataset and its split loaded by name.
``ImageSupernetTask``: supernet training and fitness (NB201 / EPS protocol); ``ImageRetrainTask``: retraining from
scratch (NB201 protocol).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from eps.data.augment import Normalize, crop_flip
from eps.data.cifar import load_split
from eps.data.datasets import DATASETS
from eps.errors import ConfigError
from eps.settings import MAX_ITEMS
from eps.train.tensor import (PathParameters, ProgressiveSupernet, TensorRetrainSettings, TensorRetrainTask,
                              TensorSupernetSettings, TensorSupernetTask, require_network)

__all__ = ["ImageRetrainSettings", "ImageRetrainTask", "ImageSupernetSettings", "ImageSupernetTask", "PathParameters",
           "ProgressiveSupernet", "load_train_test"]


def _layout(channels_last: bool) -> torch.memory_format:
    # NHWC activations: faster convolutions on CPUs and tensor cores
    return torch.channels_last if channels_last else torch.contiguous_format


class ImageSupernetSettings(TensorSupernetSettings):
    """What ``ImageSupernetTask`` reads besides the stage's optimiser values (``<space>.supernet``)."""
    channels_last: bool = True       # NHWC activations: faster convolutions on CPUs and tensor cores
    data_subset: int = Field(0, ge=0, le=MAX_ITEMS)  # first N indices of each half of the split (0 = all; tiny runs)
    engine: Literal["auto", "path", "graph"] = "auto"  # auto: graph on CUDA where the space has one (eps/train/graph.py)


class ImageRetrainSettings(TensorRetrainSettings):
    """What ``ImageRetrainTask`` reads (NB201 protocol): SGD with nesterov, cosine lr per iteration."""
    train_subset: int = Field(0, ge=0, le=MAX_ITEMS)   # first N training images (0 = all)
    test_subset: int = Field(0, ge=0, le=MAX_ITEMS)    # first N test images (0 = all)
    channels_last: bool = True


class ImageSupernetTask(TensorSupernetTask):
    """``TensorSupernetTask`` on the dataset's official split (spec §1.4, §6 item 3): train half, fitness on the
    valid half; training batches padded-cropped and flipped when the dataset's ``search_pad`` says so.

    ``section`` as for the tensor task, its ``supernet`` section being ``ImageSupernetSettings``. Images stay uint8
    on the device; augmentation and normalisation run on batches there.
    """
    engine = "path"  # supernet.engine this class runs (eps/train/graph.py: the graph engine)

    def __init__(self, model: nn.Module, section, stage: str, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10"):
        net = section["supernet"]
        if net.get("engine") == "graph" and self.engine != "graph":  # spaces with a graph form build GraphSupernetTask
            raise ConfigError("supernet.engine: graph: this space's supernet has no graph engine; set auto or path")
        data = DATASETS[dataset]
        images, labels = data.load(data_root, train=True)
        train_idx, valid_idx = load_split(data_root, n=len(labels), file=data.split_file, official=data.split_source)
        if net["data_subset"]:  # tiny configs for tests and demos: the first `subset` indices of each half
            train_idx, valid_idx = train_idx[:net["data_subset"]], valid_idx[:net["data_subset"]]
        norm = Normalize(data.mean, data.std, device)
        pick = lambda idx: (images[torch.as_tensor(idx)], labels[torch.as_tensor(idx)])  # noqa: E731
        pad = data.search_pad
        super().__init__(model, section, stage, pick(train_idx), pick(valid_idx), device, seed,
                         transform=(lambda x, g: norm(x)) if pad is None else (lambda x, g: norm(crop_flip(x, g, pad))),
                         valid_transform=lambda x, g: norm(x), memory_format=_layout(net["channels_last"]))


def load_train_test(load, data_root, cfg):
    """The full training and test sets of an image dataset, cut to ``train_subset``/``test_subset`` when set."""
    train_x, train_y = load(data_root, train=True)
    test_x, test_y = load(data_root, train=False)
    n_train, n_test = cfg["train_subset"] or len(train_y), cfg["test_subset"] or len(test_y)
    return (train_x[:n_train], train_y[:n_train]), (test_x[:n_test], test_y[:n_test])


class ImageRetrainTask(TensorRetrainTask):
    """NAS-Bench-201 protocol (``TensorRetrainTask``) on the dataset's full training set, evaluated on its test set:
    crop+flip with the dataset's ``retrain_pad``, normalised per batch on the device.

    ``network``: the keywords with which the space's ``build_network(arch, **network)`` built ``model``; saved in
    ``retrain/model.pt`` (``network_config``) so that ``eps.load_model`` rebuilds the trained network. Required:
    without it a run would only fail when it writes its model, after training (SpaceError)."""

    def __init__(self, model: nn.Module, cfg, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10", network: dict | None = None):
        require_network(self, network)  # before the dataset is loaded: a missing network fails at once
        data = DATASETS[dataset]
        train, test = load_train_test(data.load, data_root, cfg)
        self.norm = Normalize(data.mean, data.std, device)
        super().__init__(model, cfg, train, test, device, seed, network=network,
                         transform=lambda x, g: self.norm(crop_flip(x, g, data.retrain_pad)),
                         eval_transform=lambda x, g: self.norm(x), memory_format=_layout(cfg["channels_last"]),
                         input_spec={"kind": "image", "shape": list(train[0].shape[1:]), "scale": 255,
                                     "mean": [float(m) for m in data.mean], "std": [float(v) for v in data.std]})
