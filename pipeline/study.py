"""`eps study correlation` as a thin stage: read params, run ``eps.study``, write its outputs atomically.

Outputs under ``<out>/<space>/study/``: ``study.json`` (settings, the two arms and their overrides, every cell's
score and accuracy per seed, set and arm, the metrics, tau over training, the summary over seeds), ``metrics.json``
(the summary's numbers only, per arm and set, for ``dvc metrics`` and ``dvc exp show``), ``report.txt`` (the tables),
``scores_vs_accuracy.png`` and ``tau_over_time.png``. Checkpoints and per-arm results live in
``<out>/<space>/.work/study/seed<N>/<arm>/``, so a rerun resumes, adding a seed reuses the seeds already done, and
changing one arm retrains only that arm.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from eps import io as eio
from eps import report as rep
from eps import study as st
from eps.params import data_root
from eps.errors import EpsError
from eps.space import HasBenchmark, benchmark_of
from eps.spaces import get_space, registered, space_class
from eps.train.common import resolve_device
from eps.pipeline.runfolder import RunPaths, locked, log


def correlation(space_name: str, params: dict, out: str | Path, restart: bool = False) -> dict:
    """Raises EpsError (one line) for a space without a benchmark and ConfigError for a bad ``study.arms``, before
    any folder is made."""
    if not issubclass(space_class(space_name), HasBenchmark):
        having = [n for n in registered() if issubclass(space_class(n), HasBenchmark)]
        raise EpsError(f"eps study correlation ranks cells against a benchmark's ground truth, and space {space_name} "
                       f"has no benchmark; use a space with one: {', '.join(having) or 'none is registered'}")
    st.arm_sections(space_class(space_name).Params, params[space_name], params["study"])
    with locked(RunPaths(out, space_name), "study"):
        return _correlation(space_name, params, out, restart)


def _correlation(space_name: str, params: dict, out: str | Path, restart: bool = False) -> dict:
    section = params[space_name]
    space = get_space(space_name, section)
    root = data_root(params)
    bench = benchmark_of(space, root)  # the same checks as the stages (a partial table is refused)
    paths = RunPaths(out, space_name)
    result = st.run_study(space, bench, section, params["study"], root, resolve_device(params["device"]),
                          paths.work("study"), restart=restart, deterministic=params["deterministic"], log=log)
    d = paths.stage("study")
    tables = [st.table(result)]
    tau = st.tau_table(result)
    if tau is not None:
        tables.append(tau)
    text = rep.render(Console(width=160), tables)
    st.plot_scores(result, d / "scores_vs_accuracy.png")
    st.plot_tau(result, d / "tau_over_time.png")
    eio.write_text(d / "report.txt", text)
    eio.write_json(d / "metrics.json", st.numbers_only({"summary": result["summary"]}))
    eio.write_json(d / "study.json", result)
    log(f"study written to {d} (study.json, metrics.json, report.txt, scores_vs_accuracy.png, tau_over_time.png)")
    return result
