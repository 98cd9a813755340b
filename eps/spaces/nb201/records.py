"""Import the population snapshots of a reference-implementation NAS-Bench-201 run into eps's history format.

Reference format (IcLr2020SuBmIsSiOn/EPS, ``search_cnn_nasbench/searcher.py``, ``main()``): at every round boundary
(and once more after the last round) the searcher writes ``<record dir>/%06d-ep.txt`` % iteration with a single
``json.dump`` of the whole population in queue order, oldest first::

    [[structure, loss, count], ...]      e.g.  [[[[3], [3, 3], [1, 3, 3]], 0.8123, 4], [[[0], [2, 4], [1, 1, 0]], 15, 0]]

``structure`` is the ragged op-index list ``[[a], [b, c], [d, e, f]]`` (op indices into none, skip_connect,
nor_conv_1x1, nor_conv_3x3, avg_pool_3x3; entry [i-1][j] is the edge j -> i), ``loss`` is a float, or the integer
sentinel 15 while ``count`` (the number of fitness measurements) is 0. The selection notebook
(``InstructionForSelection.ipynb``) reads these files back with ``json.load`` and unpacks each entry as
``structure, loss, count``.

eps's snapshot history (what ``import_records`` writes) is JSON lines, one line per round in ascending iteration::

    {"iteration": 50, "arch": [str, ...], "loss": [float|null, ...], "count": [int, ...], "age": [int|null, ...]}

columnar, members oldest first, archs as NAS-Bench-201 strings; ``loss`` is null when ``count`` is 0 (the sentinel is
not a loss) and ``age`` is null when unknown, which it always is for imported records.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from eps.errors import DataError

from eps.io import atomic_open
from eps.spaces.nb201.model import OPS as _OPS
from eps.spaces.nb201.space import arch_to_str as _ops_to_arch_str
from eps.spaces.nb201.space import str_to_arch as _arch_str_to_ops

__all__ = ["Snapshot", "RECORD_NAME_RE", "parse_record_file", "import_records", "read_history", "write_history"]

_NODE_WIDTHS = (1, 2, 3)  # node i (1..3) has i incoming edges

# The reference pads to six digits ('%06d'), but more digits appear past iteration 999,999.
RECORD_NAME_RE = re.compile(r"^(\d+)-ep\.txt$")

# A reference file for P = 256 is ~12 kB; refuse anything absurd before reading it into memory.
_MAX_RECORD_BYTES = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------- encoding helpers
# The NB201 string codec is the space's own (ArchError is a ValueError); only the reference's ragged-list
# structure, with its tolerance for integral floats, is specific to the records.


def _structure_to_ops(structure) -> tuple[int, ...]:
    """Ragged list [[a], [b, c], [d, e, f]] -> six op indices; ValueError on any other shape or value."""
    if not isinstance(structure, list) or len(structure) != len(_NODE_WIDTHS):
        raise ValueError("expected a list of 3 nodes [[a], [b, c], [d, e, f]]")
    ops = []
    for i, (width, node) in enumerate(zip(_NODE_WIDTHS, structure)):
        if not isinstance(node, list) or len(node) != width:
            raise ValueError(f"node {i + 1} must be a list of {width} op index(es), got {node!r}")
        for op in node:
            value = _as_int(op)
            if value is None or not 0 <= value < len(_OPS):
                raise ValueError(f"op index {op!r} on node {i + 1} is not an integer in 0..{len(_OPS) - 1}")
            ops.append(value)
    return tuple(ops)


def _ops_to_structure(ops: Sequence[int]) -> list[list[int]]:
    out, k = [], 0
    for width in _NODE_WIDTHS:
        out.append([int(o) for o in ops[k:k + width]])
        k += width
    return out


def _as_int(value) -> int | None:
    """An int, or an integral float (some JSON writers emit 3.0); None for anything else, bools included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


# ---------------------------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    """The whole population at one round boundary, columnar, members oldest first."""

    iteration: int
    arch: list[str]
    loss: list[float | None]
    count: list[int]
    age: list[int | None]

    def __post_init__(self):
        n = len(self.arch)
        if not (len(self.loss) == len(self.count) == len(self.age) == n):
            raise ValueError("snapshot columns must have equal lengths")

    def __len__(self) -> int:
        return len(self.arch)

    def to_dict(self) -> dict:
        """The history-line dict (the same shape the search loop's controller snapshots use)."""
        return {"iteration": self.iteration, "arch": list(self.arch), "loss": list(self.loss),
                "count": list(self.count), "age": list(self.age)}

    def to_json(self) -> str:
        """One history line (without the newline); ``allow_nan=False`` keeps the file strict JSON."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))


def _bad(path, where: str, problem: str) -> DataError:
    return DataError(f"{path}, {where}: {problem}")


def parse_record_file(path: str | os.PathLike, arch_to_str: Callable[[Sequence[int]], str] | None = None) -> Snapshot:
    """Parse one reference snapshot file ``NNNNNN-ep.txt`` into a ``Snapshot`` (age unknown, so all null).

    ``arch_to_str`` maps the six op indices of a member (validated, each in 0..4) to its benchmark string; it
    defaults to this module's own encoder. Any malformed content raises DataError naming the file, the position
    and what was expected.
    """
    arch_to_str = arch_to_str or _ops_to_arch_str
    path = Path(path)
    match = RECORD_NAME_RE.match(path.name)
    if not match:
        raise DataError(f"{path}: a reference record file must be named NNNNNN-ep.txt (the iteration, zero-padded); "
                        f"rename it or point at the run's record folder")
    iteration = int(match.group(1))
    text = _read_text(path)
    # The searcher's json.dump writes the whole file on one line, so "line 1" locates a member exactly; a
    # hand-reformatted multi-line file gets the member number only (json has no positions for parsed values).
    line = "line 1" if "\n" not in text.strip() else "document"

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(path, f"line {e.lineno} column {e.colno}",
                   f"not valid JSON ({e.msg}); expected the searcher's json.dump of [[structure, loss, count], ...] "
                   f"(the file may be truncated: re-copy it or delete it)") from None
    except (ValueError, RecursionError) as e:  # e.g. absurdly long integers or nesting
        raise _bad(path, line, f"not a readable JSON document ({type(e).__name__}); expected "
                   f"[[structure, loss, count], ...]") from None

    if not isinstance(data, list):
        raise _bad(path, line, f"expected a JSON list of [structure, loss, count] members, found "
                   f"{type(data).__name__}")
    if not data:
        raise _bad(path, line, "the population is empty; expected at least one [structure, loss, count] member")

    archs: list[str] = []
    losses: list[float | None] = []
    counts: list[int] = []
    for m, member in enumerate(data):
        where = f"{line}, member {m}"
        if not isinstance(member, list) or len(member) != 3:
            raise _bad(path, where, f"expected [structure, loss, count], found {_short(member)}")
        structure, loss, count = member
        try:
            ops = _structure_to_ops(structure)
        except ValueError as e:
            raise _bad(path, where, f"bad structure {_short(structure)}: {e}") from None
        try:
            arch = arch_to_str(ops)
        except (ValueError, TypeError) as e:  # ArchError is a ValueError
            raise _bad(path, where, f"cannot encode structure {_short(structure)}: {e}") from None
        n_measured = _as_int(count)
        if n_measured is None or n_measured < 0:
            raise _bad(path, where, f"count {_short(count)} is not a non-negative integer")
        if n_measured == 0:
            # Never measured: the reference stores the sentinel 15, which is not a loss.
            value = None
        else:
            if isinstance(loss, bool) or not isinstance(loss, (int, float)):
                raise _bad(path, where, f"loss {_short(loss)} is not a number")
            try:
                value = float(loss)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                raise _bad(path, where, f"loss {_short(loss)} is not finite (the run diverged); import a run with "
                           f"finite losses")
        archs.append(arch)
        losses.append(value)
        counts.append(n_measured)
    return Snapshot(iteration, archs, losses, counts, [None] * len(archs))


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > _MAX_RECORD_BYTES:
            raise DataError(f"{path}: {size} bytes is far larger than a population snapshot; check the file")
        # utf-8-sig: tolerate a byte-order mark added by an editor on the way.
        return path.read_text(encoding="utf-8-sig")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the run folder path") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}, byte {e.start}: not UTF-8 text; expected the searcher's JSON snapshot") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); check the path and permissions") from None


def _short(value, limit: int = 60) -> str:
    """A bounded repr for error messages (a bad member may be arbitrarily large or deep)."""
    try:
        text = repr(value)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- run folders


def import_records(run_dir: str | os.PathLike, out_path: str | os.PathLike,
                   arch_to_str: Callable[[Sequence[int]], str] | None = None) -> list[Snapshot]:
    """Convert every ``NNNNNN-ep.txt`` in ``run_dir`` into one eps snapshot-history file at ``out_path``.

    Other files in the folder (logs, checkpoints) are ignored. Every record is parsed before anything is written, and
    the history is written to a temporary file then renamed, so a bad record never leaves a partial history.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a folder; pass the reference run's record folder "
                        f"(record_<dataset>_..._<seed>) that holds the NNNNNN-ep.txt files")
    try:
        names = os.listdir(run_dir)
    except OSError as e:
        raise DataError(f"{run_dir}: cannot list the folder ({e.strerror or e}); check permissions") from None
    records: dict[int, Path] = {}
    for name in names:
        match = RECORD_NAME_RE.match(name)
        if not match or not (run_dir / name).is_file():
            continue
        iteration = int(match.group(1))
        if iteration in records:
            raise DataError(f"{run_dir}: {records[iteration].name} and {name} both hold iteration {iteration}; "
                            f"remove one")
        records[iteration] = run_dir / name
    if not records:
        raise DataError(f"{run_dir}: no reference snapshot files (NNNNNN-ep.txt, e.g. 000050-ep.txt) found; pass the "
                        f"folder the reference searcher wrote them to")
    snapshots = [parse_record_file(records[it], arch_to_str) for it in sorted(records)]
    write_history(out_path, snapshots)
    return snapshots


def write_history(out_path: str | os.PathLike, snapshots: Iterable[Snapshot]) -> None:
    """Write snapshots as eps history JSON lines, atomically."""
    try:
        with atomic_open(out_path, "w") as f:
            for snap in snapshots:
                f.write(snap.to_json() + "\n")
    except OSError as e:
        raise DataError(f"cannot write {out_path} ({e.strerror or e}); choose a writable output path") from None


def read_history(path: str | os.PathLike) -> list[Snapshot]:
    """Read an eps snapshot history back; DataError naming the line for anything that is not in the format."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise DataError(f"{path}: snapshot history not found; run a search or `import_records` first") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the snapshot history ({e}); check the file") from None
    out: list[Snapshot] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(_snapshot_from_obj(json.loads(line)))
        except (ValueError, TypeError, RecursionError) as e:
            raise DataError(f"{path}, line {lineno}: not a snapshot line ({e}); expected {{\"iteration\": int, "
                            f"\"arch\": [...], \"loss\": [...], \"count\": [...], \"age\": [...]}}") from None
        if len(out) > 1 and out[-1].iteration <= out[-2].iteration:
            raise DataError(f"{path}, line {lineno}: iteration {out[-1].iteration} does not increase (previous "
                            f"{out[-2].iteration}); the history is corrupt")
    return out


def _snapshot_from_obj(obj) -> Snapshot:
    if not isinstance(obj, dict) or set(obj) != {"iteration", "arch", "loss", "count", "age"}:
        raise ValueError("expected exactly the keys iteration, arch, loss, count, age")
    iteration = _as_int(obj["iteration"])
    if iteration is None or iteration < 0:
        raise ValueError("iteration must be a non-negative integer")
    cols = [obj[k] for k in ("arch", "loss", "count", "age")]
    if not all(isinstance(c, list) for c in cols) or len({len(c) for c in cols}) != 1:
        raise ValueError("arch, loss, count and age must be lists of equal length")
    arch, loss, count, age = cols
    for a in arch:
        _arch_str_to_ops(a)
    counts = [_as_int(c) for c in count]
    if any(c is None or c < 0 for c in counts):
        raise ValueError("count entries must be non-negative integers")
    losses: list[float | None] = []
    for l_, c in zip(loss, counts):
        if l_ is None:
            losses.append(None)
        elif isinstance(l_, (int, float)) and not isinstance(l_, bool) and math.isfinite(l_):
            losses.append(float(l_))
        else:
            raise ValueError(f"loss {_short(l_)} must be a finite number or null")
        if (c == 0) != (losses[-1] is None):
            raise ValueError("loss must be null exactly when count is 0")
    ages: list[int | None] = []
    for a in age:
        value = None if a is None else _as_int(a)
        if a is not None and (value is None or value < 0):
            raise ValueError("age entries must be non-negative integers or null")
        ages.append(value)
    return Snapshot(iteration, list(arch), losses, counts, ages)
