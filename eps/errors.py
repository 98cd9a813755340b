"""User-facing errors.

Every failure a user can cause (bad params, a malformed genotype, a missing file, a corrupt checkpoint) raises an
``EpsError``. The CLI prints ``str(err)`` as one line and exits non-zero, so the message must name the problem and
the fix; tracebacks are reserved for bugs.

Also the one check that refuses a path which is not a regular file (``not_regular``, ``check_regular``): it lives
here, below both ``eps.io`` (artifacts) and ``eps.data`` (data files), which sit side by side in the import layers
(pyproject.toml) and may not import each other.
"""
from __future__ import annotations

import os
import stat


class EpsError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(EpsError):
    """Invalid or inconsistent params."""


class ArchError(EpsError, ValueError):
    """A malformed architecture string or genotype."""


class DataError(EpsError):
    """A dataset file is missing, corrupt or inconsistent."""


class CheckpointError(EpsError):
    """A checkpoint is corrupt, or was made with other params."""


class NumericalError(EpsError):
    """A loss became NaN or infinite."""


class SpaceError(EpsError):
    """A search space cannot be used: its module fails to import, or it breaks the ``eps.space`` contract."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (what Slurm, Kubernetes and torchrun send before SIGKILL); handled as Ctrl-C is,
    with exit status 143 (128 + SIGTERM) in the CLI. The message, when there is one, says where the run stopped."""


class RankError(EpsError):
    """Under torchrun: an error that another rank (rank 0) raised and reports, repeated here so that every rank stops
    at the same point. The CLI prints nothing for it, so a refusal is one line from one rank."""


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
