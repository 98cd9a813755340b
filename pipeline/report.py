"""`eps report`: load whatever stages have finished, print tables, write figures and report.txt; or, given several
run folders that are seeds of one experiment (``report_many``), the headline numbers per seed with their mean and
std and one figure of the search and retrain curves across the seeds.

Damaged artifacts: every input is read and checked *before* anything is printed or written. A file that a stage
wrote but that is now unreadable or malformed (a truncated ``metrics.json``, text in ``curve.csv``, a
``selection.json`` missing keys, a malformed history line) stops the report with one line naming the file, what is
wrong with it and the stage to rerun (``EpsError``, exit 2); the previous report and plots are left as they were.
The report does not skip such a file, so a report that completes always shows every finished stage. A stage that
has not finished (its files absent) is simply left out, as before.
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

from rich.text import Text

from eps import io as eio
from eps import plotting
from eps import report as rep
from eps.analysis import accuracy_over_time, final_population
from eps.params import data_root
from eps.settings import deep_update
from eps.errors import EpsError
from eps.selection import check_snapshot
from eps.space import Drawable, HasOptimum, benchmark_of
from eps.spaces import cli_name, get_space
from eps.pipeline import record
from eps.pipeline.runfolder import RunPaths, load_history, locked

_CONTENT_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, csv.Error)


class _Malformed(ValueError):
    """A check of this module found the content wrong; its message says what, as is."""


class _Artifact:
    """One file of a finished stage, with the command that rewrites it."""

    def __init__(self, paths: RunPaths, stage: str, name: str, space: str, out: str | Path):
        self.path = paths.stage(stage) / name
        self.stage, self.space, self.out = stage, space, out

    def damaged(self, problem: str) -> EpsError:
        problem = " ".join(str(problem).split())
        problem = problem if len(problem) <= 160 else problem[:157] + "..."
        recorded = self.path.parent / "params.yaml"
        with_params = f" --params {recorded}" if recorded.exists() else ""
        return EpsError(f"{self.path} is damaged ({problem}); rerun `eps stage {self.stage} --space {self.space} "
                        f"--out {self.out}{with_params}` to rewrite it, then `eps report` again")

    def text(self) -> str | None:
        if not self.path.exists():
            return None
        try:
            return self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise self.damaged("not UTF-8 text") from None
        except OSError as err:
            raise self.damaged(f"cannot be read: {err.strerror or err}") from None

    def json(self) -> dict | None:
        """The JSON object in the file, None when absent; anything else (truncated, not an object) is damaged."""
        text = self.text()
        if text is None:
            return None
        try:
            obj = json.loads(text)
        except ValueError as err:
            raise self.damaged(f"not valid JSON, truncated or corrupt: {err}") from None
        if not isinstance(obj, dict):
            raise self.damaged(f"expected a JSON object, got {type(obj).__name__}")
        return obj

    def check(self, build):
        """``build()``, with a malformed content (a missing key, a value of the wrong type) reported as damage."""
        try:
            return build()
        except EpsError as err:
            raise self.damaged(str(err)) from None
        except _CONTENT_ERRORS as err:
            raise self.damaged(_why(err)) from None


def _why(err: Exception) -> str:
    if isinstance(err, _Malformed):
        return str(err)
    if isinstance(err, KeyError):
        return f"no key {err.args[0]!r}" if err.args else "a key is missing"
    return f"unexpected content: {err}" if str(err) else f"unexpected content ({type(err).__name__})"


def _curve_rows(text: str) -> list[dict]:
    """Rows of ``curve.csv`` as floats (an ``epoch`` column and the retrain's metrics)."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "epoch" not in reader.fieldnames:
        raise _Malformed(f"expected a CSV with an 'epoch' column, got columns {reader.fieldnames or []}")
    rows = []
    for line, r in enumerate(reader, start=2):
        if None in r or None in r.values():
            raise _Malformed(f"line {line} has {'more' if None in r else 'fewer'} fields than the header")
        try:
            rows.append({k: float(v) for k, v in r.items()})
        except ValueError:
            bad = next(f"{k}={v!r}" for k, v in r.items() if not _is_float(v))
            raise _Malformed(f"line {line}: {bad} is not a number") from None
    if not rows:
        raise _Malformed("no rows")
    return rows


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _check_finished(paths: RunPaths, space_name: str, out) -> None:
    if not any((paths.stage(stage) / "metrics.json").exists() or (paths.stage(stage) / "history.jsonl").exists()
               for stage in ("warmup", "search", "select", "retrain")):
        # nothing to report: say so, and leave no report folder or lock file behind
        raise EpsError(f"no finished stage under {paths.root}; run `eps stage warmup --space {cli_name(space_name)} "
                       f"--out {out}` (or `eps run`) first, or point --out at a run folder")


def report(space_name: str, params: dict, out: str | Path, explicit: bool = True, settings: bool = False) -> str:
    """Check every finished stage's files, print the tables, write report.txt and the plots (one writer at a time
    per run folder). ``explicit``: the user passed these params (``--params``) rather than the defaults or
    ./params.yaml. ``settings``: print the settings table on the terminal too (report.txt always has it, last).
    Returns the text of report.txt."""
    paths = RunPaths(out, space_name)
    _check_finished(paths, space_name, out)
    with locked(paths, "report"):
        run = _load(space_name, params, out, explicit)
        return _write(run, settings)


class _Run:
    """One run folder's finished stages, read and checked (``_load``)."""
    paths: RunPaths
    out: Path
    space_name: str
    params: dict
    search_metrics = search_timing = search_run = selection = select_metrics = None
    retrain_metrics = retrain_timing = retrain_run = None
    drawing = curve = population = optimum = retrained_gt = None
    snaps: list
    rows: list
    chosen: dict

    @property
    def retrained_arch(self) -> str | None:
        arch = (self.retrain_run or {}).get("arch", (self.retrain_metrics or {}).get("arch"))
        if arch is None and self.retrain_metrics and self.selection:
            arch = self.selection["arch"]  # a retrain without a recorded arch trained the selection's
        return arch if isinstance(arch, str) else None


def _load(space_name: str, params: dict, out: str | Path, explicit: bool) -> _Run:
    """Read and check every finished stage's files of the run under ``out``; nothing is printed or written."""
    r = _Run()
    r.paths = paths = RunPaths(out, space_name)
    r.out, r.space_name = Path(out), space_name
    # A run folder is reported with the params it was made with: those it recorded, or explicit ones that agree.
    r.params = params = record.params_for_report(paths.root, space_name, params, explicit)
    r.space = space = get_space(space_name, params[space_name])
    r.bench = bench = benchmark_of(space, data_root(params))

    def artifact(stage: str, name: str) -> _Artifact:
        return _Artifact(paths, stage, name, space_name, out)

    search_files = [artifact("search", n) for n in ("metrics.json", "timing.json", "run.json")]
    r.search_metrics, r.search_timing, r.search_run = (f.json() for f in search_files)
    selection_file = artifact("select", "selection.json")
    r.selection = selection = selection_file.json()
    r.select_metrics = artifact("select", "metrics.json").json()
    r.chosen = {}
    if selection:
        def check_selection():
            if not isinstance(selection["arch"], str):
                raise TypeError(f"'arch' is {selection['arch']!r}, expected an architecture string")
            missing = [key for key in ("rule", "candidates", "window") if key not in selection]
            if missing:
                raise KeyError(missing[0])
            marked = {}
            for rule in rep.RULES:
                c = selection.get(rule)
                if c:
                    if not isinstance(c["arch"], str):
                        raise _Malformed(f"'{rule}' has arch {c['arch']!r}, expected an architecture string")
                    marked[rule] = (c["arch"], float(c["loss"]))
                    float(c["params"])
            # the tables are built here so that a malformed content is reported as this file's damage
            rep.results_table(rep.arch_labels(selection, None), selection, None, None,
                              bench.primary if bench is not None else None)
            if selection.get("population"):
                rep.population_table(selection["population"])
            return (space.decode(selection["arch"]) if isinstance(space, Drawable) else None), marked
        r.drawing, r.chosen = selection_file.check(check_selection)
        if bench is not None and bench.has(selection["arch"]):
            r.retrained_gt = (selection["rule"], bench.accuracy(selection["arch"], bench.primary))
    if r.search_metrics:
        # run.json holds strings, shown as they are, so a content problem can only be metrics.json's
        search_files[0].check(lambda: rep.search_table(r.search_metrics, r.search_timing, r.search_run))
    retrain_files = [artifact("retrain", n) for n in ("metrics.json", "timing.json", "run.json")]
    r.retrain_metrics, r.retrain_timing, r.retrain_run = (f.json() for f in retrain_files)
    if r.retrain_metrics:
        retrain_files[0].check(lambda: rep.retrain_table(r.retrain_metrics, r.retrain_timing, r.retrain_run))

    history_file = artifact("search", "history.jsonl")
    r.snaps = []
    if history_file.path.exists():
        r.snaps = load_history(history_file.path)
        try:
            for i, snap in enumerate(r.snaps):
                check_snapshot(snap, i)
        except EpsError as err:
            raise EpsError(f"{history_file.path}: {err}") from None
        r.curve = accuracy_over_time(bench, r.snaps)
        if r.snaps:
            r.population = final_population(bench, r.snaps[-1], r.chosen)
    r.optimum = bench.best(bench.primary) if isinstance(bench, HasOptimum) else None
    curve_file = artifact("retrain", "curve.csv")
    curve_text = curve_file.text()
    r.rows = curve_file.check(lambda: _curve_rows(curve_text)) if curve_text is not None else []

    # the files parse; now that they are the ones the stages wrote, from each other's outputs (pipeline/record.py)
    record.check_run(paths.root, space_name, Path(out))
    return r


def _blocks(r: _Run) -> tuple[list, list, list]:
    """The report of one run as (results, details, settings) blocks: the first screen, the stages' details, and
    the settings table."""
    selection, bench = r.selection, r.bench
    retrained = r.retrained_arch if r.retrain_metrics else None
    labels = rep.arch_labels(selection, retrained)
    results = rep.arch_block(r.space_name, str(r.paths.root), labels, selection, retrained, r.params.get("seed"))
    table = rep.results_table(labels, selection, r.retrain_metrics, retrained,
                              bench.primary if bench is not None else None)
    if table is not None:
        results.append(table)
    population = bool(selection and selection.get("population"))
    if population:
        results.append(rep.population_table(selection["population"]))
    details = []
    if r.search_metrics:
        details.append(rep.search_table(r.search_metrics, r.search_timing, r.search_run, population_shown=population))
    if r.retrain_metrics:
        details.append(rep.retrain_table(r.retrain_metrics, r.retrain_timing, r.retrain_run))
    settings = rep.settings_table(r.space_name, r.params)
    if not selection and not r.retrain_metrics and not r.search_metrics:
        settings.caption = (f"only the warm-up has finished under {r.paths.root}; next: eps stage search --space "
                            f"{cli_name(r.space_name)} --out {r.out}")
    return results, details, [settings]


def _write(r: _Run, show_settings: bool) -> str:
    d = r.paths.stage("report")
    selection = r.selection
    d.mkdir(parents=True, exist_ok=True)
    if r.drawing is not None:
        r.space.draw(r.drawing, d / "arch.png")
    if r.curve and r.curve["iteration"]:
        rep.plot_accuracy_over_time(r.curve, d / "population_accuracy.png", r.optimum, r.retrained_gt)
    if r.population is not None:
        rep.plot_loss_vs_accuracy(r.population, d / "loss_vs_accuracy.png")
    if r.rows:
        trained = r.retrained_arch
        # a retrain given another arch than the selection's (`arch=`) is not the rule's cell
        who = f"the {selection['rule']} cell" if selection and trained in (None, selection["arch"]) else "the chosen cell"
        rep.plot_curve(r.rows, d / "retrain_curve.png", f"{r.space_name}: retrain of {who}, {len(r.rows)} epochs")
    results, details, settings = _blocks(r)
    text = rep.plain_text(results + details + settings)
    eio.update_text(d / "report.txt", text)  # unchanged content keeps its file (and DVC sees no change)
    headline = rep.summary(r.search_metrics, r.select_metrics, r.retrain_metrics)
    eio.update_text(r.paths.root / rep.SUMMARY_FILE, json.dumps(headline, indent=2) + "\n")
    console = rep.terminal_console()
    rep.show(console, results + details + (settings if show_settings or not (selection or r.search_metrics
                                                                            or r.retrain_metrics) else []))
    figures = sorted(p.stem for p in d.glob("*.png"))
    where = f"report written to {d}:"
    if len(where) <= console.width:
        console.print(Text(where))
    else:  # the folder on a line of its own, indented like the lines below (rich would break at the space)
        console.print(Text("report written to"))
        console.print(Text(f"  {d}:", overflow="fold"))
    console.print(Text("  report.txt (with the settings)" + ("; figures as .svg and 300-dpi .png:" if figures else "")))
    if figures:
        # wrapped here, indented, at the commas: a terminal's own wrap would start at column 0
        console.print(Text(textwrap.fill(", ".join(figures), console.width, initial_indent="    ", subsequent_indent="    ",
                                         break_long_words=False, break_on_hyphens=False), overflow="fold"))
    return text


# ------------------------------------------------------------------------------------------------ several seeds

def _comparable(params: dict, space: str) -> dict[str, object]:
    """What two seeds of one experiment share, as dotted key -> value: every key a stage reads
    (``record.stage_params``, merged over the stages) but the seed."""
    merged: dict = {}
    for stage in ("warmup", "search", "select", "retrain"):
        merged = deep_update(merged, record.stage_params(params, space, stage))
    merged.pop("seed", None)
    flat: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value
    walk("", merged)
    return flat


def _fitness_curve(snaps: list[dict]) -> tuple[dict, dict]:
    """Per history snapshot, the best (lowest) and mean supernet validation loss of the measured members."""
    best: dict = {"x": [], "y": []}
    mean: dict = {"x": [], "y": []}
    for snap in snaps:
        losses = [float(l) for l, c in zip(snap["loss"], snap["count"]) if c and l is not None]
        if losses:
            for d, v in ((best, min(losses)), (mean, sum(losses) / len(losses))):
                d["x"].append(snap["iteration"])
                d["y"].append(v)
    return best, mean


def report_many(space_name: str, params: dict, outs: list[Path], explicit: bool = True,
                into: Path | None = None) -> str:
    """Several runs of one experiment that differ only in their seed: check each run folder as ``report`` does
    (nothing is written into them), then print the headline numbers per seed with their mean and sample std, and
    write ``seeds.txt``, ``seeds.json`` and the aggregate figure ``seeds.svg`` / ``seeds.png`` to ``into`` (default:
    ``seeds-SPACE`` in the run folders' common parent). Returns the text of seeds.txt.

    Runs made with other params than the first one (other than the seed) are refused with one line naming the run
    and the first keys that differ; so are explicit ``params`` that disagree with a run (the seed aside)."""
    runs: list[_Run] = []
    for out in outs:
        paths = RunPaths(out, space_name)
        _check_finished(paths, space_name, out)
        own = record.params_for_report(paths.root, space_name, params, explicit=False)
        if explicit:
            # the given params must be the run's, its seed aside
            record.params_for_report(paths.root, space_name, {**params, "seed": own["seed"]}, explicit=True)
        runs.append(_load(space_name, own, out, explicit=False))
    first = runs[0]
    for r in runs[1:]:
        a, b = _comparable(first.params, space_name), _comparable(r.params, space_name)
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if keys:
            shown = "; ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise EpsError(f"{r.paths.root} was made with other params than {first.paths.root}, not only another "
                           f"seed (first vs this: {shown}{more}); report several run folders together only when they "
                           f"are seeds of one experiment, or report each on its own")
    seeds = [r.params.get("seed") for r in runs]
    # a mean and std over a run counted twice (a copied folder) would claim a spread not measured; a folder given
    # twice is refused by the CLI before this
    for i, r in enumerate(runs):
        same = next((o for o in runs[:i] if o.params.get("seed") == r.params.get("seed")), None)
        if same is not None:
            raise EpsError(f"{same.paths.root} and {r.paths.root} are both seed {r.params.get('seed')} (a copy of "
                           f"one run?); report several run folders together only when each has its own seed")

    archs = [r.retrained_arch if r.retrain_metrics else (r.selection or {}).get("arch") for r in runs]
    labels: dict[str, str] = {}
    for arch in archs:
        if isinstance(arch, str) and arch not in labels and len(labels) < len(rep.LABELS):
            labels[arch] = rep.LABELS[len(labels)]
    primary = first.bench.primary if first.bench is not None else None
    retrain_keys = list(dict.fromkeys(k for r in runs if r.retrain_metrics
                                      for k in rep._headline_keys(r.retrain_metrics)))
    columns = [(k, k.replace("test_", "test ").replace("best_valid_", "best valid ").replace("_", " ")
                + (" %" if rep.quantity(k) == "percent" else ""), rep.quantity(k)) for k in retrain_keys]
    rows = []
    for r, arch in zip(runs, archs):
        row = {"seed": r.params.get("seed"), "cell": labels.get(arch, "-"), "run": str(r.paths.root)}
        row.update({k: (r.retrain_metrics or {}).get(k) for k in retrain_keys})
        sel = r.selection or {}
        gt = (sel.get(sel.get("rule")) or {}).get("ground_truth") if sel else None
        if gt and primary:
            row["benchmark"] = gt.get(primary)
            row["rank"] = (gt["rank"], gt["rank_of"])
        pop = sel.get("population")
        tau = pop.get("tau_all") if pop else (r.search_metrics or {}).get("population_tau")
        if tau is not None:
            row["tau"] = float(tau)
        rows.append(row)
    if any("benchmark" in row for row in rows):
        columns += [("benchmark", f"{rep.SHORT_NAMES.get(primary, primary)} %", "percent"), ("rank", "rank", "rank")]
    if any("tau" in row for row in rows):
        columns.append(("tau", "tau", "corr"))

    lines: list = [Text(f"{space_name}: {len(runs)} runs, seeds {', '.join(map(str, seeds))}", overflow="fold")]
    for arch, label in labels.items():
        lines.append(rep.Arch(f"{label} = {arch}"))
        which = [str(r.params.get("seed")) for r, a in zip(runs, archs) if a == arch]
        lines.append(Text(f"    {'retrained' if first.retrain_metrics else 'chosen'} in seed {', '.join(which)}",
                          overflow="fold"))
    table = rep.seeds_table(space_name, columns, rows)
    runs_lines = [Text(f"seed {row['seed']}: {row['run']}", overflow="fold") for row in rows]
    blocks = lines + [table] + runs_lines

    panels = [("fitness over the search (lower is better)", "search iteration (training steps)",
               "supernet validation loss (nats)",
               {name: [(c["x"], c["y"]) for c in curves]
                for name, curves in (("population best", [_fitness_curve(r.snaps)[0] for r in runs]),
                                     ("population mean", [_fitness_curve(r.snaps)[1] for r in runs]))
                if all(c["x"] for c in curves)})]
    if all(r.curve and r.curve["iteration"] for r in runs):
        column = first.curve.get("column", "test")
        panels.append((f"population accuracy ({column})", "search iteration (training steps)",
                       "ground-truth accuracy (%)",
                       {name: [(r.curve["iteration"], r.curve[key]) for r in runs]
                        for name, key in (("population mean", "mean"), ("population max", "max"))}))
    if all(r.rows for r in runs):
        key = next((k for k in ("test_acc", "valid_ppl", "test_loss", "valid_loss")
                    if all(k in r.rows[0] for r in runs)), None)
        if key is not None:
            ylabel = {"test_acc": "test accuracy (%)", "valid_ppl": "validation perplexity",
                      "test_loss": "test loss (nats)", "valid_loss": "validation loss (nats)"}[key]
            panels.append(("retrain", "epoch", ylabel,
                           {ylabel.split(" (")[0]: [([row["epoch"] for row in r.rows], [row[key] for row in r.rows])
                                                   for r in runs]}))
    fig = rep.seeds_figure(f"{space_name}: {len(runs)} seeds ({', '.join(map(str, seeds))}), mean ± 1 std", panels)

    if into is None:
        import os
        into = Path(os.path.commonpath([Path(o).resolve() for o in outs])) / f"seeds-{cli_name(space_name)}"
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    if fig is not None:
        plotting.save(fig, into / "seeds.png")
    summary = {"space": space_name, "seeds": seeds, "runs": [str(r.paths.root) for r in runs],
               "architectures": {label: arch for arch, label in labels.items()},
               "rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()} for row in rows],
               "mean_std": {key: dict(zip(("mean", "std"), rep.mean_std(
                   [float(row[key][0] if kind == "rank" else row[key]) for row in rows if row.get(key) is not None])))
                   for key, _, kind in columns}}
    eio.update_text(into / "seeds.json", json.dumps(summary, indent=2, allow_nan=True) + "\n")
    text = rep.plain_text(blocks)
    eio.update_text(into / "seeds.txt", text)
    console = rep.terminal_console()
    rep.show(console, blocks)
    console.print(Text(f"written to {into}:", overflow="fold"))
    console.print(Text("  seeds.txt, seeds.json" + (", seeds.svg and seeds.png (300 dpi)" if fig is not None else "")))
    return text
