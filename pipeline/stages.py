"""The four stages (plus report) as thin functions: read params and upstream artifacts, call eps, write outputs.

Layout under the output root (default ``runs/``), per space; every stage folder also holds ``params.yaml`` (the
effective params of the space when the stage ran, loadable with ``--params``), ``run.json`` (eps version, digests of
the upstream files it read, descriptive strings such as the strategy or the retrained arch) and ``metrics.json``
(headline numbers only)::

    <space>/warmup/   supernet.pt  timing.json
    <space>/search/   supernet.pt  history.jsonl  population.csv  dvclive/  timing.json
    <space>/select/   selection.json  candidates.csv  arch.txt
    <space>/retrain/  model.pt  curve.csv  dvclive/  timing.json
    <space>/report/   report.txt  *.png
    <space>/.work/<stage>/   checkpoints, the in-progress history and live curves (not a DVC output, so they
                             survive reruns)
    <space>/.work/<stage>.lock   held while a stage writes (one writer per run folder)

``dvclive/plots/metrics/**.tsv`` are the per-round search curves and per-epoch retrain curves (pipeline/curves.py).
A finished stage rerun with the same params and inputs is up to date and touches nothing; one made with other
params is refused unless ``redo`` (pipeline/record.py).

Every file is written atomically; outputs appear only when a stage completes, and as one set: a stage writes them
into ``<space>/.<stage>.staging/`` and swaps that folder in with two renames (a swap cut short by a crash is finished
or undone at the next start), so a folder never mixes files of two runs. ``timing.json`` holds wall-clock figures
and is the only output that differs between two runs with the same seed. The identity of a checkpoint covers the
params, the upstream artifacts and the data files the task read, so a resume with anything changed is refused.
"""
from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import filelock

import numpy as np

from eps import checkpoint, distributed
from eps import io as eio
from eps.analysis import cell_accuracies, population_quality
from eps.checkpoint import CheckpointDir
from eps.config import data_root
from eps.errors import CheckpointError, EpsError
from eps.evolution import Controller
from eps.progress import console
from eps.retrain import run_retrain
from eps.search import run_search, run_warmup
from eps.selection import choose, collect_candidates
from eps.space import DescribesInput, DistributedTask, benchmark_of
from eps.spaces import cli_name, get_space
from eps.train.common import SEED_OFFSET, resolve_device, seed_everything
from eps.pipeline import curves, record

STAGES = ("warmup", "search", "select", "retrain")


def log(msg: str) -> None:
    if distributed.is_main():  # under torchrun, one rank speaks
        console.print(msg, highlight=False, soft_wrap=True)  # paths and architectures stay pasteable


class RunPaths:
    def __init__(self, out: str | Path, space: str):
        self.out = Path(out)
        self.root = self.out / space

    def stage(self, name: str) -> Path:
        return self.root / name

    def work(self, name: str) -> Path:
        return self.root / ".work" / name

    def lock_file(self, name: str) -> Path:
        return self.root / ".work" / f"{name}.lock"


def _check_out(paths: RunPaths) -> None:
    """A one-line error when --out (or a folder eps makes under it) is a regular file."""
    for p in (paths.out, paths.root, paths.root / ".work"):
        if p.exists() and not p.is_dir():
            raise EpsError(f"--out {paths.out}: {p} is a file, not a folder; choose another --out or move the file")


@contextlib.contextmanager
def locked(paths: RunPaths, stage: str):
    """Hold the exclusive lock of ``stage`` in this run folder, or fail at once (one writer per folder and stage;
    the lock is the kernel's, so a killed process never leaves it held). Also finishes or undoes an output swap
    that a crash interrupted."""
    _check_out(paths)
    lock_path = paths.lock_file(stage)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise EpsError(f"another eps process is writing {paths.root} (stage {stage}, lock {lock_path}); wait for it "
                       f"to finish or stop it, then run this command again") from None
    _HELD.add(str(lock_path))
    try:
        busy = _busy_stage(paths, stage)
        if busy is not None:
            raise EpsError(f"another eps process is writing {paths.root} (stage {busy}); one writer per run folder: "
                           f"wait for it to finish or stop it, then run this command again")
        _recover(paths, stage)
        yield
    finally:
        _HELD.discard(str(lock_path))
        lock.release()


_HELD: set[str] = set()   # lock files this process holds (select finishes search's interrupted swap under both)
WRITERS = ("warmup", "search", "select", "retrain", "report", "study")


def _busy_stage(paths: RunPaths, stage: str) -> str | None:
    """A stage of this run folder another process holds the lock of, if any (one writer per run folder)."""
    for other in WRITERS:
        path = paths.lock_file(other)
        if other == stage or str(path) in _HELD or not path.exists():
            continue
        probe = filelock.FileLock(str(path), timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            return other
        probe.release()
    return None


def _recover(paths: RunPaths, stage: str) -> None:
    done = eio.recover(paths.stage(stage))
    if done:
        log(f"note: {paths.stage(stage)}: {done}")


def _outputs(paths: RunPaths, stage: str):
    """The staging folder a stage writes its outputs into; swapped in as one set when the block ends cleanly."""
    return eio.publish(paths.stage(stage))


def _setup(space_name: str, params: dict, stage: str):
    section = params[space_name]
    space = get_space(space_name, section)
    device = resolve_device(params["device"])
    seed_everything(params["seed"] + SEED_OFFSET.get(stage, 0), params["deterministic"])
    return section, space, device


def _check_warm_state(warm: dict, model: dict, path: Path, space_name: str, paths: RunPaths) -> None:
    """The warm-up file must hold this supernet: same tensors, same shapes (else the space or supernet params
    changed since the warm-up ran)."""
    keys = set(warm) ^ set(model)
    shapes = [k for k in set(warm) & set(model) if tuple(warm[k].shape) != tuple(model[k].shape)]
    if keys or shapes:
        what = f"tensors {', '.join(sorted(keys)[:3])}" if keys else f"shapes of {', '.join(sorted(shapes)[:3])}"
        raise EpsError(f"{path} holds another supernet ({what} differ): the space or supernet params changed since "
                       f"the warm-up ran; rerun it: eps stage warmup --space {cli_name(space_name)} "
                       f"--out {paths.out} --restart")


def _require(path: Path, stage: str, space: str, paths: RunPaths | None = None) -> Path:
    if not path.exists() and paths is not None and eio.half_swapped(paths.stage(stage)):
        # the upstream stage was killed while swapping its outputs in: finish that swap, unless it is running now
        with contextlib.suppress(EpsError):
            with locked(paths, stage):
                pass
    if not path.exists():
        raise EpsError(f"{path} not found; run `eps stage {stage} --space {cli_name(space)}` first (with the same "
                       f"--out and --params)")
    return path


def warmup(space_name: str, params: dict, out: str | Path, restart: bool = False, redo: bool = False) -> dict:
    """Under ``torchrun --nproc_per_node N`` the warm-up is data parallel (see ``search``)."""
    try:
        section, space, device = _setup(space_name, params, "warmup")
        device = distributed.setup(device)
        paths = RunPaths(out, space_name)
        with _ranks_locked(paths, "warmup"):
            if distributed.on_main(lambda: _up_to_date(paths, "warmup", params, space_name, {}, redo,
                                                       WARMUP_OUTPUTS)):
                return {"up_to_date": True}
            return _warmup(space_name, params, paths, restart or redo, section, space, device)
    finally:
        distributed.teardown()


@contextlib.contextmanager
def _ranks_locked(paths: RunPaths, stage: str):
    """The stage's lock, held by rank 0 (the one writer); under torchrun every rank stops together when rank 0
    cannot take it."""
    main, world = distributed.is_main(), distributed.world()
    with contextlib.ExitStack() as stack:
        problem = None
        if main:
            try:
                stack.enter_context(locked(paths, stage))
            except (EpsError, OSError) as err:
                if world == 1:
                    raise
                problem = str(err)
        if world > 1:
            problem = next((p for p in distributed.all_gather_object(problem) if p), None)
            if problem:
                raise EpsError(problem)
        yield


WARMUP_OUTPUTS = ["supernet.pt", "metrics.json"]
SEARCH_OUTPUTS = ["supernet.pt", "history.jsonl", "population.csv", "metrics.json", "dvclive"]
SELECT_OUTPUTS = ["selection.json", "candidates.csv", "arch.txt", "metrics.json"]
RETRAIN_OUTPUTS = ["model.pt", "curve.csv", "metrics.json", "dvclive"]


def _up_to_date(paths: RunPaths, stage: str, params: dict, space_name: str, inputs: dict, redo: bool,
                outputs: list[str], upstream: bool = True) -> bool:
    """Check the upstream stage's record against ``params`` (refuses a mismatch), then whether this stage's finished
    outputs already are what it would compute (same params and inputs): then say so and leave them alone. With
    ``redo`` the stage is recomputed from scratch (its checkpoints are discarded). ``upstream=False``: the stage's
    input does not come from the upstream stage (an architecture given on the command line)."""
    if upstream:
        record.check_upstream(paths.root, paths.out, space_name, stage, params, cli_name(space_name))
    # select has no checkpoint: it recomputes in seconds
    ckpt_file = None if stage == "select" else paths.work(stage) / "last.pt"
    if record.finished(paths.stage(stage), params, space_name, stage, inputs, redo, outputs, log=log,
                       checkpoint=ckpt_file, data_root=data_root(params)):
        log(f"{stage}: up to date ({paths.stage(stage)} was made with these params and inputs; --redo recomputes it)")
        return True
    if redo and distributed.is_main():
        CheckpointDir(paths.work(stage), {}).clear()
    return False


def _warmup(space_name: str, params: dict, paths: RunPaths, restart: bool, section, space, device) -> dict:
    with checkpoint.data_fingerprint(data_root(params)) as data:
        task = space.search_task(section, data_root(params), device, params["seed"] + SEED_OFFSET["warmup"],
                                 "warmup")
    identity = {"stage": "warmup", "seed": params["seed"], "space": section["space"], "warmup": section["warmup"],
                "supernet": section["supernet"], "data": data, **_world_identity()}
    ckpt = CheckpointDir(paths.work("warmup"), identity, log=log)
    result = run_warmup(space, task, section["warmup"], params["seed"], ckpt, restart, section["search"]["on_nonfinite"])
    if not distributed.is_main():
        return {"iterations": result.iterations}
    with _outputs(paths, "warmup") as d:
        checkpoint.save(d / "supernet.pt", {"model": task.model.state_dict()})
        eio.write_json(d / "metrics.json", {"iterations": result.iterations,
                                           "last_train_loss": result.last_train_loss,
                                           "nonfinite_skipped": result.nonfinite_skipped})
        eio.write_json(d / "timing.json", {"seconds": result.seconds, "resumed_from": result.resumed_from})
        record.write(d, params, space_name, "warmup", {}, data=data)
    log(f"warmup: {result.iterations} iterations in {result.seconds:.1f}s -> {paths.stage('warmup')}")
    return {"iterations": result.iterations}


def search(space_name: str, params: dict, out: str | Path, restart: bool = False, redo: bool = False) -> dict:
    """Under ``torchrun --nproc_per_node N [--nnodes M ...]`` the search is data parallel: every rank runs the same
    controller (same paths, same population), trains on its slice of each whole batch with batch statistics and
    gradients summed over the ranks (the single-process step up to float rounding), and scores its share of each
    round's members on whole fitness batches; rank 0 reads and writes checkpoints, history and outputs."""
    try:
        section, space, device = _setup(space_name, params, "search")
        device = distributed.setup(device)
        paths = RunPaths(out, space_name)
        with _ranks_locked(paths, "search"):
            def decide():
                warm_path = paths.stage("warmup") / "supernet.pt"
                uses_warmup = (params[space_name]["warmup"]["iterations"] > 0 or warm_path.exists()
                               or eio.half_swapped(paths.stage("warmup")))
                if uses_warmup:
                    _require(warm_path, "warmup", space_name, paths)
                inputs = {"warmup/supernet.pt": checkpoint.file_digest(warm_path) if uses_warmup else "initialisation"}
                return _up_to_date(paths, "search", params, space_name, inputs, redo, SEARCH_OUTPUTS), uses_warmup
            done, uses_warmup = distributed.on_main(decide)
            if done:
                return {"up_to_date": True}
            return _search(space_name, params, paths, restart or redo, uses_warmup, section, space, device)
    finally:
        distributed.teardown()


def _world_identity() -> dict:
    """Part of a checkpoint's identity under torchrun: a run resumes with the number of ranks it started with."""
    return {"world_size": distributed.world()} if distributed.world() > 1 else {}


def _search(space_name: str, params: dict, paths: RunPaths, restart: bool, uses_warmup: bool, section, space,
            device) -> dict:
    cfg = section["search"]
    seed = params["seed"]
    warm_path = paths.stage("warmup") / "supernet.pt"
    if uses_warmup:
        def read_warm():
            try:
                return ({"model": checkpoint.load(_require(warm_path, "warmup", space_name, paths))["model"]},
                        checkpoint.file_digest(warm_path))
            except CheckpointError:
                raise EpsError(f"{warm_path} is corrupt or not an eps supernet file; rerun the warm-up: "
                               f"eps stage warmup --space {cli_name(space_name)} --out {paths.out}") from None
        warm_state, warm_digest = distributed.on_main(read_warm)
        with checkpoint.data_fingerprint(data_root(params)) as data:
            task = space.search_task(section, data_root(params), device, seed + SEED_OFFSET["search"], "search")
    else:
        # A warm-up of 0 iterations only saves the initialisation, so without its file the supernet is initialised
        # exactly as the warm-up stage would have (its seed), and the search runs as if it had loaded that file.
        seed_everything(seed + SEED_OFFSET["warmup"], params["deterministic"])
        with checkpoint.data_fingerprint(data_root(params)) as data:
            task = space.search_task(section, data_root(params), device, seed + SEED_OFFSET["search"], "search")
        seed_everything(seed + SEED_OFFSET["search"], params["deterministic"])
        warm_state, warm_digest = None, "initialisation"
    if warm_state is not None:
        _check_warm_state(warm_state["model"], task.model.state_dict(), warm_path, space_name, paths)
    controller = Controller.from_settings(space, np.random.default_rng([params["seed"], 2]), cfg)
    identity = {"stage": "search", "seed": params["seed"], "space": section["space"], "supernet": section["supernet"],
                "search": cfg, "warmup_supernet": warm_digest, "data": data, **_world_identity()}
    work = paths.work("search")
    ckpt = CheckpointDir(work, identity, log=log)
    bench = benchmark_of(space, data_root(params))
    main = distributed.is_main()
    history = curves.LiveHistory(work / "history.jsonl", work / "dvclive", bench) if main else eio.NullLog()
    try:
        result = run_search(space, task, controller, cfg, history, ckpt, warm_state=warm_state, restart=restart)
    finally:
        history.close()
    if not main:
        return {"iterations": result.iterations}
    final = controller.snapshot(result.iterations)
    snapshots = load_history(work / "history.jsonl")
    metrics = {"iterations": result.iterations, "rounds": result.rounds, "last_train_loss": result.last_train_loss,
               "nonfinite_skipped": result.nonfinite_skipped, "distinct_archs_final": len(set(final["arch"]))}
    quality = population_quality(bench, snapshots[-1]) if snapshots else None
    if quality is not None:
        metrics.update(population_mean_acc=quality["mean_acc"], population_max_acc=quality["max_acc"],
                       population_tau=quality["tau_all"])
    with _outputs(paths, "search") as d:
        eio.copy_file(work / "history.jsonl", d / "history.jsonl")
        checkpoint.save(d / "supernet.pt", {"model": task.model.state_dict()})
        _write_population(d / "population.csv", final)
        curves.publish([curves.search_row(s, bench) for s in snapshots if "round" in s], d / "dvclive")
        eio.write_json(d / "metrics.json", metrics)
        eio.write_json(d / "timing.json", {"seconds": result.seconds, "resumed_from": result.resumed_from,
                                          "seconds_per_round": result.seconds / max(1, result.rounds)})
        record.write(d, params, space_name, "search", {"warmup/supernet.pt": warm_digest},
                     strategy=cfg["strategy"], data=data)
    log(f"search: {result.iterations} iterations, {result.rounds} rounds in {result.seconds:.1f}s "
        f"-> {paths.stage('search')}")
    return {"iterations": result.iterations}


def _write_population(path: Path, snap: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["position", "arch", "loss", "count", "age"])
    for i, row in enumerate(zip(snap["arch"], snap["loss"], snap["count"], snap["age"])):
        w.writerow([i, *row])
    eio.write_text(path, buf.getvalue())


def load_history(path: Path) -> list[dict]:
    try:
        return list(eio.read_jsonl(path))
    except (ValueError, OSError) as err:
        raise EpsError(f"{path} is not a readable snapshot history ({type(err).__name__}); "
                       f"rerun the search stage or re-import the records") from None


def select(space_name: str, params: dict, out: str | Path, restart: bool = False, redo: bool = False) -> dict:
    paths = RunPaths(out, space_name)
    with locked(paths, "select"):
        history = _require(paths.stage("search") / "history.jsonl", "search", space_name, paths)
        space = get_space(space_name, params[space_name])
        with checkpoint.data_fingerprint(data_root(params)) as data:  # the ground truth shown beside the choice
            bench = benchmark_of(space, data_root(params))
        inputs = {"search/history.jsonl": checkpoint.file_digest(history), "data": data}
        if _up_to_date(paths, "select", params, space_name, inputs, redo, SELECT_OUTPUTS):
            return eio.read_json(paths.stage("select") / "selection.json")
        return _select(space_name, params, paths, inputs, space, bench)


def _select(space_name: str, params: dict, paths: RunPaths, inputs: dict, space, bench) -> dict:
    section = params[space_name]
    snapshots = load_history(paths.stage("search") / "history.jsonl")
    cfg = section["select"]
    candidates, final = collect_candidates(snapshots, cfg["window"])
    if not candidates:
        raise EpsError(f"no measured member in the last {cfg['window']} iterations of the history; "
                       f"run a longer search or raise select.window")
    for c in candidates:
        space.decode(c.arch)  # refuse histories written in another space's notation
    max_params = space.num_params(space.largest())
    chosen = choose(candidates, lambda a: space.num_params(space.decode(a)), max_params,
                    cfg["alpha"], cfg["beta"], order=space.decode)
    result = {"rule": cfg["rule"], "arch": chosen[cfg["rule"]].arch, "final_iteration": final,
              "window": cfg["window"], "candidates": len(candidates), "max_params": max_params}
    for rule, c in chosen.items():
        result[rule] = {"arch": c.arch, "loss": c.loss, "params": c.params, "score": c.score, "wins": c.wins,
                        "ground_truth": cell_accuracies(bench, c.arch)}
    result["population"] = population_quality(bench, snapshots[-1])
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = bench.columns if bench is not None else []
    w.writerow(["arch", "latest_loss", "wins", "last_iteration", "params", "size_prior_score", *cols])
    for c in sorted(candidates, key=lambda c: c.score):
        gt = cell_accuracies(bench, c.arch) or {}
        w.writerow([c.arch, c.loss, c.wins, c.last_iteration, c.params, c.score, *[gt.get(k, "") for k in cols]])
    picked = result[cfg["rule"]]
    metrics = {"candidates": len(candidates), "chosen_loss": picked["loss"], "chosen_params": picked["params"]}
    if picked["ground_truth"]:
        metrics.update(chosen_acc=picked["ground_truth"][bench.primary], chosen_rank=picked["ground_truth"]["rank"])
    with _outputs(paths, "select") as d:
        eio.write_text(d / "candidates.csv", buf.getvalue())
        eio.write_json(d / "selection.json", result)
        eio.write_text(d / "arch.txt", result["arch"] + "\n")
        eio.write_json(d / "metrics.json", metrics)
        record.write(d, params, space_name, "select", inputs, rule=cfg["rule"], arch=result["arch"])
    log(f"select ({cfg['rule']}): {result['arch']} from {len(candidates)} candidates -> {paths.stage('select')}")
    return result


def retrain(space_name: str, params: dict, out: str | Path, restart: bool = False, arch: str | None = None,
            redo: bool = False) -> dict:
    """Under ``torchrun --nproc_per_node N`` this trains with DDP (for spaces whose task supports it); every rank
    trains, only rank 0 writes checkpoints and outputs (and holds the stage's lock)."""
    try:
        return _retrain(space_name, params, out, restart, arch, redo)
    finally:
        distributed.teardown()


def _retrain(space_name: str, params: dict, out: str | Path, restart: bool, arch: str | None, redo: bool) -> dict:
    section, space, device = _setup(space_name, params, "retrain")
    device = distributed.setup(device)
    main, world = distributed.is_main(), distributed.world()
    paths = RunPaths(out, space_name)
    with _ranks_locked(paths, "retrain"):
        def decide():
            chosen, inputs = arch, {"arch": arch}
            if chosen is None:
                arch_file = _require(paths.stage("select") / "arch.txt", "select", space_name, paths)
                chosen = arch_file.read_text().strip()
                inputs = {"arch": chosen, "select/arch.txt": checkpoint.file_digest(arch_file)}
                try:
                    space.decode(chosen)
                except EpsError as err:
                    raise EpsError(f"{arch_file} does not hold an architecture of {space_name} ({err}); rerun "
                                   f"`eps stage select --space {cli_name(space_name)} --out {paths.out} --redo`") from None
            done = _up_to_date(paths, "retrain", params, space_name, inputs, redo, RETRAIN_OUTPUTS,
                               upstream=arch is None)
            return chosen, inputs, (eio.read_json(paths.stage("retrain") / "metrics.json") if done else None)
        chosen, inputs, finished = distributed.on_main(decide)
        if finished is not None:
            return finished
        return _retrain_locked(space_name, params, paths, restart or redo, chosen, section, space, device, main,
                               world, inputs)


def _retrain_locked(space_name, params, paths: RunPaths, restart, arch, section, space, device, main, world,
                    inputs: dict) -> dict:
    cell = space.decode(arch)
    cfg = section["retrain"]
    with checkpoint.data_fingerprint(data_root(params)) as data:
        task = space.retrain_task(cell, section, data_root(params), device, params["seed"] + SEED_OFFSET["retrain"])
    if world > 1 and not (isinstance(task, DistributedTask) and task.supports_distributed):
        raise EpsError(f"retrain of space {space_name} does not support several processes; run it without torchrun")
    identity = {"stage": "retrain", "seed": params["seed"], "space": section["space"], "retrain": cfg, "arch": arch,
                "data": data}
    if world > 1:
        identity["world_size"] = world
    # What a usable checkpoint must hold; one that lacks any of it is treated like a corrupt one (prev.pt is tried).
    template = {"task": task.state_dict(), "global_rng": {}, "history": [], "epoch": 0}
    ckpt = CheckpointDir(paths.work("retrain"), identity, log=log, template=template)
    live = curves.Curves(paths.work("retrain") / "dvclive") if main else None

    def row_log(row: dict) -> None:
        log("  " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()))
        live.log(curves.retrain_row(row))

    try:
        res = run_retrain(task, cfg["epochs"], cfg["checkpoint_every"], ckpt, restart, log=row_log if main else None,
                          on_start=(lambda rows: live.reset([curves.retrain_row(r) for r in rows])) if main else None)
    finally:
        if live is not None:
            live.close()
    digests = distributed.all_gather_object(distributed.state_digest(task.model.state_dict())) if world > 1 else None
    if not main:
        return {k: v for k, v in res["history"][-1].items() if k != "epoch"}
    hist = res["history"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(hist[0].keys()))
    w.writeheader()
    w.writerows(hist)
    final = {k: v for k, v in hist[-1].items() if k != "epoch"}
    timing = {"seconds": res["seconds"], "epoch_seconds": res["epoch_seconds"]}
    if digests is not None:  # DDP replicas must end identical; a mismatch is reported, the outputs still written
        timing.update(world_size=world, replica_digests=digests, replicas_identical=len(set(digests)) == 1)
        if len(set(digests)) > 1:
            log(f"warning: the {world} DDP replicas ended with different weights ({', '.join(digests)})")
    with _outputs(paths, "retrain") as d:
        from eps.model_file import save_model  # a plain torch file that eps.load_model rebuilds the network from
        save_model(d / "model.pt", space=space_name, arch=arch, network=task.network_config,
                   state_dict=task.model.state_dict(), space_settings=section["space"],
                   input_spec=task.input_spec if isinstance(task, DescribesInput) else None)
        eio.write_text(d / "curve.csv", buf.getvalue())
        curves.publish([curves.retrain_row(r) for r in hist], d / "dvclive")
        eio.write_json(d / "metrics.json", {"epochs": len(hist), "params": space.num_params(cell), **final})
        eio.write_json(d / "timing.json", timing)
        record.write(d, params, space_name, "retrain", inputs, arch=arch, precision=task.precision, data=data)
    log(f"retrain: {len(hist)} epochs -> {paths.stage('retrain')}")
    return final
