"""Rich terminal summaries and PNG plots of a run. Input: the artifacts the stages wrote, already loaded."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from eps import plotting


def _fmt(v, nd=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def settings_table(space: str, params: dict) -> Table:
    sec = params[space]
    t = Table(title=f"{space}: settings", show_header=True)
    t.add_column("stage"), t.add_column("key settings")
    s = sec["search"]
    t.add_row("search", f"strategy {s['strategy']}, {s['iterations']} iterations, population {s['population']}, "
                        f"group {s['group']}, {s['parents']}x{s['children_per_parent']} children every "
                        f"{s['val_interval']} steps, batch {s['batch_size']}, lr {s['lr']}")
    t.add_row("warmup", f"{sec['warmup']['iterations']} iterations")
    sel = sec["select"]
    t.add_row("select", f"rule {sel['rule']}, window {sel['window']} iterations"
              + (f", alpha {sel['alpha']}, beta {sel['beta']}" if "alpha" in sel else ""))
    r = sec["retrain"]
    t.add_row("retrain", f"{r['epochs']} epochs, batch {r['batch_size']}, lr {r['lr']}")
    t.add_row("seed", str(params["seed"]))
    return t


def search_table(metrics: dict, timing: dict | None) -> Table:
    t = Table(title="search summary")
    t.add_column("item"), t.add_column("value", justify="right")
    for k in ("strategy", "iterations", "rounds", "last_train_loss", "distinct_archs_final", "nonfinite_skipped"):
        if k in metrics:
            t.add_row(k.replace("_", " "), _fmt(metrics[k]))
    if timing:
        t.add_row("wall time (s)", _fmt(timing.get("seconds"), 1))
        t.add_row("seconds per round", _fmt(timing.get("seconds_per_round"), 2))
    return t


SHORT_NAMES = {"cifar10_valid": "C10 valid", "cifar10_test": "C10 test", "nats_cifar10_test": "C10 test (NATS)",
               "cifar100_test": "C100 test", "nats_cifar100_test": "C100 test", "imagenet16_test": "IN16-120 test",
               "nats_imagenet16_test": "IN16-120 test"}


def chosen_table(selection: dict) -> Table:
    t = Table(title=f"chosen architecture (retrained: {selection['rule']}; {selection['candidates']} candidates from "
                    f"the last {selection['window']} iterations)")
    t.add_column("rule"), t.add_column("architecture", overflow="fold", ratio=1)
    t.add_column("latest loss", justify="right"), t.add_column("params (M)", justify="right")
    for rule in ("size_prior", "prior_free"):
        c = selection.get(rule)
        if c:
            t.add_row(rule, c["arch"], _fmt(c["loss"]), f"{c['params'] / 1e6:.4f}")
    return t


def ground_truth_table(selection: dict) -> Table | None:
    rows = [(rule, (selection.get(rule) or {}).get("ground_truth")) for rule in ("size_prior", "prior_free")]
    rows = [(rule, gt) for rule, gt in rows if gt]
    if not rows:
        return None
    cols = [k for k in rows[0][1] if k not in ("rank", "rank_of")]
    t = Table(title="chosen cells on the benchmark (accuracy %, rank by C10 test)")
    t.add_column("rule")
    for k in cols:
        t.add_column(SHORT_NAMES.get(k, k), justify="right")
    t.add_column("rank", justify="right")
    for rule, gt in rows:
        t.add_row(rule, *[_fmt(gt.get(k), 2) for k in cols], f"{gt['rank']} / {gt['rank_of']}")
    return t


def population_table(pop: dict) -> Table:
    t = Table(title=f"final population vs ground truth ({pop['metric']})")
    t.add_column("item"), t.add_column("value", justify="right")
    t.add_row("members", str(pop["members"]))
    t.add_row("mean accuracy", _fmt(pop["mean_acc"], 2))
    t.add_row("max accuracy", _fmt(pop["max_acc"], 2))
    t.add_row(f"share in global top {pop['top_fraction']:.0%}", f"{pop['top_share']:.1%}")
    t.add_row(f"Kendall tau, -loss vs acc ({pop['measured']} measured)", _fmt(pop["tau_all"], 3))
    t.add_row("Spearman rho, all measured", _fmt(pop["rho_all"], 3))
    t.add_row(f"Kendall tau, top {pop['top_fraction']:.0%} ({pop['measured_top']} measured)", _fmt(pop["tau_top"], 3))
    t.add_row(f"Spearman rho, top {pop['top_fraction']:.0%}", _fmt(pop["rho_top"], 3))
    return t


def retrain_table(metrics: dict, timing: dict | None) -> Table:
    t = Table(title="retrain result")
    t.add_column("item"), t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k.replace("_", " "), f"{v / 1e6:.4f} M" if k == "params" else _fmt(v, 4))
    if timing:
        t.add_row("wall time (s)", _fmt(timing.get("seconds"), 1))
    return t


def plot_accuracy_over_time(curve: dict, path: Path) -> None:
    fig, ax = plotting.subplots(figsize=(6, 4), dpi=110)
    ax.plot(curve["iteration"], curve["mean"], label="population mean")
    ax.plot(curve["iteration"], curve["max"], label="population max")
    ax.set_xlabel("iteration"), ax.set_ylabel("ground-truth test accuracy (%)")
    ax.set_title("proxy population accuracy over the search"), ax.legend(), ax.grid(alpha=0.3)
    plotting.save(fig, path)


def plot_loss_vs_accuracy(points: list[tuple[float, float]], path: Path, title: str) -> None:
    fig, ax = plotting.subplots(figsize=(5, 4), dpi=110)
    if points:
        x, y = zip(*points)
        ax.scatter(x, y, s=10, alpha=0.6)
    ax.set_xlabel("-(supernet validation loss)"), ax.set_ylabel("ground-truth test accuracy (%)")
    ax.set_title(title), ax.grid(alpha=0.3)
    plotting.save(fig, path)


def plot_curve(rows: list[dict], key: str, path: Path, ylabel: str) -> None:
    fig, ax = plotting.subplots(figsize=(6, 4), dpi=110)
    ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker="o", ms=3)
    ax.set_xlabel("epoch"), ax.set_ylabel(ylabel), ax.grid(alpha=0.3)
    plotting.save(fig, path)


def render(console: Console, tables: list[Table]) -> str:
    for t in tables:
        console.print(t)
    with console.capture() as cap:
        for t in tables:
            console.print(t)
    return cap.get()
