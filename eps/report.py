"""Rich terminal summaries and PNG plots of a run. Input: the artifacts the stages wrote, already loaded.

Tables fit an 80-column terminal: every cell but an architecture string (or a free-text description) is kept on one
line (``no_wrap``), and those are folded, never cut, and sit in a table's last column, so that a folded one reads
whole down the right edge. The terminal console takes the terminal's width; ``report.txt`` is rendered separately
as plain text at a fixed width (``plain_text``), so a report written from a terminal holds no colour codes.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from eps import plotting

FILE_WIDTH = 100        # columns of report.txt, and of the terminal console when stdout is not a terminal


def _fmt(v, nd=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _num(v, nd=4) -> Text:
    """A number cell: never broken over two lines."""
    return Text(_fmt(v, nd), no_wrap=True)


def _words(v) -> Text:
    """A free-text cell (an architecture, a description): wrapped at spaces, and a word longer than the column
    folded, never cut; left-aligned so that the folded lines read as one string."""
    text = v if isinstance(v, str) else json.dumps(v)
    return Text(text, overflow="fold", no_wrap=False, justify="left")


def _item_table(title: str, value_header: str = "value") -> Table:
    t = Table(title=title)
    t.add_column("item", no_wrap=True)
    t.add_column(value_header, justify="right")
    return t


def _setting(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings_table(space: str, params: dict) -> Table:
    """The settings that shape the run, one ``section.key value`` row each: the data and the variants used (space,
    supernet, search.proposer), then search, warmup, select, retrain and seed, keys the report's dvc.yaml params
    declare."""
    sec = params[space]
    t = Table(title=f"{space}: settings")
    t.add_column("setting", no_wrap=True)
    t.add_column("value", no_wrap=True)
    search = sec["search"]
    predictor = search.get("proposer") == "predictor"
    groups = [
        # the variants of the method (spec §1.8) and the data: which ones this run used
        ("space", tuple(sec.get("space") or ())),
        ("supernet", ("progressive", "new_cell_init") if sec.get("supernet", {}).get("progressive") else ()),
        ("search", ("strategy", "proposer", *(("predictor_inputs", "predictor_reference_shapes") if predictor else ()),
                    "iterations", "population", "group", "parents", "children_per_parent", "val_interval",
                    "batch_size", "lr")),
        ("warmup", ("iterations",)),
        ("select", ("rule", "window", "alpha", "beta")),
        ("retrain", ("epochs", "batch_size", "lr", "train_subset", "test_subset")),
    ]
    for name, keys in groups:
        section = sec.get(name) or {}
        rows = [(f"{name}.{k}", _setting(section[k])) for k in keys if k in section]
        for i, (key, value) in enumerate(rows):
            t.add_row(key, value, end_section=i == len(rows) - 1)
    t.add_row("seed", str(params["seed"]))
    return t


_SEARCH_ROWS = (("iterations", "iterations", 0), ("rounds", "rounds", 0),
                ("last_train_loss", "last train loss (nats)", 4), ("nonfinite_skipped", "non-finite steps skipped", 0),
                ("distinct_archs_final", "distinct archs, final population", 0),
                ("population_mean_acc", "population mean acc (%)", 2), ("population_max_acc", "population max acc (%)", 2),
                ("population_tau", "population Kendall tau", 3))


# run.json's bookkeeping (which stage and space wrote it, eps's version, digests of its inputs): the tables' titles
# and the run folder already say the first two, and the rest is for the consistency checks, not for reading
_BOOKKEEPING = {"stage", "space", "eps_version", "inputs", "outputs", "params_digest", "data"}


def _descriptions(t: Table, run: dict | None, metrics: dict) -> None:
    """The stage's descriptive strings (``run.json``, e.g. strategy, arch, precision; older runs kept them in
    ``metrics.json``) as folded rows."""
    described = {k: v for k, v in (run or {}).items() if k not in _BOOKKEEPING and not isinstance(v, (dict, list))}
    for k, v in metrics.items():
        if isinstance(v, str) and k not in described:
            described[k] = v
    for k, v in described.items():
        t.add_row(k.replace("_", " "), _words(v))


def search_table(metrics: dict, timing: dict | None, run: dict | None = None) -> Table:
    """The search stage's figures: ``run.json``'s strings, then ``metrics.json``'s numbers as written (``rounds``
    is the number of rounds trained), then the wall time."""
    t = _item_table("search summary")
    _descriptions(t, run, metrics)
    known = {k for k, _, _ in _SEARCH_ROWS}
    for k, label, nd in _SEARCH_ROWS:
        if k in metrics:
            t.add_row(label, _num(metrics[k], nd))
    for k, v in metrics.items():
        if k not in known and k != "seed" and not isinstance(v, str):
            t.add_row(k.replace("_", " "), _num(v))
    if timing:
        t.add_row("wall time (s)", _num(timing.get("seconds"), 1))
        t.add_row("seconds per round", _num(timing.get("seconds_per_round"), 2))
    return t


SHORT_NAMES = {"cifar10_valid": "C10 valid", "cifar10_test": "C10 test", "nats_cifar10_test": "C10 test (NATS)",
               "cifar100_valid": "C100 valid", "cifar100_test": "C100 test", "nats_cifar100_test": "C100 test",
               "imagenet16_valid": "IN16-120 valid", "imagenet16_test": "IN16-120 test",
               "nats_imagenet16_test": "IN16-120 test"}
RULES = ("size_prior", "prior_free")


def chosen_table(selection: dict) -> Table:
    t = Table(title=f"chosen architecture (retrained: {selection['rule']})",
              caption=f"{selection['candidates']} candidates from the last {selection['window']} iterations")
    t.add_column("rule", no_wrap=True)
    t.add_column("latest loss", justify="right", no_wrap=True)
    t.add_column("params (M)", justify="right", no_wrap=True)
    t.add_column("architecture", overflow="fold")
    for rule in RULES:
        c = selection.get(rule)
        if c:
            t.add_row(rule, _fmt(c["loss"]), f"{c['params'] / 1e6:.4f}", _words(c["arch"]))
    return t


def ground_truth_table(selection: dict, primary: str | None = None) -> Table | None:
    """The chosen cells' benchmark accuracies, one row per benchmark column and one column per rule (so any number
    of benchmark columns fits the width), and their rank by ``primary``."""
    rows = [(rule, (selection.get(rule) or {}).get("ground_truth")) for rule in RULES]
    rows = [(rule, gt) for rule, gt in rows if gt]
    if not rows:
        return None
    cols = [k for k in rows[0][1] if k not in ("rank", "rank_of")]
    ranked_by = f"by {SHORT_NAMES.get(primary, primary)} " if primary else ""
    t = Table(title="chosen cells on the benchmark", caption=f"accuracy in %; rank {ranked_by}among all cells")
    t.add_column("benchmark", no_wrap=True)
    for rule, _ in rows:
        t.add_column(rule, justify="right", no_wrap=True)
    for k in cols:
        t.add_row(f"{SHORT_NAMES.get(k, k)} (%)", *[_fmt(gt.get(k), 2) for _, gt in rows])
    t.add_row("rank", *[f"{gt['rank']} / {gt['rank_of']}" for _, gt in rows])
    return t


def population_table(pop: dict) -> Table:
    t = _item_table(f"final population vs ground truth ({pop['metric']})")
    t.add_row("members", _num(pop["members"]))
    t.add_row("mean accuracy (%)", _num(pop["mean_acc"], 2))
    t.add_row("max accuracy (%)", _num(pop["max_acc"], 2))
    t.add_row(f"share in global top {pop['top_fraction']:.0%}", _num(f"{pop['top_share']:.1%}"))
    t.add_row(f"Kendall tau, -loss vs acc ({pop['measured']} measured)", _num(pop["tau_all"], 3))
    t.add_row("Spearman rho, all measured", _num(pop["rho_all"], 3))
    t.add_row(f"Kendall tau, top {pop['top_fraction']:.0%} ({pop['measured_top']} measured)", _num(pop["tau_top"], 3))
    t.add_row(f"Spearman rho, top {pop['top_fraction']:.0%}", _num(pop["rho_top"], 3))
    return t


def _metric_label(key: str) -> str:
    label = key.replace("_", " ")
    if key.endswith("_acc"):
        return f"{label} (%)"
    if key.endswith("_loss"):
        return f"{label} (nats)"
    return label


def retrain_table(metrics: dict, timing: dict | None, run: dict | None = None) -> Table:
    """The retrain result: ``run.json``'s strings (arch, precision), then ``metrics.json``'s numbers (epochs,
    parameters, the final epoch's row), then the wall time."""
    t = _item_table("retrain result")
    _descriptions(t, run, metrics)
    for k, v in metrics.items():
        if isinstance(v, str):
            continue
        if k == "params":
            t.add_row("params (M)", _num(f"{v / 1e6:.4f}"))
        else:
            t.add_row(_metric_label(k), _num(v, 4))
    if timing:
        t.add_row("wall time (s)", _num(timing.get("seconds"), 1))
    return t


# ------------------------------------------------------------------------------------------------ consoles

def terminal_console() -> Console:
    """The console the report shows its tables on (stdout): as wide as the terminal (rich reads ``COLUMNS``, then
    the terminal's size), ``FILE_WIDTH`` when stdout is not a terminal and ``COLUMNS`` is unset (a pipe, a log).
    Colour follows rich's rules (``NO_COLOR``, ``FORCE_COLOR``); values from files are never read as markup."""
    width = None
    if not os.environ.get("COLUMNS", "").strip().isdigit() and not _isatty(sys.stdout):
        width = FILE_WIDTH
    return _Console(width=width, markup=False, emoji=False)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader of stdout stopped (``eps report | head -1``): rich's default ends the process with status 1;
        raise instead, so the caller decides (the CLI ends quietly as a program killed by SIGPIPE, 141)."""
        self.quiet = True
        raise BrokenPipeError(32, "Broken pipe")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # replaced or closed stream
        return False


def plain_text(tables: list[Table], width: int = FILE_WIDTH) -> str:
    """``tables`` rendered as plain text at ``width`` columns: no colour or other escape codes, whatever the
    environment says (``FORCE_COLOR``, a terminal on stdout), for report files."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, force_jupyter=False,
                      force_interactive=False, markup=False, emoji=False, highlight=False, legacy_windows=False)
    for t in tables:
        console.print(t)
    return buf.getvalue()


def render(console: Console, tables: list[Table]) -> str:
    """Print ``tables`` on ``console`` and return them as plain text (``plain_text``) at the console's width."""
    for t in tables:
        console.print(t)
    return plain_text(tables, width=console.width)


# ------------------------------------------------------------------------------------------------ plots

def population_accuracy_figure(curve: dict, optimum: float | None = None,
                               chosen: tuple[str, float] | None = None):
    """Mean and max ground-truth accuracy of the population over the search (``analysis.accuracy_over_time``),
    with the benchmark's optimum and the chosen cell's accuracy (label, percent) as horizontal lines when known."""
    column = curve.get("column", "test")
    fig, ax = plotting.subplots(figsize=(6.4, 4.2))
    ax.plot(curve["iteration"], curve["mean"], label="population mean")
    ax.plot(curve["iteration"], curve["max"], label="population max")
    if optimum is not None:
        ax.axhline(optimum, color="tab:green", ls="--", lw=1, label=f"benchmark optimum {optimum:.2f} %")
    if chosen is not None:
        ax.axhline(chosen[1], color="tab:red", ls=":", lw=1.2, label=f"chosen cell ({chosen[0]}) {chosen[1]:.2f} %")
    ax.set_xlabel("search iteration (training steps)")
    ax.set_ylabel(f"ground-truth {column} accuracy (%)")
    ax.set_title(f"population accuracy over the search ({column})")
    plotting.integer_ticks(ax)
    ax.legend(fontsize=8), ax.grid(alpha=0.3)
    return fig


_CHOSEN_STYLE = {"size_prior": dict(marker="*", s=180, color="tab:red", edgecolors="black", linewidths=0.5, zorder=4,
                                    clip_on=False),
                 "prior_free": dict(marker="D", s=60, facecolors="none", edgecolors="tab:purple", linewidths=1.5,
                                    zorder=5, clip_on=False)}


def loss_vs_accuracy_figure(pop: dict):
    """Supernet loss against ground-truth accuracy over the final population (``analysis.final_population``).

    The title gives Kendall tau and the number of measured members, and says how many members were unmeasured or
    unknown to the benchmark; the chosen cells are marked. The axes cover the bulk of the points
    (``plotting.robust_limits``) and the chosen cells; points beyond are drawn on the edge and counted."""
    import numpy as np
    fig, ax = plotting.subplots(figsize=(6.4, 4.8))
    x, y = np.asarray(pop["neg_loss"], float), np.asarray(pop["acc"], float)
    n = x.size
    tau = pop["tau"]
    tau_text = f"Kendall tau {tau:.3f}" if tau is not None and math.isfinite(tau) else "Kendall tau n/a"
    missing = []
    if pop["unmeasured"]:
        missing.append(f"{pop['unmeasured']} of {pop['members']} members unmeasured")
    if pop.get("not_in_benchmark"):
        missing.append(f"{pop['not_in_benchmark']} of {pop['members']} not in the benchmark")
    accounted = f"{', '.join(missing)} (not shown)" if missing else f"all {pop['members']} members measured"
    it = f", iteration {pop['iteration']}" if pop.get("iteration") is not None else ""
    title = f"final population{it}: {tau_text} ({n} measured)\n{accounted}"
    chosen = pop.get("chosen") or {}
    cx = [p[0] for p in chosen.values()]
    cy = [p[1] for p in chosen.values()]
    xlim, ylim = plotting.robust_limits(x), plotting.robust_limits(y)
    if xlim is not None and ylim is not None:
        # the chosen cells always stay in view: they are what the plot is read for
        xlim = (min([xlim[0], *cx]), max([xlim[1], *cx]))
        ylim = (min([ylim[0], *cy]), max([ylim[1], *cy]))
        inside = (x >= xlim[0]) & (x <= xlim[1]) & (y >= ylim[0]) & (y <= ylim[1])
        ax.scatter(x[inside], y[inside], s=12, alpha=0.6, color="tab:blue", label="measured member")
        outside = int((~inside).sum())
        if outside:
            ax.scatter(np.clip(x[~inside], *xlim), np.clip(y[~inside], *ylim), s=28, marker="X", color="tab:gray",
                       zorder=3, clip_on=False, label="outside the axes, drawn at the edge")
            title += f"; {outside} outside the axes (x, drawn at the edge)"
        # a margin so that the edge markers are not cut in half
        ax.set_xlim(xlim[0] - 0.01 * (xlim[1] - xlim[0]), xlim[1] + 0.01 * (xlim[1] - xlim[0]))
        ax.set_ylim(ylim[0] - 0.01 * (ylim[1] - ylim[0]), ylim[1] + 0.01 * (ylim[1] - ylim[0]))
    else:
        ax.text(0.5, 0.5, "no measured member", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(title, fontsize=9)
    for rule, (px, py) in chosen.items():
        ax.scatter([px], [py], label=f"chosen: {rule}", **_CHOSEN_STYLE.get(rule, dict(marker="P", s=80, zorder=4)))
    ax.set_xlabel("-(supernet validation loss) (nats)")
    ax.set_ylabel(f"ground-truth {pop['column']} accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        # below the axes: inside, it would hide the points at the edges
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    return fig


def _series(rows: list[dict], keys: tuple[tuple[str, str], ...]) -> list[tuple[str, list[float]]]:
    return [(label, [r[k] for r in rows]) for k, label in keys if k in rows[0]]


def _log_scale(ax, values: list[float]) -> None:
    """A log y axis labelled in plain numbers (50, 100, 200), when the values span enough for it to help: a
    perplexity falls from thousands to tens in the first epochs."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    if not values or min(values) <= 0 or max(values) < 3 * min(values):
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def retrain_curve_figure(rows: list[dict], title: str):
    """The retrain's epochs (``curve.csv`` rows as floats): a loss panel (train, and valid or test) and an accuracy
    panel (train and test, percent) for image spaces, or a perplexity panel (train and valid) for language models.
    None when the rows hold none of these columns."""
    valid_or_test = ("valid_loss", "valid") if "valid_loss" in rows[0] else ("test_loss", "test")
    panels = [("loss", "cross-entropy (nats)", _series(rows, (("train_loss", "train"), valid_or_test)), False)]
    if "train_acc" in rows[0] or "test_acc" in rows[0]:
        panels.append(("accuracy", "accuracy (%)", _series(rows, (("train_acc", "train"), ("test_acc", "test"))),
                       False))
    elif "train_ppl" in rows[0] or "valid_ppl" in rows[0]:
        panels.append(("perplexity", "perplexity",
                       _series(rows, (("train_ppl", "train"), ("valid_ppl", "valid"))), True))
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    epochs = [r["epoch"] for r in rows]
    fig, axes = plotting.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.6, 4.0), squeeze=False)
    for ax, (name, ylabel, series, log) in zip(axes[0], panels):
        for label, values in series:
            ax.plot(epochs, values, marker="o", ms=3, label=label)
        if log:
            _log_scale(ax, [v for _, values in series for v in values])
        ax.set_title(name), ax.set_xlabel("epoch"), ax.set_ylabel(ylabel)
        plotting.integer_ticks(ax)
        ax.legend(fontsize=8), ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_accuracy_over_time(curve: dict, path: Path, optimum: float | None = None,
                            chosen: tuple[str, float] | None = None) -> None:
    plotting.save(population_accuracy_figure(curve, optimum, chosen), path)


def plot_loss_vs_accuracy(pop: dict, path: Path) -> None:
    plotting.save(loss_vs_accuracy_figure(pop), path)


def plot_curve(rows: list[dict], path: Path, title: str) -> bool:
    """Write the retrain curve; False (nothing written) when the rows have no column it plots."""
    fig = retrain_curve_figure(rows, title)
    if fig is None:
        return False
    plotting.save(fig, path)
    return True
