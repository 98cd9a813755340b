"""Supernet training and fitness measurement for image-classification spaces (NB201, DARTS CNN).

The evolution loop sees only ``train_step(arch)`` and ``fitness(archs)``; both return device tensors, so the loop
never synchronises with the device inside a round.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from eps.data.augment import Normalize, crop_flip
from eps.data.cifar import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, load_split
from eps.data.stream import BatchStream
from eps.train.common import autocast, decay_groups, make_generator, score_members, set_lr

DATASETS = {"cifar10": (load_cifar10, CIFAR10_MEAN, CIFAR10_STD)}


class ImageSupernetTask:
    def __init__(self, model: nn.Module, stage: dict, search: dict, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10", subset: int = 0):
        self.device = device
        self.memory_format = torch.channels_last if search["channels_last"] else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.amp = search["amp"]
        self.label_smoothing = search["label_smoothing"]
        self.fitness_batches = search["fitness_batches"]
        self.fitness_shared = search["fitness_shared"]
        self.optimizer = torch.optim.SGD(decay_groups(self.model, stage["weight_decay"]), lr=stage["lr"],
                                         momentum=stage["momentum"])

        load, mean, std = DATASETS[dataset]
        images, labels = load(data_root, train=True)
        train_idx, valid_idx = load_split(data_root, n=len(labels))
        if subset:  # tiny configs for tests and demos: the first `subset` indices of each half
            train_idx, valid_idx = train_idx[:subset], valid_idx[:subset]
        norm = Normalize(mean, std, device)
        to_dev = lambda idx: (images[torch.as_tensor(idx)].to(device), labels[torch.as_tensor(idx)].to(device))  # noqa: E731
        self.train = BatchStream(*to_dev(train_idx), stage["batch_size"], make_generator(device, seed + 1),
                                 transform=lambda x, g: norm(crop_flip(x, g)))
        self.valid = BatchStream(*to_dev(valid_idx), search["fitness_batch_size"], make_generator(device, seed + 2),
                                 transform=lambda x, g: norm(x))

    def _loss(self, arch, x, y) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.amp):
            logits = self.model(x, arch)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)

    def train_step(self, arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        self.model.train()
        set_lr(self.optimizer, lr)
        x, y = self.train.next()
        loss = self._loss(arch, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if skip_nonfinite and not torch.isfinite(loss):  # a host sync per step, paid only in skip mode
            self.optimizer.zero_grad(set_to_none=True)
            return loss.detach()
        self.optimizer.step()
        return loss.detach()

    def fitness(self, archs: list) -> torch.Tensor:
        """Label-smoothed validation loss of each arch, in training mode (batch-statistics BN), no gradients.

        Unshared (the paper): each member takes the next batch(es) of the one fitness stream. Shared: all members of
        the call are scored on the same batches, so each distinct arch is evaluated once.
        """
        self.model.train()
        with torch.inference_mode():
            return score_members(
                archs, self.valid.next,
                lambda arch, batches: torch.stack([self._loss(arch, x, y) for x, y in batches]).mean(),
                self.fitness_batches, self.fitness_shared, self.device)

    def validation_batches(self, n: int, seed: int) -> list:
        """``n`` fixed batches of the fitness half (fitness batch size, no augmentation), drawn with their own
        generator: the fitness stream and every other random state are left untouched."""
        stream = BatchStream(self.valid.images, self.valid.labels, self.valid.batch_size,
                             make_generator(self.device, seed), transform=self.valid.transform)
        return [stream.next() for _ in range(n)]

    def score(self, archs: list, batches: list) -> torch.Tensor:
        """Mean label-smoothed loss of each arch over the same ``batches`` (as ``fitness``: training-mode BN, no
        gradients); a device tensor, so the caller decides when to synchronise."""
        self.model.train()
        with torch.inference_mode():
            losses = [torch.stack([self._loss(arch, x, y) for x, y in batches]).mean() for arch in archs]
            return torch.stack(losses) if losses else torch.empty(0, device=self.device)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train": self.train.state_dict(), "valid": self.valid.state_dict()}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        self.model.load_state_dict(state["model"])
        if weights_only:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.train.load_state_dict(state["train"])
        self.valid.load_state_dict(state["valid"])
