"""SIGTERM handled like Ctrl-C (see ``eps.errors.Terminated``).

Slurm, Kubernetes and torchrun send SIGTERM first and SIGKILL some seconds later. Without a handler Python dies at
once, silently. ``install`` (called by the ``eps`` program, not on import: a library caller keeps its own handlers)
makes SIGTERM raise ``Terminated`` where the process is; inside ``deferred()`` (the search loop, one process) the
first SIGTERM is only noted, and the loop checkpoints at the end of its round and then raises it, so the work of
the round is kept. A second SIGTERM raises at once.

Outside a command (the program still loading its modules and building its command line, or already done) there is
nothing to keep and no handler of the program's to take an exception: there a SIGTERM or Ctrl-C ends the process at
once with its one line and status (143, 130). ``command()`` marks the span in which exceptions are raised instead.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

from eps.errors import Terminated

_pending = False    # ... and is held until the loop's next safe point
_deferring = 0
_depth = 0
_phase = "starting"   # "starting" -> "running" (inside command()) -> "finished"


def _importing() -> bool:
    """Whether a module is being imported right now (importlib marks its spec ``_initializing`` until done)."""
    return any(getattr(getattr(m, "__spec__", None), "_initializing", False) for m in list(sys.modules.values()))


def exit_now(code: int) -> None:
    """End the process with ``code`` at once (``os._exit``: no finally blocks, no atexit handlers, no interpreter
    teardown), stdout and stderr flushed first so that what was printed stays whole."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a reentrant, closed or broken stream: what was written stays written
            pass
    os._exit(code)


def _leave(code: int, what: str) -> None:
    """End the process now (``exit_now``) with one line saying where it stopped."""
    if _phase == "finished":
        line = f"{what} as eps was exiting; the command had finished\n"
    elif _phase == "running":  # inside an import that a command makes on first use (a later stage's modules)
        line = (f"{what} while eps was loading a module; run the same command again to resume from the last "
                f"checkpoint\n")
    else:
        line = f"{what} while eps was starting; nothing was lost, run the same command again\n"
    if os.environ.get("RANK", "0").strip() in ("", "0"):  # under torchrun every rank gets the signal: rank 0 says it
        os.write(2, line.encode())
    exit_now(code)


def _outside() -> bool:
    # inside an import (torch's above all, a minute's first seconds) an exception leaves half-built modules that
    # crash the error handler or the interpreter's exit (seen: segfaults), so the process leaves at once there too:
    # a run folder survives SIGKILL at any moment (tests kill runs at random), so at most the work since the last
    # checkpoint is lost, as with any interrupt
    return _phase != "running" or _importing()


def _handler(signum, frame) -> None:
    global _pending
    if _deferring and not _pending:
        _pending = True
        return
    if _outside():
        _leave(143, "terminated (SIGTERM)")
    raise Terminated()


def _interrupt(signum, frame) -> None:
    if _outside():
        _leave(130, "interrupted")
    raise KeyboardInterrupt


def install() -> None:
    """Turn SIGTERM into ``Terminated`` and keep Ctrl-C's ``KeyboardInterrupt`` inside ``command()``; outside it
    either signal ends the process with one line (main thread only; elsewhere a no-op). Called by the ``eps``
    program, never on import."""
    try:
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _handler)  # second: a test sees both in place once SIGTERM's is
    except ValueError:  # not the main thread
        pass


@contextlib.contextmanager
def command():
    """The span of one command's own work, where a signal raises (``Terminated``, ``KeyboardInterrupt``) for the
    command's handler to report and its checkpoints to keep; after it, the process is finishing."""
    global _phase, _depth
    _phase = "running"
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth:
            _phase = "finished"


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
