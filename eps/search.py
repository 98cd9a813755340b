"""The two supernet-training loops: uniform warm-up and the EPS search (spec §1.4-1.6, pseudo-code §1.9).

Both are space-agnostic: a ``SupernetTask`` trains one path per step and scores paths; the ``Controller`` decides
which. State is checkpointed at round boundaries together with the byte length of the snapshot history, so a killed
run resumes exactly where its last checkpoint left it and writes the same history as an uninterrupted run.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field

from eps import distributed, signals
from eps.checkpoint import CheckpointDir
from eps.settings import Number, Settings, as_settings
from eps.errors import CheckpointError, NumericalError
from eps.evolution import Controller, ControllerSettings
from eps.io import AppendLog
from eps.progress import progress_bar
from eps.train.common import cosine_lr, rng_state, set_rng_state

if TYPE_CHECKING:
    from eps.space import SearchSpace, SupernetTask


class OptimizerSettings(Settings):
    """SGD of the supernet in one stage (the task builds the optimiser from these)."""
    batch_size: int = Field(128, ge=1)
    lr: Number = Field(0.1, gt=0)
    momentum: Number = Field(0.9, ge=0, lt=1)
    weight_decay: Number = Field(4e-5, ge=0)


class WarmupSettings(OptimizerSettings):
    """Uniform warm-up before the search (``run_warmup``): constant lr. 0 iterations = no warm-up (the search
    starts from the supernet's initialisation; no warm-up artifact is needed)."""
    iterations: int = Field(0, ge=0)
    checkpoint_every: int = Field(1000, ge=1)   # iterations


class SearchSettings(ControllerSettings, OptimizerSettings):
    """The EPS search loop (``run_search``, spec §1.4-1.6): budget, round length, lr schedule, fitness batches,
    checkpoints. The controller's keys come from ``ControllerSettings``."""
    iterations: int = Field(80000, ge=0)
    val_interval: int = Field(50, ge=1)          # training steps per round
    # Steps of the first round (0 = val_interval). The DARTS RNN reference measures fitness first after 51
    # batches, then every 50 (spec §3.5): 51 reproduces that.
    first_round_steps: int = Field(0, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    fitness_batch_size: int = Field(250, ge=1)
    fitness_batches: int = Field(1, ge=1)        # batches per member and measurement (spec §6 item 3)
    fitness_shared: bool = False                 # true: all members of a round are scored on the same batches
    on_nonfinite: Literal["stop", "skip"] = "stop"
    checkpoint_every: int = Field(20, ge=1)      # rounds

    def problems(self):
        yield from super().problems()
        if self.first_round_steps > self.iterations > 0:
            yield "first_round_steps", (f"{self.first_round_steps} is more than search.iterations "
                                        f"{self.iterations}: no round would end")


@runtime_checkable
class StatefulHook(Protocol):
    """An ``on_round`` callback whose state is checkpointed with the search (e.g. the study's tau tracker)."""

    def __call__(self, t: int) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _restore(ckpt: CheckpointDir, apply) -> None:
    """Apply a loaded checkpoint state; a state that passed the checks but still does not fit ends as one line."""
    try:
        apply()
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"the checkpoint in {ckpt.dir} cannot be restored ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); rerun with --restart to start afresh") from None


@dataclass
class LoopResult:
    iterations: int
    seconds: float
    resumed_from: int
    last_train_loss: float
    nonfinite_skipped: int
    rounds: int = 0    # search rounds trained (one snapshot each); 0 for the warm-up


def _finite(x: float) -> float | None:
    """JSON has no NaN: a statistic that does not exist (every step skipped) is written as null."""
    return x if math.isfinite(x) else None


def _check_finite(values: torch.Tensor, what: str, where) -> None:
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        it, arch = where(int(bad[0]))
        raise NumericalError(f"non-finite {what} at iteration {it} on cell {arch}; the last good checkpoint is kept; "
                             f"lower the lr, or set on_nonfinite: skip to skip such steps")


def run_warmup(space: SearchSpace, task: SupernetTask, cfg: WarmupSettings, seed: int, ckpt: CheckpointDir,
               restart: bool = False, on_nonfinite: str = "stop", on_chunk=()) -> LoopResult:
    """``cfg.iterations`` steps at constant lr, each along a uniformly random path of the whole space (spec §1.4).
    Each of ``on_chunk`` receives ``{"iteration": t, "train_loss": nats}`` after every ``cfg.checkpoint_every``
    steps."""
    cfg = as_settings(cfg, WarmupSettings)
    total, every = cfg.iterations, cfg.checkpoint_every
    rng = np.random.default_rng([seed, 1])
    # What a usable checkpoint must hold: one that lacks any of it is treated like a corrupt one (prev.pt is tried).
    template = {"task": task.state_dict(), "rng": {}, "global_rng": {}, "iteration": 0}
    # under torchrun rank 0 reads the checkpoint and every rank restores the same state; only rank 0 writes
    state = distributed.on_main(lambda: ckpt.load_latest(restart, template=template))
    t = 0
    if state is not None:
        def apply():
            task.load_state_dict(state["task"])
            rng.bit_generator.state = state["rng"]
            set_rng_state(state["global_rng"], task.device)
        _restore(ckpt, apply)
        t = state["iteration"]
        ckpt.log(f"warmup: resumed from iteration {t} ({ckpt.dir})")
    # The wall time of the sessions before a resume travels in the checkpoint, so the total is reported.
    before = float(state.get("elapsed", 0.0)) if state is not None else 0.0
    start, resumed_from = time.monotonic(), t
    # Kept in the checkpoint so a run resumed from any checkpoint reports what an uninterrupted run reports.
    skipped = state.get("nonfinite_skipped", 0) if state is not None else 0
    last = torch.tensor(state.get("last_train_loss", float("nan")) if state is not None else float("nan"))
    with progress_bar("warmup", total, t) as bar:
        while t < total:
            n = min(every, total - t)
            archs = [space.sample(rng) for _ in range(n)]
            losses = torch.stack([task.train_step(a, cfg.lr, skip_nonfinite=on_nonfinite == "skip")
                                  for a in archs]).cpu()
            if on_nonfinite == "stop":
                _check_finite(losses, "training loss", lambda k: (t + k + 1, space.encode(archs[k])))
            skipped += int((~torch.isfinite(losses)).sum())
            t += n
            last = losses[-1]
            if distributed.is_main():
                ckpt.save({"task": task.state_dict(), "rng": rng.bit_generator.state,
                           "global_rng": rng_state(task.device), "iteration": t, "nonfinite_skipped": skipped,
                           "last_train_loss": float(last), "elapsed": before + time.monotonic() - start})
            bar.advance(n, f"loss {float(last):.3f}")
            for cb in on_chunk:
                cb({"iteration": t, "train_loss": float(last)})
    return LoopResult(t, before + time.monotonic() - start, resumed_from, float(last), skipped)


def run_search(space: SearchSpace, task: SupernetTask, controller: Controller, cfg: SearchSettings, history: AppendLog,
               ckpt: CheckpointDir,
               warm_state: dict | None = None, restart: bool = False, on_round=None) -> LoopResult:
    """The EPS loop. ``history`` receives one record per round, written when the round ends: the population
    snapshot (``Controller.snapshot``: iteration, arch, loss, count, age) plus ``round``, the round's statistics
    (``train_loss``: mean over its steps, nats; ``lr`` of its last step; ``fitness_best``/``fitness_mean``: the
    validation loss of the members measured, nats; ``measured``: how many). With 0 iterations it holds one snapshot
    of the initial population.

    ``on_round(t)``, when given, is called after every round (``t`` = iterations done, the round's fitness recorded)
    and before that round's checkpoint. If it is a ``StatefulHook``, its state is saved in every checkpoint and
    restored on resume, so what it records survives an interruption.
    """
    hook_state = isinstance(on_round, StatefulHook)
    cfg = as_settings(cfg, SearchSettings)
    total, interval = cfg.iterations, cfg.val_interval
    every, base_lr = cfg.checkpoint_every, cfg.lr
    skip = cfg.on_nonfinite == "skip"
    cosine = cfg.lr_schedule == "cosine"
    # A usable checkpoint holds all of this and belongs to the history file beside it (its length and content up to
    # the recorded length); one that does not is treated like a corrupt one: the previous checkpoint is tried, and
    # without any the run stops (--restart starts afresh). The history is never extended to a longer recorded length.
    template = {"task": task.state_dict(), "controller": controller.state_dict(), "global_rng": {},
                "history_bytes": 0, "iteration": 0, "nonfinite_skipped": 0}
    state = distributed.on_main(lambda: ckpt.load_latest(
        restart, template=template, check=lambda s: history.verify(s["history_bytes"], s.get("history_sha"))))
    t, skipped = 0, 0
    if state is not None:
        def apply():
            task.load_state_dict(state["task"])
            controller.load_state_dict(state["controller"])
            set_rng_state(state["global_rng"], task.device)
            if hook_state and "on_round" in state:
                on_round.load_state_dict(state["on_round"])
        _restore(ckpt, apply)
        history.truncate(state["history_bytes"])
        t, skipped = state["iteration"], state["nonfinite_skipped"]
        ckpt.log(f"search: resumed from iteration {t} ({ckpt.dir})")
        if t > 0 and not state.get("snapshot_at_round_end"):
            # a checkpoint of eps <= 0.1 (snapshots were written at the next round's start): write the one it lacks
            history.append(controller.snapshot(t))
    else:
        history.truncate(0)
        if warm_state is not None:
            task.load_state_dict(warm_state, weights_only=True)
    first = cfg.first_round_steps or interval
    before = float(state.get("elapsed", 0.0)) if state is not None else 0.0
    start, resumed_from = time.monotonic(), t
    rounds_done = 0 if t == 0 else 1 + (t - first) // interval
    # Kept in the checkpoint so that a run resumed from its final checkpoint reports the same last loss.
    last = float(state.get("last_train_loss", float("nan"))) if state is not None else float("nan")

    def save():
        if not distributed.is_main():  # the other ranks hold the same state; rank 0 writes it
            return
        n_bytes = history.commit()
        payload = {"task": task.state_dict(), "controller": controller.state_dict(),
                   "global_rng": rng_state(task.device), "history_bytes": n_bytes, "history_sha": history.digest(),
                   "iteration": t, "nonfinite_skipped": skipped, "last_train_loss": last,
                   "snapshot_at_round_end": True, "elapsed": before + time.monotonic() - start}
        if hook_state:
            payload["on_round"] = on_round.state_dict()
        ckpt.save(payload)

    # A SIGTERM (one process) is taken at the end of the round: checkpointed there, then raised as Terminated.
    with progress_bar(f"search ({controller.strategy})", total, t) as bar, \
            signals.deferred(distributed.world() == 1):
        while t < total:
            if t > 0:
                controller.evolve()
            n = min(first if t == 0 else interval, total - t)
            archs, losses = [], []
            lr = base_lr
            for k in range(n):
                lr = cosine_lr(base_lr, t + k + 1, total) if cosine else base_lr
                arch = controller.next_train_arch()
                archs.append(arch)
                losses.append(task.train_step(arch, lr, skip_nonfinite=skip))
            measured = controller.to_measure()
            fitness = task.fitness([controller.population[i].arch for i in measured])
            # The round's only host synchronisation: train losses and fitness in one transfer.
            both = torch.cat([torch.stack(losses).float(), fitness.float()]).cpu()
            train_l, fit = both[:n], both[n:]
            if skip:
                skipped += int((~torch.isfinite(both)).sum())
                keep = [k for k in range(len(measured)) if math.isfinite(float(fit[k]))]
                measured, fit = [measured[k] for k in keep], fit[keep]
            else:
                _check_finite(train_l, "training loss", lambda k: (t + k + 1, space.encode(archs[k])))
                _check_finite(fit, "fitness loss",
                              lambda k: (t + n, space.encode(controller.population[measured[k]].arch)))
            controller.record_fitness(measured, fit.tolist())
            t += n
            rounds_done += 1
            last = float(train_l[torch.isfinite(train_l)].mean()) if torch.isfinite(train_l).any() else float("nan")
            history.append({**controller.snapshot(t), "round": {
                "train_loss": _finite(last), "lr": lr,
                "fitness_best": float(fit.min()) if len(fit) else None,
                "fitness_mean": float(fit.mean()) if len(fit) else None, "measured": len(measured)}})
            if on_round is not None:
                on_round(t)
            if rounds_done % every == 0 or t >= total or signals.pending():
                save()
            bar.advance(n, f"train loss {last:.3f}  best fitness {float(fit.min()) if len(fit) else float('nan'):.3f}")
            signals.stop(f"search checkpointed at iteration {t} of {total}")
    if total == 0:  # no round: the history still shows the population the search started from
        history.append(controller.snapshot(0))
    history.commit()
    return LoopResult(t, before + time.monotonic() - start, resumed_from, last, skipped, rounds_done)
