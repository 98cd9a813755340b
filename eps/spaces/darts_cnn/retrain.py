"""Retraining a DARTS-space genotype from scratch with the DARTS evaluation recipe (spec §2.6), on one device or on
several under ``torchrun`` with DistributedDataParallel.

Per epoch e (0-based): lr = cosine step e + 1 of ``epochs`` (the reference steps its scheduler before the epoch),
drop-path probability = drop_path * e / epochs; per step: crop+flip, normalise, Cutout, main CE + aux_weight * aux
CE, gradient clipping, SGD. Under DDP each rank reads its own slice of every pass's permutation (``batch_size`` is
the global batch), BN running statistics are averaged over ranks after each epoch, the test set is split over ranks
and metrics are summed across ranks, so every rank ends each epoch with the same weights and the same numbers.

All randomness (data order, augmentation, drop-path masks, noise) comes from generators the task owns and
checkpoints, per rank, so an interrupted run resumes to bit-identical weights.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from eps import distributed
from eps.settings import MAX_BATCH, MAX_DEPTH, MAX_STEPS, MAX_WIDTH, Number
from eps.data.augment import Normalize, crop_flip, cutout
from eps.data.stream import BatchStream
from eps.data.vision import RETRAIN_DATASETS
from eps.errors import CheckpointError, ConfigError
from eps.space import ALL_TASK_SETTINGS
from eps.train.common import autocast, cosine_lr, make_generator, set_lr
from eps.train.image import ImageRetrainSettings, load_train_test


class DartsRetrainSettings(ImageRetrainSettings):
    """The DARTS / Robust-DARTS CIFAR retraining recipe (spec §2.5): what ``DartsRetrainTask`` reads."""
    dataset: Literal["cifar10", "cifar100", "svhn"] = "cifar10"
    channels: int = Field(36, ge=1, le=MAX_WIDTH)
    layers: int = Field(20, ge=3, le=MAX_DEPTH)
    epochs: int = Field(600, ge=1, le=MAX_STEPS)
    batch_size: int = Field(96, ge=1, le=MAX_BATCH)  # global batch; under torchrun each of N ranks takes batch_size / N
    lr: Number = Field(0.025, gt=0)
    momentum: Number = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: Number = Field(3e-4, ge=0)
    grad_clip: Number = Field(5.0, ge=0)
    auxiliary_weight: Number = Field(0.4, ge=0)
    drop_path: Number = Field(0.2, ge=0, lt=1)
    cutout: int = Field(16, ge=0, le=MAX_WIDTH)
    hflip: Literal["auto", "on", "off"] = "auto"   # auto: on for CIFAR, off for SVHN digits (spec §5 item 22)
    eval_batch_size: int = Field(500, ge=1, le=MAX_BATCH)
    channels_last: bool = True               # GPU only
    amp: bool = False                        # true: bf16 autocast on CUDA (the recipe is fp32; the report says which)
    sync_bn: bool = False                    # multi-GPU: SyncBatchNorm over the global batch (CUDA only)


class DartsRetrainTask:
    """``network``: the keywords with which ``DartsCNNSpace.build_network(arch, **network)`` built ``model``
    (``network_config``, saved in ``retrain/model.pt``)."""
    supports_distributed = True
    honours = ALL_TASK_SETTINGS

    def __init__(self, model: nn.Module, cfg: dict, data_root, device: torch.device, seed: int, *, network: dict):
        self.network = dict(network)
        self.device, self.cfg = device, cfg
        self.rank, self.world = distributed.rank(), distributed.world()
        if cfg["batch_size"] % self.world:
            raise ConfigError(f"retrain.batch_size {cfg['batch_size']} is the global batch and must be divisible by "
                              f"the {self.world} processes of this run")
        cuda = device.type == "cuda"
        self.amp = cfg["amp"] and cuda
        self.precision = "bf16" if self.amp else "fp32"
        self.memory_format = torch.channels_last if cfg["channels_last"] and cuda else torch.contiguous_format
        if cfg["sync_bn"] and cuda and self.world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(device, memory_format=self.memory_format)
        # Per-rank generators: augmentation and the model's drop-path / noise draws.
        self.aug_gen = make_generator(device, seed * 1000 + 17 + self.rank)
        self.model_gen = make_generator(device, seed * 1000 + 29 + self.rank)
        self.model.generator = self.model_gen
        self.net = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if cuda else None,
                find_unused_parameters=not self.model.all_params_reached())
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                         nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])

        load, mean, std, flip_ok = RETRAIN_DATASETS[cfg["dataset"]]
        self.flip = flip_ok if cfg["hflip"] == "auto" else cfg["hflip"] == "on"
        (train_x, train_y), (test_x, test_y) = load_train_test(load, data_root, cfg)
        if len(train_y) < self.world:
            raise ConfigError(f"retrain.train_subset {len(train_y)} gives some of the {self.world} processes no data")
        self.norm = Normalize(mean, std, device)
        self.input_spec = {"kind": "image", "shape": list(train_x.shape[1:]), "scale": 255,
                           "mean": [float(m) for m in mean], "std": [float(v) for v in std]}
        # Same permutation generator on every rank (shared order, disjoint shards); augmentation is per rank.
        self.train = BatchStream(train_x.to(device), train_y.to(device), cfg["batch_size"] // self.world,
                                 make_generator(device, seed + 1), transform=self._augment,
                                 shard=(self.rank, self.world))
        self.test_x, self.test_y = test_x[self.rank::self.world].to(device), test_y[self.rank::self.world].to(device)
        self.steps_per_epoch = self.train.batches_per_pass

    def _augment(self, x: torch.Tensor, _stream_generator) -> torch.Tensor:
        x = self.norm(crop_flip(x, self.aug_gen, flip=self.flip))
        if self.cfg["cutout"]:
            x = cutout(x, self.aug_gen, self.cfg["cutout"])
        return x.contiguous(memory_format=self.memory_format)

    def train_epoch(self, epoch: int, bar) -> dict:
        cfg = self.cfg
        set_lr(self.optimizer, cosine_lr(cfg["lr"], epoch + 1, cfg["epochs"]))
        self.model.drop_path_prob = cfg["drop_path"] * epoch / cfg["epochs"]
        self.net.train()
        sums = torch.zeros(2, device=self.device, dtype=torch.float64)  # loss * n, correct
        seen = 0
        params = list(self.model.parameters())
        for _ in range(self.steps_per_epoch):
            x, y = self.train.next()
            with autocast(self.device, self.amp):
                logits, aux = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
            total = loss if aux is None else loss + cfg["auxiliary_weight"] * F.cross_entropy(aux.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            self.optimizer.step()
            sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
            seen += len(y)
            bar.advance(1)
        distributed.average_buffers(self.model)
        loss_sum, correct, seen = distributed.all_reduce_sum(torch.cat([sums, sums.new_tensor([seen])])).tolist()
        return {"train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen}

    @torch.inference_mode()
    def evaluate(self) -> dict:
        self.model.eval()
        bs = self.cfg["eval_batch_size"]
        sums = torch.zeros(2, device=self.device, dtype=torch.float64)
        for i in range(0, len(self.test_y), bs):
            x = self.norm(self.test_x[i:i + bs]).contiguous(memory_format=self.memory_format)
            y = self.test_y[i:i + bs]
            with autocast(self.device, self.amp):
                logits = self.model(x)[0].float()
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 (logits.argmax(1) == y).sum().double()])
        n = len(self.test_y)
        loss_sum, correct, n = distributed.all_reduce_sum(torch.cat([sums, sums.new_tensor([n])])).tolist()
        return {"test_loss": loss_sum / n, "test_acc": 100.0 * correct / n}

    @property
    def network_config(self) -> dict:
        """The ``build_network`` keywords of ``model`` (num_classes, channels, layers, auxiliary)."""
        return dict(self.network)

    def _rank_state(self) -> dict:
        return {"aug": self.aug_gen.get_state(), "model": self.model_gen.get_state()}

    def state_dict(self) -> dict:
        """Called on every rank (it gathers each rank's generators); rank 0 writes it."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train": self.train.state_dict(), "ranks": distributed.all_gather_object(self._rank_state())}

    def load_state_dict(self, state: dict) -> None:
        if len(state["ranks"]) != self.world:
            raise CheckpointError(f"the retrain checkpoint was written by {len(state['ranks'])} process(es), this run "
                                  f"has {self.world}; resume with the same torchrun --nproc_per_node or use --restart")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train.load_state_dict(state["train"])
        mine = state["ranks"][self.rank]
        self.aug_gen.set_state(mine["aug"])
        self.model_gen.set_state(mine["model"])
