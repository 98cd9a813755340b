"""Pieces shared by supernet training and retraining: devices, seeding, optimiser groups, schedules, autocast."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import random

import numpy as np
import torch
import torch.nn as nn


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from eps.errors import ConfigError
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; set device: cpu or auto")
    return torch.device(name)


# Added to the run's seed for each stage, so stages draw independent streams; `eps study` reuses the search's
# offset so its supernets start like `eps stage search` for the same seed.
SEED_OFFSET = {"warmup": 100, "search": 200, "retrain": 300, "score": 300}  # score: the study's fixed batches


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, torch CPU and every CUDA device (spec §6, item 1)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay only on conv/linear weights (>= 2-D parameters named '*weight'), as the reference does."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name.endswith("weight") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_lr(base_lr: float, step: int, total: int) -> float:
    """Cosine annealing to 0: step k of ``total`` (1-based, k = total gives 0)."""
    if total <= 0:
        return base_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total) / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16 (Sapphire Rapids and later, Zen 4+), where oneDNN runs bf16
    convolutions natively; elsewhere bf16 is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def amp_active(device: torch.device, enabled: bool) -> bool:
    """Whether ``amp: true`` takes effect: always on CUDA, on CPU only with native bf16 (else it stays fp32)."""
    return enabled and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where the device computes bf16 natively (see ``amp_active``); a no-op otherwise."""
    if amp_active(device, enabled):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state(device: torch.device) -> dict:
    """Every global generator's full state (Python, NumPy, torch CPU and the CUDA device), for checkpoints."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": keys.tolist(), "numpy_pos": int(pos),
             "numpy_gauss": [int(has_gauss), float(cached)], "python": list(random.getstate()[1]),
             "python_gauss": random.getstate()[2]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore ``rng_state()`` exactly: NumPy's position in its key block and cached Gaussian included (checkpoints
    written before they were saved restore the key block at the start of a new block, as they always did)."""
    torch.set_rng_state(state["torch"])
    has_gauss, cached = state.get("numpy_gauss", (0, 0.0))
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state.get("numpy_pos", 624),
                         int(has_gauss), float(cached)))
    random.setstate((3, tuple(state["python"]), state.get("python_gauss")))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def score_members(archs: list, draw, score, n_batches: int, shared: bool, device: torch.device) -> torch.Tensor:
    """Fitness bookkeeping shared by every supernet task (spec §6 item 3).

    Unshared (the paper): each member draws its own ``n_batches`` with ``draw()``. Shared: one draw for the call, and
    each distinct arch is scored once. ``score(arch, batches)`` returns a device scalar; nothing here syncs the host.

    Under torchrun the members are dealt to the ranks (``distributed.owns``): every rank draws every member's batches,
    so the streams stay identical, but scores only its own, on whole batches; one all-reduce gathers the scores.
    """
    from eps import distributed
    common = [draw() for _ in range(n_batches)] if shared else None
    cache: dict = {}
    losses = []
    for i, arch in enumerate(archs):
        if common is None or arch not in cache:
            batches = common if common is not None else [draw() for _ in range(n_batches)]
            # a member another rank scores counts 0 here; the sum over ranks holds each score once
            cache[arch] = score(arch, batches) if distributed.owns(i) else torch.zeros((), device=device)
        losses.append(cache[arch])
    out = torch.stack(losses).float() if losses else torch.empty(0, device=device)
    return distributed.all_reduce_sum(out) if distributed.world() > 1 and losses else out
