"""The data files a task reads, noted by the code that reads them, so a checkpoint's identity covers them.

Loaders call :func:`note_read` with each file they open; ``eps.checkpoint.data_fingerprint`` collects the notes made
while a task is built. A context variable holds the collector: nothing is installed in the host process (eps used a
an audit hook before 0.2, which a library must not do to its caller), and a note outside a collection is a
no-op. A space's own task that reads files names them the same way (``eps.data.note_read(path)``); files it does not
name are not part of the identity, so a resume after they changed is not refused.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

from eps.errors import DataError, check_regular

_collector: contextvars.ContextVar[list | None] = contextvars.ContextVar("eps_data_reads", default=None)


def note_read(*paths: str | os.PathLike) -> None:
    """Record that the task being built reads ``paths`` (files; a folder's files are not expanded). Called just
    before a file is opened, it also refuses a path that exists but is not a regular file (symlinks resolved) with a
    one-line DataError: a FIFO would block the read forever, ``/dev/zero`` never ends."""
    for p in paths:
        check_regular(p, DataError, "put the data file itself there")
    found = _collector.get()
    if found is not None:
        found.extend(os.fspath(p) for p in paths)


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the paths noted inside the block (nested blocks also report to the outer one)."""
    outer = _collector.get()
    found: list[str] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)
        if outer is not None:
            outer.extend(found)
