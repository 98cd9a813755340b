"""`eps study correlation`: how well a RandomNAS and an EPS supernet rank cells, against a benchmark's ground truth.

The paper's starting observation (spec §0): a RandomNAS supernet ranks cells drawn from the whole space reasonably,
but ranks the strong cells (the benchmark's top 20 %) poorly; EPS trains the supernet on an evolving proxy population
of strong cells to fix exactly that. For each seed the study trains two supernets through ``eps.search.run_search``
with the same budget, initial weights, data order and training settings, one with ``strategy: random`` and one with
``strategy: eps``, each with its own checkpoint folder (an interrupted study resumes where it stopped). Each supernet
then scores, on the same fixed validation batches:

- ``uniform``: ``n_uniform`` distinct cells drawn uniformly from the benchmark's cells (NAS-Bench-201: the whole
  space);
- ``top``: ``n_top`` distinct cells drawn uniformly from the benchmark's top ``top_fraction`` by ``column``;
- ``population``: the distinct cells of the EPS run's final proxy population.

**Score** of a cell = its mean label-smoothed loss over ``fitness_batches`` validation batches of
``search.fitness_batch_size`` images (the fitness half, no augmentation, training-mode BN, as the search's fitness),
the same batches for every cell and both supernets; lower is better. **Metrics** per set and supernet, against the
ground-truth ``column``: Kendall tau-b and Spearman rho between -score and accuracy; precision@k for k = 5, 10, 50 =
the fraction of the k best-scored cells that are among the k most accurate cells of the set (ties at the k-th
accuracy count as inside; undefined, null, when k >= the set's size); the accuracy and global rank (1 = best of all
cells) of the best-scored cell. **Tau over training**: every ``tau_every`` rounds (and at the end) the first
``tau_cells`` cells of ``uniform`` and of ``top`` are scored under the supernet being trained; these records travel in
the search checkpoints (``run_search``'s ``on_round`` hook), so they survive a resume.

Scoring draws nothing from the training, fitness or controller random streams, so it does not change the search.

**Budget.** The ``study`` defaults (3,000 iterations per supernet, one seed, 100 + 100 cells, 4 batches of 250 images
per cell, tau on 32 + 32 cells every 10 rounds) are sized for about 30 minutes on 2 CPU cores (one torch thread) with
the CPU supernet of ``profiles/study-cpu.yaml`` (C = 8, 2 cells per stage, batch 64, population 64, group 16); a run
measured 34 minutes on loaded cores (``bench/STUDY.md``). With the paper's supernet and controller (``params.yaml``)
the same defaults take hours on a CPU and minutes on a GPU, where ``--iterations 80000`` is the paper's budget.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from eps import io as eio
from eps import plotting
from eps.checkpoint import CheckpointDir, fingerprint
from eps.config import Number, Settings
from eps.errors import EpsError
from eps.evolution import Controller
from eps.metrics import kendall_tau, spearman_rho
from eps.search import run_search
from eps.train.common import SEED_OFFSET, seed_everything

class StudySettings(Settings):
    """``eps study correlation`` (eps/study.py): a RandomNAS and an EPS supernet trained side by side, each scoring
    cells against the benchmark's ground truth. The space's own sections give every other setting; ``iterations``
    replaces search.iterations for both supernets."""
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    iterations: int = Field(3000, ge=1)
    n_uniform: int = Field(100, ge=2)
    n_top: int = Field(100, ge=2)
    top_fraction: Number = Field(0.2, gt=0, le=1)
    column: str = "cifar10_test"
    fitness_batches: int = Field(4, ge=1)
    tau_every: int = Field(10, ge=0)
    tau_cells: int = Field(32, ge=2)

    def problems(self):
        if len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"got {self.seeds!r}, every seed must appear once"


SETS = ("uniform", "top", "population")
TAU_SETS = ("uniform", "top")
STRATEGIES = ("random", "eps")
LABELS = {"random": "RandomNAS", "eps": "EPS"}
PRECISION_KS = (5, 10, 50)


# ---------------------------------------------------------------------------------------------------- metrics

def precision_at_k(scores, accuracy, k: int) -> float | None:
    """Fraction of the k best-scored (lowest score) cells that are among the k most accurate; None if k >= n."""
    scores, accuracy = np.asarray(scores, float), np.asarray(accuracy, float)
    n = scores.size
    if k >= n or np.isnan(scores).any():
        return None
    by_score = np.argsort(scores, kind="stable")[:k]
    kth_best = np.sort(accuracy)[::-1][k - 1]
    return float((accuracy[by_score] >= kth_best).sum() / k)


def set_metrics(archs: list[str], accuracy, scores, bench, column: str) -> dict:
    acc, sc = np.asarray(accuracy, float), np.asarray(scores, float)
    out = {"n": len(archs), "tau": kendall_tau(-sc, acc), "rho": spearman_rho(-sc, acc),
           "precision_at": {str(k): precision_at_k(sc, acc, k) for k in PRECISION_KS},
           "best_scored": None, "set_best_accuracy": float(acc.max()) if acc.size else None}
    if sc.size and np.isfinite(sc).any():
        b = int(np.nanargmin(sc))
        out["best_scored"] = {"arch": archs[b], "score": float(sc[b]), "accuracy": float(acc[b]),
                              "rank": bench.rank(archs[b], column), "rank_of": len(bench)}
    return out


# ---------------------------------------------------------------------------------------------------- scoring

def score_cells(task, archs: list, batches: list) -> list[float]:
    """Score of each arch on ``batches``; each distinct arch is evaluated once, one host transfer in all."""
    distinct = list(dict.fromkeys(archs))
    values = task.score(distinct, batches).float().cpu().tolist() if distinct else []
    lookup = dict(zip(distinct, values))
    return [lookup[a] for a in archs]


class TauTracker:
    """``run_search``'s ``on_round`` hook: every ``every`` rounds and at the end, scores the tau subsets."""

    def __init__(self, task, subsets: dict[str, list], accuracy: dict[str, np.ndarray], batches: list,
                 every: int, interval: int, total: int):
        self.task, self.subsets, self.accuracy, self.batches = task, subsets, accuracy, batches
        self.every, self.interval, self.total = every, interval, total
        self.records: list[dict] = []

    def __call__(self, t: int) -> None:
        if t < self.total and (self.every <= 0 or (t // self.interval) % self.every):
            return
        names = list(self.subsets)
        flat = score_cells(self.task, [a for n in names for a in self.subsets[n]], self.batches)
        scores, pos = {}, 0
        for n in names:
            scores[n] = flat[pos:pos + len(self.subsets[n])]
            pos += len(self.subsets[n])
        self.records.append({"iteration": t,
                             "tau": {n: kendall_tau(-np.asarray(scores[n]), self.accuracy[n]) for n in names},
                             "scores": scores})

    def state_dict(self) -> dict:
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        self.records = [dict(r) for r in state["records"]]


# ---------------------------------------------------------------------------------------------------- the study

def _controller(space, cfg: dict, seed: int) -> Controller:
    return Controller.from_settings(space, np.random.default_rng([seed, 2]), cfg)  # as `eps stage search`


def draw_sets(bench, study: dict, seed: int) -> dict[str, list[str]]:
    """The fixed ``uniform`` and ``top`` cells of one seed (benchmark notation), distinct within each set."""
    rng = np.random.default_rng([seed, 7])
    n_all = len(bench)
    uniform = rng.choice(n_all, min(study["n_uniform"], n_all), replace=False)
    top_rows = np.flatnonzero(bench.top_fraction_mask(bench.archs, study["column"], study["top_fraction"]))
    top = rng.choice(top_rows, min(study["n_top"], top_rows.size), replace=False)
    return {"uniform": [bench.archs[i] for i in uniform], "top": [bench.archs[i] for i in top]}


def _clean(obj):
    """NaN and infinities as null, so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _train_and_score(space, section: dict, study: dict, strategy: str, seed: int, sets: dict[str, list[str]],
                     accuracy: dict[str, np.ndarray], data_root, device, work: Path, restart: bool,
                     deterministic: bool, identity: dict, log) -> dict:
    """One supernet of one seed: train (resumably), then score every set. Cached in ``work/scores.json``."""
    key = fingerprint(identity)
    cache = work / "scores.json"
    if cache.exists():
        try:
            cached = eio.read_json(cache)
        except ValueError:
            cached = None
        if cached and cached.get("key") == key:
            log(f"study seed {seed}: {LABELS[strategy]} supernet already trained and scored ({cache})")
            return cached
    cfg = {**section["search"], "iterations": study["iterations"], "strategy": strategy}
    seed_everything(seed + SEED_OFFSET["search"], deterministic)
    task = space.search_task({**section, "search": cfg}, data_root, device, seed + SEED_OFFSET["search"], "search")
    batches = task.validation_batches(study["fitness_batches"], seed + SEED_OFFSET["score"])
    cells = {name: [space.decode(a) for a in archs] for name, archs in sets.items()}
    k = study["tau_cells"]
    tracker = TauTracker(task, {n: cells[n][:k] for n in TAU_SETS}, {n: accuracy[n][:k] for n in TAU_SETS},
                         batches, study["tau_every"], cfg["val_interval"], cfg["iterations"])
    controller = _controller(space, cfg, seed)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = CheckpointDir(work, identity, log=log)
    history = eio.AppendLog(work / "history.jsonl")
    log(f"study seed {seed}: training the {LABELS[strategy]} supernet ({cfg['iterations']} iterations)")
    try:
        result = run_search(space, task, controller, cfg, history, ckpt, restart=restart, on_round=tracker)
    finally:
        history.close()
    out = {"key": key, "iterations": result.iterations, "last_train_loss": result.last_train_loss,
           "tau_over_time": tracker.records}
    if strategy == "eps":
        out["population"] = list(dict.fromkeys(space.encode(m.arch) for m in controller.population))
        cells["population"] = [space.decode(a) for a in out["population"]]
    t0 = time.monotonic()
    out["scores"] = {name: score_cells(task, archs, batches) for name, archs in cells.items()}
    out["timing"] = {"train_seconds": result.seconds, "resumed_from": result.resumed_from,
                     "score_seconds": time.monotonic() - t0}
    eio.write_json(cache, _clean(out))
    return eio.read_json(cache)


def run_study(space, bench, section: dict, study: dict, data_root, device, work: str | Path, restart: bool = False,
              deterministic: bool = False, log=print) -> dict:
    """The whole study; returns the JSON-ready result (per-cell scores, metrics, tau over training, summary)."""
    if bench is None:
        raise EpsError(f"the study needs a benchmark's ground truth, and space {space.name} has none here; for "
                       f"nas-bench-201 put nb201/ground_truth.csv under the data root (EPS_DATA_DIR)")
    column = study["column"]
    bench.column(column)  # DataError naming the available columns, before any training
    work = Path(work)
    fixed = {k: v for k, v in study.items() if k != "seeds"}  # adding a seed reuses the seeds already done
    per_seed = []
    for seed in study["seeds"]:
        sets = draw_sets(bench, study, seed)
        accuracy = {n: np.array([bench.accuracy(a, column) for a in archs]) for n, archs in sets.items()}
        base = {"stage": "study", "seed": seed, "space": section["space"],
                "search": {**section["search"], "iterations": study["iterations"]}, "study": fixed}
        runs = {}
        # EPS first: its final population is the third set, which the RandomNAS supernet scores too.
        for strategy in ("eps", "random"):
            identity = {**base, "strategy": strategy}
            if strategy == "random":
                identity["population"] = fingerprint(sets["population"])
            runs[strategy] = _train_and_score(space, section, study, strategy, seed, sets, accuracy, data_root,
                                              device, work / f"seed{seed}" / strategy, restart, deterministic,
                                              identity, log)
            if strategy == "eps":
                sets["population"] = runs["eps"]["population"]
                accuracy["population"] = np.array([bench.accuracy(a, column) for a in sets["population"]])
        supernets = {}
        for strategy in STRATEGIES:
            r = runs[strategy]
            supernets[strategy] = {
                "scores": r["scores"],
                "metrics": {n: set_metrics(sets[n], accuracy[n], r["scores"][n], bench, column) for n in SETS},
                "tau_over_time": r["tau_over_time"],
                "last_train_loss": r["last_train_loss"],
                "timing": r["timing"],
            }
        per_seed.append({"seed": seed,
                         "sets": {n: {"arch": sets[n], "accuracy": accuracy[n].tolist()} for n in SETS},
                         "tau_cells": {n: min(study["tau_cells"], len(sets[n])) for n in TAU_SETS},
                         "supernets": supernets})
    s = section["search"]
    result = {
        "study": "correlation", "space": space.name, "column": column, "top_fraction": study["top_fraction"],
        "settings": {
            **{k: study[k] for k in ("seeds", "iterations", "n_uniform", "n_top", "tau_every", "tau_cells")},
            "fitness_batches": study["fitness_batches"], "fitness_batch_size": s["fitness_batch_size"],
            "images_per_cell": study["fitness_batches"] * s["fitness_batch_size"],
            "score": "mean label-smoothed validation loss over the same fixed batches for every cell",
            "precision": "fraction of the k best-scored cells among the k most accurate of the set",
            "supernet": dict(section["space"]),
            "search": {k: s[k] for k in ("val_interval", "population", "group", "parents", "children_per_parent",
                                         "batch_size", "lr", "fitness_batches", "fitness_shared", "data_subset")
                       if k in s},
        },
        "seeds": per_seed,
    }
    result["summary"] = summarize(per_seed)
    return _clean(result)


def summarize(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every metric, per supernet and set."""
    def stats(values):
        v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
        if not v.size:
            return {"mean": None, "std": None, "n": 0}
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}

    out = {}
    for strategy in STRATEGIES:
        out[strategy] = {}
        for n in SETS:
            ms = [r["supernets"][strategy]["metrics"][n] for r in per_seed]
            row = {"n": stats([m["n"] for m in ms]), "tau": stats([m["tau"] for m in ms]),
                   "rho": stats([m["rho"] for m in ms]),
                   "best_accuracy": stats([(m["best_scored"] or {}).get("accuracy") for m in ms]),
                   "best_rank": stats([(m["best_scored"] or {}).get("rank") for m in ms])}
            for k in PRECISION_KS:
                row[f"p@{k}"] = stats([m["precision_at"][str(k)] for m in ms])
            out[strategy][n] = row
    return out


# ---------------------------------------------------------------------------------------------------- report

SET_TITLES = {"uniform": "uniform (whole space)", "top": "top {pct} (ground truth)", "population": "EPS population"}


def _set_title(name: str, fraction: float) -> str:
    return SET_TITLES[name].format(pct=f"{fraction:.0%}")


def table(result: dict):
    from rich.table import Table
    st = result["settings"]
    seeds = st["seeds"]
    t = Table(title=f"{result['space']}: RandomNAS vs EPS supernet, ranking against ground truth {result['column']} "
                    f"({st['iterations']} iterations each, seed{'s' if len(seeds) > 1 else ''} "
                    f"{', '.join(map(str, seeds))})")
    t.caption = (f"score = mean label-smoothed validation loss over {st['fitness_batches']} shared batches of "
                 f"{st['fitness_batch_size']} images ({st['images_per_cell']} images per cell); tau / rho between "
                 f"-score and accuracy; P@k = share of the k best-scored among the k most accurate of the set; "
                 f"best = the best-scored cell's accuracy and rank among all cells"
                 + ("; mean ± std over seeds" if len(seeds) > 1 else ""))
    t.add_column("cells"), t.add_column("supernet"), t.add_column("n", justify="right")
    for name in ("tau", "rho", *[f"P@{k}" for k in PRECISION_KS], "best acc", "best rank"):
        t.add_column(name, justify="right")

    def cell(s, nd=3):
        if s["mean"] is None:
            return "-"
        text = f"{s['mean']:.{nd}f}"
        return text + (f" ± {s['std']:.{nd}f}" if len(seeds) > 1 else "")

    for n in SETS:
        for strategy in STRATEGIES:
            row = result["summary"][strategy][n]
            t.add_row(_set_title(n, result["top_fraction"]), LABELS[strategy], cell(row["n"], 0), cell(row["tau"]),
                      cell(row["rho"]), *[cell(row[f"p@{k}"], 2) for k in PRECISION_KS],
                      cell(row["best_accuracy"], 2), cell(row["best_rank"], 0))
        if n != SETS[-1]:
            t.add_section()
    return t


def tau_table(result: dict):
    """Tau over training (mean over seeds), at most 12 rows."""
    from rich.table import Table
    curves = tau_curves(result)
    its = curves["iteration"]
    if not its:
        return None
    pick = sorted(set(np.linspace(0, len(its) - 1, min(12, len(its))).round().astype(int).tolist()))
    st = result["settings"]
    t = Table(title=f"Kendall tau over training (first {st['tau_cells']} cells of each set)")
    t.add_column("iteration", justify="right")
    for strategy in STRATEGIES:
        for n in TAU_SETS:
            t.add_column(f"{LABELS[strategy]} {n}", justify="right")
    for i in pick:
        t.add_row(str(its[i]), *[("-" if v is None else f"{v:.3f}") for strategy in STRATEGIES for n in TAU_SETS
                                 for v in [curves[strategy][n][i]]])
    return t


def tau_curves(result: dict) -> dict:
    """Per supernet and tau set: tau at each recorded iteration, mean over seeds (iterations common to all seeds)."""
    seeds = result["seeds"]
    its = sorted(set.intersection(*[{r["iteration"] for r in s["supernets"][st]["tau_over_time"]}
                                    for s in seeds for st in STRATEGIES])) if seeds else []
    out = {"iteration": its}
    for strategy in STRATEGIES:
        out[strategy] = {}
        for n in TAU_SETS:
            vals = []
            for it in its:
                v = [r["tau"][n] for s in seeds for r in s["supernets"][strategy]["tau_over_time"]
                     if r["iteration"] == it and r["tau"][n] is not None]
                vals.append(float(np.mean(v)) if v else None)
            out[strategy][n] = vals
    return out


def plot_scores(result: dict, path: Path) -> None:
    """Score vs accuracy, one panel per supernet (rows) and set (columns), all seeds (one colour each)."""
    fig, axes = plotting.subplots(len(STRATEGIES), len(SETS), figsize=(4.2 * len(SETS), 3.6 * len(STRATEGIES)), dpi=110,
                             squeeze=False)
    for i, strategy in enumerate(STRATEGIES):
        for j, n in enumerate(SETS):
            ax = axes[i][j]
            for s in result["seeds"]:
                ax.scatter(s["supernets"][strategy]["scores"][n], s["sets"][n]["accuracy"], s=9, alpha=0.6,
                           label=f"seed {s['seed']}")
            m = result["summary"][strategy][n]["tau"]["mean"]
            ax.set_title(f"{LABELS[strategy]}: {_set_title(n, result['top_fraction'])}\n"
                         f"tau {'-' if m is None else f'{m:.3f}'}", fontsize=9)
            ax.set_xlabel("supernet score (validation loss, lower = better)", fontsize=8)
            ax.set_ylabel(f"ground truth {result['column']} (%)", fontsize=8)
            ax.grid(alpha=0.3)
            if len(result["seeds"]) > 1 and i == 0 and j == 0:
                ax.legend(fontsize=7)
    plotting.save(fig, path)


def plot_tau(result: dict, path: Path) -> None:
    curves = tau_curves(result)
    fig, ax = plotting.subplots(figsize=(6, 4), dpi=110)
    colours = {"random": "tab:blue", "eps": "tab:orange"}
    styles = {"uniform": "-", "top": "--"}
    for strategy in STRATEGIES:
        for n in TAU_SETS:
            pts = [(it, v) for it, v in zip(curves["iteration"], curves[strategy][n]) if v is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, styles[n], color=colours[strategy], marker="o", ms=3,
                        label=f"{LABELS[strategy]}, {_set_title(n, result['top_fraction'])}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("iteration"), ax.set_ylabel("Kendall tau (-score vs accuracy)")
    ax.set_title(f"ranking quality over training (first {result['settings']['tau_cells']} cells per set)", fontsize=9)
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    plotting.save(fig, path)
