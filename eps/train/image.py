"""Image-classification tasks any CNN space can use: supernet training and fitness measurement
(``ImageSupernetTask``, NB201 / EPS protocol) and retraining from scratch (``ImageRetrainTask``, NB201 protocol).

The evolution loop sees only ``train_step(arch)`` and ``fitness(archs)``; both return device tensors, so the loop
never synchronises with the device inside a round.
"""
from __future__ import annotations

import copy
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from eps import distributed
from eps.config import Number
from eps.data.augment import Normalize, crop_flip
from eps.data.cifar import load_split
from eps.data.datasets import DATASETS
from eps.data.stream import BatchStream
from eps.errors import ConfigError, SpaceError
from eps.model_file import plain_values
from eps.retrain import RetrainSettings
from eps.space import SupernetSettings
from eps.train.common import amp_active, autocast, cosine_lr, decay_groups, make_generator, score_members, set_lr


class ImageSupernetSettings(SupernetSettings):
    """What ``ImageSupernetTask`` reads besides the stage's optimiser values (``<space>.supernet``)."""
    # all_used (the reference, spec §6 item 7): a weight that has received a gradient once keeps a zero gradient, so
    # SGD applies momentum and weight decay to it at every later step, on the path or not. path_only: only the
    # weights of the current path move.
    optimizer_updates: Literal["all_used", "path_only"] = "all_used"
    label_smoothing: Number = Field(0.1, ge=0, lt=1)  # training and fitness loss (EPS code)
    channels_last: bool = True       # NHWC activations: faster convolutions on CPUs and tensor cores
    amp: bool = False                # bf16 autocast on CUDA and on CPUs with native bf16; fp32 elsewhere
    data_subset: int = Field(0, ge=0)  # first N indices of each half of the split (0 = all; tiny runs)
    engine: Literal["auto", "path", "graph"] = "auto"  # auto: graph on CUDA where the space has one (eps/train/graph.py)


class ImageRetrainSettings(RetrainSettings):
    """What ``ImageRetrainTask`` reads (NB201 protocol): SGD with nesterov, cosine lr per iteration."""
    momentum: Number = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    train_subset: int = Field(0, ge=0)   # first N training images (0 = all)
    test_subset: int = Field(0, ge=0)    # first N test images (0 = all)
    channels_last: bool = True
    amp: bool = False


@runtime_checkable
class PathParameters(Protocol):
    """A supernet that skips work on some edges of a path (e.g. NB201's dead edges) names every parameter the
    plain computation of ``arch`` would have touched, so ``all_used`` updates count them as used."""

    def path_parameters(self, arch) -> list[nn.Parameter]: ...


@runtime_checkable
class ProgressiveSupernet(Protocol):
    """A supernet whose depth grows with the search's training steps (``set_progress(steps)``, spec §1.8)."""

    def set_progress(self, steps: int) -> None: ...


class ImageSupernetTask:
    """Supernet training on the split's train half and fitness on its valid half (spec §1.4, §6 item 3).

    ``section`` is the space's validated params section; the optimiser takes ``section[stage]`` (warm-up or
    search), the data and loss take ``section["supernet"]`` (``ImageSupernetSettings``) and fitness takes
    ``section["search"]``. Images stay uint8 on the device; augmentation runs on batches there.
    """
    engine = "path"  # supernet.engine this class runs (eps/train/graph.py: the graph engine)

    def __init__(self, model: nn.Module, section: dict, stage: str, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10"):
        net, opt, search = section["supernet"], section[stage], section["search"]
        if net.get("engine") == "graph" and self.engine != "graph":  # spaces with a graph form build GraphSupernetTask
            raise ConfigError("supernet.engine: graph: this space's supernet has no graph engine; set auto or path")
        self.device = device
        self.memory_format = torch.channels_last if net["channels_last"] else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.amp = net["amp"]
        self.path_only = net["optimizer_updates"] == "path_only"
        # Zero-fill the skipped ops' gradients only where the supernet skips work (checked once, not per step).
        self.fill_path = not self.path_only and isinstance(self.model, PathParameters)
        # The progressive schedule counts search steps (the reference has no warm-up); a warm-up trains the initial
        # depth.
        self.progressive = stage == "search" and isinstance(self.model, ProgressiveSupernet)
        self.steps = 0
        self.label_smoothing = net["label_smoothing"]
        subset = net["data_subset"]
        self.world = distributed.world()
        distributed.global_batch_norm(self.model)
        self.fitness_batches = search["fitness_batches"]
        self.fitness_shared = search["fitness_shared"]
        self.optimizer = torch.optim.SGD(decay_groups(self.model, opt["weight_decay"]), lr=opt["lr"],
                                         momentum=opt["momentum"])

        data = DATASETS[dataset]
        images, labels = data.load(data_root, train=True)
        train_idx, valid_idx = load_split(data_root, n=len(labels), file=data.split_file, official=data.split_source)
        if subset:  # tiny configs for tests and demos: the first `subset` indices of each half
            train_idx, valid_idx = train_idx[:subset], valid_idx[:subset]
        norm = Normalize(data.mean, data.std, device)
        to_dev = lambda idx: (images[torch.as_tensor(idx)].to(device), labels[torch.as_tensor(idx)].to(device))  # noqa: E731
        pad = data.search_pad
        self.train = BatchStream(*to_dev(train_idx), opt["batch_size"], make_generator(device, seed + 1),
                                 transform=(lambda x, g: norm(x)) if pad is None else
                                 (lambda x, g: norm(crop_flip(x, g, pad))))
        self.valid = BatchStream(*to_dev(valid_idx), search["fitness_batch_size"], make_generator(device, seed + 2),
                                 transform=lambda x, g: norm(x))

    def _loss(self, arch, x, y, total: int | None = None) -> torch.Tensor:
        """Mean label-smoothed cross entropy over the batch; with ``total``, this rank's share of the mean over a
        batch of ``total`` samples split across ranks (its sum / ``total``), so the ranks' shares add up to it."""
        x = x.contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.amp):
            logits = self.model(x, arch)
        if total is None:
            return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing, reduction="sum") / total

    def train_step(self, arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        self.model.train()
        set_lr(self.optimizer, lr)
        if self.progressive:
            self.model.set_progress(self.steps)
        self.steps += 1
        x, y = self.train.next()
        # PyTorch 1.x's zero_grad, which the reference ran on, zero-filled gradients: set_to_none=False keeps that,
        # so SGD's momentum and weight decay reach every weight used before, as in the reference (spec §6 item 7).
        self.optimizer.zero_grad(set_to_none=self.path_only)
        if self.world > 1:
            # Data parallel: every rank draws the same whole batch (identical streams) and trains on its slice, with
            # batch statistics and gradients summed over the ranks: the step of one process on the whole batch.
            total = len(y)
            x, y = distributed.shard(x, y)
            with distributed.synced_batch_norm():
                loss = self._loss(arch, x, y, total)
            loss.backward()
        else:
            loss = self._loss(arch, x, y)
            loss.backward()
        if self.fill_path:
            for p in self.model.path_parameters(arch):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        if self.world > 1:
            loss = distributed.sum_gradients(self.model.parameters(), loss)[0]
        if skip_nonfinite and not torch.isfinite(loss):  # a host sync per step, paid only in skip mode
            self.optimizer.zero_grad(set_to_none=self.path_only)
            return loss.detach()
        self.optimizer.step()
        return loss.detach()

    def _used(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if p.grad is not None]

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
        """Weights, optimiser, data streams, and which weights have been used (they keep zero gradients)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train": self.train.state_dict(), "valid": self.valid.state_dict(), "used": self._used(),
                "steps": self.steps}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        self.model.load_state_dict(state["model"])
        if weights_only:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.train.load_state_dict(state["train"])
        self.valid.load_state_dict(state["valid"])
        self.steps = state.get("steps", 0)
        used = set(state.get("used", ()))
        for name, p in self.model.named_parameters():
            p.grad = torch.zeros_like(p) if name in used else None


def load_train_test(load, data_root, cfg: dict):
    """The full training and test sets of an image dataset, cut to ``train_subset``/``test_subset`` when set."""
    train_x, train_y = load(data_root, train=True)
    test_x, test_y = load(data_root, train=False)
    n_train, n_test = cfg["train_subset"] or len(train_y), cfg["test_subset"] or len(test_y)
    return (train_x[:n_train], train_y[:n_train]), (test_x[:n_test], test_y[:n_test])


class ImageRetrainTask:
    """NAS-Bench-201 protocol: SGD nesterov, cosine lr stepped per iteration, crop+flip, full train set, test set.

    ``network``: the keywords with which the space's ``build_network(arch, **network)`` built ``model``; saved in
    ``retrain/model.pt`` (``network_config``) so that ``eps.load_model`` rebuilds the trained network. Required:
    without it a run would only fail when it writes its model, after training."""

    def __init__(self, model: nn.Module, cfg: dict, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10", network: dict | None = None):
        if network is None:
            raise SpaceError("ImageRetrainTask needs network=: the keywords with which the space's "
                             "build_network(arch, **network) built this model (see eps/space.py "
                             "RetrainTask.network_config and examples/chain_space.py)")
        self.network = plain_values(network, "ImageRetrainTask network")
        self.device, self.cfg = device, cfg
        self.precision = "bf16" if amp_active(device, cfg["amp"]) else "fp32"
        self.memory_format = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                         nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])
        data = DATASETS[dataset]
        (train_x, train_y), (test_x, test_y) = load_train_test(data.load, data_root, cfg)
        self.norm = Normalize(data.mean, data.std, device)
        self.input_spec = {"kind": "image", "shape": list(train_x.shape[1:]), "scale": 255,
                           "mean": [float(m) for m in data.mean], "std": [float(v) for v in data.std]}
        self.train = BatchStream(train_x.to(device), train_y.to(device), cfg["batch_size"],
                                 make_generator(device, seed + 1),
                                 transform=lambda x, g: self.norm(crop_flip(x, g, data.retrain_pad)))
        self.test_x, self.test_y = test_x.to(device), test_y.to(device)
        self.steps_per_epoch = self.train.batches_per_pass
        self.total_steps = cfg["epochs"] * self.steps_per_epoch

    def train_epoch(self, epoch: int, bar) -> dict:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for k in range(self.steps_per_epoch):
            set_lr(self.optimizer, cosine_lr(self.cfg["lr"], epoch * self.steps_per_epoch + k, self.total_steps))
            x, y = self.train.next()
            with autocast(self.device, self.cfg["amp"]):
                logits = self.model(x.contiguous(memory_format=self.memory_format))
            loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            bar.advance(1)
        return {"train_loss": float(loss_sum) / seen, "train_acc": 100.0 * float(correct) / seen}

    @torch.inference_mode()
    def evaluate(self, batch_size: int = 500) -> dict:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, len(self.test_y), batch_size):
            x = self.norm(self.test_x[i:i + batch_size]).contiguous(memory_format=self.memory_format)
            y = self.test_y[i:i + batch_size]
            with autocast(self.device, self.cfg["amp"]):
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = len(self.test_y)
        return {"test_loss": float(loss_sum) / n, "test_acc": 100.0 * float(correct) / n}

    @property
    def network_config(self) -> dict:
        """The ``build_network`` keywords of ``model`` (a copy: plain values)."""
        return copy.deepcopy(self.network)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train": self.train.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train.load_state_dict(state["train"])
