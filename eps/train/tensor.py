"""Classification on the user's own tensors: supernet training and fitness (``TensorSupernetTask``, the EPS protocol,
spec §1.4 and §6 items 3 and 7) and retraining from scratch (``TensorRetrainTask``, the NB201 recipe: SGD with
nesterov, cosine lr per iteration).

A space whose data are ``(x, y)`` tensors, ``x`` of any shape ``(N, ...)`` and ``y`` the ``(N,)`` integer class
indices, gets everything the tool demands from these two classes: the optimiser built from the stage's settings, the
``all_used``/``path_only`` optimiser semantics, fitness batching, non-finite skipping, study scoring, exact resume
(weights, optimiser and data-stream positions are checkpointed) and data parallelism under torchrun. The image tasks
(``eps.train.image``) are these tasks with uint8 images, normalisation and crop/flip transforms.

The data stay on the training device; an optional per-batch ``transform(x, generator) -> x`` (augmentation,
normalisation) runs there too. It must draw its randomness from the generator it is given (the batch stream's,
checkpointed with it) and from nothing else, or a resumed run sees other batches than an uninterrupted one.
"""
from __future__ import annotations

import copy
from typing import Callable, ClassVar, Literal, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from eps import distributed
from eps.settings import Number
from eps.data.stream import BatchStream
from eps.errors import DataError, SpaceError
from eps.io import plain_values
from eps.retrain import RetrainSettings
from eps.space import ALL_TASK_SETTINGS, SupernetSettings
from eps.train.common import (amp_active, autocast, cosine_lr, decay_groups, make_generator, score_members,
                              set_lr)

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class TensorSupernetSettings(SupernetSettings):
    """What ``TensorSupernetTask`` reads besides the stage's optimiser values (``<space>.supernet``)."""
    # all_used (the reference, spec §6 item 7): a weight that has received a gradient once keeps a zero gradient, so
    # SGD applies momentum and weight decay to it at every later step, on the path or not. path_only: only the
    # weights of the current path move.
    optimizer_updates: Literal["all_used", "path_only"] = "all_used"
    label_smoothing: Number = Field(0.1, ge=0, lt=1)  # training and fitness loss (EPS code)
    amp: bool = False                # bf16 autocast on CUDA and on CPUs with native bf16; fp32 elsewhere


class TensorRetrainSettings(RetrainSettings):
    """What ``TensorRetrainTask`` reads (NB201 protocol): SGD with nesterov, cosine lr per iteration."""
    momentum: Number = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
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


def _on_device(data, what: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` checked and moved to ``device``; DataError naming the split for anything a loss cannot take."""
    try:
        x, y = data
    except (TypeError, ValueError):
        raise DataError(f"the {what} data must be a pair (x, y) of tensors, got {type(data).__name__}") from None
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise DataError(f"the {what} data must be a pair (x, y) of torch tensors; convert with torch.as_tensor")
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"the {what} labels y must be a 1-D tensor of integer class indices, got {y.dtype} of "
                        f"shape {tuple(y.shape)}")
    if x.ndim < 1 or len(x) != len(y):
        raise DataError(f"the {what} data have {len(x) if x.ndim else 0} inputs but {len(y)} labels; give one label "
                        f"per sample")
    if len(y) == 0:
        raise DataError(f"the {what} split is empty; give it at least one sample")
    return x.to(device), y.to(device, torch.long)


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device, amp: bool, memory_format, *arch):
    x = x.contiguous(memory_format=memory_format)
    with autocast(device, amp):
        return model(x, *arch)


def _batch_loss(forward, x, y, smoothing: float):
    """Mean cross entropy of the batch and the logits. Under torchrun every rank holds the same whole batch, takes
    its slice, and returns its share of the whole batch's mean (its sum / batch size), with batch norm over the whole
    batch (``eps.distributed``): the ranks' shares and summed gradients are those of one process on the whole batch.
    Returns ``(loss, logits, y)`` with this rank's ``y``."""
    if distributed.world() == 1:
        logits = forward(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing), logits, y
    total = len(y)
    x, y = distributed.shard(x, y)
    with distributed.synced_batch_norm():
        logits = forward(x)
    return F.cross_entropy(logits.float(), y, label_smoothing=smoothing, reduction="sum") / total, logits, y


def _batch_sizes(n: int, batch_size: int, batches: int) -> list[int]:
    """Sizes of the first ``batches`` batches of a ``BatchStream`` over ``n`` samples (a pass ends in a partial one)."""
    per_pass = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    return [per_pass[k % len(per_pass)] for k in range(batches)]


class TensorSupernetTask:
    """Supernet training on ``train`` and fitness on ``valid`` (spec §1.4, §6 item 3).

    ``model(x, arch)`` returns logits ``(B, classes)``; ``train``/``valid`` are ``(x, y)`` with ``x`` of shape
    ``(N, ...)`` and ``y`` the ``(N,)`` class indices. ``section`` is the space's validated params section (dicts or
    typed settings): the optimiser takes ``section[stage]`` (warm-up or search: batch_size, lr, momentum,
    weight_decay), the loss ``section["supernet"]`` (``TensorSupernetSettings``) and fitness ``section["search"]``
    (fitness_batch_size, fitness_batches, fitness_shared). ``transform`` runs on every training batch,
    ``valid_transform`` on every fitness and scoring batch; ``memory_format`` is the layout of model and inputs
    (``torch.channels_last`` for 4-D inputs only). Raises DataError for data a loss cannot take.
    """
    supports_distributed: ClassVar[bool] = True
    honours: ClassVar[frozenset[str]] = ALL_TASK_SETTINGS   # every generic setting a task carries out (eps.space)

    def __init__(self, model: nn.Module, section, stage: str, train, valid, device: torch.device, seed: int, *,
                 transform: Transform | None = None, valid_transform: Transform | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format):
        net, opt, search = section["supernet"], section[stage], section["search"]
        self.device, self.memory_format = device, memory_format
        self.model = model.to(device, memory_format=memory_format)
        self.amp = net["amp"]
        self.path_only = net["optimizer_updates"] == "path_only"
        # Zero-fill the skipped ops' gradients only where the supernet skips work (checked once, not per step).
        self.fill_path = not self.path_only and isinstance(self.model, PathParameters)
        # The progressive schedule counts search steps (the reference has no warm-up); a warm-up trains the initial
        # depth.
        self.progressive = stage == "search" and isinstance(self.model, ProgressiveSupernet)
        self.steps = 0
        self.label_smoothing = net["label_smoothing"]
        self.world = distributed.world()
        distributed.global_batch_norm(self.model)
        self.fitness_batches = search["fitness_batches"]
        self.fitness_shared = search["fitness_shared"]
        self.optimizer = torch.optim.SGD(decay_groups(self.model, opt["weight_decay"]), lr=opt["lr"],
                                         momentum=opt["momentum"])
        # Every rank draws the same batches (identical generators): see _batch_loss and score_members.
        self.train = BatchStream(*_on_device(train, "train", device), opt["batch_size"],
                                 make_generator(device, seed + 1), transform=transform)
        self.valid = BatchStream(*_on_device(valid, "valid", device), search["fitness_batch_size"],
                                 make_generator(device, seed + 2), transform=valid_transform)

    def _forward(self, x: torch.Tensor, arch) -> torch.Tensor:
        return _forward(self.model, x, self.device, self.amp, self.memory_format, arch)

    def _loss(self, arch, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean label-smoothed cross entropy (nats) of ``arch`` on one whole batch."""
        return F.cross_entropy(self._forward(x, arch).float(), y, label_smoothing=self.label_smoothing)

    def train_step(self, arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        """One SGD step along ``arch`` on the next training batch; its loss (nats) as a 0-d device tensor."""
        self.model.train()
        set_lr(self.optimizer, lr)
        if self.progressive:
            self.model.set_progress(self.steps)
        self.steps += 1
        x, y = self.train.next()
        # PyTorch 1.x's zero_grad, which the reference ran on, zero-filled gradients: set_to_none=False keeps that,
        # so SGD's momentum and weight decay reach every weight used before, as in the reference (spec §6 item 7).
        self.optimizer.zero_grad(set_to_none=self.path_only)
        loss = _batch_loss(lambda x: self._forward(x, arch), x, y, self.label_smoothing)[0]
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
        """Label-smoothed validation loss (nats) of each arch, shape ``(len(archs),)``, in training mode
        (batch-statistics BN), no gradients.

        Unshared (the paper): each member takes the next ``fitness_batches`` batches of the one fitness stream.
        Shared: all members of the call are scored on the same batches, so each distinct arch is evaluated once.
        """
        self.model.train()
        with torch.inference_mode():
            return score_members(
                archs, self.valid.next,
                lambda arch, batches: torch.stack([self._loss(arch, x, y) for x, y in batches]).mean(),
                self.fitness_batches, self.fitness_shared, self.device)

    def validation_batches(self, n: int, seed: int) -> list:
        """``n`` fixed batches of the valid split (fitness batch size, ``valid_transform`` applied), drawn with their
        own generator: the fitness stream and every other random state are left untouched."""
        stream = BatchStream(self.valid.images, self.valid.labels, self.valid.batch_size,
                             make_generator(self.device, seed), transform=self.valid.transform)
        return [stream.next() for _ in range(n)]

    def score(self, archs: list, batches: list) -> torch.Tensor:
        """Mean label-smoothed loss (nats) of each arch over the same ``batches``, shape ``(len(archs),)`` (as
        ``fitness``: training-mode BN, no gradients); a device tensor, so the caller decides when to synchronise."""
        self.model.train()
        with torch.inference_mode():
            losses = [torch.stack([self._loss(arch, x, y) for x, y in batches]).mean() for arch in archs]
            return torch.stack(losses) if losses else torch.empty(0, device=self.device)

    def describe_scoring(self, n_batches: int) -> str:
        """How ``score`` measures a cell on ``validation_batches(n_batches, seed)``, for the study's captions."""
        sizes = sorted(set(_batch_sizes(len(self.valid.labels), self.valid.batch_size, n_batches)), reverse=True)
        size = " or ".join(map(str, sizes))
        loss = (f"label-smoothed ({self.label_smoothing:g}) cross-entropy" if self.label_smoothing
                else "cross-entropy")
        return (f"{loss} (nats) on {n_batches} batch{'es' if n_batches != 1 else ''} of {size} validation samples "
                f"per cell")

    def state_dict(self) -> dict:
        """Weights, optimiser, data streams, and which weights have been used (they keep zero gradients)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train": self.train.state_dict(), "valid": self.valid.state_dict(), "used": self._used(),
                "steps": self.steps}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        self.model.load_state_dict(state["model"])  # in place (an engine may hold the parameter tensors)
        if weights_only:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.train.load_state_dict(state["train"])
        self.valid.load_state_dict(state["valid"])
        self.steps = state.get("steps", 0)
        self._restore_used(set(state.get("used", ())))

    def _restore_used(self, used: set[str]) -> None:
        """Mark the weights named in ``used`` as used: a zero gradient, so SGD keeps applying momentum and decay."""
        for name, p in self.model.named_parameters():
            p.grad = torch.zeros_like(p) if name in used else None


def require_network(task, network: dict | None) -> dict:
    """``network`` as plain values; SpaceError when it is missing, before any data is loaded or trained."""
    name = type(task).__name__
    if network is None:
        raise SpaceError(f"{name} needs network=: the keywords with which the space's build_network(arch, **network) "
                         f"built this model (see eps/space.py RetrainTask.network_config and examples/tensor_space.py)")
    return plain_values(network, f"{name} network")


class TensorRetrainTask:
    """The standalone network ``model(x) -> logits (B, classes)`` trained from scratch on ``train`` and evaluated on
    ``test`` (``(x, y)`` tensors as for ``TensorSupernetTask``) after every epoch, NB201 protocol: SGD with nesterov,
    cosine lr stepped per iteration to 0, weight decay on every parameter, plain cross entropy (nats).

    ``cfg`` is the space's ``retrain`` section (``TensorRetrainSettings``). ``network``: the keywords with which the
    space's ``build_network(arch, **network)`` built ``model``, saved in ``retrain/model.pt`` so ``eps.load_model``
    rebuilds it; required, or a run would only fail when it writes its model, after training (SpaceError).
    ``transform`` runs on every training batch, ``eval_transform`` on every test batch (with generator None: it must
    be deterministic). ``input_spec`` is saved as the model file's ``input`` (default: kind tensor, shape, dtype).
    Under torchrun each step is that of one process on the whole batch, as in ``TensorSupernetTask``.
    """
    supports_distributed: ClassVar[bool] = True
    honours: ClassVar[frozenset[str]] = ALL_TASK_SETTINGS   # every generic setting a task carries out (eps.space)

    def __init__(self, model: nn.Module, cfg, train, test, device: torch.device, seed: int, *,
                 network: dict | None = None, transform: Transform | None = None,
                 eval_transform: Transform | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format, input_spec: dict | None = None):
        self.network = require_network(self, network)
        self.device, self.cfg = device, cfg
        self.precision = "bf16" if amp_active(device, cfg["amp"]) else "fp32"
        self.memory_format = memory_format
        self.model = model.to(device, memory_format=memory_format)
        distributed.global_batch_norm(self.model)
        self.world = distributed.world()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                         nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])
        train_x, train_y = _on_device(train, "train", device)
        self.test_x, self.test_y = _on_device(test, "test", device)
        self.eval_transform = eval_transform
        self.input_spec = input_spec if input_spec is not None else {
            "kind": "tensor", "shape": list(train_x.shape[1:]), "dtype": str(train_x.dtype).removeprefix("torch.")}
        self.train = BatchStream(train_x, train_y, cfg["batch_size"], make_generator(device, seed + 1),
                                 transform=transform)
        self.steps_per_epoch = self.train.batches_per_pass
        self.total_steps = cfg["epochs"] * self.steps_per_epoch

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self.model, x, self.device, self.cfg["amp"], self.memory_format)

    def train_epoch(self, epoch: int, bar) -> dict:
        """One pass over ``train``: ``train_loss`` (nats, mean over samples) and ``train_acc`` (percent)."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for k in range(self.steps_per_epoch):
            set_lr(self.optimizer, cosine_lr(self.cfg["lr"], epoch * self.steps_per_epoch + k, self.total_steps))
            x, y = self.train.next()
            n = len(y)
            loss, logits, y = _batch_loss(self._forward, x, y, 0.0)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1:
                loss = distributed.sum_gradients(self.model.parameters(), loss)[0]
            self.optimizer.step()
            loss_sum += loss.detach() * n
            correct += (logits.argmax(1) == y).sum()
            seen += n
            bar.advance(1)
        correct = distributed.all_reduce_sum(correct)  # each rank counted its slices
        return {"train_loss": float(loss_sum) / seen, "train_acc": 100.0 * float(correct) / seen}

    @torch.inference_mode()
    def evaluate(self, batch_size: int = 500) -> dict:
        """``test_loss`` (nats, mean over samples) and ``test_acc`` (percent) in eval mode; under torchrun each rank
        evaluates its slice of every batch and the sums are added."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, len(self.test_y), batch_size):
            x, y = distributed.shard(self.test_x[i:i + batch_size], self.test_y[i:i + batch_size])
            if self.eval_transform is not None:
                x = self.eval_transform(x, None)
            logits = self._forward(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = len(self.test_y)
        return {"test_loss": float(distributed.all_reduce_sum(loss_sum)) / n,
                "test_acc": 100.0 * float(distributed.all_reduce_sum(correct)) / n}

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
