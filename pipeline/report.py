"""`eps report`: load whatever stages have finished, print tables, write plots and report.txt."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from eps import io as eio
from eps import report as rep
from eps.analysis import accuracy_over_time
from eps.config import data_root
from eps.space import Drawable, benchmark_of
from eps.spaces import get_space
from pipeline.stages import RunPaths, load_history


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def report(space_name: str, params: dict, out: str | Path) -> str:
    paths = RunPaths(out, space_name)
    space = get_space(space_name, params[space_name])
    d = paths.stage("report")
    d.mkdir(parents=True, exist_ok=True)
    tables = [rep.settings_table(space_name, params)]
    search_metrics = _json(paths.stage("search") / "metrics.json")
    if search_metrics:
        tables.append(rep.search_table(search_metrics, _json(paths.stage("search") / "timing.json")))
    selection = _json(paths.stage("select") / "selection.json")
    if selection:
        tables.append(rep.chosen_table(selection))
        gt_table = rep.ground_truth_table(selection)
        if gt_table is not None:
            tables.append(gt_table)
        if selection.get("population"):
            tables.append(rep.population_table(selection["population"]))
        if isinstance(space, Drawable):
            space.draw(space.decode(selection["arch"]), d / "arch.png")
    retrain_metrics = _json(paths.stage("retrain") / "metrics.json")
    if retrain_metrics:
        tables.append(rep.retrain_table(retrain_metrics, _json(paths.stage("retrain") / "timing.json")))
    if len(tables) == 1:
        tables[0].caption = f"no finished stage under {paths.root}; run `eps stage warmup --space {space_name}` first"

    bench = benchmark_of(space, data_root(params))
    history_path = paths.stage("search") / "history.jsonl"
    if history_path.exists():
        snaps = load_history(history_path)
        curve = accuracy_over_time(bench, snaps)
        if curve and curve["iteration"]:
            rep.plot_accuracy_over_time(curve, d / "population_accuracy.png")
        if bench is not None and snaps:
            last = snaps[-1]
            pts = [(-l, bench.accuracy(a, bench.primary)) for a, l, c in zip(last["arch"], last["loss"], last["count"])
                   if c >= 1 and l is not None and bench.has(a)]
            rep.plot_loss_vs_accuracy(pts, d / "loss_vs_accuracy.png",
                                      f"final population, iteration {last['iteration']}")
    curve_path = paths.stage("retrain") / "curve.csv"
    if curve_path.exists():
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(curve_path.open())]
        key = next((k for k in ("test_acc", "valid_ppl") if rows and k in rows[0]), None)
        if key:
            rep.plot_curve(rows, key, d / "retrain_curve.png", key.replace("_", " "))
    console = Console(width=140)
    text = rep.render(console, tables)
    eio.write_text(d / "report.txt", text)
    pngs = sorted(p.name for p in d.glob("*.png"))
    console.print(f"report written to {d} ({', '.join(pngs) or 'no plots'})")
    return text
