"""Training a chosen architecture from scratch: the image-classification task (NB201 protocol) and the generic
epoch loop with checkpoints that every space's retraining uses.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from eps import distributed
from eps.checkpoint import CheckpointDir
from eps.data.augment import Normalize, crop_flip
from eps.data.stream import BatchStream
from eps.errors import NumericalError
from eps.progress import progress_bar
from eps.train.common import autocast, cosine_lr, make_generator, rng_state, set_lr, set_rng_state
from eps.train.supernet import DATASETS


def load_train_test(load, data_root, cfg: dict):
    """The full training and test sets of an image dataset, cut to ``train_subset``/``test_subset`` when set."""
    train_x, train_y = load(data_root, train=True)
    test_x, test_y = load(data_root, train=False)
    n_train, n_test = cfg["train_subset"] or len(train_y), cfg["test_subset"] or len(test_y)
    return (train_x[:n_train], train_y[:n_train]), (test_x[:n_test], test_y[:n_test])


class ImageRetrainTask:
    """NAS-Bench-201 protocol: SGD nesterov, cosine lr stepped per iteration, crop+flip, full train set, test set."""

    def __init__(self, model: nn.Module, cfg: dict, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10"):
        self.device, self.cfg = device, cfg
        self.memory_format = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                         nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])
        load, mean, std = DATASETS[dataset]
        (train_x, train_y), (test_x, test_y) = load_train_test(load, data_root, cfg)
        self.norm = Normalize(mean, std, device)
        self.train = BatchStream(train_x.to(device), train_y.to(device), cfg["batch_size"],
                                 make_generator(device, seed + 1), transform=lambda x, g: self.norm(crop_flip(x, g)))
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

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train": self.train.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train.load_state_dict(state["train"])


def run_retrain(task, epochs: int, checkpoint_every: int, ckpt: CheckpointDir, restart: bool = False,
                log=None) -> dict:
    """Epoch loop shared by all spaces: train, evaluate, checkpoint; returns {'history': [...], 'seconds': ...}."""
    state = ckpt.load_latest(restart)
    history: list[dict] = []
    epoch = 0
    if state is not None:
        task.load_state_dict(state["task"])
        set_rng_state(state["global_rng"], task.device)
        history, epoch = state["history"], state["epoch"]
    start = time.monotonic()
    epoch_seconds = []  # kept out of `history`, so metrics stay bit-identical across interrupted runs
    with progress_bar("retrain", epochs * task.steps_per_epoch, epoch * task.steps_per_epoch) as bar:
        while epoch < epochs:
            t0 = time.monotonic()
            row = {"epoch": epoch + 1, **task.train_epoch(epoch, bar), **task.evaluate()}
            epoch_seconds.append(time.monotonic() - t0)
            if not all(v == v and abs(v) != float("inf") for v in row.values()):
                raise NumericalError(f"non-finite metric in retrain epoch {epoch + 1} ({row}); "
                                     f"the last good checkpoint is kept; lower the lr")
            history.append(row)
            epoch += 1
            if log:
                log(row)
            if epoch % checkpoint_every == 0 or epoch == epochs:
                # Every rank builds the state (a distributed task gathers per-rank parts); only rank 0 writes.
                state = {"task": task.state_dict(), "global_rng": rng_state(task.device), "history": history,
                         "epoch": epoch}
                if distributed.is_main():
                    ckpt.save(state)
    return {"history": history, "seconds": time.monotonic() - start, "epoch_seconds": epoch_seconds}
