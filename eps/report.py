"""Rich terminal summaries and plots (SVG and 300-dpi PNG) of a run, or of several seeds of one run. Input: the
artifacts the stages wrote, already loaded.

Results first: the chosen architecture, then the results table (retrained test metrics, benchmark accuracy and
rank, supernet loss, parameters) and the search quality (Kendall tau and Spearman rho of the final population);
then the stages' details; the settings last (``report.txt`` always, the terminal on request). Each architecture is
printed once, labelled A, B, ...; every other mention is the label. Numbers follow one rule per quantity
(``DECIMALS``).

Everything fits an 80-column terminal: every table cell is kept on one line (``no_wrap``) but a free-text
description, which is folded, never cut; an architecture line is folded at the terminal's width and written whole
to ``report.txt``, so it can be pasted from there (or from the run's ``select/arch.txt``). The terminal console
takes the terminal's width; ``report.txt`` is rendered separately as plain text at a fixed width (``plain_text``),
so a report written from a terminal holds no colour codes.
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

# ------------------------------------------------------------------------------------------------ numbers
# One rule for every number the report prints, by quantity: accuracies and other percentages 2 decimals (benchmarks
# give 2), losses in nats 4, perplexities 2, rank correlations (Kendall tau, Spearman rho) 3, parameters in millions
# 4 (a tiny test network has ~0.009 M), seconds 2; counts as integers.
DECIMALS = {"percent": 2, "loss": 4, "ppl": 2, "corr": 3, "mparams": 4, "seconds": 2, "other": 4}


def quantity(key: str) -> str:
    """The kind of quantity a metric key names (a key of ``DECIMALS``), from its suffix: ``*_acc`` percent,
    ``*_loss`` nats, ``*_ppl`` perplexity, ``*tau``/``*rho`` correlation, ``params`` a parameter count."""
    k = key.lower()
    if k.endswith(("acc", "_pct", "percent")):
        return "percent"
    if k.endswith("loss"):
        return "loss"
    if k.endswith("ppl"):
        return "ppl"
    if k.endswith(("tau", "rho")) or k.startswith(("tau_", "rho_")):
        return "corr"
    if k == "params":
        return "mparams"
    if k.endswith("seconds") or k.startswith("seconds"):
        return "seconds"
    return "other"


def fmt(v, kind: str = "other") -> str:
    """``v`` as the report prints a ``kind`` of quantity (``DECIMALS``); ``-`` for None or NaN, integers whole.
    ``mparams`` takes a raw parameter count and prints millions."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool) or isinstance(v, int) and kind != "mparams":
        return str(v)
    if isinstance(v, (int, float)):
        return f"{(v / 1e6 if kind == 'mparams' else v):.{DECIMALS[kind]}f}"
    return str(v)


def _label(key: str) -> str:
    """A metric key as a row label with its unit."""
    kind = quantity(key)
    label = key.replace("_", " ")
    unit = {"percent": " (%)", "loss": " (nats)", "mparams": " (M)", "seconds": ""}.get(kind, "")
    return "params (M)" if kind == "mparams" else label + unit


def _num(v, kind: str = "other") -> Text:
    """A number cell: never broken over two lines."""
    return Text(fmt(v, kind), no_wrap=True)


def _words(v) -> Text:
    """A free-text cell (a description): wrapped at spaces, and a word longer than the column folded, never cut;
    left-aligned so that the folded lines read as one string."""
    text = v if isinstance(v, str) else json.dumps(v)
    return Text(text, overflow="fold", no_wrap=False, justify="left")


def _item_table(title: str, value_header: str = "value") -> Table:
    t = Table(title=title)
    t.add_column("item", no_wrap=True)
    t.add_column(value_header, justify="right")
    return t


def _setting(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------------------ architectures

RULES = ("size_prior", "prior_free")
LABELS = "ABCDEFGH"


class Arch(str):
    """A report line holding an architecture string: written whole on one line to report.txt (so that it can be
    pasted), folded at the width on a terminal. The report prints each architecture once, as ``A = <arch>``, and
    names it by its label everywhere else."""


def arch_labels(selection: dict | None, retrained: str | None) -> dict[str, str]:
    """Architecture -> label (A, B, ...) for the distinct cells of a run, in the order the report shows them: the
    retrained cell, the cell the selection chose, then each rule's choice."""
    order = [retrained, (selection or {}).get("arch")]
    order += [((selection or {}).get(rule) or {}).get("arch") for rule in RULES]
    labels: dict[str, str] = {}
    for arch in order:
        if isinstance(arch, str) and arch not in labels and len(labels) < len(LABELS):
            labels[arch] = LABELS[len(labels)]
    return labels


def arch_block(space: str, where: str, labels: dict[str, str], selection: dict | None,
               retrained: str | None, seed=None) -> list:
    """The report's first lines: the run, then each architecture once (``Arch`` lines, ``A = <arch>``) with what it
    is: which rules chose it (the run's own rule, ``select.rule``, named first) and whether it was retrained."""
    seed_text = f", seed {seed}" if seed is not None else ""
    what = "chosen architecture of the run" if labels else "run"
    lines: list = [Text(f"{space}: {what} {where}{seed_text}", overflow="fold")]
    rules = list(RULES)
    if selection and selection.get("rule") in rules:
        rules.remove(selection["rule"])
        rules.insert(0, selection["rule"])
    for arch, label in labels.items():
        by = [rule + (" (the run's rule)" if selection and rule == selection.get("rule") else "")
              for rule in rules if ((selection or {}).get(rule) or {}).get("arch") == arch]
        roles = [f"chosen by {' and '.join(by)}"] if by else []
        if selection and arch == selection.get("arch") and not by:
            roles.append("chosen")
        if arch == retrained:
            roles.append("retrained")
        if selection and not by and arch == retrained and arch != selection.get("arch"):
            roles[-1] = "retrained (given explicitly, not the selection's choice)"
        lines.append(Arch(f"{label} = {arch}"))
        lines.append(Text(f"    {'; '.join(roles)}", overflow="fold"))
    if selection:
        lines.append(Text(f"    ({selection['candidates']} candidates from the last {selection['window']} "
                          f"iterations)", overflow="fold"))
    return lines


# ------------------------------------------------------------------------------------------------ tables

SHORT_NAMES = {"cifar10_valid": "C10 valid", "cifar10_test": "C10 test", "nats_cifar10_test": "C10 test (NATS)",
               "cifar100_valid": "C100 valid", "cifar100_test": "C100 test", "nats_cifar100_test": "C100 test",
               "imagenet16_valid": "IN16-120 valid", "imagenet16_test": "IN16-120 test",
               "nats_imagenet16_test": "IN16-120 test"}


def _headline_keys(metrics: dict) -> list[str]:
    """The retrain's result keys: the test metrics (accuracy, loss, perplexity) and the best validation perplexity
    (language models pick their epoch by it); the other keys are details."""
    keys = [k for k in metrics if not isinstance(metrics[k], str)
            and (k.startswith("test_") and quantity(k) in ("percent", "loss", "ppl") or k == "best_valid_ppl")]
    return sorted(keys, key=lambda k: ("percent", "ppl", "loss").index(quantity(k)))


SUMMARY_FILE = "summary.json"  # beside the stage folders: OUT/SPACE/summary.json
SUMMARY_KEYS = {"search": ("population_tau", "population_max_acc"), "select": ("chosen_acc", "chosen_rank")}


def summary(search: dict | None, select: dict | None, retrain: dict | None) -> dict[str, dict[str, float]]:
    """A run's headline numbers by stage, as ``runs/<space>/summary.json`` holds them (the DVC pipeline's metrics,
    so `dvc exp show` has a few columns rather than every stage's details): the search's Kendall tau of -loss vs
    benchmark accuracy over the final population and its best member's accuracy (%), the chosen cell's benchmark
    accuracy (%) and rank, the retrained network's test metrics (``_headline_keys``) and parameter count. Keys a
    space does not produce (no benchmark) and stages not finished are left out; non-finite values too (JSON has
    none)."""
    picks = (("search", search, SUMMARY_KEYS["search"]), ("select", select, SUMMARY_KEYS["select"]),
             ("retrain", retrain, [*(_headline_keys(retrain) if retrain else []), "params"]))
    out = {}
    for stage, metrics, keys in picks:
        numbers = {k: metrics[k] for k in keys if isinstance((metrics or {}).get(k), (int, float))
                   and not isinstance(metrics[k], bool) and math.isfinite(metrics[k])}
        if numbers:
            out[stage] = numbers
    return out


def _distinct_columns(cols: list[str], gts: list[dict]) -> list[str]:
    """``cols`` less each NATS-Bench re-run column (``nats_X``) whose figures equal, as shown, those of its
    NAS-Bench-201 column ``X`` for every cell in ``gts``: for CIFAR-10 the two benchmarks hold the same training runs,
    and two rows of one figure under two names read as two measurements."""
    def same(k: str, base: str) -> bool:
        return all(fmt(g.get(k), "percent") == fmt(g.get(base), "percent") for g in gts)
    return [k for k in cols if not (k.startswith("nats_") and k.removeprefix("nats_") in cols
                                    and same(k, k.removeprefix("nats_")))]


def results_table(labels: dict[str, str], selection: dict | None, retrain: dict | None, retrained: str | None,
                  primary: str | None = None) -> Table | None:
    """The run's results, one column per architecture label: the retrained cell's test metrics, each chosen cell's
    benchmark accuracies and rank by ``primary`` (when a benchmark knows the space), its latest supernet loss and
    its parameters. None when no stage that produces a result has finished."""
    if not labels or not (selection or retrain):
        return None
    archs = list(labels)
    t = Table(title="results")
    t.add_column("", no_wrap=True)
    for arch in archs:
        t.add_column(labels[arch], justify="right", no_wrap=True)
    rows: list[tuple[str, list[str]]] = []
    if retrain:
        for k in _headline_keys(retrain):
            rows.append((f"retrained {_label(k)}", [fmt(retrain[k], quantity(k)) if a == retrained else "-"
                                                    for a in archs]))
    candidates = {}
    for rule in RULES:
        c = (selection or {}).get(rule)
        if c and isinstance(c.get("arch"), str):
            candidates.setdefault(c["arch"], c)
    gts = {a: c.get("ground_truth") for a, c in candidates.items() if c.get("ground_truth")}
    if gts:
        cols = [k for k in next(iter(gts.values())) if k not in ("rank", "rank_of")]
        for k in _distinct_columns(cols, list(gts.values())):
            name = SHORT_NAMES.get(k, k)
            if k.startswith("nats_") and k.removeprefix("nats_") in cols and "(NATS)" not in name:
                name += " (NATS)"  # both figures shown: say which is the re-run
            rows.append((f"benchmark {name} (%)", [fmt(gts[a].get(k), "percent") if a in gts else "-" for a in archs]))
        by = f" by {SHORT_NAMES.get(primary, primary)}" if primary else ""
        rows.append((f"benchmark rank{by}", [f"{gts[a]['rank']}/{gts[a]['rank_of']}" if a in gts else "-"
                                             for a in archs]))
    if candidates:
        rows.append(("supernet latest loss (nats)", [fmt(candidates[a]["loss"], "loss") if a in candidates else "-"
                                                     for a in archs]))
    params = {a: c["params"] for a, c in candidates.items()}
    if retrain and retrained and "params" in retrain:
        params[retrained] = retrain["params"]
    if params:
        rows.append(("params (M)", [fmt(params[a], "mparams") if a in params else "-" for a in archs]))
    for i, (name, cells) in enumerate(rows):
        t.add_row(name, *cells)
    return t if rows else None


def population_table(pop: dict) -> Table:
    """Search quality: the final population against the benchmark (``selection.json``'s ``population``)."""
    t = _item_table(f"search quality: final population vs {pop['metric']}")
    t.add_row(f"Kendall tau, -loss vs acc ({pop['measured']} measured)", _num(pop["tau_all"], "corr"))
    t.add_row("Spearman rho, all measured", _num(pop["rho_all"], "corr"))
    t.add_row(f"Kendall tau, top {pop['top_fraction']:.0%} ({pop['measured_top']} measured)",
              _num(pop["tau_top"], "corr"))
    t.add_row(f"Spearman rho, top {pop['top_fraction']:.0%}", _num(pop["rho_top"], "corr"))
    t.add_row("members", _num(pop["members"]))
    t.add_row("mean accuracy (%)", _num(pop["mean_acc"], "percent"))
    t.add_row("max accuracy (%)", _num(pop["max_acc"], "percent"))
    t.add_row(f"share in global top {pop['top_fraction']:.0%} (%)", _num(100.0 * pop["top_share"], "percent"))
    return t


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
        # the variants of the method and the data: which ones this run used
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


_SEARCH_ROWS = (("iterations", "iterations"), ("rounds", "rounds"), ("last_train_loss", "last train loss (nats)"),
                ("nonfinite_skipped", "non-finite steps skipped"),
                ("distinct_archs_final", "distinct archs, final population"),
                ("population_mean_acc", "population mean acc (%)"), ("population_max_acc", "population max acc (%)"),
                ("population_tau", "population Kendall tau"))
_POPULATION_KEYS = {"population_mean_acc", "population_max_acc", "population_tau"}

# run.json's bookkeeping (which stage and space wrote it, eps's version, digests of its inputs): the tables' titles
# and the run folder already say the first two, and the rest is for the consistency checks, not for reading; the
# architecture is printed once, at the top
_BOOKKEEPING = {"stage", "space", "eps_version", "inputs", "outputs", "params_digest", "data", "arch"}


def _descriptions(t: Table, run: dict | None, metrics: dict) -> None:
    """The stage's descriptive strings (``run.json``, e.g. strategy, precision; older runs kept them in
    ``metrics.json``) as folded rows."""
    described = {k: v for k, v in (run or {}).items() if k not in _BOOKKEEPING and not isinstance(v, (dict, list))}
    for k, v in metrics.items():
        if isinstance(v, str) and k not in described and k not in _BOOKKEEPING:
            described[k] = v
    for k, v in described.items():
        t.add_row(k.replace("_", " "), _words(v))


def search_table(metrics: dict, timing: dict | None, run: dict | None = None, population_shown: bool = False) -> Table:
    """The search stage's details: ``run.json``'s strings, then ``metrics.json``'s numbers as written (``rounds``
    is the number of rounds trained), then the wall time. ``population_shown``: the search-quality table already
    gives the population's accuracy and tau, so they are not repeated."""
    t = _item_table("search details")
    _descriptions(t, run, metrics)
    known = {k for k, _ in _SEARCH_ROWS}
    for k, label in _SEARCH_ROWS:
        if k in metrics and not (population_shown and k in _POPULATION_KEYS):
            t.add_row(label, _num(metrics[k], quantity(k)))
    for k, v in metrics.items():
        if k not in known and k != "seed" and not isinstance(v, str):
            t.add_row(_label(k), _num(v, quantity(k)))
    if timing:
        t.add_row("wall time (s)", _num(timing.get("seconds"), "seconds"))
        t.add_row("seconds per round", _num(timing.get("seconds_per_round"), "seconds"))
    return t


def retrain_table(metrics: dict, timing: dict | None, run: dict | None = None) -> Table:
    """The retrain's details: ``run.json``'s strings (precision), then ``metrics.json``'s numbers that the results
    table does not show (epochs, the final epoch's training figures), then the wall time."""
    t = _item_table("retrain details")
    _descriptions(t, run, metrics)
    shown = set(_headline_keys(metrics)) | {"params"}
    for k, v in metrics.items():
        if not isinstance(v, str) and k not in shown:
            t.add_row(_label(k), _num(v, quantity(k)))
    if timing:
        t.add_row("wall time (s)", _num(timing.get("seconds"), "seconds"))
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


def show(console: Console, blocks: list) -> None:
    """Print ``blocks`` (tables, ``Text`` lines, ``Arch`` lines folded at the console's width) on ``console``."""
    width = console.width
    for b in blocks:
        if isinstance(b, str):
            # cut every `width` characters, not at spaces: rich would move the whole string after "A = " to the
            # next line; the only spaces in it are that prefix's (NB201, DARTS) or a genotype's own
            for i in range(0, len(b), width):
                console.print(Text(b[i:i + width]), no_wrap=True, overflow="ignore", crop=False)
        else:
            console.print(b)


def plain_text(blocks: list, width: int = FILE_WIDTH) -> str:
    """``blocks`` rendered as plain text at ``width`` columns: no colour or other escape codes, whatever the
    environment says (``FORCE_COLOR``, a terminal on stdout), for report files. ``Arch`` lines are written whole."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, force_jupyter=False,
                      force_interactive=False, markup=False, emoji=False, highlight=False, legacy_windows=False)
    for b in blocks:
        if isinstance(b, str):
            console.file.write(b + "\n")
        else:
            console.print(b)
    return buf.getvalue()


def render(console: Console, tables: list) -> str:
    """Print ``tables`` on ``console`` and return them as plain text (``plain_text``) at the console's width."""
    show(console, tables)
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


# ------------------------------------------------------------------------------------------------ several seeds

def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator: the seeds are a sample of the runs one could
    make) of the finite ``values``; NaN where undefined (no value; one value for the std)."""
    import numpy as np
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    mean = float(v.mean()) if v.size else float("nan")
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return mean, std


def seeds_table(space: str, columns: list[tuple[str, str, str]], rows: list[dict]) -> Table:
    """The headline numbers per seed and their mean and std: ``columns`` (key, header, kind of ``DECIMALS``, or
    ``rank``), ``rows`` one dict per run (``seed``, ``cell``, the keys; a missing key is ``-``)."""
    t = Table(title=f"{space}: {len(rows)} seeds", caption="std: sample standard deviation over the seeds (n - 1)")
    t.add_column("seed", no_wrap=True)
    t.add_column("cell", no_wrap=True)
    for _, header, _ in columns:
        t.add_column(header, justify="right", no_wrap=True)
    for i, r in enumerate(rows):
        cells = []
        for key, _, kind in columns:
            v = r.get(key)
            cells.append(f"{v[0]}/{v[1]}" if kind == "rank" and v else fmt(v, kind if kind != "rank" else "other"))
        t.add_row(str(r["seed"]), r.get("cell", "-"), *cells, end_section=i == len(rows) - 1)
    stats = {}
    for key, _, kind in columns:
        values = [(r.get(key) or (None,))[0] if kind == "rank" else r.get(key) for r in rows]
        stats[key] = mean_std([float(v) for v in values if v is not None])
    for which, name in ((0, "mean"), (1, "std")):
        # a rank is a count, but its mean and spread are not: one decimal
        t.add_row(name, "", *[f"{stats[key][which]:.1f}" if kind == "rank" and math.isfinite(stats[key][which])
                              else fmt(stats[key][which], kind if kind != "rank" else "other")
                              for key, _, kind in columns])
    return t


def _aligned(curves: list[tuple[list[float], list[float]]]):
    """The x values every curve has, and the curves' y at them as an array (curves, xs); None when none is shared."""
    import numpy as np
    common = set(curves[0][0])
    for xs, _ in curves[1:]:
        common &= set(xs)
    xs = sorted(common)
    if not xs:
        return None
    ys = np.array([[dict(zip(cx, cy))[x] for x in xs] for cx, cy in curves], dtype=np.float64)
    return np.asarray(xs, dtype=np.float64), ys


def seeds_figure(title: str, panels: list[tuple[str, str, str, dict[str, list[tuple[list, list]]]]]):
    """One figure aggregating several seeds: one panel per (title, x label, y label, series), a series being one
    (x, y) curve per seed. Each series is drawn as its mean over the seeds (a line) and mean +- one sample std (a
    band), at the x values all seeds share, with every seed's curve thin and faint behind. None when no panel has a
    series all seeds share."""
    drawn = []
    for name, xlabel, ylabel, series in panels:
        aligned = {label: a for label, curves in series.items() if curves and (a := _aligned(curves)) is not None}
        if aligned:
            drawn.append((name, xlabel, ylabel, aligned))
    if not drawn:
        return None
    fig, axes = plotting.subplots(1, len(drawn), figsize=(4.6 * len(drawn) + 0.6, 4.2), squeeze=False)
    for ax, (name, xlabel, ylabel, aligned) in zip(axes[0], drawn):
        for i, (label, (xs, ys)) in enumerate(aligned.items()):
            color = f"C{i}"
            for y in ys:
                ax.plot(xs, y, color=color, lw=0.6, alpha=0.35)
            mean = ys.mean(axis=0)
            ax.plot(xs, mean, color=color, lw=1.8, marker="o" if len(xs) <= 12 else None, ms=3,
                    label=f"{label}, mean of {len(ys)}")
            if len(ys) > 1:
                std = ys.std(axis=0, ddof=1)
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2, lw=0, label=f"{label}, ± 1 std")
        ax.set_title(name), ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
        plotting.integer_ticks(ax)
        ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig
