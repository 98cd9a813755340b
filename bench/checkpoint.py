"""Cost of one search checkpoint at the paper's sizes (NB201 supernet + SGD momentum + controller of 256 members).

    python -m bench.checkpoint [--round-seconds S]

Prints the save time, the file size, and the overhead as a share of the stage time for the default interval
(search.checkpoint_every rounds of --round-seconds each; pass the figure bench.round printed on your machine).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from eps.checkpoint import CheckpointDir
from eps.params import defaults
from eps.evolution import Controller
from eps.spaces import get_space
from eps.train.common import decay_groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--round-seconds", type=float, default=23.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = defaults()
    sec = params["nb201"]
    space = get_space("nb201", sec)
    model = space.build_supernet()
    opt = torch.optim.SGD(decay_groups(model, 4e-5), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3, 32, 32)
    for arch in [space.largest()] + [space.sample(np.random.default_rng(i)) for i in range(20)]:
        torch.nn.functional.cross_entropy(model(x, arch), torch.zeros(8, dtype=torch.long)).backward()
    opt.step()  # momentum buffers exist for every parameter that received a gradient
    ctrl = Controller(space, np.random.default_rng(0))
    state = {"task": {"model": model.state_dict(), "optimizer": opt.state_dict()}, "controller": ctrl.state_dict(),
             "iteration": 1000}
    with tempfile.TemporaryDirectory() as d:
        ckpt = CheckpointDir(d, {"x": 1})
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ckpt.save(state)
            times.append(time.perf_counter() - t0)
        size = ckpt.last.stat().st_size
        t0 = time.perf_counter()
        ckpt.load_latest()
        load_s = time.perf_counter() - t0
    every = sec["search"]["checkpoint_every"]
    save_s = float(np.median(times))
    out = {"save_s": round(save_s, 4), "load_s": round(load_s, 4), "size_mb": round(size / 2**20, 2),
           "checkpoint_every_rounds": every, "round_s": args.round_seconds,
           "overhead_pct": round(100 * save_s / (every * args.round_seconds), 4)}
    for k, v in out.items():
        print(f"{k:>24}: {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
