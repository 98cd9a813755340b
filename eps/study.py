"""`eps study correlation`: how well two supernets ("arms") rank cells, against a benchmark's ground truth.

The paper's starting observation (spec §0): a RandomNAS supernet ranks cells drawn from the whole space reasonably,
but ranks the strong cells (the benchmark's top 20 %) poorly; EPS trains the supernet on an evolving proxy population
of strong cells to fix exactly that. The study compares two **arms**, ``study.arms``: two named settings, each a
mapping of overrides of the space's ``space``, ``supernet`` and ``search`` sections (the shape of params.yaml's space
section). The default compares ``random: {search: {strategy: random}}`` with ``eps: {search: {strategy: eps}}``, the
paper's comparison; ``{search: {proposer: mutation}}`` against ``{search: {proposer: predictor}}`` or a
``supernet.progressive`` schedule against none are others. ``study.iterations`` replaces search.iterations for both
arms (an arm may set its own). For each seed the study trains one supernet per arm through
``eps.search.run_search``, with the same initial weights, data order and controller draws wherever the arms' settings
allow it, each in its own checkpoint folder (an interrupted study resumes where it stopped). Each supernet then
scores, on the same fixed validation batches:

- ``uniform``: ``n_uniform`` distinct cells drawn uniformly from the benchmark's cells (NAS-Bench-201: the whole
  space);
- ``top``: ``n_top`` distinct cells drawn uniformly from the benchmark's top ``top_fraction`` by ``column``;
- ``population``: the distinct cells of the final proxy population of the first arm whose strategy is ``eps``
  (left out when neither arm is).

**Score** of a cell = its mean label-smoothed loss over ``fitness_batches`` validation batches of
``search.fitness_batch_size`` images (the fitness half, no augmentation, training-mode BN, as the search's fitness),
the same batches for every cell and both supernets (unless an arm changes the batch size, the dataset or its subset);
lower is better. **Metrics** per set and supernet, against the ground-truth ``column`` (default: the benchmark's
primary column, e.g. cifar100_test for NAS-Bench-201 on CIFAR-100): Kendall tau-b and Spearman rho between -score and
accuracy; precision@k for k = 5, 10, 50 = the fraction of the k best-scored cells that are among the k most accurate
cells of the set (ties at the k-th accuracy count as inside; undefined, null, when k >= the set's size); the accuracy
and global rank (1 = best of all cells) of the best-scored cell. **Tau over training**: every ``tau_every`` rounds
(and at the end) the first ``tau_cells`` cells of ``uniform`` and of ``top`` are scored under the supernet being
trained; these records travel in the search checkpoints (``run_search``'s ``on_round`` hook), so they survive a
resume.

Scoring draws nothing from the training, fitness or controller random streams, so it does not change the search.

**Caching.** An arm's training identity (its checkpoint fingerprint) covers the seed, the arm's effective ``space``,
``supernet`` and ``search`` sections and the study's settings other than ``seeds`` and ``arms``: changing one arm
retrains only that arm, and adding a seed reuses the seeds done. When only the population set changed (the other
arm was changed), an arm resumes from its final checkpoint without training and scores only the new set.

**Budget.** The ``study`` defaults (3,000 iterations per supernet, one seed, 100 + 100 cells, 4 batches of 250 images
per cell, tau on 32 + 32 cells every 10 rounds) are sized for about 30 minutes on 2 CPU cores (one torch thread) with
the CPU supernet of ``profiles/study-cpu.yaml`` (C = 8, 2 cells per stage, batch 64, population 64, group 16); a run
measured 34 minutes on loaded cores (``bench/STUDY.md``). With the paper's supernet and controller (``params.yaml``)
the same defaults take hours on a CPU and minutes on a GPU, where ``--iterations 80000`` is the paper's budget.
"""
from __future__ import annotations

import copy
import math
import re
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field, ValidationError

from eps import io as eio
from eps import plotting
from eps.checkpoint import CheckpointDir, fingerprint
from eps.settings import MAX_COUNT, MAX_STEPS, Number, Settings
from eps.errors import ConfigError, EpsError
from eps.evolution import Controller
from eps.metrics import kendall_tau, spearman_rho
from eps.search import run_search
from eps.train.common import SEED_OFFSET, seed_everything

ARM_SECTIONS = ("space", "supernet", "search")  # what the study builds, trains and scores its supernets from
DEFAULT_ARMS = {"random": {"search": {"strategy": "random"}}, "eps": {"search": {"strategy": "eps"}}}
# An arm's name is a folder name, a report label and a dvc `-S study.arms.<name>...` path: no dots or slashes.
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


class StudySettings(Settings):
    """``eps study correlation`` (eps/study.py): two supernets ("arms") trained side by side, each scoring cells
    against the benchmark's ground truth. ``arms``: exactly two named mappings of overrides of the space's
    ``space``/``supernet``/``search`` sections (checked against the space when the study starts); the space's own
    sections give every other setting; ``iterations`` replaces search.iterations for both arms unless an arm sets
    its own. ``column``: the ground-truth column cells are ranked by (null: the benchmark's primary column)."""
    seeds: list[Annotated[int, Field(ge=0, lt=2**63)]] = Field(default_factory=lambda: [0], min_length=1)
    iterations: int = Field(3000, ge=1, le=MAX_STEPS)
    n_uniform: int = Field(100, ge=2, le=MAX_COUNT)
    n_top: int = Field(100, ge=2, le=MAX_COUNT)
    top_fraction: Number = Field(0.2, gt=0, le=1)
    column: str | None = None
    fitness_batches: int = Field(4, ge=1, le=MAX_COUNT)
    tau_every: int = Field(10, ge=0, le=MAX_STEPS)
    tau_cells: int = Field(32, ge=2, le=MAX_COUNT)
    arms: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_ARMS))

    def problems(self):
        if len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"got {self.seeds!r}, every seed must appear once"
        if len(self.arms) != 2:
            yield "arms", (f"got {len(self.arms)} arm(s) ({', '.join(self.arms) or 'none'}); the study compares "
                           f"exactly two, e.g. {{random: {{search: {{strategy: random}}}}, "
                           f"eps: {{search: {{strategy: eps}}}}}}")
        for name in self.arms:
            if not ARM_NAME.fullmatch(name):
                yield "arms", (f"arm name {name!r}: use 1 to 40 letters, digits, _ or -, starting with a letter or "
                               f"digit (it names the arm's folder and report rows)")


SETS = ("uniform", "top", "population")
TAU_SETS = ("uniform", "top")
PRECISION_KS = (5, 10, 50)


# ---------------------------------------------------------------------------------------------------- arms

def arm_sections(params_model, section: dict, study: dict) -> dict[str, dict]:
    """Each arm's effective params section, in ``study["arms"]`` order: the space's validated ``section`` with
    ``search.iterations`` = ``study["iterations"]``, overlaid with the arm's overrides and validated by
    ``params_model`` (the space's ``Params``), as a plain nested dict.

    Raises ConfigError listing every problem of both arms, one ``study.arms.<arm>.<key path>: message`` line each
    (a single problem: one line): unknown keys, wrong types, out-of-range or inconsistent values, and sections the
    study does not read (warmup, select, retrain)."""
    from eps.settings import error_lines, deep_update
    base = deep_update(section, {"search": {"iterations": study["iterations"]}})
    known = {f.alias or n for n, f in params_model.model_fields.items()}
    out, lines = {}, []
    for name, overrides in study["arms"].items():
        prefix = f"study.arms.{name}."
        try:
            arm = params_model.model_validate(deep_update(base, overrides)).model_dump(by_alias=True, mode="python")
        except ValidationError as err:
            lines += [prefix + line for line in error_lines(err, params_model)]
            arm = None
        unused = [k for k in overrides if k in known and k not in ARM_SECTIONS]
        lines += [f"{prefix}{k}: the study builds and trains its supernets from {', '.join(ARM_SECTIONS)} only, so "
                  f"{k} has no effect here; remove it" for k in unused]
        if arm is not None and not unused:
            out[name] = arm
    if len(lines) == 1:
        raise ConfigError(f"params: {lines[0]}")
    if lines:
        raise ConfigError(f"{len(lines)} problem(s) with params:\n  " + "\n  ".join(lines))
    return out


def population_arm(arms: dict[str, dict]) -> str | None:
    """The arm whose final proxy population is the ``population`` set: the first with strategy eps, else None."""
    return next((name for name, sec in arms.items() if sec["search"]["strategy"] == "eps"), None)


def _flat(overrides: dict, prefix: str = "") -> list[str]:
    """``{search: {proposer: predictor}}`` as ``["search.proposer=predictor"]``, for the report."""
    out = []
    for k, v in overrides.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v}")
    return out


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
    column = study["column"] or bench.primary
    top_rows = np.flatnonzero(bench.top_fraction_mask(bench.archs, column, study["top_fraction"]))
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


def numbers_only(obj):
    """The numeric leaves of nested mappings (nulls, strings, booleans and lists left out), as ``dvc metrics`` and
    ``dvc exp show`` columns want them; mappings left empty are dropped too."""
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            v = numbers_only(v)
            if v:
                out[k] = v
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = v
    return out


def _read_cache(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        cached = eio.read_json(path)
    except ValueError:
        return None
    return cached if isinstance(cached, dict) else None


def _train_and_score(space, section: dict, study: dict, arm: str, seed: int, sets: dict[str, list[str]],
                     accuracy: dict[str, np.ndarray], gives_population: bool, data_root, device, work: Path,
                     restart: bool, deterministic: bool, identity: dict, log) -> dict:
    """One arm's supernet of one seed: train (resumably), then score ``sets`` (benchmark notation; ``accuracy``:
    the ground truth of the tau sets) and, when ``gives_population``, its own final population (returned as
    ``population`` too).

    Cached in ``work/scores.json`` with the fingerprint of each set scored: a rerun with the same identity and sets
    returns it; one whose sets changed (another arm's population) resumes from the final checkpoint, which trains
    nothing, and scores only the changed sets."""
    key = fingerprint(identity)
    cache = work / "scores.json"
    cached = _read_cache(cache)
    kept: dict[str, list] = {}
    if cached is not None and cached.get("key") == key:
        want = dict(sets)
        if gives_population and "population" in cached:
            want["population"] = cached["population"]
        done, scores = cached.get("sets", {}), cached.get("scores", {})
        kept = {n: scores[n] for n, archs in want.items() if n in scores and done.get(n) == fingerprint(archs)}
        if len(kept) == len(want) and (not gives_population or "population" in cached):
            log(f"study seed {seed}: the {arm} supernet is already trained and scored ({cache})")
            return {**cached, "scores": {n: scores[n] for n in SETS if n in want},
                    "sets": {n: done[n] for n in SETS if n in want}}
    cfg = section["search"]
    seed_everything(seed + SEED_OFFSET["search"], deterministic)
    task = space.search_task(section, data_root, device, seed + SEED_OFFSET["search"], "search")
    batches = task.validation_batches(study["fitness_batches"], seed + SEED_OFFSET["score"])
    # The caption says what the task measures (ScoringTask.describe_scoring), not what the image task would.
    describe = getattr(task, "describe_scoring", None)
    scoring = (describe(study["fitness_batches"]) if callable(describe)
               else f"the task's validation loss on {study['fitness_batches']} fixed batches per cell")
    cells = {name: [space.decode(a) for a in archs] for name, archs in sets.items()}
    k = study["tau_cells"]
    tracker = TauTracker(task, {n: cells[n][:k] for n in TAU_SETS}, {n: accuracy[n][:k] for n in TAU_SETS},
                         batches, study["tau_every"], cfg["val_interval"], cfg["iterations"])
    controller = _controller(space, cfg, seed)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = CheckpointDir(work, identity, log=log)
    history = eio.AppendLog(work / "history.jsonl")
    if kept:
        new = [n for n in SETS if (n in sets or (n == "population" and gives_population)) and n not in kept]
        log(f"study seed {seed}: the {arm} supernet is trained; scoring its new {', '.join(new)} set")
    else:
        log(f"study seed {seed}: training the {arm} supernet ({cfg['iterations']} iterations)")
    try:
        result = run_search(space, task, controller, cfg, history, ckpt, restart=restart, on_round=tracker)
    finally:
        history.close()
    out = {"key": key, "iterations": result.iterations, "last_train_loss": result.last_train_loss,
           "tau_over_time": tracker.records, "scoring": scoring}
    names = list(sets)
    if gives_population:
        out["population"] = list(dict.fromkeys(space.encode(m.arch) for m in controller.population))
        sets = {**sets, "population": out["population"]}
        cells["population"] = [space.decode(a) for a in out["population"]]
        names.append("population")
    t0 = time.monotonic()
    fresh = {n: score_cells(task, cells[n], batches) for n in names if n not in kept}
    out["scores"] = {n: kept[n] if n in kept else fresh[n] for n in SETS if n in names}
    out["sets"] = {n: fingerprint(sets[n]) for n in SETS if n in names}
    out["timing"] = {"train_seconds": result.seconds, "resumed_from": result.resumed_from,
                     "score_seconds": time.monotonic() - t0}
    eio.write_json(cache, _clean(out))
    return eio.read_json(cache)


def _arm_space(space, bench, section: dict, arm: dict, name: str, data_root):
    """The space an arm builds its supernet in: ``space`` itself unless the arm changes the ``space`` section. Both
    arms are ranked against one ground truth, so an arm whose space has another (NB201: another dataset) is a
    ConfigError."""
    if arm["space"] == section["space"]:
        return space
    own = type(space).from_params(arm)
    theirs = own.benchmark(data_root) if hasattr(own, "benchmark") else None
    if theirs is None or (theirs.primary, list(theirs.columns)) != (bench.primary, list(bench.columns)):
        raise ConfigError(f"params: study.arms.{name}.space: gives the supernet another ground truth "
                          f"({getattr(theirs, 'primary', 'none')}) than the study's ({bench.primary}); both arms "
                          f"are ranked against one, so change this in the {space.name}.space section for the whole "
                          f"study instead")
    return own


def run_study(space, bench, section: dict, study: dict, data_root, device, work: str | Path, restart: bool = False,
              deterministic: bool = False, log=print) -> dict:
    """The whole study; returns the JSON-ready result (per-cell scores, metrics, tau over training, summary), with
    ``arms`` (per arm, in ``study["arms"]`` order: its overrides, strategy, iterations) and ``population_arm``.

    Raises EpsError (one line) without a ground truth, DataError for an unknown ``column``, ConfigError for a bad
    arm, all before any training."""
    if bench is None:
        raise EpsError(f"the study needs a benchmark's ground truth, and space {space.name} has none here; for "
                       f"nas-bench-201 put nb201/ground_truth.csv under the data root (EPS_DATA_DIR)")
    column = study["column"] or bench.primary
    bench.column(column)  # DataError naming the available columns, before any training
    arms = arm_sections(type(space).Params, section, study)
    spaces = {name: _arm_space(space, bench, section, arm, name, data_root) for name, arm in arms.items()}
    pop = population_arm(arms)
    work = Path(work)
    # Adding a seed reuses the seeds already done, and changing one arm leaves the other's identity alone;
    # iterations are in each arm's search section.
    fixed = {**{k: v for k, v in study.items() if k not in ("seeds", "arms", "iterations")}, "column": column}
    per_seed = []
    for seed in study["seeds"]:
        sets = draw_sets(bench, study, seed)
        accuracy = {n: np.array([bench.accuracy(a, column) for a in archs]) for n, archs in sets.items()}
        runs = {}
        # The population arm first: its final population is the third set, which the other arm scores too.
        for name in sorted(arms, key=lambda n: n != pop):
            arm = arms[name]
            identity = {"stage": "study", "seed": seed, **{k: arm[k] for k in ARM_SECTIONS}, "study": fixed}
            runs[name] = _train_and_score(spaces[name], arm, study, name, seed, dict(sets), accuracy, name == pop,
                                          data_root, device, work / f"seed{seed}" / name, restart, deterministic,
                                          identity, log)
            if name == pop:
                sets["population"] = runs[name]["population"]
                accuracy["population"] = np.array([bench.accuracy(a, column) for a in sets["population"]])
        present = [n for n in SETS if n in sets]
        supernets = {}
        for name in arms:
            r = runs[name]
            supernets[name] = {
                "scores": r["scores"],
                "metrics": {n: set_metrics(sets[n], accuracy[n], r["scores"][n], bench, column) for n in present},
                "tau_over_time": r["tau_over_time"],
                "last_train_loss": r["last_train_loss"],
                "timing": r["timing"],
            }
        per_seed.append({"seed": seed,
                         "sets": {n: {"arch": sets[n], "accuracy": accuracy[n].tolist()} for n in present},
                         "tau_cells": {n: min(study["tau_cells"], len(sets[n])) for n in TAU_SETS},
                         "supernets": supernets})
    s = section["search"]
    result = {
        "study": "correlation", "space": space.name, "column": column, "top_fraction": study["top_fraction"],
        "arms": {name: {"overrides": study["arms"][name], "strategy": arm["search"]["strategy"],
                        "iterations": arm["search"]["iterations"],
                        "images_per_cell": study["fitness_batches"] * arm["search"]["fitness_batch_size"]}
                 for name, arm in arms.items()},
        "population_arm": pop,
        "settings": {
            **{k: study[k] for k in ("seeds", "iterations", "n_uniform", "n_top", "tau_every", "tau_cells")},
            "fitness_batches": study["fitness_batches"], "fitness_batch_size": s["fitness_batch_size"],
            "images_per_cell": study["fitness_batches"] * s["fitness_batch_size"],
            "score": next((r["scoring"] for r in runs.values() if r.get("scoring")),
                          "mean validation loss over the same fixed batches for every cell"),
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
    """Mean and standard deviation over seeds of every metric, per arm and set."""
    def stats(values):
        v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
        if not v.size:
            return {"mean": None, "std": None, "n": 0}
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}

    out = {}
    for arm in per_seed[0]["supernets"] if per_seed else ():
        out[arm] = {}
        for n in per_seed[0]["sets"]:
            ms = [r["supernets"][arm]["metrics"][n] for r in per_seed]
            row = {"n": stats([m["n"] for m in ms]), "tau": stats([m["tau"] for m in ms]),
                   "rho": stats([m["rho"] for m in ms]),
                   "best_accuracy": stats([(m["best_scored"] or {}).get("accuracy") for m in ms]),
                   "best_rank": stats([(m["best_scored"] or {}).get("rank") for m in ms])}
            for k in PRECISION_KS:
                row[f"p@{k}"] = stats([m["precision_at"][str(k)] for m in ms])
            out[arm][n] = row
    return out


# ---------------------------------------------------------------------------------------------------- report

SET_TITLES = {"uniform": "uniform (whole space)", "top": "top {pct} (ground truth)", "population": "{arm} population"}


def _set_title(name: str, result: dict) -> str:
    return SET_TITLES[name].format(pct=f"{result['top_fraction']:.0%}", arm=result.get("population_arm"))


def _sets(result: dict) -> list[str]:
    return [n for n in SETS if result["seeds"] and n in result["seeds"][0]["sets"]]


def describe_arms(result: dict) -> str:
    """``random: search.strategy=random; eps: search.strategy=eps``; an arm without overrides reads ``(as params)``."""
    return "; ".join(f"{name}: {', '.join(_flat(a['overrides'])) or '(as params)'}"
                     for name, a in result["arms"].items())


def table(result: dict):
    from rich.table import Table
    st = result["settings"]
    seeds = st["seeds"]
    arms = result["arms"]
    its = sorted({a["iterations"] for a in arms.values()})
    budget = (f"{its[0]} iterations each" if len(its) == 1
              else ", ".join(f"{n} {a['iterations']}" for n, a in arms.items()) + " iterations")
    images = sorted({a["images_per_cell"] for a in arms.values()})
    per_cell = (f"{images[0]} samples per cell" if len(images) == 1
                else ", ".join(f"{n} {a['images_per_cell']}" for n, a in arms.items()) + " samples per cell")
    t = Table(title=f"{result['space']}: {' vs '.join(arms)} supernet, ranking against ground truth "
                    f"{result['column']} ({budget}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})")
    t.caption = (f"arms: {describe_arms(result)}. score = {st['score']}, the same batches for every cell "
                 f"({per_cell}); tau / rho between -score and accuracy; "
                 f"P@k = share of the k best-scored among the k most accurate of the set; best = the best-scored "
                 f"cell's accuracy and rank among all cells"
                 + ("; mean ± std over seeds" if len(seeds) > 1 else ""))
    t.add_column("cells"), t.add_column("supernet"), t.add_column("n", justify="right")
    for name in ("tau", "rho", *[f"P@{k}" for k in PRECISION_KS], "best acc", "best rank"):
        t.add_column(name, justify="right")

    def cell(s, nd=3):
        if s["mean"] is None:
            return "-"
        text = f"{s['mean']:.{nd}f}"
        return text + (f" ± {s['std']:.{nd}f}" if len(seeds) > 1 else "")

    sets = _sets(result)
    for n in sets:
        for arm in arms:
            row = result["summary"][arm][n]
            t.add_row(_set_title(n, result), arm, cell(row["n"], 0), cell(row["tau"]),
                      cell(row["rho"]), *[cell(row[f"p@{k}"], 2) for k in PRECISION_KS],
                      cell(row["best_accuracy"], 2), cell(row["best_rank"], 0))
        if n != sets[-1]:
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
    for arm in result["arms"]:
        for n in TAU_SETS:
            t.add_column(f"{arm} {n}", justify="right")
    for i in pick:
        t.add_row(str(its[i]), *[("-" if v is None else f"{v:.3f}") for arm in result["arms"] for n in TAU_SETS
                                 for v in [curves[arm][n][i]]])
    return t


def tau_curves(result: dict) -> dict:
    """Per arm and tau set: tau at each recorded iteration, mean over seeds (iterations common to all seeds)."""
    seeds = result["seeds"]
    arms = list(result["arms"])
    its = sorted(set.intersection(*[{r["iteration"] for r in s["supernets"][arm]["tau_over_time"]}
                                    for s in seeds for arm in arms])) if seeds else []
    out = {"iteration": its}
    for arm in arms:
        out[arm] = {}
        for n in TAU_SETS:
            vals = []
            for it in its:
                v = [r["tau"][n] for s in seeds for r in s["supernets"][arm]["tau_over_time"]
                     if r["iteration"] == it and r["tau"][n] is not None]
                vals.append(float(np.mean(v)) if v else None)
            out[arm][n] = vals
    return out


def plot_scores(result: dict, path: Path) -> None:
    """Score vs accuracy, one panel per arm (rows) and set (columns), all seeds (one colour each)."""
    arms, sets = list(result["arms"]), _sets(result)
    fig, axes = plotting.subplots(len(arms), len(sets), figsize=(4.2 * len(sets), 3.6 * len(arms)), dpi=110,
                                  squeeze=False)
    for i, arm in enumerate(arms):
        for j, n in enumerate(sets):
            ax = axes[i][j]
            for s in result["seeds"]:
                ax.scatter(s["supernets"][arm]["scores"][n], s["sets"][n]["accuracy"], s=9, alpha=0.6,
                           label=f"seed {s['seed']}")
            m = result["summary"][arm][n]["tau"]["mean"]
            ax.set_title(f"{arm}: {_set_title(n, result)}\ntau {'-' if m is None else f'{m:.3f}'}", fontsize=9)
            ax.set_xlabel("supernet score (validation loss, lower = better)", fontsize=8)
            ax.set_ylabel(f"ground truth {result['column']} (%)", fontsize=8)
            ax.grid(alpha=0.3)
            if len(result["seeds"]) > 1 and i == 0 and j == 0:
                ax.legend(fontsize=7)
    plotting.save(fig, path)


def plot_tau(result: dict, path: Path) -> None:
    curves = tau_curves(result)
    fig, ax = plotting.subplots(figsize=(6, 4), dpi=110)
    styles = {"uniform": "-", "top": "--"}
    for arm, colour in zip(result["arms"], ("tab:blue", "tab:orange")):
        for n in TAU_SETS:
            pts = [(it, v) for it, v in zip(curves["iteration"], curves[arm][n]) if v is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, styles[n], color=colour, marker="o", ms=3, label=f"{arm}, {_set_title(n, result)}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("iteration"), ax.set_ylabel("Kendall tau (-score vs accuracy)")
    ax.set_title(f"ranking quality over training (first {result['settings']['tau_cells']} cells per set)", fontsize=9)
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    plotting.save(fig, path)
