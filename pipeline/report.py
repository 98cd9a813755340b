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
import math
from pathlib import Path

from rich.console import Console

from eps import io as eio
from eps import report as rep
from eps.analysis import accuracy_over_time
from eps.config import data_root
from eps.errors import EpsError
from eps.selection import check_snapshot
from eps.space import Drawable, benchmark_of
from eps.spaces import cli_name, get_space
from pipeline.stages import RunPaths, load_history, locked

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
        return EpsError(f"{self.path} is damaged ({problem}); rerun `eps stage {self.stage} --space {self.space} "
                        f"--out {self.out}` to rewrite it, then `eps report` again")

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


def _curve_rows(text: str) -> tuple[list[dict], str | None]:
    """Rows of ``curve.csv`` as floats, and the column plotted (test_acc or valid_ppl; None when neither)."""
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
    key = next((k for k in ("test_acc", "valid_ppl") if k in rows[0]), None)
    return rows, key


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def report(space_name: str, params: dict, out: str | Path, explicit: bool = True) -> str:
    """Check every finished stage's files, print the tables, write report.txt and the plots (one writer at a time
    per run folder)."""
    with locked(RunPaths(out, space_name), "report"):
        return _report(space_name, params, out)


def _report(space_name: str, params: dict, out: str | Path) -> str:
    paths = RunPaths(out, space_name)
    space = get_space(space_name, params[space_name])
    d = paths.stage("report")

    def artifact(stage: str, name: str) -> _Artifact:
        return _Artifact(paths, stage, name, space_name, out)

    # ---- load and check every input; nothing is printed or written before this is done
    tables = [rep.settings_table(space_name, params)]
    search_metrics_file, search_timing_file = artifact("search", "metrics.json"), artifact("search", "timing.json")
    search_metrics, search_timing = search_metrics_file.json(), search_timing_file.json()
    if search_metrics:
        tables.append(search_metrics_file.check(lambda: rep.search_table(search_metrics, search_timing)))
    selection_file = artifact("select", "selection.json")
    selection = selection_file.json()
    drawing = None
    if selection:
        def selection_tables():
            found = [rep.chosen_table(selection)]
            gt_table = rep.ground_truth_table(selection)
            if gt_table is not None:
                found.append(gt_table)
            if selection.get("population"):
                found.append(rep.population_table(selection["population"]))
            if not isinstance(selection["arch"], str):
                raise TypeError(f"'arch' is {selection['arch']!r}, expected an architecture string")
            return found, (space.decode(selection["arch"]) if isinstance(space, Drawable) else None)
        found, drawing = selection_file.check(selection_tables)
        tables += found
    retrain_metrics_file, retrain_timing_file = artifact("retrain", "metrics.json"), artifact("retrain", "timing.json")
    retrain_metrics, retrain_timing = retrain_metrics_file.json(), retrain_timing_file.json()
    if retrain_metrics:
        tables.append(retrain_metrics_file.check(lambda: rep.retrain_table(retrain_metrics, retrain_timing)))
    if len(tables) == 1:
        tables[0].caption = f"no finished stage under {paths.root}; run `eps stage warmup --space {cli_name(space_name)}` first"

    bench = benchmark_of(space, data_root(params))
    history_file = artifact("search", "history.jsonl")
    curve = points = last = None
    if history_file.path.exists():
        snaps = load_history(history_file.path)
        try:
            for i, snap in enumerate(snaps):
                check_snapshot(snap, i)
        except EpsError as err:
            raise EpsError(f"{history_file.path}: {err}") from None
        curve = accuracy_over_time(bench, snaps)
        if bench is not None and snaps:
            last = snaps[-1]
            points = [(-l, bench.accuracy(a, bench.primary))
                      for a, l, c in zip(last["arch"], last["loss"], last["count"])
                      if c >= 1 and l is not None and math.isfinite(l) and bench.has(a)]
    curve_file = artifact("retrain", "curve.csv")
    curve_text = curve_file.text()
    rows, key = curve_file.check(lambda: _curve_rows(curve_text)) if curve_text is not None else ([], None)

    # ---- write
    d.mkdir(parents=True, exist_ok=True)
    if drawing is not None:
        space.draw(drawing, d / "arch.png")
    if curve and curve["iteration"]:
        rep.plot_accuracy_over_time(curve, d / "population_accuracy.png")
    if points is not None:
        rep.plot_loss_vs_accuracy(points, d / "loss_vs_accuracy.png", f"final population, iteration {last['iteration']}")
    if key:
        rep.plot_curve(rows, key, d / "retrain_curve.png", key.replace("_", " "))
    console = Console(width=140, markup=False)  # values from files are shown as they are, never as markup
    text = rep.render(console, tables)
    eio.write_text(d / "report.txt", text)
    pngs = sorted(p.name for p in d.glob("*.png"))
    console.print(f"report written to {d} ({', '.join(pngs) or 'no plots'})")
    return text
