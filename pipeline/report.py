"""`eps report`: load whatever stages have finished, print tables, write plots and report.txt.

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
from pathlib import Path

from rich.text import Text

from eps import io as eio
from eps import report as rep
from eps.analysis import accuracy_over_time, final_population
from eps.params import data_root
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


def report(space_name: str, params: dict, out: str | Path, explicit: bool = True) -> str:
    """Check every finished stage's files, print the tables, write report.txt and the plots (one writer at a time
    per run folder). ``explicit``: the user passed these params (``--params``) rather than the defaults or
    ./params.yaml. Returns the text of report.txt."""
    paths = RunPaths(out, space_name)
    if not any((paths.stage(stage) / "metrics.json").exists() or (paths.stage(stage) / "history.jsonl").exists()
               for stage in ("warmup", "search", "select", "retrain")):
        # nothing to report: say so, and leave no report folder or lock file behind
        raise EpsError(f"no finished stage under {paths.root}; run `eps stage warmup --space {cli_name(space_name)} "
                       f"--out {out}` (or `eps run`) first, or point --out at a run folder")
    with locked(paths, "report"):
        return _report(space_name, params, out, explicit)


def _report(space_name: str, params: dict, out: str | Path, explicit: bool) -> str:
    paths = RunPaths(out, space_name)
    # A run folder is reported with the params it was made with: those it recorded, or explicit ones that agree.
    params = record.params_for_report(paths.root, space_name, params, explicit)
    space = get_space(space_name, params[space_name])
    d = paths.stage("report")
    bench = benchmark_of(space, data_root(params))

    def artifact(stage: str, name: str) -> _Artifact:
        return _Artifact(paths, stage, name, space_name, out)

    # ---- load and check every input; nothing is printed or written before this is done
    tables = [rep.settings_table(space_name, params)]
    search_files = [artifact("search", n) for n in ("metrics.json", "timing.json", "run.json")]
    search_metrics, search_timing, search_run = (f.json() for f in search_files)
    if search_metrics:
        # run.json holds strings, shown as they are, so a content problem can only be metrics.json's
        tables.append(search_files[0].check(lambda: rep.search_table(search_metrics, search_timing, search_run)))
    selection_file = artifact("select", "selection.json")
    selection = selection_file.json()
    drawing, chosen, retrained = None, {}, None
    if selection:
        def selection_tables():
            found = [rep.chosen_table(selection)]
            gt_table = rep.ground_truth_table(selection, bench.primary if bench is not None else None)
            if gt_table is not None:
                found.append(gt_table)
            if selection.get("population"):
                found.append(rep.population_table(selection["population"]))
            if not isinstance(selection["arch"], str):
                raise TypeError(f"'arch' is {selection['arch']!r}, expected an architecture string")
            marked = {}
            for rule in rep.RULES:
                c = selection.get(rule)
                if c:
                    if not isinstance(c["arch"], str):
                        raise _Malformed(f"'{rule}' has arch {c['arch']!r}, expected an architecture string")
                    marked[rule] = (c["arch"], float(c["loss"]))
            return found, (space.decode(selection["arch"]) if isinstance(space, Drawable) else None), marked
        found, drawing, chosen = selection_file.check(selection_tables)
        tables += found
        if bench is not None and bench.has(selection["arch"]):
            retrained = (selection["rule"], bench.accuracy(selection["arch"], bench.primary))
    retrain_files = [artifact("retrain", n) for n in ("metrics.json", "timing.json", "run.json")]
    retrain_metrics, retrain_timing, retrain_run = (f.json() for f in retrain_files)
    if retrain_metrics:
        tables.append(retrain_files[0].check(lambda: rep.retrain_table(retrain_metrics, retrain_timing, retrain_run)))
    if len(tables) == 1:
        tables[0].caption = (f"only the warm-up has finished under {paths.root}; next: eps stage search --space "
                             f"{cli_name(space_name)} --out {out}")

    history_file = artifact("search", "history.jsonl")
    curve = population = None
    if history_file.path.exists():
        snaps = load_history(history_file.path)
        try:
            for i, snap in enumerate(snaps):
                check_snapshot(snap, i)
        except EpsError as err:
            raise EpsError(f"{history_file.path}: {err}") from None
        curve = accuracy_over_time(bench, snaps)
        if snaps:
            population = final_population(bench, snaps[-1], chosen)
    optimum = bench.best(bench.primary) if isinstance(bench, HasOptimum) else None
    curve_file = artifact("retrain", "curve.csv")
    curve_text = curve_file.text()
    rows = curve_file.check(lambda: _curve_rows(curve_text)) if curve_text is not None else []

    # the files parse; now that they are the ones the stages wrote, from each other's outputs (pipeline/record.py)
    record.check_run(paths.root, space_name, Path(out))

    # ---- write
    d.mkdir(parents=True, exist_ok=True)
    if drawing is not None:
        space.draw(drawing, d / "arch.png")
    if curve and curve["iteration"]:
        rep.plot_accuracy_over_time(curve, d / "population_accuracy.png", optimum, retrained)
    if population is not None:
        rep.plot_loss_vs_accuracy(population, d / "loss_vs_accuracy.png")
    if rows:
        trained = (retrain_run or {}).get("arch", (retrain_metrics or {}).get("arch"))
        # a retrain given another arch than the selection's (`arch=`) is not the rule's cell
        who = f"the {selection['rule']} cell" if selection and trained in (None, selection["arch"]) else "the chosen cell"
        rep.plot_curve(rows, d / "retrain_curve.png", f"{space_name}: retrain of {who}, {len(rows)} epochs")
    # the architectures once more, each on one line: folded in a table they cannot be pasted
    lines = []
    if selection:
        lines += [f"{rule}: {selection[rule]['arch']}" for rule in rep.RULES if selection.get(rule)]
    trained_arch = (retrain_run or {}).get("arch")
    if trained_arch:
        lines.append(f"retrained: {trained_arch}")
    text = rep.plain_text(tables) + "".join(line + "\n" for line in lines)
    eio.update_text(d / "report.txt", text)  # unchanged content keeps its file (and DVC sees no change)
    console = rep.terminal_console()
    for t in tables:
        console.print(t)
    for line in lines:
        console.print(Text(line), soft_wrap=True)
    pngs = sorted(p.name for p in d.glob("*.png"))
    console.print(Text(f"report written to {d}", overflow="fold"))
    console.print(Text(f"  report.txt, {', '.join(pngs) or 'no plots'}", overflow="fold"))
    return text
