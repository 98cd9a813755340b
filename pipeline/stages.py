"""The four stages as thin functions over the Python API (``eps.api.Experiment``): take the run folder's lock, decide
whether the stage is up to date, run it, publish its outputs and record.

Layout under the output root (default ``runs/``), per space; every stage folder also holds ``params.yaml`` (the
effective params of the space when the stage ran, loadable with ``--params``), ``run.json`` (eps version, digests of
the upstream files it read, descriptive strings such as the strategy or the retrained arch) and ``metrics.json``
(headline numbers only)::

    <space>/warmup/   supernet.pt  timing.json
    <space>/search/   supernet.pt  history.jsonl  population.csv  dvclive/  timing.json
    <space>/select/   selection.json  candidates.csv  arch.txt
    <space>/retrain/  model.pt  curve.csv  dvclive/  timing.json
    <space>/report/   report.txt  *.svg *.png (300 dpi)
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

import csv
import io
from pathlib import Path

from eps import checkpoint, distributed
from eps import io as eio
from eps.analysis import cell_accuracies
from eps.api import Experiment, WarmupResult
from eps.errors import CheckpointError, EpsError
from eps.model_file import save_model
from eps.train.common import resolve_device
from eps.pipeline import curves, record
from eps.pipeline.runfolder import (RETRAIN_OUTPUTS, SEARCH_OUTPUTS, SELECT_OUTPUTS, STAGES, WARMUP_OUTPUTS,  # noqa: F401
                                    RunPaths, finish_redo, load_history, locked, log, outputs, ranks_locked, require,
                                    start_redo, up_to_date)
from eps.spaces import cli_name


def _experiment(space_name: str, params: dict, out: str | Path) -> Experiment:
    """The API's experiment over this run folder; joins torchrun's process group first (the lock needs it)."""
    distributed.setup(resolve_device(params["device"]))
    return Experiment(space_name, params, run_dir=out, log=log, validated=True)


def warmup(space_name: str, params: dict, out: str | Path, restart: bool = False, redo: bool = False) -> dict:
    """Under ``torchrun --nproc_per_node N`` the warm-up is data parallel (see ``search``)."""
    try:
        exp = _experiment(space_name, params, out)
        paths = RunPaths(out, space_name)
        with ranks_locked(paths, "warmup"):
            def decide():
                if up_to_date(paths, "warmup", params, space_name, {}, redo, WARMUP_OUTPUTS):
                    return True, False
                return False, redo and start_redo(paths, "warmup", params, space_name, {}, restart)
            done, resumed = distributed.on_main(decide)
            if done:
                return {"up_to_date": True}
            res = exp.warmup(restart=restart or (redo and not resumed))
            if not distributed.is_main():
                return {"iterations": res.iterations}
            with outputs(paths, "warmup") as d:
                checkpoint.save(d / "supernet.pt", {"model": res.state["model"]})
                eio.write_json(d / "metrics.json", {"iterations": res.iterations,
                                                    "last_train_loss": res.last_train_loss,
                                                    "nonfinite_skipped": res.nonfinite_skipped})
                eio.write_json(d / "timing.json", {"seconds": res.seconds, "resumed_from": res.resumed_from})
                record.write(d, params, space_name, "warmup", {}, data=res.data)
            finish_redo(paths, "warmup")
            log(f"warmup: {res.iterations} iterations in {res.seconds:.1f}s -> {paths.stage('warmup')}")
            return {"iterations": res.iterations}
    finally:
        distributed.teardown()


def search(space_name: str, params: dict, out: str | Path, restart: bool = False, redo: bool = False) -> dict:
    """Under ``torchrun --nproc_per_node N [--nnodes M ...]`` the search is data parallel: every rank runs the same
    controller (same paths, same population), trains on its slice of each whole batch with batch statistics and
    gradients summed over the ranks (the single-process step up to float rounding), and scores its share of each
    round's members on whole fitness batches; rank 0 reads and writes checkpoints, history and outputs."""
    try:
        exp = _experiment(space_name, params, out)
        paths = RunPaths(out, space_name)
        warm_path = paths.stage("warmup") / "supernet.pt"
        with ranks_locked(paths, "search"):
            def decide():
                # A warm-up of 0 iterations saves the initialisation, which the search reproduces without its file
                # (the same seed): then the file is not an input, so `eps stage search` alone, `eps run` and the
                # Python API share one search checkpoint.
                uses_warmup = params[space_name]["warmup"]["iterations"] > 0
                if uses_warmup:
                    require(warm_path, "warmup", space_name, paths)
                inputs = {"warmup/supernet.pt": checkpoint.file_digest(warm_path) if uses_warmup else "initialisation"}
                if up_to_date(paths, "search", params, space_name, inputs, redo, SEARCH_OUTPUTS):
                    return True, uses_warmup, False
                return False, uses_warmup, redo and start_redo(paths, "search", params, space_name, inputs, restart)
            done, uses_warmup, resumed = distributed.on_main(decide)
            if done:
                return {"up_to_date": True}
            warm = _read_warmup(warm_path, space_name, paths) if uses_warmup else None
            return _search(exp, space_name, params, paths, restart or (redo and not resumed), warm)
    finally:
        distributed.teardown()


def _read_warmup(path: Path, space_name: str, paths: RunPaths) -> WarmupResult:
    """The published warm-up supernet, read on rank 0 and given to every rank."""
    def read():
        try:
            return ({"model": checkpoint.load(require(path, "warmup", space_name, paths))["model"]},
                    checkpoint.file_digest(path))
        except CheckpointError:
            raise EpsError(f"{path} is corrupt or not an eps supernet file; rerun the warm-up: "
                           f"eps stage warmup --space {cli_name(space_name)} --out {paths.out}") from None
    state, digest = distributed.on_main(read)
    return WarmupResult(None, state, digest, 0, float("nan"), 0, source=str(path), rerun=f" --out {paths.out}")


def _search(exp: Experiment, space_name: str, params: dict, paths: RunPaths, restart: bool,
            warm: WarmupResult | None) -> dict:
    work = paths.work("search")
    main = distributed.is_main()
    bench = exp.benchmark() if main else None
    history = curves.LiveHistory(work / "history.jsonl", work / "dvclive", bench) if main else eio.NullLog()
    try:
        res = exp.search(warm, restart=restart, history=history)
    finally:
        history.close()
    if not main:
        return {"iterations": res.iterations}
    snapshots = res.history
    metrics = {"iterations": res.iterations, "rounds": res.rounds, "last_train_loss": res.last_train_loss,
               "nonfinite_skipped": res.nonfinite_skipped, "distinct_archs_final": len(set(res.population["arch"]))}
    if res.quality is not None:
        metrics.update(population_mean_acc=res.quality["mean_acc"], population_max_acc=res.quality["max_acc"],
                       population_tau=res.quality["tau_all"])
    with outputs(paths, "search") as d:
        eio.copy_file(work / "history.jsonl", d / "history.jsonl")
        checkpoint.save(d / "supernet.pt", {"model": res.supernet.state_dict()})
        _write_population(d / "population.csv", res.population)
        curves.publish([curves.search_row(s, bench) for s in snapshots if "round" in s], d / "dvclive")
        eio.write_json(d / "metrics.json", metrics)
        eio.write_json(d / "timing.json", {"seconds": res.seconds, "resumed_from": res.resumed_from,
                                          "seconds_per_round": res.seconds / max(1, res.rounds)})
        record.write(d, params, space_name, "search", {"warmup/supernet.pt": res.warmup_digest},
                     strategy=exp.settings.search.strategy, data=res.data)
    finish_redo(paths, "search")
    log(f"search: {res.iterations} iterations, {res.rounds} rounds in {res.seconds:.1f}s -> {paths.stage('search')}")
    return {"iterations": res.iterations}


def _write_population(path: Path, snap: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["position", "arch", "loss", "count", "age"])
    for i, row in enumerate(zip(snap["arch"], snap["loss"], snap["count"], snap["age"])):
        w.writerow([i, *row])
    eio.write_text(path, buf.getvalue())



def select(space_name: str, params: dict, out: str | Path, restart: bool = False, redo: bool = False) -> dict:
    paths = RunPaths(out, space_name)
    with locked(paths, "select"):
        history = require(paths.stage("search") / "history.jsonl", "search", space_name, paths)
        exp = Experiment(space_name, params, run_dir=out, log=log, validated=True)
        # the ground truth shown beside the choice is an input: read once here, reused by exp.select
        inputs = {"search/history.jsonl": checkpoint.file_digest(history), "data": exp.benchmark_files}
        if up_to_date(paths, "select", params, space_name, inputs, redo, SELECT_OUTPUTS):
            return eio.read_json(paths.stage("select") / "selection.json")
        chosen = exp.select(history)
        result = chosen.to_json()
        bench = chosen.benchmark
        buf = io.StringIO()
        w = csv.writer(buf)
        cols = bench.columns if bench is not None else []
        w.writerow(["arch", "latest_loss", "wins", "last_iteration", "params", "size_prior_score", *cols])
        for c in sorted(chosen.candidates, key=lambda c: c.score):
            gt = _accuracies(bench, c.arch)
            w.writerow([c.arch, c.loss, c.wins, c.last_iteration, c.params, c.score, *[gt.get(k, "") for k in cols]])
        picked = chosen.choices[chosen.rule]
        metrics = {"candidates": len(chosen.candidates), "chosen_loss": picked.loss, "chosen_params": picked.params}
        if picked.ground_truth:
            metrics.update(chosen_acc=picked.ground_truth[bench.primary], chosen_rank=picked.ground_truth["rank"])
        with outputs(paths, "select") as d:
            eio.write_text(d / "candidates.csv", buf.getvalue())
            eio.write_json(d / "selection.json", result)
            eio.write_text(d / "arch.txt", chosen.arch + "\n")
            eio.write_json(d / "metrics.json", metrics)
            record.write(d, params, space_name, "select", inputs, rule=chosen.rule, arch=chosen.arch)
        log(f"select ({chosen.rule}): {chosen.arch} from {len(chosen.candidates)} candidates -> "
            f"{paths.stage('select')}")
        return result


def _accuracies(bench, arch: str) -> dict:
    return cell_accuracies(bench, arch) or {}


def retrain(space_name: str, params: dict, out: str | Path, restart: bool = False, arch: str | None = None,
            redo: bool = False) -> dict:
    """Under ``torchrun --nproc_per_node N`` this trains with DDP (for spaces whose task supports it); every rank
    trains, only rank 0 writes checkpoints and outputs (and holds the stage's lock)."""
    try:
        exp = _experiment(space_name, params, out)
        paths = RunPaths(out, space_name)
        with ranks_locked(paths, "retrain"):
            def decide():
                chosen, inputs = arch, {"arch": arch}
                if chosen is None:
                    arch_file = require(paths.stage("select") / "arch.txt", "select", space_name, paths)
                    try:
                        chosen = arch_file.read_text(encoding="utf-8").strip()
                        exp.space.decode(chosen)
                    except (EpsError, UnicodeDecodeError) as err:
                        raise EpsError(f"{arch_file} does not hold an architecture of {space_name} ({err}); rerun "
                                       f"`eps stage select --space {cli_name(space_name)} --out {paths.out} "
                                       f"--redo`") from None
                    inputs = {"arch": chosen, "select/arch.txt": checkpoint.file_digest(arch_file)}
                done = up_to_date(paths, "retrain", params, space_name, inputs, redo, RETRAIN_OUTPUTS,
                                  upstream=arch is None)
                resumed = not done and redo and start_redo(paths, "retrain", params, space_name, inputs, restart)
                return (chosen, inputs, (eio.read_json(paths.stage("retrain") / "metrics.json") if done else None),
                        resumed)
            chosen, inputs, finished, resumed = distributed.on_main(decide)
            if finished is not None:
                return finished
            return _retrain(exp, space_name, params, paths, restart or (redo and not resumed), chosen, inputs)
    finally:
        distributed.teardown()


def _retrain(exp: Experiment, space_name: str, params: dict, paths: RunPaths, restart: bool, arch: str,
             inputs: dict) -> dict:
    main = distributed.is_main()
    live = curves.Curves(paths.work("retrain") / "dvclive") if main else None

    def row_log(row: dict) -> None:
        log("  " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()))
        live.log(curves.retrain_row(row))

    try:
        res = exp.retrain(arch, restart=restart, callbacks=[row_log] if main else (),
                          on_start=(lambda rows: live.reset([curves.retrain_row(r) for r in rows])) if main else None)
    finally:
        if live is not None:
            live.close()
    if not main:
        return res.metrics
    hist = res.history
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(hist[0].keys()))
    w.writeheader()
    w.writerows(hist)
    timing = {"seconds": res.seconds, "epoch_seconds": res.epoch_seconds}
    digests = res.replica_digests
    if digests is not None:  # DDP replicas must end identical; a mismatch is reported, the outputs still written
        world = len(digests)
        timing.update(world_size=world, replica_digests=digests, replicas_identical=len(set(digests)) == 1)
        if len(set(digests)) > 1:
            log(f"warning: the {world} DDP replicas ended with different weights ({', '.join(digests)})")
    with outputs(paths, "retrain") as d:
        # a plain torch file that eps.load_model rebuilds the network from
        save_model(d / "model.pt", space=space_name, arch=arch, network=res.network, state_dict=res.model.state_dict(),
                   space_settings=exp.settings.space.to_dict(), input_spec=res.input_spec)
        eio.write_text(d / "curve.csv", buf.getvalue())
        curves.publish([curves.retrain_row(r) for r in hist], d / "dvclive")
        eio.write_json(d / "metrics.json", {"epochs": len(hist), "params": res.params, **res.metrics})
        eio.write_json(d / "timing.json", timing)
        record.write(d, params, space_name, "retrain", inputs, arch=arch, precision=res.precision, data=res.data)
    finish_redo(paths, "retrain")
    log(f"retrain: {len(hist)} epochs -> {paths.stage('retrain')}")
    return res.metrics
