"""Seconds per EPS round at the paper's sizes: 50 supernet steps at batch 128 + 64 fitness forwards at batch 250.

    python -m bench.round --space nb201|darts-cnn|darts-rnn [--device cpu|cuda] [--rounds 2] [--plain] [--amp]
                          [--steps N --members M] [--updates all_used|path_only] [--engine auto|path|graph]
                          [--count-ops]

Uses real batches (CIFAR-10 or PTB from EPS_DATA_DIR) and random architectures from the space's own sampler; the first
round is a warm-up and is not timed. ``--steps``/``--members`` time only part of a round (for the DARTS supernets on a
CPU, where a paper-size round takes many minutes): seconds per round are then projected from the measured rates, and
the JSON says ``"partial": true``. Prints a table and, last, one JSON line.

``--count-ops`` adds the operators dispatched by one training step and per fitness member (``torch.profiler``, after
the warm-up round): ``ops`` = leaf aten operators, ``kernels`` = those that compute (views, reshapes and allocations
left out) plus inductor's fused kernels (each a kernel launch on a GPU unless replayed in a CUDA graph).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from eps.params import data_root, defaults
from eps.spaces import get_space
from eps.train.common import resolve_device, seed_everything


# aten operators that only make views, reshape metadata or allocate: no kernel launch on a GPU
NO_KERNEL = {"aten::view", "aten::reshape", "aten::_reshape_alias", "aten::as_strided", "aten::empty",
             "aten::empty_strided", "aten::empty_like", "aten::t", "aten::transpose", "aten::permute", "aten::expand",
             "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::detach", "aten::alias",
             "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::split", "aten::unbind",
             "aten::chunk", "aten::narrow", "aten::flatten", "aten::unflatten", "aten::_unsafe_view", "aten::set_",
             "aten::result_type", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "aten::numel"}


def dispatch_counts(fn) -> dict:
    """Operators ``fn()`` dispatches: ``ops`` (leaf aten operators) and ``kernels`` (leaf aten operators that compute,
    plus inductor's fused kernels)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = kernels = 0
    for e in prof.events():
        if e.name.startswith("aten::"):
            if not any(c.name.startswith("aten::") for c in e.cpu_children):
                ops += 1
                kernels += e.name not in NO_KERNEL
        elif "cpp_fused" in e.name or e.name.startswith("triton_"):
            kernels += 1
    return {"ops": ops, "kernels": kernels}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds (after one untimed warm-up round)")
    ap.add_argument("--plain", action="store_true", help="reference-like path: NCHW, every edge executed")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU with AMX/AVX512-BF16)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--updates", choices=("all_used", "path_only"), default="all_used",
                    help="supernet.optimizer_updates (image spaces): the reference's (default) or path-only SGD")
    ap.add_argument("--steps", type=int, default=0, help="train steps timed per round (default: val_interval)")
    ap.add_argument("--members", type=int, default=0, help="fitness forwards timed per round (default: group)")
    ap.add_argument("--engine", choices=("auto", "path", "graph"), default="auto", help="supernet.engine (NB201)")
    ap.add_argument("--count-ops", action="store_true", help="operators per training step and per fitness member")
    args = ap.parse_args()
    if args.count_ops:  # inductor's C++ kernels show in the profiler only when built with this
        import os
        os.environ.setdefault("TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    params = defaults()
    section = params[args.space]
    s, net = section["search"], section["supernet"]
    if args.plain:
        net["channels_last"] = False
        if "skip_dead_edges" in net:
            net["skip_dead_edges"] = False
    if "amp" in net:
        net["amp"] = args.amp
    if "optimizer_updates" in net:
        net["optimizer_updates"] = args.updates
    if "engine" in net:
        net["engine"] = args.engine
    seed_everything(0)
    device = resolve_device(args.device)
    space = get_space(args.space, section)
    task = space.search_task(section, data_root(params), device, 0, "search")
    rng = np.random.default_rng(0)
    paper_steps, paper_members = s["val_interval"], s["group"]
    steps, members = args.steps or paper_steps, args.members or paper_members

    def one_round():
        losses = [task.train_step(space.sample(rng), s["lr"]) for _ in range(steps)]
        t_train = time.perf_counter()
        fit = task.fitness([space.sample(rng) for _ in range(members)])
        torch.stack(losses).sum().item(), fit.sum().item()
        return t_train

    one_round()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = fit_s = 0.0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        losses = [task.train_step(space.sample(rng), s["lr"]) for _ in range(steps)]
        torch.stack(losses).sum().item()
        t1 = time.perf_counter()
        task.fitness([space.sample(rng) for _ in range(members)]).sum().item()
        t2 = time.perf_counter()
        train_s += t1 - t0
        fit_s += t2 - t1
    # per round at the paper's sizes, from the measured rates (equal to the measured time when nothing is partial)
    per_round = (train_s * paper_steps / steps + fit_s * paper_members / members) / args.rounds
    rounds_paper = s["iterations"] // paper_steps
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "space": args.space, "device": str(device), "mode": "plain" if args.plain else "fast", "amp": args.amp,
        "optimizer_updates": net.get("optimizer_updates"),
        "threads": torch.get_num_threads(), "partial": (steps, members) != (paper_steps, paper_members),
        "timed_steps": steps * args.rounds, "timed_members": members * args.rounds,
        "seconds_per_round": round(per_round, 3),
        "train_steps_per_s": round(steps * args.rounds / train_s, 2),
        "fitness_forwards_per_s": round(members * args.rounds / fit_s, 2),
        "peak_rss_mb": round(rss_mb, 1), "projected_full_search_h": round(per_round * rounds_paper / 3600, 2),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    out["engine"] = getattr(task, "engine", "path")
    if args.count_ops:
        arch = space.sample(rng)
        out["dispatch_per_train_step"] = dispatch_counts(lambda: task.train_step(arch, s["lr"]).item())
        group = [space.sample(rng) for _ in range(members)]
        fit = dispatch_counts(lambda: task.fitness(group).sum().item())
        out["dispatch_per_fitness_member"] = {k: round(v / members, 1) for k, v in fit.items()}
    for k, v in out.items():
        print(f"{k:>24}: {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
