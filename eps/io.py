"""Crash-safe file output: every artifact is written to a temp file, fsynced, then renamed over the target.

A reader therefore sees either the old file or the new one, never half of one, even after SIGKILL or power loss.
Files are created with the usual permissions (0666 less the umask), like any other program's output. ``publish``
extends this to a whole folder: a stage writes its outputs into a staging folder that replaces the stage folder
with two renames, and ``recover`` finishes or discards a swap that a crash interrupted, so the outputs of a stage
are always one complete set, all new or all old.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path
import numbers
from typing import Any, Iterator, Mapping

from eps.errors import EpsError, SpaceError
from eps.errors import check_regular, not_regular  # noqa: F401  (also eps.io's public names)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames and new entries in ``path`` durable (best effort: not every filesystem supports it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_fsync_dir = fsync_dir  # the former private name


def _named(err: OSError, path) -> OSError:
    """``err`` with ``path`` as its file name when the OS did not give one (a failed write, e.g. disk full, names no
    file), so the one-line message names what could not be written."""
    if err.filename is None and err.errno:
        new = type(err)(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path))
        return new
    return err


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temp file beside ``path``, created with mode 0666 so the umask applies (mkstemp's 0600 would
    make every artifact private to its owner)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {path}")


# The temp names of ``_create_temp``: ``.<target name>.<8 hex digits>.tmp``.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def remove_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Remove the temp files of writes that a kill cut short (``TEMP_NAME``, regular files only) under ``root``;
    returns what was removed. A checkpoint's temp file is as large as the checkpoint, and one inside a DVC output
    would be tracked with it. Call only while no writer can be at work under ``root`` (the run folder's lock: one
    writer per run folder), since a live writer's temp file has the same name. Symlinked folders are not entered."""
    removed = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if TEMP_NAME.fullmatch(name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise _named(err, path) from None
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def update_bytes(path: str | os.PathLike, data: bytes) -> bool:
    """``write_bytes`` unless the file already holds exactly ``data`` (its time stamps then stay); True if written."""
    try:
        with open(path, "rb") as f:
            if f.read(len(data) + 1) == data:
                return False
    except OSError:
        pass
    write_bytes(path, data)
    return True


def update_text(path: str | os.PathLike, text: str) -> bool:
    return update_bytes(path, text.encode())


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (at any depth of dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (RFC 8259): NaN and infinities are written as null, never as the bare tokens Python allows."""
    write_text(path, json.dumps(finite_or_none(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    check_regular(path)
    with open(path) as f:
        return json.load(f)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    check_regular(src)
    with open(src, "rb") as f:
        write_bytes(dst, f.read())


# ---- a folder of outputs as one unit -------------------------------------------------------------------------------

def staging_dir(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.staging"


def old_dir(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.old"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def half_swapped(final: str | os.PathLike) -> bool:
    """Whether a swap of ``final`` was interrupted (or a staging folder was left behind)."""
    return old_dir(final).exists() or staging_dir(final).exists()


def recover(final: str | os.PathLike) -> str | None:
    """Finish or undo a ``publish`` that a crash interrupted; returns what was done (None when nothing was needed).

    The swap renames ``final`` to ``.final.old``, then ``.final.staging`` to ``final``; the staging folder is
    complete before the first rename. So: an ``old`` beside a missing ``final`` means the staging folder is the
    complete new set (or, if it is missing too, the old set goes back); an ``old`` beside ``final`` is leftover; a
    staging folder without an ``old`` is an unfinished new set and is discarded.
    """
    final = Path(final)
    staging, old = staging_dir(final), old_dir(final)
    done = None
    if old.exists():
        if not final.exists():
            if staging.is_dir():
                os.rename(staging, final)
                done = "completed the interrupted swap of its new outputs"
            else:
                os.rename(old, final)
                done = "restored its previous outputs"
            fsync_dir(final.parent)
        if old.exists():
            _remove(old)
    if staging.exists():
        _remove(staging)
        done = done or "discarded unfinished outputs"
    return done


@contextlib.contextmanager
def publish(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh staging folder beside ``final``; on clean exit it replaces ``final`` (two renames), so readers
    see the old set of files or the new one. On an error the staging folder is removed and ``final`` is untouched.
    Callers serialise writers (a lock per stage) and call ``recover`` first."""
    final = Path(final)
    staging, old = staging_dir(final), old_dir(final)
    if staging.exists():
        _remove(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        fsync_dir(staging)
        if old.exists():
            _remove(old)
        if final.exists() or final.is_symlink():
            os.rename(final, old)
        os.rename(staging, final)
        fsync_dir(final.parent)
    except BaseException:
        if not final.exists() and old.exists():  # failed between the renames: put the old set back
            with contextlib.suppress(OSError):
                os.rename(old, final)
        with contextlib.suppress(OSError):
            _remove(staging)
        raise
    with contextlib.suppress(OSError):  # the new set is in place; a leftover is removed by the next recover
        _remove(old)


# ---- the snapshot history ------------------------------------------------------------------------------------------

def _prefix_hash(path: Path, length: int):
    """A sha256 object fed with the first ``length`` bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = length
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h


class AppendLog:
    """An append-only JSON-lines file whose committed length (and a digest of its content) is tracked by
    checkpoints.

    Lines written after the last checkpoint are discarded on resume (``truncate``), so an interrupted run that is
    resumed writes exactly the lines an uninterrupted run would have written. ``verify`` tells whether the file
    still holds what a checkpoint recorded, so a checkpoint is never applied to a history it does not belong to.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_regular(self.path, fix="remove it, or rerun with --restart")  # opening a FIFO to append blocks
        self._f = open(self.path, "ab")
        self._hash = None  # sha256 of bytes [0, tell()), kept up to date once known

    def append(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            self._f.write(data)
        except OSError as err:
            raise _named(err, self.path) from None
        if self._hash is not None:
            self._hash.update(data)

    def commit(self) -> int:
        """Flush to disk and return the byte length to store in the checkpoint."""
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as err:
            raise _named(err, self.path) from None
        return self._f.tell()

    def digest(self) -> str:
        """sha256 of the content written so far (call after ``commit``)."""
        if self._hash is None:
            self._f.flush()
            self._hash = _prefix_hash(self.path, self._f.tell())
        return self._hash.hexdigest()

    def size(self) -> int:
        self._f.flush()
        return os.fstat(self._f.fileno()).st_size

    def verify(self, length: int, digest: str | None = None) -> str | None:
        """None when the file's first ``length`` bytes are what a checkpoint recorded (``digest``, when given),
        else what is wrong."""
        size = self.size()
        if not isinstance(length, int) or length < 0:
            return f"it records an invalid history length ({length!r})"
        if length > size:
            return f"it expects {length} bytes of history but {self.path} has {size}"
        if digest is not None and _prefix_hash(self.path, length).hexdigest() != digest:
            return f"{self.path} does not hold the history it recorded (content differs)"
        return None

    def last_record(self, length: int) -> dict | None:
        """The last record within the first ``length`` bytes (None when there is none or it does not parse)."""
        self._f.flush()
        if length <= 0:
            return None
        with open(self.path, "rb") as f:
            end, tail = length, b""
            # read backwards in blocks until the line before the last newline is whole
            while end > 0 and tail.rstrip(b"\n").count(b"\n") == 0:
                start = max(0, end - (1 << 16))
                f.seek(start)
                tail = f.read(end - start) + tail
                end = start
        line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def truncate(self, length: int) -> None:
        """Cut the file to ``length`` bytes (never extends it: a short file is an error, see ``verify``)."""
        size = self.size()
        if length > size:
            raise ValueError(f"{self.path} has {size} bytes, cannot truncate it to {length}")
        self._f.truncate(length)
        self._f.seek(length)
        self._hash = _prefix_hash(self.path, length)

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as err:  # the unflushed tail is lost; a resume truncates to the last checkpoint anyway
            raise _named(err, self.path) from None


class MemoryLog:
    """The snapshot history of a run without a run folder: the ``AppendLog`` interface over a list of records
    (``records()``); its "bytes" are the record count, so a checkpoint's length check works the same way. The digest
    is kept up to date as records arrive (a checkpoint asks for it), not recomputed over the whole history."""

    def __init__(self):
        self._records: list[dict] = []
        self._hash = hashlib.sha256()

    @staticmethod
    def _line(record: dict) -> bytes:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()

    def append(self, record: dict) -> None:
        line = self._line(record)
        self._records.append(json.loads(line))  # what the file would give back
        self._hash.update(line)

    def commit(self) -> int:
        return len(self._records)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def verify(self, length: int, digest: str | None = None) -> str | None:
        return None if length <= len(self._records) else f"the history holds {len(self._records)} records"

    def last_record(self, length: int) -> dict | None:
        return self._records[length - 1] if 0 < length <= len(self._records) else None

    def truncate(self, length: int) -> None:
        del self._records[length:]
        self._hash = hashlib.sha256()
        for record in self._records:
            self._hash.update(self._line(record))

    def records(self) -> list[dict]:
        return list(self._records)

    def close(self) -> None:
        pass


class NullLog:
    """An ``AppendLog`` that keeps nothing: the history of a rank other than 0 under torchrun (rank 0 writes it)."""

    def append(self, record: dict) -> None:
        pass

    def commit(self) -> int:
        return 0

    def digest(self) -> str:
        return ""

    def verify(self, length: int, digest: str | None = None) -> str | None:
        return None

    def truncate(self, length: int) -> None:
        pass

    def close(self) -> None:
        pass


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    check_regular(path)
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def plain_values(value: Any, where: str) -> Any:
    """``value`` as plain Python data (str, int, float, bool, None, lists, dicts with str keys; tuples become lists),
    which ``torch.load(weights_only=True)`` reads. Raises SpaceError naming the first other value."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain_values(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpaceError(f"{where}: key {k!r} is a {type(k).__name__}; keys must be strings")
            out[k] = plain_values(v, f"{where}.{k}")
        return out
    raise SpaceError(f"{where} is a {type(value).__name__}; network settings must be plain values (str, int, float, "
                     f"bool, None, lists, dicts) that build_network accepts")
