"""Penn Treebank language modelling for the DARTS RNN space: the supernet search task (spec §3.3-3.5) and the
retraining task with the DARTS/AWD-LSTM protocol (spec §3.6).

Both tasks own all their randomness (sequence lengths from a NumPy Generator, dropout masks and validation column
draws from torch Generators) and put it in ``state_dict``, so an interrupted run resumes exactly. The hot loops do
no host synchronisation beyond what the protocol itself needs (sequence lengths are drawn on the host).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from eps import distributed
from eps.settings import MAX_BATCH, MAX_COUNT, MAX_ITEMS, MAX_STEPS, Number
from eps.data.ptb import batchify, get_batch, load_ptb
from eps.errors import CheckpointError, ConfigError
from eps.retrain import RetrainSettings
from eps.search import SearchSettings, WarmupSettings
from eps.space import ALL_TASK_SETTINGS, SupernetSettings
from eps.train.common import make_generator, score_members, set_lr


class PTBSupernetSettings(SupernetSettings):
    data_subset: int = Field(0, ge=0, le=MAX_ITEMS)     # training tokens used (0 = all of PTB train); for tiny runs


class PTBWarmupSettings(WarmupSettings):
    """The reference has no warm-up: 0 iterations just saves the initialisation."""
    lr: Number = Field(20.0, gt=0)
    momentum: Number = Field(0.0, ge=0, lt=1)
    weight_decay: Number = Field(8e-7, ge=0)


class PTBSearchSettings(SearchSettings):
    """The DARTS RNN search protocol (spec §3.3-3.5)."""
    lr: Number = Field(20.0, gt=0)                      # times seq_len / bptt at every step
    lr_schedule: Literal["cosine", "constant"] = "constant"
    momentum: Number = Field(0.0, ge=0, lt=1)
    weight_decay: Number = Field(8e-7, ge=0)
    bptt: int = Field(35, ge=2, le=MAX_COUNT)                         # the half length must be >= 1
    half_bptt_prob: Number = Field(0.05, ge=0, le=1)    # seq_len = bptt w.p. 0.95, else int(bptt / 2); no jitter
    clip: Number = Field(0.1, gt=0)                     # gradient global norm
    fitness_batch_size: int = Field(256, ge=1, le=MAX_BATCH)          # validation columns per member and batch
    fitness_columns: int = Field(1024, ge=1, le=MAX_COUNT)  # the validation split is cut into this many columns
    rank_min_count: int = Field(1, ge=1, le=MAX_COUNT)
    first_measurement_offset: Number = 0.0

    def problems(self):
        yield from super().problems()
        if self.fitness_batch_size > self.fitness_columns:
            yield "fitness_batch_size", (f"{self.fitness_batch_size} columns per member exceed "
                                         f"search.fitness_columns {self.fitness_columns}")


class PTBRetrainSettings(RetrainSettings):
    """DARTS / AWD-LSTM retraining on PTB (spec §3.6)."""
    epochs: int = Field(3600, ge=1, le=MAX_STEPS)                     # the paper's PTB run; DARTS trained for 8,000
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(10, ge=1, le=MAX_BATCH)
    test_batch_size: int = Field(1, ge=1, le=MAX_BATCH)
    lr: Number = Field(20.0, gt=0)                      # times seq_len / bptt at every step, SGD and ASGD alike
    weight_decay: Number = Field(8e-7, ge=0)
    clip: Number = Field(0.25, gt=0)
    bptt: int = Field(35, ge=2, le=MAX_COUNT)
    half_bptt_prob: Number = Field(0.05, ge=0, le=1)    # base bptt halved, then seq_len = max(min, int(N(base, std)))
    seq_len_std: Number = Field(5.0, ge=0)
    min_seq_len: int = Field(5, ge=1, le=MAX_COUNT)
    max_seq_len_delta: int = Field(20, ge=0, le=MAX_COUNT)            # seq_len capped at bptt + delta
    nonmono: int = Field(5, ge=1, le=MAX_COUNT)  # SGD -> ASGD when validation stops improving (spec §3.6)
    train_subset: int = Field(0, ge=0, le=MAX_ITEMS)  # tokens of each split used (0 = all); for tiny runs
    valid_subset: int = Field(0, ge=0, le=MAX_ITEMS)
    test_subset: int = Field(0, ge=0, le=MAX_ITEMS)
    test_every: int = Field(100, ge=0, le=MAX_STEPS)  # epochs between test evaluations of the best model
    checkpoint_every: int = Field(10, ge=1, le=MAX_STEPS)

    def problems(self):
        for key, batch in (("train_subset", "batch_size"), ("valid_subset", "eval_batch_size"),
                           ("test_subset", "test_batch_size")):
            n, b = getattr(self, key), getattr(self, batch)
            if 0 < n < 3 * b:
                yield key, (f"{n} tokens give fewer than 3 rows of retrain.{batch} {b} columns; "
                            f"use 0 (all) or at least {3 * b}")


def should_switch_to_asgd(val_history, nonmono: int) -> bool:
    """DARTS/AWD-LSTM's switch rule (``train.py:295-297``): ``val_history`` holds the validation losses measured
    under SGD, the current epoch's last. Switch when more than ``nonmono`` losses were recorded before the current
    one and the current loss is worse than the minimum of all of them but the latest ``nonmono``."""
    history = list(val_history)
    if not history:
        return False
    current, before = history[-1], history[:-1]
    return len(before) > nonmono and current > min(before[:-nonmono])


def search_seq_len(rng: np.random.Generator, bptt: int, half_prob: float) -> int:
    """Search stream (spec §3.3): ``bptt`` w.p. 1 - half_prob, else int(bptt / 2); no jitter."""
    return int(bptt if rng.random() >= half_prob else bptt / 2.0)


def retrain_seq_len(rng: np.random.Generator, bptt: int, half_prob: float, std: float, min_len: int,
                    max_delta: int) -> int:
    """Retraining (spec §3.6): base bptt (halved w.p. half_prob), seq_len = max(min_len, int(N(base, std))),
    capped at bptt + max_delta."""
    base = bptt if rng.random() >= half_prob else bptt / 2.0
    return min(max(min_len, int(rng.normal(base, std))), bptt + max_delta)


def _lm_loss(out, targets: torch.Tensor, tar_beta: float, ar_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw mean token NLL, raw + AR + TAR) for one forward."""
    raw = F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)), targets.reshape(-1))
    loss = raw
    if ar_alpha:
        loss = loss + ar_alpha * out.dropped.pow(2).mean()
    if tar_beta and out.raw.size(0) > 1:
        loss = loss + tar_beta * (out.raw[1:] - out.raw[:-1]).pow(2).mean()
    return raw, loss


def _gen_state(g: torch.Generator) -> torch.Tensor:
    return g.get_state()


def _sum_nll(model, data: torch.Tensor, bptt: int, run) -> torch.Tensor:
    """Summed token NLL over ``data`` [rows, columns] in chunks of ``bptt`` from a zero state (eval mode)."""
    total = torch.zeros((), device=data.device)
    hidden = None
    for i in range(0, data.size(0) - 1, bptt):
        x, y = get_batch(data, i, bptt)
        out = run(x, hidden)
        total = total + F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)), y.reshape(-1),
                                        reduction="sum")
        hidden = out.hidden
    return total


class PTBSearchTask:
    """Supernet training stream and fitness on PTB (spec §3.3-3.5, §6 items 3 and 6).

    ``stage`` selects the optimiser/batch section (``warmup`` or ``search``); the fitness options always come from
    ``search``. The training stream: 128 columns, position = running sum of sequence lengths modulo (rows - 2),
    lr x seq_len / bptt, clipping, SGD. The hidden state is carried between steps and reset to zero when the read
    position is 0 and, unless ``space.reference_hidden_state``, whenever the architecture changes.
    """
    # Under torchrun the fitness members are dealt to the ranks; training runs whole on every rank (a recurrent
    # stream of 128 columns does not split without changing the hidden-state semantics).
    supports_distributed = True
    honours = ALL_TASK_SETTINGS

    def __init__(self, space, section: dict, stage: str, data_root, device: torch.device, seed: int):
        self.device = device
        sp, st, s = section["space"], section[stage], section["search"]
        corpus = load_ptb(data_root)
        subset = section["supernet"]["data_subset"]
        train = corpus.train[:subset] if subset else corpus.train
        self.train_data = batchify(train, st["batch_size"]).to(device)
        if self.train_data.size(0) < 3:
            raise ConfigError(f"darts-rnn.supernet.data_subset: {len(train)} tokens give "
                              f"{self.train_data.size(0)} rows of {st['batch_size']} columns; at least 3 are needed")
        self.valid_data = batchify(corpus.valid, s["fitness_columns"]).to(device)
        if self.valid_data.size(0) < 2:
            raise ConfigError(f"darts-rnn.search.fitness_columns: {s['fitness_columns']} columns leave fewer than "
                              f"2 validation tokens per column")
        self.model = space.build_supernet(num_classes=len(corpus)).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=st["lr"], momentum=st["momentum"],
                                         weight_decay=st["weight_decay"])
        self.bptt, self.half_prob, self.clip = s["bptt"], s["half_bptt_prob"], s["clip"]
        self.tar_beta, self.ar_alpha = sp["tar_beta"], sp["ar_alpha"]
        self.reference_hidden = sp["reference_hidden_state"]
        self.fitness_columns, self.fitness_batches = s["fitness_batch_size"], s["fitness_batches"]
        self.fitness_shared = s["fitness_shared"]
        self.len_rng = np.random.default_rng([seed, 31])
        self.mask_gen = make_generator(device, seed + 32)
        self.column_gen = make_generator(device, seed + 33)
        self.steps = 0                # running sum of sequence lengths (the reference's `steps`)
        self.hidden: torch.Tensor | None = None
        self.prev_arch = None

    def train_step(self, arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        self.model.train()
        seq_len = search_seq_len(self.len_rng, self.bptt, self.half_prob)
        rows = self.train_data.size(0)
        position = self.steps % (rows - 2)
        if self.hidden is None or position == 0 or (not self.reference_hidden and arch != self.prev_arch):
            self.hidden = self.model.init_hidden(self.train_data.size(1))
        x, y = get_batch(self.train_data, position, seq_len)
        set_lr(self.optimizer, lr * seq_len / self.bptt)
        out = self.model(x, arch, self.hidden, generator=self.mask_gen)
        raw, loss = _lm_loss(out, y, self.tar_beta, self.ar_alpha)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.hidden = out.hidden.detach()
        self.steps += seq_len
        self.prev_arch = arch
        if skip_nonfinite and not torch.isfinite(loss):  # a host sync per step, paid only in skip mode
            self.optimizer.zero_grad(set_to_none=True)
            self.hidden = None
            return raw.detach()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return raw.detach()

    def _columns(self) -> torch.Tensor:
        n = self.valid_data.size(1)
        cols = torch.randperm(n, device=self.device, generator=self.column_gen)[: self.fitness_columns]
        return self.valid_data.index_select(1, cols)

    def fitness(self, archs: list) -> torch.Tensor:
        """Mean validation token NLL of each arch (spec §3.5), eval mode, zero state, chunks of ``bptt`` (35, 35, 1
        for 72-token columns). Unshared (the paper): each member draws its own columns; shared: one draw per call
        and each distinct arch is evaluated once."""
        self.model.eval()
        rows = self.valid_data.size(0)
        per_batch = (rows - 1) * self.fitness_columns
        with torch.inference_mode():
            losses = score_members(
                archs, self._columns,
                lambda arch, batches: sum(_sum_nll(self.model, data, self.bptt, lambda x, h: self.model(x, arch, h))
                                          for data in batches) / (per_batch * len(batches)),
                self.fitness_batches, self.fitness_shared, self.device)
        self.model.train()
        return losses

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "steps": self.steps, "hidden": None if self.hidden is None else self.hidden.cpu(),
                "prev_arch": None if self.prev_arch is None else [list(n) for n in self.prev_arch],
                "len_rng": self.len_rng.bit_generator.state, "mask_gen": _gen_state(self.mask_gen),
                "column_gen": _gen_state(self.column_gen)}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        self.model.load_state_dict(state["model"])
        if weights_only:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]
        self.hidden = None if state["hidden"] is None else state["hidden"].to(self.device)
        self.prev_arch = None if state["prev_arch"] is None else tuple(tuple(n) for n in state["prev_arch"])
        self.len_rng.bit_generator.state = state["len_rng"]
        self.mask_gen.set_state(state["mask_gen"])
        self.column_gen.set_state(state["column_gen"])


class PTBRetrainTask:
    """The DARTS RNN retraining protocol (spec §3.6) for ``run_retrain``.

    Per epoch: the state starts at zero, the training stream is read front to back in steps of variable length,
    each step at lr x seq_len / bptt with clipping; then validation (batch ``eval_batch_size``; averaged weights
    under ASGD). The best-validation weights are kept; their test perplexity (batch ``test_batch_size``) is
    measured at epoch 1, every ``test_every`` epochs and at the last epoch, and only when the best model changed.
    SGD switches for good to ASGD (t0 = 0, lambda = 0) when ``should_switch_to_asgd``. After the last epoch the
    best weights are loaded into ``model``, so the saved model is the one the test number belongs to.
    """

    precision = "fp32"
    # Under torchrun: data parallel over the training columns (each rank trains ``batch_size / N`` of them with its
    # own dropout masks; gradients are averaged before clipping, so every rank takes the same step); validation and
    # test run whole on every rank, so the ASGD switch and the best model are decided alike everywhere.
    supports_distributed = True
    honours = ALL_TASK_SETTINGS

    def __init__(self, space, arch, section: dict, data_root, device: torch.device, seed: int):
        self.device = device
        self.cfg = cfg = section["retrain"]
        sp = section["space"]
        self.rank, self.world = distributed.rank(), distributed.world()
        if cfg["batch_size"] % self.world:
            raise ConfigError(f"darts-rnn.retrain.batch_size {cfg['batch_size']} is the global number of columns and "
                              f"must be divisible by the {self.world} processes of this run")
        corpus = load_ptb(data_root)

        def split(tokens, subset, columns, name):
            tokens = tokens[:subset] if subset else tokens
            data = batchify(tokens, columns)
            if data.size(0) < 3:
                raise ConfigError(f"darts-rnn.retrain.{name}: {len(tokens)} tokens give {data.size(0)} rows of "
                                  f"{columns} columns; at least 3 are needed")
            return data.to(device)

        self.train_data = split(corpus.train, cfg["train_subset"], cfg["batch_size"], "train_subset")
        if self.world > 1:  # this rank's columns of the global batch
            per = cfg["batch_size"] // self.world
            self.train_data = self.train_data[:, self.rank * per:(self.rank + 1) * per].contiguous()
        self.valid_data = split(corpus.valid, cfg["valid_subset"], cfg["eval_batch_size"], "valid_subset")
        self.test_data = split(corpus.test, cfg["test_subset"], cfg["test_batch_size"], "test_subset")
        self.network = space.network_options(num_classes=len(corpus))
        self.model = space.build_network(arch, **self.network).to(device)
        self.tar_beta, self.ar_alpha = sp["tar_beta"], sp["ar_alpha"]
        self.optimizer = self._sgd()
        self.asgd = False
        self.len_rng = np.random.default_rng([seed, 41])
        # one process: the reference's seed; several: a stream of masks per rank, as each trains its own columns
        self.mask_gen = make_generator(device, seed + 42 if self.world == 1 else seed * 1000 + 42 + self.rank)
        self.val_history: list[float] = []      # validation losses under SGD (the switch rule's input)
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.test_loss = math.nan
        self.test_model_epoch = 0
        self.epoch = 0
        mean_len = (1 - cfg["half_bptt_prob"]) * cfg["bptt"] + cfg["half_bptt_prob"] * cfg["bptt"] / 2
        self.steps_per_epoch = max(1, math.ceil((self.train_data.size(0) - 2) / mean_len))  # an estimate: lengths vary

    @property
    def network_config(self) -> dict:
        """The ``build_network`` keywords of ``model`` (vocabulary, hidden size, dropouts, init range)."""
        return dict(self.network)

    def _sgd(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])

    def _asgd(self):
        return torch.optim.ASGD(self.model.parameters(), lr=self.cfg["lr"], t0=0, lambd=0.0,
                                weight_decay=self.cfg["weight_decay"], capturable=self.device.type == "cuda")

    def train_epoch(self, epoch: int, bar) -> dict:
        cfg = self.cfg
        self.epoch = epoch
        self.model.train()
        rows = self.train_data.size(0)
        hidden = None
        nll_sum = torch.zeros((), device=self.device)
        tokens, steps, i = 0, 0, 0
        while i < rows - 2:
            seq_len = retrain_seq_len(self.len_rng, cfg["bptt"], cfg["half_bptt_prob"], cfg["seq_len_std"],
                                      cfg["min_seq_len"], cfg["max_seq_len_delta"])
            x, y = get_batch(self.train_data, i, seq_len)
            out = self.model(x, hidden, generator=self.mask_gen)
            raw, loss = _lm_loss(out, y, self.tar_beta, self.ar_alpha)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1:  # equal columns per rank: the mean of the ranks' gradients is the global batch's
                distributed.sum_gradients(self.model.parameters())
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.grad.div_(self.world)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg["clip"])
            set_lr(self.optimizer, cfg["lr"] * seq_len / cfg["bptt"])
            self.optimizer.step()
            hidden = out.hidden.detach()
            nll_sum += raw.detach() * y.numel()
            tokens += y.numel()
            i += seq_len
            steps += 1
            if steps <= self.steps_per_epoch:
                bar.advance(1)
        if steps < self.steps_per_epoch:
            bar.advance(self.steps_per_epoch - steps)
        if self.world > 1:
            nll_sum, tokens = distributed.all_reduce_sum(torch.stack([nll_sum.double(), nll_sum.new_tensor(
                tokens, dtype=torch.float64)])).tolist()
        train_loss = float(nll_sum) / tokens
        return {"train_loss": train_loss, "train_ppl": _ppl(train_loss), "steps": steps, "asgd": int(self.asgd)}

    @torch.inference_mode()
    def _mean_nll(self, data: torch.Tensor) -> float:
        self.model.eval()
        total = _sum_nll(self.model, data, self.cfg["bptt"], lambda x, h: self.model(x, h))
        self.model.train()
        return float(total) / ((data.size(0) - 1) * data.size(1))

    def _swap_in(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Load ``tensors`` into the parameters (same order); returns the previous values."""
        saved = []
        with torch.no_grad():
            for p, t in zip(self.model.parameters(), tensors):
                saved.append(p.detach().clone())
                p.copy_(t)
        return saved

    def _averaged(self) -> list[torch.Tensor]:
        return [self.optimizer.state[p]["ax"] if "ax" in self.optimizer.state[p] else p.detach()
                for p in self.model.parameters()]

    def evaluate(self) -> dict:
        cfg, epoch = self.cfg, self.epoch + 1
        if self.asgd:
            saved = self._swap_in(self._averaged())
            val_loss = self._mean_nll(self.valid_data)
            current = [p.detach().clone() for p in self.model.parameters()]
            self._swap_in(saved)
        else:
            val_loss = self._mean_nll(self.valid_data)
            current = [p.detach().clone() for p in self.model.parameters()]
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_state = val_loss, epoch, current
        if not self.asgd:
            self.val_history.append(val_loss)
            if should_switch_to_asgd(self.val_history, cfg["nonmono"]):
                self.optimizer, self.asgd = self._asgd(), True
        last = epoch == cfg["epochs"]
        due = epoch == 1 or last or (cfg["test_every"] and epoch % cfg["test_every"] == 0)
        if due and self.best_state is not None and self.test_model_epoch != self.best_epoch:
            saved = self._swap_in(self.best_state)
            self.test_loss = self._mean_nll(self.test_data)
            self.test_model_epoch = self.best_epoch
            self._swap_in(saved)
        if last and self.best_state is not None:
            self._swap_in(self.best_state)   # the saved model is the best-validation one
        return {"valid_loss": val_loss, "valid_ppl": _ppl(val_loss), "best_valid_ppl": _ppl(self.best_loss),
                "best_epoch": self.best_epoch, "test_loss": self.test_loss, "test_ppl": _ppl(self.test_loss),
                "test_model_epoch": self.test_model_epoch}

    def state_dict(self) -> dict:
        """Called on every rank under torchrun (it gathers each rank's dropout generator); rank 0 writes it."""
        masks = _gen_state(self.mask_gen)
        if self.world > 1:
            masks = distributed.all_gather_object(masks)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "asgd": self.asgd,
                "len_rng": self.len_rng.bit_generator.state, "mask_gen": masks,
                "val_history": list(self.val_history), "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "best_state": None if self.best_state is None else [t.cpu() for t in self.best_state],
                "test_loss": self.test_loss, "test_model_epoch": self.test_model_epoch, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.asgd = state["asgd"]
        self.optimizer = self._asgd() if self.asgd else self._sgd()
        self.optimizer.load_state_dict(state["optimizer"])
        self.len_rng.bit_generator.state = state["len_rng"]
        masks = state["mask_gen"]
        if isinstance(masks, list) != (self.world > 1) or (self.world > 1 and len(masks) != self.world):
            raise CheckpointError(f"the checkpoint was made with another number of processes than {self.world}; "
                                  f"rerun with --restart")
        self.mask_gen.set_state(masks[self.rank] if self.world > 1 else masks)
        self.val_history = list(state["val_history"])
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
        self.best_state = None if state["best_state"] is None else [t.to(self.device) for t in state["best_state"]]
        self.test_loss, self.test_model_epoch = state["test_loss"], state["test_model_epoch"]
        self.epoch = state["epoch"]


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
