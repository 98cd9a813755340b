"""The Python front door of eps: build spaces, load params, and run warm-up -> search -> select -> retrain (and the
study) from a script or a notebook, with or without a run folder.

    import eps
    exp = eps.Experiment("nb201", params="params.yaml", overrides={"nb201": {"search": {"iterations": 2000}}})
    found = exp.search()            # runs the warm-up first when warmup.iterations > 0
    chosen = exp.select(found)      # both selection rules, with ground truth when the space has a benchmark
    trained = exp.retrain(chosen)   # the standalone network, trained from scratch
    print(chosen.arch, trained.metrics)

Without ``run_dir`` everything runs in memory: nothing is written, an interrupted call starts over. With
``run_dir`` each stage checkpoints under ``<run_dir>/<space>/.work/<stage>/`` and a call with the same params resumes
exactly where an interrupted one stopped (the CLI and ``dvc repro`` run this same code; they add the run folder's
published outputs, records, locks and up-to-date decisions: ``eps.pipeline``).

Under ``torchrun`` every rank runs the same calls; warm-up and search are data parallel when the space's task
declares ``supports_distributed`` (else refused), rank 0 writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn

from eps import distributed
from eps import io as eio
from eps.analysis import cell_accuracies, population_quality
from eps.checkpoint import CheckpointDir, data_fingerprint
from eps.errors import ConfigError, EpsError, RankError
from eps.evolution import Controller
from eps.params import data_root as _data_root
from eps.params import load_params as _load_params
from eps.params import params_model
from eps.progress import console
from eps.retrain import run_retrain
from eps.search import run_search, run_warmup
from eps.selection import Candidate, choose, collect_candidates
from eps.settings import deep_update, plain
from eps.space import (RETRAIN_TASK_ATTRIBUTES, RETRAIN_TASK_METHODS, SUPERNET_TASK_METHODS, Benchmark,
                       DescribesInput, SearchSpace, SpaceParams, benchmark_of, check_members, supports_distributed,
                       unhonoured)
from eps.spaces import cli_name, origin_ref, registered, resolve, space_class
from eps.train.common import SEED_OFFSET, resolve_device, seed_everything

Callback = Callable[[dict], None]


# ------------------------------------------------------------------------------------------------ spaces, params

def list_spaces() -> list[str]:
    """Names of the usable registered spaces (built-ins, entry points, and references registered in this process)."""
    return list(registered())


def load_params(path: str | os.PathLike | None = None, overrides: Mapping | Iterable[str] | None = None,
                plugins: Iterable[str] = ()) -> dict:
    """The full params (defaults, overlaid with the YAML file at ``path`` and then ``overrides``), validated; a plain
    nested dict as ``params.yaml`` holds it. ``overrides``: a nested dict (``{"nb201": {"search": {"iterations":
    2000}}}``) or ``key=value`` strings as DVC's ``-S`` takes them (``["nb201.search.iterations=2000"]``). Raises
    ConfigError listing every problem, one ``key.path: message`` line each."""
    if isinstance(overrides, Mapping):
        overrides = dict(overrides)
    elif overrides is not None and not isinstance(overrides, (str, bytes)):
        overrides = list(overrides)
    return _load_params(path, overrides or None, plugins)


def build_space(space: str, overrides: Mapping | None = None, params: str | os.PathLike | Mapping | None = None
                ) -> SearchSpace:
    """The search space ``space`` (a registered name, ``path/to/file.py:Class`` or ``package.module:Class``),
    configured by its params section: the defaults, then ``params`` (a params file or dict, keyword), then
    ``overrides`` (the space's own section, e.g. ``{"space": {"channels": 8}}``). Only this space is built."""
    return Experiment(space, params=params, overrides={resolve(space): dict(overrides)} if overrides else None).space


# ------------------------------------------------------------------------------------------------ results

@dataclass
class WarmupResult:
    """The uniformly warmed-up supernet. ``state`` is its weights (``{"model": state_dict}``), ``digest`` names
    them in the search's checkpoint identity (a file digest, or the weights' digest for an in-memory run)."""
    supernet: nn.Module | None
    state: dict
    digest: str
    iterations: int
    last_train_loss: float
    nonfinite_skipped: int
    seconds: float = 0.0
    resumed_from: int = 0
    data: dict = field(default_factory=dict)
    source: str = "the warm-up supernet"     # named in errors (the stage layer gives the file)
    rerun: str = ""                          # extra options of the rerun hint (the stage layer's --out)


@dataclass
class SearchResult:
    """The evolved proxy search space. ``history``: one snapshot per round (``iteration``, per member ``arch``,
    ``loss`` in nats, ``count``, ``age``; ``round``: train_loss, lr, fitness_best, fitness_mean, measured);
    ``population``: the final snapshot; ``quality``: the population against the benchmark (mean/max accuracy in
    percent, Kendall tau) when the space has one."""
    history: list[dict]
    population: dict
    supernet: nn.Module
    iterations: int
    rounds: int
    last_train_loss: float
    nonfinite_skipped: int
    seconds: float
    resumed_from: int
    quality: dict | None
    warmup_digest: str
    data: dict = field(default_factory=dict)


@dataclass
class Choice:
    """One selection rule's pick: the architecture (the space's notation), its latest fitness loss (nats), its
    standalone parameter count, its size-prior score, how often it won a snapshot, and its benchmark accuracies
    (percent, and ``rank``: 1 = best) when the space has a benchmark."""
    arch: str
    loss: float
    params: int
    score: float
    wins: int
    ground_truth: dict | None


@dataclass
class Selection:
    """The final choice (spec §1.7): ``arch`` by ``rule``, and each rule's pick in ``choices`` (``size_prior``,
    ``prior_free``), from ``candidates`` (the population-wide winners of the last ``window`` iterations)."""
    arch: str
    rule: str
    choices: dict[str, Choice]
    candidates: list[Candidate]
    final_iteration: int
    window: int
    max_params: int
    population: dict | None
    benchmark: Benchmark | None = None
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The content of ``select/selection.json``."""
        out = {"rule": self.rule, "arch": self.arch, "final_iteration": self.final_iteration, "window": self.window,
               "candidates": len(self.candidates), "max_params": self.max_params}
        for rule, c in self.choices.items():
            out[rule] = {"arch": c.arch, "loss": c.loss, "params": c.params, "score": c.score, "wins": c.wins,
                         "ground_truth": c.ground_truth}
        out["population"] = self.population
        return out


@dataclass
class RetrainResult:
    """The chosen architecture trained from scratch: the network (eval mode), the last epoch's ``metrics`` (the
    task's: e.g. train_loss, test_acc in percent), every epoch's row in ``history``, and what rebuilds it
    (``network``: ``build_network`` keyword arguments; ``input_spec``)."""
    model: nn.Module
    arch: str
    metrics: dict
    history: list[dict]
    network: dict
    params: int
    precision: str
    input_spec: dict | None
    seconds: float
    epoch_seconds: list[float]
    replica_digests: list[str] | None = None
    data: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the experiment

class _Callbacks:
    """A history log that also hands every round's record to the callbacks (rounds replayed on resume are not)."""

    def __init__(self, inner, callbacks: list[Callback]):
        self.inner, self.callbacks = inner, callbacks

    def append(self, record: dict) -> None:
        self.inner.append(record)
        if "round" in record:
            for cb in self.callbacks:
                cb(record)

    def commit(self) -> int:
        return self.inner.commit()

    def digest(self) -> str:
        return self.inner.digest()

    def verify(self, length: int, digest: str | None = None):
        return self.inner.verify(length, digest)

    def truncate(self, length: int) -> None:
        self.inner.truncate(length)

    def close(self) -> None:
        self.inner.close()


class Experiment:
    """One search space under one set of params: the four stages as methods that return typed results.

    ``space``: a registered name or a ``file.py:Class`` / ``module:Class`` reference. ``params``: a params file,
    a params dict, or None (defaults); ``overrides``: a nested dict laid over them (``{"nb201": {"search":
    {"iterations": 500}}}``) or ``key=value`` strings (``["nb201.search.iterations=500"]``). ``run_dir``: the output root (``runs``): stages checkpoint and resume under
    ``<run_dir>/<space>/.work/``; None runs in memory. ``log``: where one-line notes go (default: the console,
    rank 0 only). ``validated``: ``params`` is a dict that ``load_params`` returned (not validated again). Raises
    ConfigError (every problem of the params, one line each) or SpaceError.
    """

    def __init__(self, space: str = "nb201", params: str | os.PathLike | Mapping | None = None, *,
                 overrides: Mapping | list[str] | None = None, run_dir: str | os.PathLike | None = None,
                 plugins: Iterable[str] = (), log: Callable[[str], None] | None = None, validated: bool = False):
        if not isinstance(space, str):
            raise EpsError(f"space must be a name or a `file.py:Class` reference (a str), got {type(space).__name__}")
        if params is not None and not isinstance(params, (str, os.PathLike, Mapping)):
            raise EpsError(f"params must be a params file path, a dict or None, got {type(params).__name__}")
        if isinstance(overrides, (list, tuple)) and all(isinstance(o, str) for o in overrides):
            from eps.params import parse_sets
            overrides = parse_sets(overrides)  # ["nb201.search.iterations=500"], as -S takes them
        if overrides is not None and not isinstance(overrides, Mapping):
            raise EpsError(f"overrides must be a nested dict like {{'nb201': {{'search': {{'iterations': 500}}}}}} "
                           f"or a list of 'key=value' strings, got {type(overrides).__name__}")
        if run_dir is not None and not isinstance(run_dir, (str, os.PathLike)):
            raise EpsError(f"run_dir must be a folder path or None, got {type(run_dir).__name__}")
        if run_dir is not None and Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise EpsError(f"run_dir {run_dir} is a file, not a folder; choose another run_dir or move the file")
        self.name = resolve(space)          # registers a space reference on the way
        own = origin_ref(self.name)          # the reference a space kept in a file was registered from
        refs = list(plugins) + ([own] if own else [])
        if validated and isinstance(params, Mapping) and not overrides:  # load_params' own output: typed below
            raw = params
        elif isinstance(params, Mapping):
            file_plugins = params.get("plugins") or []
            raw = _load_params(None, deep_update(dict(params), dict(overrides or {})), refs + list(file_plugins))
        else:
            raw = _load_params(params, dict(overrides) if overrides else None, refs)
        if self.name not in raw:
            space_class(self.name)  # an unknown or broken space: one line naming the choices
            raise ConfigError(f"space {space!r} has no params section; register it with plugins: [{space}]")
        self.params: dict = raw
        typed = params_model(list(refs) + list(dict(raw).get("plugins") or [])).model_validate(dict(raw))
        self.settings: SpaceParams = typed[self.name]
        self.seed: int = raw["seed"]
        self.data_root: Path = _data_root(raw)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._log = log
        self._space: SearchSpace | None = None
        self._bench: list = []
        self._found: SearchResult | None = None      # the last search and selection of this object: the defaults of
        self._chosen: Selection | None = None        # select() and retrain()

    # -------------------------------------------------------------------------------------------- plumbing

    @property
    def space(self) -> SearchSpace:
        """The configured search space (built on first use; the other registered spaces are not built)."""
        if self._space is None:
            self._space = space_class(self.name).from_params(self.settings)
        return self._space

    def benchmark(self) -> Benchmark | None:
        """The space's ground truth when it has one and its file is under the data root, else None (read once)."""
        if not self._bench:
            with data_fingerprint(self.data_root) as data:
                self._bench[:] = [benchmark_of(self.space, self.data_root), data]
        return self._bench[0]

    @property
    def benchmark_files(self) -> dict:
        """The data files the ground truth was read from, with their identities (as ``data_fingerprint``)."""
        self.benchmark()
        return self._bench[1]

    def log(self, msg: str) -> None:
        if not distributed.is_main():
            return
        if self._log is not None:
            self._log(msg)
        else:
            console.print(msg, highlight=False, soft_wrap=True)

    def work_dir(self, stage: str) -> Path | None:
        """Where ``stage`` keeps its checkpoints (None in memory)."""
        return None if self.run_dir is None else self.run_dir / self.name / ".work" / stage

    def _device(self, stage: str) -> torch.device:
        device = distributed.setup(resolve_device(self.params["device"]))
        seed_everything(self.seed + SEED_OFFSET.get(stage, 0), self.params["deterministic"])
        return device

    def _identity(self, stage: str, **parts) -> dict:
        world = {"world_size": distributed.world()} if distributed.world() > 1 else {}
        return plain({"stage": stage, "seed": self.seed, "space": self.settings.space, **parts, **world})

    @staticmethod
    def _callbacks(callbacks) -> list:
        if callable(callbacks):
            return [callbacks]
        try:
            found = list(callbacks)
        except TypeError:
            raise EpsError(f"callbacks must be a list of functions, got {type(callbacks).__name__}") from None
        bad = [c for c in found if not callable(c)]
        if bad:
            raise EpsError(f"callbacks must be functions taking one dict; {bad[0]!r} is a {type(bad[0]).__name__}")
        return found

    def _checked(self, task, kind: str):
        """The task, if it has what eps calls on it (eps/space.py), else one SpaceError line naming what it lacks."""
        members = (("model", "device", *SUPERNET_TASK_METHODS) if kind == "search"
                   else (*RETRAIN_TASK_ATTRIBUTES, *RETRAIN_TASK_METHODS))
        check_members(task, members, f"the {kind} task of space {self.name}")
        return task

    def _refuse_unhonoured(self, task, stages: tuple[str, ...]) -> None:
        bad = unhonoured(task, self.settings, stages)
        if bad:
            keys = ", ".join(f"{self.name}.{k}" for k in bad)
            raise ConfigError(f"{keys}: set, but the task of space {self.name} does not implement "
                              f"{'it' if len(bad) == 1 else 'them'} (not in its `honours`); remove "
                              f"{'it' if len(bad) == 1 else 'them'} from the params or implement it in the task")

    def _refuse_world(self, task, stage: str) -> None:
        """Under torchrun a task that is not data parallel would run whole copies on every rank (the same result,
        N times the cost): refuse it with one line."""
        if distributed.world() > 1 and not supports_distributed(task):
            raise (EpsError if distributed.is_main() else RankError)(f"the {stage} task of space {self.name} does not support several processes "
                           f"(supports_distributed is not set); run it without torchrun")

    # -------------------------------------------------------------------------------------------- stages

    def warmup(self, *, restart: bool = False, callbacks: Iterable[Callback] = ()) -> WarmupResult:
        """``warmup.iterations`` steps along uniformly random paths at constant lr (spec §1.4). ``callbacks``
        receive ``{"iteration", "train_loss"}`` at every checkpoint interval."""
        s, space = self.settings, self.space
        device = self._device("warmup")
        with data_fingerprint(self.data_root) as data:
            task = self._checked(space.search_task(s, self.data_root, device, self.seed + SEED_OFFSET["warmup"],
                                                   "warmup"), "search")
        self._refuse_world(task, "warm-up")
        self._refuse_unhonoured(task, ("warmup",))
        identity = self._identity("warmup", warmup=s.warmup, supernet=s.supernet, data=data, **_engine(task))
        ckpt = CheckpointDir(self.work_dir("warmup"), identity, log=self.log)
        result = run_warmup(space, task, s.warmup, self.seed, ckpt, restart, s.search.on_nonfinite,
                            on_chunk=self._callbacks(callbacks))
        state = {"model": task.model.state_dict()}
        return WarmupResult(task.model, state, "weights:" + distributed.state_digest(state["model"]),
                            result.iterations, result.last_train_loss, result.nonfinite_skipped, result.seconds,
                            result.resumed_from, data)

    def search(self, warmup: WarmupResult | None = None, *, restart: bool = False,
               callbacks: Iterable[Callback] = (), history: eio.AppendLog | None = None) -> SearchResult:
        """The EPS search (spec §1.4-1.6): the supernet trains along the proxy space's paths, every round's group is
        scored and evolved. Starts from ``warmup`` (run here first when None and ``warmup.iterations`` > 0; from the
        supernet's initialisation when 0). ``callbacks`` receive each round's history record as it ends. ``history``
        (advanced): the log that receives the records (default: ``<work>/history.jsonl``, or memory)."""
        s, space = self.settings, self.space
        if warmup is not None and not isinstance(warmup, WarmupResult):
            raise EpsError(f"search(warmup=...) takes the WarmupResult of exp.warmup(), got {type(warmup).__name__}")
        if warmup is None and s.warmup.iterations > 0:
            warmup = self.warmup(restart=restart)
        device = self._device("search")
        if warmup is None:
            # A warm-up of 0 iterations only saves the initialisation, so the supernet is initialised exactly as the
            # warm-up stage would have (its seed), and the search runs as if it had loaded that file.
            seed_everything(self.seed + SEED_OFFSET["warmup"], self.params["deterministic"])
        with data_fingerprint(self.data_root) as data:
            task = self._checked(space.search_task(s, self.data_root, device, self.seed + SEED_OFFSET["search"],
                                                   "search"), "search")
        if warmup is None:
            seed_everything(self.seed + SEED_OFFSET["search"], self.params["deterministic"])
        self._refuse_world(task, "search")
        self._refuse_unhonoured(task, ("search",))
        warm_state, warm_digest = (warmup.state, warmup.digest) if warmup is not None else (None, "initialisation")
        if warm_state is not None:
            _check_warm_state(warm_state["model"], task.model.state_dict(), self.name, warmup.source, warmup.rerun)
        controller = Controller.from_settings(space, np.random.default_rng([self.seed, 2]), s.search)
        identity = self._identity("search", supernet=s.supernet, search=s.search, warmup_supernet=warm_digest,
                                  data=data, **_engine(task))
        work = self.work_dir("search")
        ckpt = CheckpointDir(work, identity, log=self.log)
        own = history is None
        if own:
            history = (eio.AppendLog(work / "history.jsonl") if work is not None and distributed.is_main()
                       else eio.MemoryLog())
        callbacks = self._callbacks(callbacks)
        log = _Callbacks(history, callbacks) if callbacks else history
        try:
            result = run_search(space, task, controller, s.search, log, ckpt, warm_state=warm_state,
                                restart=restart)
            path = getattr(history, "path", None)
            records = (history.records() if isinstance(history, eio.MemoryLog)
                       else read_history(path) if path is not None and distributed.is_main() else [])
        finally:
            if own:
                history.close()
        bench = self.benchmark()
        final = controller.snapshot(result.iterations)
        quality = population_quality(bench, records[-1]) if records else None
        self._found = SearchResult(records, final, task.model, result.iterations, result.rounds,
                                   result.last_train_loss, result.nonfinite_skipped, result.seconds,
                                   result.resumed_from, quality, warm_digest, data)
        return self._found

    def select(self, search: SearchResult | list[dict] | str | os.PathLike | None = None) -> Selection:
        """The final choice (spec §1.7, §6 item 4) from a search's history: a SearchResult, its snapshot records, or
        a ``history.jsonl`` path. Default: this object's last search, else the run folder's published history
        (``<space>/search/history.jsonl``, written by ``eps stage search``), else the history a search through the API
        left in ``<space>/.work/search/``."""
        if search is None:
            search = self._found
        if search is None and self.run_dir is not None:
            published = self.run_dir / self.name / "search" / "history.jsonl"
            work = self.run_dir / self.name / ".work" / "search" / "history.jsonl"
            search = published if published.exists() or not work.exists() else work
        if search is None:
            raise EpsError("select needs a search: exp.select(exp.search()), or a run_dir holding one")
        if not isinstance(search, (SearchResult, str, os.PathLike, list, tuple)):
            raise EpsError(f"select takes a SearchResult, a list of snapshot records or a history.jsonl path, got "
                           f"{type(search).__name__}")
        if isinstance(search, SearchResult):
            snapshots = search.history
        elif isinstance(search, (str, os.PathLike)):
            snapshots = read_history(Path(search))
        else:
            snapshots = list(search)
        space, cfg = self.space, self.settings.select
        bench, data = self.benchmark(), self.benchmark_files  # the ground truth shown beside the choice
        candidates, final = collect_candidates(snapshots, cfg.window)
        if not candidates:
            raise EpsError(f"no measured member in the last {cfg.window} iterations of the history; "
                           f"run a longer search or raise select.window")
        for c in candidates:
            space.decode(c.arch)  # refuse histories written in another space's notation
        max_params = space.num_params(space.largest())
        chosen = choose(candidates, lambda a: space.num_params(space.decode(a)), max_params, cfg.alpha, cfg.beta,
                        order=space.decode)
        choices = {rule: Choice(c.arch, c.loss, c.params, c.score, c.wins, cell_accuracies(bench, c.arch))
                   for rule, c in chosen.items()}
        self._chosen = Selection(choices[cfg.rule].arch, cfg.rule, choices, candidates, final, cfg.window,
                                 max_params, population_quality(bench, snapshots[-1]), bench, data)
        return self._chosen

    def retrain(self, arch: str | Selection | Choice | None = None, *, restart: bool = False,
                callbacks: Iterable[Callback] = (), on_start: Callable[[list[dict]], None] | None = None
                ) -> RetrainResult:
        """Train ``arch`` (the space's notation, a Selection, or one of its ``choices``) from scratch (spec §1.7):
        the retrain task's protocol, ``retrain.epochs`` epochs. Default: this object's last selection, else the run
        folder's ``<space>/select/arch.txt`` (written by ``eps stage select``). ``callbacks`` receive each epoch's
        row (``epoch`` plus the task's train and test metrics) as it ends; ``on_start`` (advanced) the rows a
        resumed checkpoint already holds, once before the first epoch trained here."""
        if arch is None:
            arch = self._chosen
        if isinstance(arch, (Selection, Choice)):
            arch = arch.arch
        if arch is None and self.run_dir is not None:
            arch_file = self.run_dir / self.name / "select" / "arch.txt"
            try:
                arch = arch_file.read_text().strip()
            except OSError as err:
                raise EpsError(f"retrain needs an architecture and {arch_file} cannot be read ({err.strerror}); pass "
                               f"one: exp.retrain(exp.select()) or exp.retrain('<arch>')") from None
        if arch is None:
            raise EpsError("retrain needs an architecture: exp.retrain(selection) or exp.retrain('<arch>')")
        if not isinstance(arch, str):
            raise EpsError(f"retrain takes an architecture in the space's notation (a str), a Selection or a Choice, "
                           f"got {type(arch).__name__}")
        space, s = self.space, self.settings
        cell = space.decode(arch)
        device = self._device("retrain")
        with data_fingerprint(self.data_root) as data:
            task = self._checked(space.retrain_task(cell, s, self.data_root, device,
                                                    self.seed + SEED_OFFSET["retrain"]), "retrain")
        self._refuse_world(task, "retrain")
        self._refuse_unhonoured(task, ("retrain",))
        identity = self._identity("retrain", retrain=s.retrain, arch=arch, data=data)
        # What a usable checkpoint must hold; one that lacks any of it is treated like a corrupt one (prev.pt).
        template = {"task": task.state_dict(), "global_rng": {}, "history": [], "epoch": 0}
        ckpt = CheckpointDir(self.work_dir("retrain"), identity, log=self.log, template=template)
        cbs = self._callbacks(callbacks)
        res = run_retrain(task, s.retrain.epochs, s.retrain.checkpoint_every, ckpt, restart,
                          log=(lambda row: [cb(row) for cb in cbs]) if cbs else None, on_start=on_start)
        world = distributed.world()
        digests = (distributed.all_gather_object(distributed.state_digest(task.model.state_dict()))
                   if world > 1 else None)
        hist = res["history"]
        task.model.eval()
        return RetrainResult(task.model, arch, {k: v for k, v in hist[-1].items() if k != "epoch"}, hist,
                             task.network_config, space.num_params(cell), task.precision,
                             task.input_spec if isinstance(task, DescribesInput) else None, res["seconds"],
                             res["epoch_seconds"], digests, data)

    def run(self, *, callbacks: Iterable[Callback] = ()) -> tuple[SearchResult, Selection, RetrainResult]:
        """Warm-up (if any), search, select and retrain in one call."""
        found = self.search(callbacks=callbacks)
        chosen = self.select(found)
        return found, chosen, self.retrain(chosen, callbacks=callbacks)


# ------------------------------------------------------------------------------------------------ helpers

def read_history(path: Path) -> list[dict]:
    """The snapshot records of a ``history.jsonl``; one-line EpsError for an unreadable file."""
    try:
        return list(eio.read_jsonl(path))
    except (ValueError, OSError) as err:
        raise EpsError(f"{path} is not a readable snapshot history ({type(err).__name__}); "
                       f"rerun the search stage or re-import the records") from None


def _check_warm_state(warm: dict, model: dict, space_name: str, source: str, rerun: str) -> None:
    """The warm-up weights must be this supernet's: same tensors, same shapes (else the space or supernet params
    changed since the warm-up ran)."""
    keys = set(warm) ^ set(model)
    shapes = [k for k in set(warm) & set(model) if tuple(warm[k].shape) != tuple(model[k].shape)]
    if keys or shapes:
        what = f"tensors {', '.join(sorted(keys)[:3])}" if keys else f"shapes of {', '.join(sorted(shapes)[:3])}"
        raise EpsError(f"{source} holds another supernet ({what} differ): the space or supernet params changed since "
                       f"the warm-up ran; rerun it: eps stage warmup --space {cli_name(space_name)}{rerun} --restart")


def _engine(task) -> dict:
    """The engine a supernet task runs (``supernet.engine: auto`` resolved), for the checkpoint identity: a search
    resumes only with the engine it started with, also when ``auto`` would now pick another on this device."""
    engine = getattr(task, "engine", None)
    return {"engine": engine} if isinstance(engine, str) else {}


__all__ = ["Choice", "Experiment", "RetrainResult", "SearchResult", "Selection", "WarmupResult", "build_space",
           "list_spaces", "load_params", "read_history"]
