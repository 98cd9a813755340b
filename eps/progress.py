"""Rich progress bars with ETA for every long loop; quiet when EPS_PROGRESS=0 (tests) or output is not a terminal."""
from __future__ import annotations

import contextlib
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Plain:
    """Fallback for non-terminals: a line every ``every`` seconds so logs show life without flooding."""

    def __init__(self, description: str, total: int, completed: int, every: float = 30.0):
        self.description, self.total, self.completed, self.every = description, total, completed, every
        self.start, self.last = time.monotonic(), 0.0
        self.first = completed

    def advance(self, n: int = 1, info: str = "") -> None:
        self.completed += n
        if self.every == float("inf"):
            return
        now = time.monotonic()
        if now - self.last >= self.every or self.completed >= self.total:
            self.last = now
            rate = (self.completed - self.first) / max(now - self.start, 1e-9)
            eta = (self.total - self.completed) / rate if rate > 0 else float("nan")
            print(f"{self.description}: {self.completed}/{self.total} eta {eta:.0f}s {info}", file=sys.stderr, flush=True)


class _Rich:
    def __init__(self, progress: Progress, task):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1, info: str = "") -> None:
        self.progress.update(self.task, advance=n, info=info)


@contextlib.contextmanager
def progress_bar(description: str, total: int, completed: int = 0):
    mode = os.environ.get("EPS_PROGRESS", "auto")
    if mode == "0":
        yield _Plain(description, total, completed, every=float("inf"))
        return
    if mode != "1" and not console.is_terminal:
        yield _Plain(description, total, completed)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console) as p:
        yield _Rich(p, p.add_task(description, total=total, completed=completed, info=""))
