"""SIGTERM handled like Ctrl-C (see ``eps.errors.Terminated``).

Slurm, Kubernetes and torchrun send SIGTERM first and SIGKILL some seconds later. Without a handler Python dies at
once, silently. ``install`` (called by the ``eps`` program, not on import: a library caller keeps its own handlers)
makes SIGTERM raise ``Terminated`` where the process is; inside ``deferred()`` (the search loop, one process) the
first SIGTERM is only noted, and the loop checkpoints at the end of its round and then raises it, so the work of
the round is kept. A second SIGTERM raises at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

from eps.errors import Terminated

_received = False   # a SIGTERM arrived in this process
_pending = False    # ... and is held until the loop's next safe point
_deferring = 0


def _importing() -> bool:
    """Whether a module is being imported right now (importlib marks its spec ``_initializing`` until done)."""
    return any(getattr(getattr(m, "__spec__", None), "_initializing", False) for m in list(sys.modules.values()))


def _handler(signum, frame) -> None:
    global _received, _pending
    _received = True
    if _deferring and not _pending:
        _pending = True
        return
    if _importing():
        # an exception raised inside an import (torch's above all, a minute's first seconds) leaves half-built
        # modules that crash the error handler or the interpreter's exit (seen: segfaults); nothing has been computed
        # or opened for writing while modules load, so leave at once with the one line
        os.write(2, b"terminated (SIGTERM) while eps was starting; nothing was lost, run the same command again\n")
        os._exit(143)
    raise Terminated()


def install() -> None:
    """Turn SIGTERM into ``Terminated`` in this process (main thread only; elsewhere a no-op)."""
    try:
        signal.signal(signal.SIGTERM, _handler)
    except ValueError:  # not the main thread
        pass


def received() -> bool:
    """Whether this process has received SIGTERM since ``install``."""
    return _received


def pending() -> bool:
    """Whether a SIGTERM waits for ``deferred``'s caller to reach a safe point (then: checkpoint, ``stop``)."""
    return _pending


def stop(where: str = "") -> None:
    """Raise the pending SIGTERM as ``Terminated(where)``; a no-op when none is pending."""
    global _pending
    if _pending:
        _pending = False
        raise Terminated(where)


@contextlib.contextmanager
def deferred(enabled: bool = True):
    """Within the block a first SIGTERM is held until the caller's next ``stop``; ``enabled=False`` (several ranks,
    which must all stop at the same round and cannot agree on it cheaply) keeps the immediate stop."""
    global _deferring, _pending
    if not enabled:
        yield
        return
    _deferring += 1
    try:
        yield
    except BaseException:
        _pending = False   # the block stops anyway, with its own error
        raise
    finally:
        _deferring -= 1
    if not _deferring and _pending:  # the block ended without reaching a safe point: stop now, as Ctrl-C would
        _pending = False
        raise Terminated()
