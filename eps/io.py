"""Crash-safe file output: every artifact is written to a temp file, fsynced, then renamed over the target.

A reader therefore sees either the old file or the new one, never half of one, even after SIGKILL or power loss.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with open(src, "rb") as f:
        write_bytes(dst, f.read())


class AppendLog:
    """An append-only JSON-lines file whose committed length is tracked by checkpoints.

    Lines written after the last checkpoint are discarded on resume (``truncate``), so an interrupted run that is
    resumed writes exactly the lines an uninterrupted run would have written.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")

    def append(self, record: dict) -> None:
        self._f.write((json.dumps(record, separators=(",", ":")) + "\n").encode())

    def commit(self) -> int:
        """Flush to disk and return the byte length to store in the checkpoint."""
        self._f.flush()
        os.fsync(self._f.fileno())
        return self._f.tell()

    def truncate(self, length: int) -> None:
        self._f.flush()
        self._f.truncate(length)
        self._f.seek(length)

    def close(self) -> None:
        self._f.close()


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
