"""A small EPS run on NAS-Bench-201 through the Python API: search -> select -> retrain, with a callback per round.

    EPS_DATA_DIR=/path/to/data python examples/api_search.py [--run-dir runs-api]

With ``--run-dir`` every stage checkpoints there, and running the script again after an interruption resumes where
it stopped; without it everything stays in memory. Tiny sizes (4 channels, 60 search iterations, 200 images per
half of the split): about a minute on a laptop CPU, and not a meaningful search; drop the overrides for the paper's
protocol.
"""
from __future__ import annotations

import argparse

import eps

TINY = {"nb201": {
    "space": {"channels": 4, "cells_per_stage": 1},
    "warmup": {"iterations": 4, "batch_size": 16},
    "supernet": {"data_subset": 200},
    "search": {"iterations": 60, "val_interval": 10, "population": 8, "group": 4, "parents": 2, "batch_size": 16,
               "fitness_batch_size": 20},
    "select": {"window": 40},
    "retrain": {"epochs": 2, "batch_size": 32, "train_subset": 128, "test_subset": 100},
}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="checkpoint and resume under this folder")
    args = parser.parse_args()

    exp = eps.Experiment("nb201", overrides={"device": "cpu", **TINY}, run_dir=args.run_dir)

    def on_round(record: dict) -> None:
        r = record["round"]
        print(f"iteration {record['iteration']:>4}: train loss {r['train_loss']:.3f}, "
              f"best fitness {r['fitness_best']:.3f} nats")

    found = exp.search(callbacks=[on_round])
    chosen = exp.select(found)
    for rule, choice in chosen.choices.items():
        truth = choice.ground_truth
        where = f", CIFAR-10 test {truth['cifar10_test']:.2f}% (rank {truth['rank']})" if truth else ""
        print(f"{rule}: {choice.arch} ({choice.params} parameters{where})")
    trained = exp.retrain(chosen, callbacks=[lambda row: print(f"epoch {row['epoch']}: {row}")])
    print(f"retrained {trained.arch}: test accuracy {trained.metrics['test_acc']:.2f}%")


if __name__ == "__main__":
    main()
