"""Search quality against a benchmark's ground truth: chosen cell, final population, ranking correlation.

Works with any ``eps.space.Benchmark`` (NAS-Bench-201's ``GroundTruth`` is one), ranking by its ``primary``
column, so a space that brings a tabular benchmark gets these figures without touching the stages.
"""
from __future__ import annotations

import numpy as np

from eps.metrics import kendall_tau, spearman_rho


def cell_accuracies(bench, arch: str) -> dict | None:
    if bench is None or not bench.has(arch):
        return None
    out = {col: bench.accuracy(arch, col) for col in bench.columns}
    out["rank"] = bench.rank(arch, bench.primary)
    out["rank_of"] = len(bench)
    return out


def population_quality(bench, snapshot: dict, top_fraction: float = 0.2) -> dict | None:
    """Accuracy statistics of the final population, and tau/rho between -loss and accuracy over measured members."""
    if bench is None or not snapshot:
        return None
    primary = bench.primary
    archs = [a for a in snapshot["arch"] if bench.has(a)]
    if not archs:
        return None
    acc = np.array([bench.accuracy(a, primary) for a in archs])
    in_top = bench.top_fraction_mask(archs, column=primary, fraction=top_fraction)
    measured = [(a, l) for a, l, c in zip(snapshot["arch"], snapshot["loss"], snapshot["count"])
                if c >= 1 and l is not None and bench.has(a)]
    m_acc = np.array([bench.accuracy(a, primary) for a, _ in measured])
    m_neg_loss = -np.array([l for _, l in measured])
    m_top = bench.top_fraction_mask([a for a, _ in measured], column=primary, fraction=top_fraction) \
        if measured else np.zeros(0, bool)
    return {
        "metric": primary,
        "members": len(archs),
        "mean_acc": float(acc.mean()),
        "max_acc": float(acc.max()),
        "top_share": float(in_top.mean()),
        "top_fraction": top_fraction,
        "measured": len(measured),
        "tau_all": kendall_tau(m_neg_loss, m_acc),
        "rho_all": spearman_rho(m_neg_loss, m_acc),
        "measured_top": int(m_top.sum()),
        "tau_top": kendall_tau(m_neg_loss[m_top], m_acc[m_top]),
        "rho_top": spearman_rho(m_neg_loss[m_top], m_acc[m_top]),
    }


def accuracy_over_time(bench, snapshots: list[dict]) -> dict | None:
    """Per snapshot: mean and max ground-truth accuracy (percent, the benchmark's ``column``) of the population
    members the benchmark knows (for the report's plot)."""
    if bench is None:
        return None
    its, mean, best, primary = [], [], [], bench.primary
    for snap in snapshots:
        acc = [bench.accuracy(a, primary) for a in snap["arch"] if bench.has(a)]
        if acc:
            its.append(snap["iteration"])
            mean.append(float(np.mean(acc)))
            best.append(float(np.max(acc)))
    return {"iteration": its, "mean": mean, "max": best, "column": primary}


def final_population(bench, snapshot: dict, chosen: dict[str, tuple[str, float]] | None = None) -> dict | None:
    """The final population against the ground truth, member by member (the report's loss-vs-accuracy plot).

    ``snapshot``: a checked history record (``arch``, ``loss``, ``count``, ``iteration``); ``chosen``: rule ->
    (arch, latest loss from the selection). Returns ``neg_loss`` and ``acc`` (percent, ``bench.primary``) of the
    measured members the benchmark knows, their Kendall tau (NaN below two), the counts ``members``,
    ``unmeasured`` (known to the benchmark, never measured) and ``not_in_benchmark``, and ``chosen``: rule ->
    (-loss, accuracy) for the chosen cells the benchmark knows, the loss being the cell's final-population
    measurement when it has one, else the selection's. None without a benchmark.
    """
    if bench is None or not snapshot:
        return None
    primary = bench.primary
    neg_loss, acc, final_loss = [], [], {}
    unmeasured = not_in_benchmark = 0
    for arch, loss, count in zip(snapshot["arch"], snapshot["loss"], snapshot["count"]):
        if not bench.has(arch):
            not_in_benchmark += 1
        elif count >= 1 and loss is not None and np.isfinite(loss):
            neg_loss.append(-float(loss))
            acc.append(bench.accuracy(arch, primary))
            final_loss.setdefault(arch, float(loss))
        else:
            unmeasured += 1
    marked = {}
    for rule, (arch, loss) in (chosen or {}).items():
        if bench.has(arch):
            marked[rule] = (-final_loss.get(arch, float(loss)), bench.accuracy(arch, primary))
    return {"column": primary, "iteration": snapshot.get("iteration"), "members": len(snapshot["arch"]),
            "neg_loss": neg_loss, "acc": acc, "tau": kendall_tau(neg_loss, acc), "unmeasured": unmeasured,
            "not_in_benchmark": not_in_benchmark, "chosen": marked}
