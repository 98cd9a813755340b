"""What a path is when it is not a regular file, for the readers that must refuse it before opening it.

One module below both ``eps.io`` (artifacts) and ``eps.data`` (data files): those two sit side by side in the import
layers (pyproject.toml) and may not import each other.
"""
from __future__ import annotations

import os
import stat

from eps.errors import EpsError


def not_regular(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists (symlinks resolved) but is not a regular file ("a FIFO", "a folder", "a
    character device" ...), else None (a regular file, or nothing there: the reader reports a missing file). Reading
    such a path blocks forever (a FIFO without a writer) or never ends (``/dev/zero``), so readers refuse it first."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def check_regular(path: str | os.PathLike, error: type[Exception] = EpsError, fix: str = "") -> None:
    """Raise ``error`` (one line naming ``path``, and its target when it is a link) when ``path`` exists but is not
    a regular file (``not_regular``); ``fix`` ends the line."""
    kind = not_regular(path)
    if kind is not None:
        shown = os.fspath(path) + (f" -> {os.path.realpath(path)}" if os.path.islink(path) else "")
        raise error(f"{shown} is {kind}, not a regular file; {fix or 'replace it with the file eps wrote there'}")
