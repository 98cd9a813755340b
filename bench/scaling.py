"""Search throughput with 1 and N processes under torchrun (data parallel search, docs/tutorials/torchrun.md).

    python -m bench.scaling --space nb201 [--procs 1,2] [--threads 1] [--rounds 3] [--device cpu|cuda]
                            [--set search.batch_size=256 ...]

Runs the real `eps stage search` once per process count, through `torchrun --standalone --nproc_per_node N`, on the
paper's round (50 steps at batch 128, 64 fitness forwards at batch 250; no warm-up) for ``--rounds`` rounds, and reads
the search's own timing (``timing.json``: the loop only, not start-up). Each process gets ``--threads`` OpenMP threads;
on a GPU machine each process takes one GPU (NCCL). Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def _set(cfg: dict, dotted: str, value) -> None:
    *head, leaf = dotted.split(".")
    for key in head:
        cfg = cfg.setdefault(key, {})
    cfg[leaf] = value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--procs", default="1,2", help="comma-separated process counts")
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads per process")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params key of the space's section, e.g. search.batch_size=256 (YAML value)")
    args = ap.parse_args()
    space = args.space
    torchrun = Path(sys.executable).parent / "torchrun"
    eps = Path(sys.executable).parent / "eps"
    cfg = {"seed": 0, "device": args.device, "spaces": [space], space: {"warmup": {"iterations": 0}, "search": {}}}
    search = cfg[space]["search"]
    interval = 50
    search.update(iterations=args.rounds * interval, val_interval=interval, checkpoint_every=10**6)
    for item in args.set:
        key, _, value = item.partition("=")
        _set(cfg[space], key, yaml.safe_load(value))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(yaml.safe_dump(cfg))
        for n in [int(x) for x in args.procs.split(",")]:
            out = Path(tmp) / f"p{n}"
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "EPS_PROGRESS": "0"}
            cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(n), "--no-python", str(eps), "stage",
                   "search", "--space", space, "--params", str(params), "--out", str(out)]
            start = time.monotonic()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.monotonic() - start
            if proc.returncode:
                sys.exit(f"error: {n} process(es) failed:\n{proc.stderr[-2000:]}")
            timing = json.loads((out / space / "search" / "timing.json").read_text())
            rows.append({"procs": n, "threads_per_proc": args.threads, "seconds_per_round": timing["seconds_per_round"],
                         "rounds_per_second": 1.0 / timing["seconds_per_round"], "wall_with_startup_s": wall})
            shutil.rmtree(out, ignore_errors=True)
    base = rows[0]["rounds_per_second"]
    print(f"{'procs':>5} {'threads/proc':>12} {'s/round':>9} {'rounds/s':>9} {'speed-up':>8} {'efficiency':>10}")
    for r in rows:
        r["speedup"] = r["rounds_per_second"] / base
        r["efficiency"] = r["speedup"] / (r["procs"] / rows[0]["procs"])
        print(f"{r['procs']:>5} {r['threads_per_proc']:>12} {r['seconds_per_round']:>9.2f} "
              f"{r['rounds_per_second']:>9.4f} {r['speedup']:>8.2f} {r['efficiency']:>10.0%}")
    print(json.dumps({"bench": "scaling", "space": space, "device": args.device, "rounds": args.rounds,
                      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
