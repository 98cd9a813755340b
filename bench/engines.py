"""The two NB201 supernet engines timed side by side in one process, at the paper's sizes (C=16, N=5, batch 128 train,
batch 250 fitness).

    python -m bench.engines [--device cpu|cuda] [--rounds 2] [--steps 10] [--members 8] [--amp]

Both engines are built from the same params and seed; each timed round runs the same ``--steps`` training steps (the
same sampled paths) and scores the same ``--members`` architectures on each engine, alternating path, graph, path,
graph..., so a machine shared with other work slows both alike and their ratio stays meaningful where absolute
seconds do not. The first round of each engine is untimed (the graph engine compiles its step and its fitness
function there; the compile time is printed). Seconds per paper round are projected from the measured rates (50
steps + 64 members), as ``bench.round`` does with ``--steps/--members``. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from eps.params import data_root, defaults
from eps.spaces import get_space
from eps.train.common import resolve_device, seed_everything


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per engine (after one untimed round)")
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed round")
    ap.add_argument("--members", type=int, default=8, help="fitness members per timed round")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    args = ap.parse_args()
    device = resolve_device(args.device)
    params = defaults()
    section = params["nb201"]
    s = section["search"]
    tasks, space = {}, None
    for engine in ("path", "graph"):
        section["supernet"]["engine"] = engine
        section["supernet"]["amp"] = args.amp
        seed_everything(0)
        space = get_space("nb201", section)
        tasks[engine] = space.search_task(section, data_root(params), device, 0, "search")
    rng = np.random.default_rng(0)
    timed = {e: {"train": 0.0, "fitness": 0.0} for e in tasks}
    compile_s = {}
    for r in range(args.rounds + 1):
        paths = [space.sample(rng) for _ in range(args.steps)]
        group = [space.sample(rng) for _ in range(args.members)]
        for engine, task in tasks.items():
            _sync(device)
            t0 = time.perf_counter()
            torch.stack([task.train_step(a, s["lr"]) for a in paths]).sum().item()
            t1 = time.perf_counter()
            task.fitness(group).sum().item()
            t2 = time.perf_counter()
            if r == 0:
                compile_s[engine] = round(t2 - t0, 1)
            else:
                timed[engine]["train"] += t1 - t0
                timed[engine]["fitness"] += t2 - t1
    paper_steps, paper_members = s["val_interval"], s["group"]
    out = {"device": str(device), "amp": args.amp, "threads": torch.get_num_threads(),
           "timed_steps": args.steps * args.rounds, "timed_members": args.members * args.rounds,
           "load_average": [round(x, 2) for x in os.getloadavg()], "first_round_s": compile_s}
    for engine, t in timed.items():
        step = t["train"] / (args.steps * args.rounds)
        member = t["fitness"] / (args.members * args.rounds)
        out[engine] = {"s_per_step": round(step, 4), "s_per_member": round(member, 4),
                       "s_per_round": round(step * paper_steps + member * paper_members, 2)}
    out["graph_over_path"] = round(out["graph"]["s_per_round"] / out["path"]["s_per_round"], 2)
    print(f"{'engine':>8} {'s/step':>8} {'s/member':>9} {'s/round (projected)':>20} {'first round s':>14}")
    for engine in tasks:
        e = out[engine]
        print(f"{engine:>8} {e['s_per_step']:>8} {e['s_per_member']:>9} {e['s_per_round']:>20} "
              f"{compile_s[engine]:>14}")
    print(f"graph / path: {out['graph_over_path']}x per round")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
