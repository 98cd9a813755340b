"""Per-round search curves and per-epoch retrain curves, logged with DVCLive so `dvc plots show/diff`, `dvc exp show`
and DVC's live views read them.

Two copies exist. While a stage runs, its curves are logged live into ``<space>/.work/<stage>/dvclive``; when it
finishes, the curves are rebuilt from the stage's own record (the snapshot history, the retrain history kept in the
checkpoint) into ``<stage>/dvclive/plots/metrics/*.tsv``, the output that `dvc.yaml` declares as plots. Rebuilding
from the record makes the published curves identical for an interrupted-and-resumed run and an uninterrupted one;
the live copy is rebuilt the same way on resume, so it never holds rows of the rounds a resume repeats.

Each curve is one TSV (``step``, value), DVCLive's layout; ``step`` is the search iteration or the retrain epoch (an
int). DVCLive is used through its public API inside a DVC project; outside one eps writes the same files (``_Tsv``).
`dvc.yaml`'s top-level ``plots:`` (pipeline/dvcfiles.py) group the curves into charts.
DVCLive's summary file (``metrics.json``, the last value of each curve) is dropped from the published copy: the
stage's own ``metrics.json`` holds the headline numbers and is the file `dvc.yaml` declares as metrics.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

from eps import io as eio
from eps.analysis import population_quality


def _dvc_project(start: Path) -> bool:
    """Whether ``start`` lies in a DVC project (a ``.dvc`` folder in it or a parent) or a DVC command runs us."""
    if os.environ.get("DVC_ROOT"):
        return True
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return True
    return False


class _Tsv:
    """DVCLive's metrics layout (``<name>.tsv``: a ``step`` column and one named after the metric's last part),
    written by eps itself, for a run outside a DVC project only: DVCLive's public API has no switch for its DVC
    integration, which there runs `dvc init` in the user's git repository (and stops in one without commits). Inside
    a DVC project (or under `dvc repro`/`dvc exp run`) DVCLive writes the curves (``_open``)."""

    def __init__(self, folder: Path):
        self.metrics = Path(folder) / "plots" / "metrics"
        self.step = 0

    def log_metric(self, name: str, value: float) -> None:
        path = self.metrics / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator=os.linesep)
            if new:
                writer.writerow(["step", name.rpartition("/")[2]])
            writer.writerow([self.step, value])

    def next_step(self) -> None:
        self.step += 1

    def end(self) -> None:
        pass


def _open(folder: Path):
    if not _dvc_project(Path.cwd()):
        return _Tsv(folder)
    from dvclive import Live
    logging.getLogger("dvclive").setLevel(logging.WARNING)
    # eps writes its own dvc.yaml (`eps dvc init`) and never saves an experiment from inside a stage
    return Live(str(folder), resume=False, report=None, save_dvc_exp=False, dvcyaml=False, monitor_system=False)


class Curves:
    """A DVCLive folder of curves: ``reset(rows)`` rewrites it with ``rows``, ``log(row)`` adds one. A row is a dict
    ``{"step": int, name: float | None, ...}``; a None value is not logged (e.g. no member measured)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._live = None

    def reset(self, rows: Iterable[dict]) -> None:
        self.close()
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._live = _open(self.folder)
        for row in rows:
            self.log(row)

    def log(self, row: dict) -> None:
        if self._live is None:
            self.reset([])
        live = self._live
        live.step = int(row["step"])   # a public setter of DVCLive's Live: the round's iteration or the epoch
        for name, value in row.items():
            if name != "step" and value is not None:
                live.log_metric(name, float(value))
        live.next_step()

    def close(self) -> None:
        if self._live is not None:
            with contextlib.suppress(Exception):
                self._live.end()
            self._live = None


def publish(rows: list[dict], folder: Path) -> None:
    """Write ``rows`` as the published curves in ``folder`` (a stage's staging folder's ``dvclive``)."""
    curves = Curves(folder)
    curves.reset(rows)
    curves.close()
    with contextlib.suppress(FileNotFoundError):
        os.remove(folder / "metrics.json")
    eio.fsync_dir(folder)


# ---- what the curves hold ------------------------------------------------------------------------------------------

def search_row(snapshot: dict, bench=None) -> dict:
    """The curves of one search round from its history record: train loss and lr, the round's best and mean
    fitness (validation loss of the measured members, nats) and, with a benchmark, the population's mean and max
    ground-truth accuracy (%) and Kendall tau between -loss and accuracy over the measured members."""
    stats = snapshot.get("round") or {}
    row = {"step": snapshot["iteration"],
           "train/loss": stats.get("train_loss"), "train/lr": stats.get("lr"),
           "fitness/best": stats.get("fitness_best"), "fitness/mean": stats.get("fitness_mean")}
    quality = population_quality(bench, snapshot) if bench is not None else None
    if quality is not None:
        tau = quality["tau_all"]
        row.update({"population/mean_acc": quality["mean_acc"], "population/max_acc": quality["max_acc"],
                    "population/tau": tau if tau == tau else None})
    return row


def retrain_row(row: dict) -> dict:
    """One retrain epoch as curves: ``train_loss`` -> ``train/loss``, ``test_acc`` -> ``test/acc``, ... (the step is
    the epoch, 1-based)."""
    out = {"step": int(row["epoch"])}
    for key, value in row.items():
        if key != "epoch":
            split, _, name = key.partition("_")
            out[f"{split}/{name}" if name else key] = value
    return out


class LiveHistory(eio.AppendLog):
    """The search's snapshot history, mirrored live into a DVCLive folder: every appended record becomes a row of
    curves, and a truncation (a resume going back to its checkpoint) rewrites the folder from the records kept."""

    def __init__(self, path: Path, live_dir: Path, bench=None):
        super().__init__(path)
        self.bench = bench
        self.curves = Curves(live_dir)

    def append(self, record: dict) -> None:
        super().append(record)
        if "round" in record:
            self.curves.log(search_row(record, self.bench))

    def truncate(self, length: int) -> None:
        super().truncate(length)
        self._f.flush()
        rows = []
        if length:
            rows = [search_row(r, self.bench) for r in eio.read_jsonl(self.path) if "round" in r]
        self.curves.reset(rows)

    def close(self) -> None:
        self.curves.close()
        super().close()
