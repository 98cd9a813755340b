"""NAS-Bench-201 ground truth: the benchmark's accuracy table, loaded from a small CSV.

The official benchmark ships as a multi-gigabyte pickled ``.pth`` that needs the ``nas_201_api`` package and minutes
to load. Everything eps needs from it fits in one CSV row per cell (index, arch string, a few 200-epoch accuracies),
so ``import_benchmark`` converts the official file once and ``GroundTruth`` reads only the CSV afterwards.

CSV layout (``nb201/ground_truth.csv`` under the data root): a header row, then one row per cell. Required columns
``index`` (the benchmark's architecture index), ``arch`` (its benchmark string), ``cifar10_valid`` and
``cifar10_test``; any further columns are numeric accuracies (for example ``nats_cifar100_test``) and are kept.
An empty cell in an optional column reads as NaN (a benchmark may lack a dataset for some cells). Indexes are in
0..15624, accuracies in percent (0..100), and the last row ends with a line break (a file that stops mid-line is
taken as truncated). A file that is present but breaks any of this is a DataError, never "no ground truth".

A search on one dataset is judged by that dataset's columns only (``GroundTruth.for_dataset``, ``DATASET_COLUMNS``):
its validation column where the table has one (the benchmark's x-valid), then its test columns, ranked by the first
test column present. The importer's ``cifar100_test`` / ``imagenet16_test`` (NAS-Bench-201 v1.0) come before the
NATS-Bench re-runs ``nats_*_test`` of the same cells.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import pickle
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from eps.io import atomic_open, check_regular
from eps.data.files import note_read
from eps.errors import ConfigError, DataError

__all__ = ["DATASET_COLUMNS", "GROUND_TRUTH_FILE", "REQUIRED_COLUMNS", "GroundTruth", "import_benchmark"]

GROUND_TRUTH_FILE = "nb201/ground_truth.csv"
REQUIRED_COLUMNS = ("index", "arch", "cifar10_valid", "cifar10_test")
_ACCURACY_REQUIRED = ("cifar10_valid", "cifar10_test")

_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
_OP = "(?:" + "|".join(_OPS) + ")"
# Exact NB201 cell string: node i lists its inputs 0..i-1 in order. Checked on load so that a CSV of some other
# benchmark (or with reordered edges) fails loudly instead of silently never matching a searched architecture.
_ARCH_RE = re.compile(rf"^\|{_OP}~0\|\+\|{_OP}~0\|{_OP}~1\|\+\|{_OP}~0\|{_OP}~1\|{_OP}~2\|$")

_IMPORT_HINT = "run `eps nb201 import FILE` with the official NAS-Bench-201 .pth, or set EPS_DATA_DIR"
# nb201.space.dataset -> (validation columns, test columns) in order of preference; the first test column present
# ranks the cells. cifar10_test is the benchmark's "cifar10" (train+valid, official test set), the number the EPS
# paper reports.
DATASET_COLUMNS = {
    "cifar10": (("cifar10_valid",), ("cifar10_test", "nats_cifar10_test")),
    "cifar100": (("cifar100_valid",), ("cifar100_test", "nats_cifar100_test")),
    "imagenet16-120": (("imagenet16_valid",), ("imagenet16_test", "nats_imagenet16_test")),
}
NUM_INDEXES = 15625  # the benchmark's architecture indexes run 0..15624


class GroundTruth:
    """The accuracy table of NAS-Bench-201, one row per cell, columns held as NumPy arrays
    (an ``eps.space.Benchmark``; reports rank cells by ``primary``)."""
    primary = "cifar10_test"
    size = NUM_INDEXES   # the complete benchmark; eps.space.check_complete refuses a table with fewer rows
    remedy = "re-create it from the complete benchmark: " + _IMPORT_HINT

    def __init__(self, index: np.ndarray, archs: Sequence[str], columns: dict[str, np.ndarray], source: str = ""):
        self.index = np.asarray(index, dtype=np.int64)
        self.archs: list[str] = list(archs)
        self._columns = {name: np.asarray(col, dtype=np.float64) for name, col in columns.items()}
        self._shown = list(self._columns)  # what ``columns`` lists (reports); every column can still be queried
        self.source = source
        self.arch_to_row: dict[str, int] = {}
        for row, arch in enumerate(self.archs):
            if arch in self.arch_to_row:
                raise DataError(
                    f"{source or 'ground truth'}: architecture {arch} appears twice (rows {self.arch_to_row[arch] + 1}"
                    f" and {row + 1}); re-create the file with `eps nb201 import FILE`"
                )
            self.arch_to_row[arch] = row
        for name in _ACCURACY_REQUIRED:
            if name not in self._columns:
                raise DataError(f"{source or 'ground truth'}: missing column {name!r}; {_IMPORT_HINT}")
        # rank() and top_fraction_mask() need each column's values in order; sorting once here makes every query
        # O(log N). NaNs (missing optional values) sort last and are excluded from the ranking.
        self._sorted = {name: np.sort(col[~np.isnan(col)]) for name, col in self._columns.items()}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, data_root: str | os.PathLike) -> "GroundTruth":
        """Read ``<data_root>/nb201/ground_truth.csv``; DataError if it is missing or malformed."""
        path = Path(data_root) / GROUND_TRUTH_FILE
        if not os.path.lexists(path):
            raise DataError(f"NAS-Bench-201 ground truth not found at {path}; {_IMPORT_HINT} to a folder that holds "
                            f"{GROUND_TRUTH_FILE}")
        if not path.exists():
            raise DataError(f"{path} is a broken link (to {os.readlink(path)}), not a ground-truth CSV; replace it: "
                            f"{_IMPORT_HINT}")
        check_regular(path, DataError, f"put the ground-truth CSV there: {_IMPORT_HINT}")
        return cls.load_csv(path)

    @classmethod
    def load_if_present(cls, data_root: str | os.PathLike) -> "GroundTruth | None":
        """The ground truth if ``<data_root>/nb201/ground_truth.csv`` exists, None if it is absent.

        A file that is present but unreadable, truncated or malformed raises DataError: returning None would run
        everything without the benchmark and no word of why."""
        if not os.path.lexists(Path(data_root) / GROUND_TRUTH_FILE):
            return None
        return cls.load(data_root)

    @classmethod
    def load_csv(cls, path: str | os.PathLike) -> "GroundTruth":
        """Read a ground-truth CSV from an explicit path."""
        path = Path(path)
        try:
            # utf-8-sig: a spreadsheet round trip may add a byte-order mark that would corrupt the first header name.
            note_read(path)
            with open(path, newline="", encoding="utf-8-sig") as f:
                text = f.read()
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except FileNotFoundError:
            raise DataError(f"NAS-Bench-201 ground truth not found at {path}; {_IMPORT_HINT}") from None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: cannot read the ground-truth CSV ({_one_line(e)}); {_IMPORT_HINT}") from None
        # Every writer of this table (the importer, csv.writer, spreadsheets) ends the last row with a line break;
        # a file that stops mid-line was cut short by an interrupted copy, and its last value may be cut too.
        complete = not text or text.endswith(("\n", "\r"))
        return cls._from_rows(rows, str(path), complete)

    @classmethod
    def _from_rows(cls, rows: list[list[str]], source: str, complete: bool = True) -> "GroundTruth":
        if not rows:
            raise DataError(f"{source}: the ground-truth CSV is empty; {_IMPORT_HINT}")
        header = [h.strip() for h in rows[0]]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            shown = ", ".join(header)
            shown = shown if len(shown) <= 120 else shown[:117] + "..."
            raise DataError(f"{source}: missing column(s) {', '.join(missing)} in the header (found "
                            f"{_one_line(shown)!r}); {_IMPORT_HINT}")
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise DataError(f"{source}: duplicate column(s) {_one_line(', '.join(dup))} in the header; {_IMPORT_HINT}")
        if not complete:
            raise DataError(f"{source}: the last line (line {len(rows)}) has no line ending, so the file looks "
                            f"truncated (an interrupted copy or import); re-create it: {_IMPORT_HINT}")
        acc_names = [h for h in header if h not in ("index", "arch")]
        pos = {h: i for i, h in enumerate(header)}

        index: list[int] = []
        archs: list[str] = []
        values: dict[str, list[float]] = {name: [] for name in acc_names}
        seen_index: dict[int, int] = {}
        for lineno, row in enumerate(rows[1:], start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line (e.g. a trailing newline) carries no data
            if len(row) != len(header):
                raise DataError(f"{source}, line {lineno}: expected {len(header)} fields, found {len(row)}; "
                                f"{_IMPORT_HINT}")
            try:
                idx = int(row[pos["index"]])
            except ValueError:
                raise DataError(f"{source}, line {lineno}: index {row[pos['index']]!r} is not an integer; "
                                f"{_IMPORT_HINT}") from None
            if not 0 <= idx < NUM_INDEXES:
                raise DataError(f"{source}, line {lineno}: index {idx} is outside NAS-Bench-201's "
                                f"0..{NUM_INDEXES - 1}; {_IMPORT_HINT}")
            if idx in seen_index:
                raise DataError(f"{source}, line {lineno}: index {idx} already used on line {seen_index[idx]}; "
                                f"{_IMPORT_HINT}")
            seen_index[idx] = lineno
            arch = row[pos["arch"]].strip()
            if not _ARCH_RE.match(arch):
                raise DataError(f"{source}, line {lineno}: {arch!r} is not a NAS-Bench-201 arch string like "
                                f"|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with ops {', '.join(_OPS)}; {_IMPORT_HINT}")
            for name in acc_names:
                text = row[pos[name]].strip()
                if not text and name not in _ACCURACY_REQUIRED:
                    values[name].append(math.nan)
                    continue
                try:
                    v = float(text)
                except ValueError:
                    v = math.nan
                    text = text or "(empty)"
                if not math.isfinite(v):
                    raise DataError(f"{source}, line {lineno}: column {name} holds {text!r}, expected a finite "
                                    f"accuracy; {_IMPORT_HINT}")
                if not 0 <= v <= 100:
                    raise DataError(f"{source}, line {lineno}: column {name} holds {text!r}, expected an accuracy "
                                    f"in percent (0..100); {_IMPORT_HINT}")
                values[name].append(v)
            index.append(idx)
            archs.append(arch)
        if not archs:
            raise DataError(f"{source}: the ground-truth CSV has a header but no rows; {_IMPORT_HINT}")
        return cls(np.array(index, dtype=np.int64), archs, {k: np.array(v) for k, v in values.items()}, source)

    def for_dataset(self, dataset: str) -> "GroundTruth":
        """The same table seen from a search on ``dataset`` (a key of ``DATASET_COLUMNS``): ``columns`` lists that
        dataset's columns present in the file (validation first, then test) and ``primary`` is its first test column
        present; other columns stay queryable by name. DataError if the file has no test column for the dataset."""
        valid, test = DATASET_COLUMNS[dataset]
        present = [c for c in test if c in self._columns]
        if not present:
            raise DataError(f"{self.source or 'ground truth'} has no {dataset} test column ({' or '.join(test)}; it "
                            f"has {', '.join(self._columns)}), so a {dataset} search cannot be judged; re-create it "
                            f"from the full benchmark with `eps nb201 import FILE`, or set EPS_DATA_DIR")
        view = copy.copy(self)
        view.primary = present[0]
        view._shown = [c for c in (*valid, *test) if c in self._columns]
        return view

    # ------------------------------------------------------------------ queries

    @property
    def columns(self) -> list[str]:
        """Names of the accuracy columns shown in reports, in file order (after ``for_dataset``: that dataset's, in
        its order)."""
        return list(self._shown)

    def __len__(self) -> int:
        return len(self.archs)

    def has(self, arch: str) -> bool:
        return arch in self.arch_to_row

    def column(self, name: str) -> np.ndarray:
        """The whole accuracy column (read-only view), aligned with ``archs``."""
        col = self._column(name).view()
        col.flags.writeable = False
        return col

    def _column(self, name: str) -> np.ndarray:
        try:
            return self._columns[name]
        except KeyError:
            raise DataError(f"ground truth has no column {name!r}; available: {', '.join(self._columns)}") from None

    def _row(self, arch: str) -> int:
        try:
            return self.arch_to_row[arch]
        except (KeyError, TypeError):
            raise DataError(f"architecture {arch!r} is not in the ground truth ({len(self)} cells"
                            f"{', ' + self.source if self.source else ''}); check the arch string, or import the "
                            f"full benchmark with `eps nb201 import FILE`") from None

    def accuracy(self, arch: str, column: str | None = None) -> float:
        """``arch``'s value in ``column`` (default: ``primary``), percent; NaN where the table has none."""
        return float(self._column(column or self.primary)[self._row(arch)])

    def rank(self, arch: str, column: str | None = None) -> int:
        """1-based rank among all cells by ``column`` (default: ``primary``), 1 = best; ties share the best rank
        (1 + number of strictly better cells)."""
        column = column or self.primary
        value = self.accuracy(arch, column)
        if math.isnan(value):
            raise DataError(f"architecture {arch} has no {column} value in the ground truth, so it has no rank; "
                            f"choose another column ({', '.join(self._columns)})")
        ordered = self._sorted[column]
        better = ordered.size - int(np.searchsorted(ordered, value, side="right"))
        return 1 + better

    def best(self, column: str | None = None) -> float:
        """The highest value of ``column`` (default: ``primary``) over all cells (percent), cells without a value
        left out (an ``eps.space.HasOptimum``); DataError for an unknown column or one without any value."""
        column = column or self.primary
        self._column(column)
        ordered = self._sorted[column]
        if ordered.size == 0:
            raise DataError(f"ground truth column {column} has no values; choose another column")
        return float(ordered[-1])

    def top_fraction_mask(self, archs: Iterable[str], column: str = "cifar10_valid",
                          fraction: float = 0.2) -> np.ndarray:
        """Whether each arch is in the global top ``fraction`` of all cells by ``column``.

        The threshold is the accuracy of the ceil(fraction * N)-th best cell; a cell at or above it counts, so ties
        at the threshold are all included.
        """
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ConfigError(f"top fraction must be in (0, 1], got {fraction!r}")
        col = self._column(column)
        ordered = self._sorted[column]
        if ordered.size == 0:
            raise DataError(f"ground truth column {column} has no values; choose another column")
        # ceil on a product like 0.2 * 15625 = 3125.0000000000005 would add one; round off float noise first.
        k = max(1, math.ceil(round(fraction * ordered.size, 9)))
        threshold = ordered[ordered.size - k]
        archs = list(archs)
        out = np.empty(len(archs), dtype=bool)
        for i, arch in enumerate(archs):
            v = col[self._row(arch)]
            out[i] = bool(v >= threshold)  # NaN (missing) compares False
        return out


# ---------------------------------------------------------------------- import of the official benchmark

# (CSV column, benchmark dataset, evaluation set). 'cifar10-valid' trains on the train half and evaluates on the
# valid half ('x-valid'); 'cifar10' trains on train+valid and evaluates on the official test set ('ori-test'); the
# two others report their benchmark test half ('x-test'). These are the numbers the NB201 and EPS papers quote.
_IMPORT_COLUMNS = (
    ("cifar10_valid", "cifar10-valid", "x-valid"),
    ("cifar10_test", "cifar10", "ori-test"),
    ("cifar100_test", "cifar100", "x-test"),
    ("imagenet16_test", "ImageNet16-120", "x-test"),
)
_BENCHMARK_KEYS = ("meta_archs", "arch2infos", "evaluated_indexes")
_NOT_BENCHMARK = ("is not a NAS-Bench-201 benchmark file; pass the official NAS-Bench-201-v1_0-e61699.pth or "
                  "NAS-Bench-201-v1_1-096897.pth")


def _numpy_safe_globals() -> list:
    """The NumPy globals a NAS-Bench-201 benchmark file may name, and nothing else.

    The official v1.0/v1.1 files hold plain dicts, lists, strings and numbers, some of them NumPy scalars (e.g.
    ``np.float64`` FLOPs and parameter counts) and NumPy arrays. Pickled, a NumPy scalar is
    ``multiarray.scalar(dtype, bytes)``, an array ``multiarray._reconstruct(ndarray, shape, b'b')`` plus its state,
    and a dtype ``numpy.dtype(code, align, copy)`` whose state is set on the dtype's class (``Float64DType`` ...). The
    module of ``scalar``/``_reconstruct`` is ``numpy.core.multiarray`` in files written by NumPy 1 and
    ``numpy._core.multiarray`` in files written by NumPy 2, so both names are allowed. Only the dtypes of plain data
    are allowed (booleans, integers, floats, complex numbers, strings); object arrays, which could hold anything,
    are not.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 1.26
        from numpy.core import multiarray

    allowed: list = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    allowed += sorted({type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGSU"}, key=lambda t: t.__qualname__)
    return allowed


def _disallowed_global(message: str) -> str | None:
    """The global a weights-only load refused, from torch's message."""
    found = (re.search(r"GLOBAL (\S+) was not an allowed global", message)
             or re.search(r"unsupported GLOBAL (\S+) whose module", message))
    if found:
        return found.group(1)
    found = re.search(r"(?:unrecognized function|but got) (<[^>]*>|\S+)", message)
    if not found:
        return None
    named = re.fullmatch(r"<class '([^']+)'>", found.group(1))  # "<class 'numpy.dtypes.ObjectDType'>"
    return named.group(1) if named else found.group(1)


def _load_benchmark_dict(path: Path) -> dict:
    """Unpickle a benchmark file with torch's weights-only loader, allowing exactly the NumPy types it may hold.

    Never a full unpickle: a pickle can name any callable (``os.system``, ``builtins.exec``), and unpickling calls
    it. The weights-only loader refuses any global that is not on the list before calling anything, so a file that
    is not a benchmark is rejected without running a line of it.
    """
    import torch

    import warnings
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            # torch warns (2 lines) about a pickle protocol above 2 before it refuses the file: the refusal says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for refused content; RuntimeError, EOFError ... on corrupt input
        message = str(e)
        refused = _disallowed_global(message) if isinstance(e, pickle.UnpicklingError) else None
        if refused is None and isinstance(e, pickle.UnpicklingError):
            # torch stops at the first opcode it does not read (FRAME of protocol 4 and 5) before naming a global
            refused = _first_foreign_global(path)
        if refused:
            raise DataError(f"{path} needs the disallowed global {refused} (a NAS-Bench-201 benchmark holds only "
                            f"dicts, lists, strings, numbers and NumPy arrays/scalars), so it was refused without "
                            f"running any of it: it {_NOT_BENCHMARK}") from None
        raise DataError(f"{path} {_NOT_BENCHMARK} (cannot load it: {type(e).__name__}: "
                        f"{_short(_wo_reason(message))})") from None


def _first_foreign_global(path: Path) -> str | None:
    """The first global a plain pickle (or a torch zip's ``data.pkl``) names that a benchmark may not hold, read with
    ``pickletools`` (which only parses opcodes, never calls anything); None when it names none or cannot be read."""
    import pickletools
    import zipfile
    allowed = {name if isinstance(name, str) else f"{name.__module__}.{name.__qualname__}"
               for name in (g[1] if isinstance(g, tuple) else g for g in _numpy_safe_globals())}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(member) if member else b""
        else:
            with open(path, "rb") as f:
                data = f.read(64 << 20)  # a forged header is at the start; a benchmark's globals come early too
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str) and ("UNICODE" in op.name or op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING")):
                strings.append(str(arg))
            name = None
            if op.name in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".", 1)
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            if name and name not in allowed and not name.startswith(("torch.", "collections.OrderedDict")):
                return name
    except Exception:  # a torn or foreign stream: the caller reports it as not a benchmark
        return None
    return None


def _wo_reason(message: str) -> str:
    """The cause inside torch's multi-line weights-only message (its advice to load with weights_only=False is
    exactly what must not be done here)."""
    found = re.search(r"WeightsUnpickler error:\s*([^\n]*)", message)
    return found.group(1) if found else message


def _one_line(value) -> str:
    return " ".join(str(value).split())


def _short(value, limit: int = 200) -> str:
    text = _one_line(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def import_benchmark(pth_path: str | os.PathLike, out_csv: str | os.PathLike) -> int:
    """Convert the official NAS-Bench-201 ``.pth`` (v1.0 or v1.1) to the ground-truth CSV; return the row count.

    Accuracies are the 200-epoch ones (the benchmark's ``hp='200'``, stored under ``'full'``), final epoch, averaged
    over all seeds, i.e. ``NASBench201API.get_more_info(index, dataset, hp='200', is_random=False)``. Columns
    ``cifar100_test`` / ``imagenet16_test`` are written only when every imported cell has that dataset. The CSV is
    written to a temporary file beside ``out_csv`` and moved into place, so a crash never leaves half a table.
    """
    from nas_201_api import ArchResults

    pth_path = Path(pth_path)
    out_csv = Path(out_csv)
    if not pth_path.is_file():
        raise DataError(f"benchmark file not found: {pth_path}; download NAS-Bench-201-v1_0-e61699.pth (or v1_1) and "
                        f"pass its path")
    data = _load_benchmark_dict(pth_path)
    if not isinstance(data, dict) or any(k not in data for k in _BENCHMARK_KEYS):
        raise DataError(f"{pth_path} {_NOT_BENCHMARK} (expected a dict with keys {', '.join(_BENCHMARK_KEYS)})")

    # The package's NASBench201API(dict) would deep-copy the whole (multi-GB) dict before doing exactly this: wrap
    # each cell's 'full' entry in ArchResults. Doing it here directly halves peak memory; the numbers are those of
    # get_more_info (tests check the two agree).
    meta_archs = data["meta_archs"]
    arch2infos = data["arch2infos"]
    rows: list[tuple[int, str, dict[str, float]]] = []
    try:
        indexes = sorted(int(i) for i in data["evaluated_indexes"])
    except (TypeError, ValueError):
        raise DataError(f"{pth_path} {_NOT_BENCHMARK} (evaluated_indexes is not a list of integers)") from None
    for idx in indexes:
        try:
            arch = meta_archs[idx]
            full = arch2infos[idx]["full"]
            if not isinstance(full, dict):
                # ArchResults.create_from_state_dict would torch.load a string as a file path, with torch's default
                # loader rather than the guarded one above; the official files hold the results themselves.
                raise TypeError(f"its 'full' results are a {type(full).__name__}, not a dict")
            results = ArchResults.create_from_state_dict(full)
            datasets = set(results.get_dataset_names())
            accs = {}
            for column, dataset, setname in _IMPORT_COLUMNS:
                if dataset in datasets:
                    info = results.get_metrics(dataset, setname, iepoch=None, is_random=False)
                    accs[column] = float(info["accuracy"])
        except Exception as e:  # the package signals bad content with asserts, KeyErrors, IndexErrors ...
            raise DataError(f"{pth_path}: cannot read the results of architecture index {idx} "
                            f"({type(e).__name__}: {e}); {_NOT_BENCHMARK}") from None
        if not isinstance(arch, str) or not _ARCH_RE.match(arch):
            raise DataError(f"{pth_path}: architecture index {idx} has arch {arch!r}, not a NAS-Bench-201 cell "
                            f"string; {_NOT_BENCHMARK}")
        missing = [c for c in _ACCURACY_REQUIRED if c not in accs]
        if missing:
            raise DataError(f"{pth_path}: architecture index {idx} has no 200-epoch result for "
                            f"{', '.join(missing)}; {_NOT_BENCHMARK}")
        rows.append((idx, arch, accs))
    if not rows:
        raise DataError(f"{pth_path} holds no evaluated architectures; {_NOT_BENCHMARK}")

    columns = [c for c, _, _ in _IMPORT_COLUMNS if all(c in accs for _, _, accs in rows)]
    _write_csv_atomic(out_csv, ["index", "arch", *columns],
                      ([str(idx), arch, *(f"{accs[c]:.4f}" for c in columns)] for idx, arch, accs in rows))
    return len(rows)


def _write_csv_atomic(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    try:
        with atomic_open(path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as e:
        raise DataError(f"cannot write {path} ({e}); choose a writable output path") from None
