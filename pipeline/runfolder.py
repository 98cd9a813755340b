"""The run folder's mechanics, shared by the stages, the report and the study: paths, the one-writer lock, the
recovery of an interrupted output swap, the check that an upstream stage is there, and the up-to-date decision
(``record``). The stage bodies themselves are in ``stages``; what they compute is ``eps.api``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import filelock

from eps import distributed
from eps import io as eio
from eps.api import read_history
from eps.checkpoint import CheckpointDir
from eps.errors import EpsError, RankError
from eps.params import data_root
from eps.progress import console
from eps.spaces import cli_name
from eps.pipeline import record

STAGES = ("warmup", "search", "select", "retrain")


def log(msg: str) -> None:
    if distributed.is_main():  # under torchrun, one rank speaks
        console.print(msg, highlight=False, soft_wrap=True)  # paths and architectures stay pasteable


class RunPaths:
    def __init__(self, out: str | Path, space: str):
        self.out = Path(out)
        self.root = self.out / space

    def stage(self, name: str) -> Path:
        return self.root / name

    def work(self, name: str) -> Path:
        return self.root / ".work" / name

    def lock_file(self, name: str) -> Path:
        return self.root / ".work" / f"{name}.lock"


def _check_out(paths: RunPaths) -> None:
    """A one-line error when --out (or a folder eps makes under it) is a regular file."""
    for p in (paths.out, paths.root, paths.root / ".work"):
        if p.exists() and not p.is_dir():
            raise EpsError(f"--out {paths.out}: {p} is a file, not a folder; choose another --out or move the file")


@contextlib.contextmanager
def locked(paths: RunPaths, stage: str):
    """Hold the exclusive lock of ``stage`` in this run folder, or fail at once (one writer per folder and stage;
    the lock is the kernel's, so a killed process never leaves it held). Also finishes or undoes an output swap
    that a crash interrupted."""
    _check_out(paths)
    lock_path = paths.lock_file(stage)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise EpsError(f"another eps process is writing {paths.root} (stage {stage}, lock {lock_path}); wait for it "
                       f"to finish or stop it, then run this command again") from None
    _HELD.add(str(lock_path))
    try:
        busy = _busy_stage(paths, stage)
        if busy is not None:
            raise EpsError(f"another eps process is writing {paths.root} (stage {busy}); one writer per run folder: "
                           f"wait for it to finish or stop it, then run this command again")
        _recover(paths, stage)
        yield
    finally:
        _HELD.discard(str(lock_path))
        lock.release()


_HELD: set[str] = set()   # lock files this process holds (select finishes search's interrupted swap under both)
WRITERS = ("warmup", "search", "select", "retrain", "report", "study")


def _busy_stage(paths: RunPaths, stage: str) -> str | None:
    """A stage of this run folder another process holds the lock of, if any (one writer per run folder)."""
    for other in WRITERS:
        path = paths.lock_file(other)
        if other == stage or str(path) in _HELD or not path.exists():
            continue
        probe = filelock.FileLock(str(path), timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            return other
        probe.release()
    return None


def _recover(paths: RunPaths, stage: str) -> None:
    done = eio.recover(paths.stage(stage))
    if done:
        log(f"note: {paths.stage(stage)}: {done}")


def outputs(paths: RunPaths, stage: str):
    """The staging folder a stage writes its outputs into; swapped in as one set when the block ends cleanly."""
    return eio.publish(paths.stage(stage))


def require(path: Path, stage: str, space: str, paths: RunPaths | None = None) -> Path:
    if not path.exists() and paths is not None and eio.half_swapped(paths.stage(stage)):
        # the upstream stage was killed while swapping its outputs in: finish that swap, unless it is running now
        with contextlib.suppress(EpsError):
            with locked(paths, stage):
                pass
    if not path.exists():
        raise EpsError(f"{path} not found; run `eps stage {stage} --space {cli_name(space)}` first (with the same "
                       f"--out and --params)")
    return path


@contextlib.contextmanager
def ranks_locked(paths: RunPaths, stage: str):
    """The stage's lock, held by rank 0 (the one writer); under torchrun every rank stops together when rank 0
    cannot take it."""
    main, world = distributed.is_main(), distributed.world()
    with contextlib.ExitStack() as stack:
        problem = None
        if main:
            try:
                stack.enter_context(locked(paths, stage))
            except (EpsError, OSError) as err:
                if world == 1:
                    raise
                problem = str(err)
        if world > 1:
            problem = next((p for p in distributed.all_gather_object(problem) if p), None)
            if problem:
                raise EpsError(problem) if main else RankError(problem)  # rank 0 reports it
        yield


WARMUP_OUTPUTS = ["supernet.pt", "metrics.json"]
SEARCH_OUTPUTS = ["supernet.pt", "history.jsonl", "population.csv", "metrics.json", "dvclive"]
SELECT_OUTPUTS = ["selection.json", "candidates.csv", "arch.txt", "metrics.json"]
RETRAIN_OUTPUTS = ["model.pt", "curve.csv", "metrics.json", "dvclive"]


def up_to_date(paths: RunPaths, stage: str, params: dict, space_name: str, inputs: dict, redo: bool,
                outputs: list[str], upstream: bool = True) -> bool:
    """Check the upstream stage's record against ``params`` (refuses a mismatch), then whether this stage's finished
    outputs already are what it would compute (same params and inputs): then say so and leave them alone. With
    ``redo`` the stage is recomputed from scratch (its checkpoints are discarded). ``upstream=False``: the stage's
    input does not come from the upstream stage (an architecture given on the command line)."""
    if upstream:
        record.check_upstream(paths.root, paths.out, space_name, stage, params, cli_name(space_name))
    # select has no checkpoint: it recomputes in seconds
    ckpt_file = None if stage == "select" else paths.work(stage) / "last.pt"
    if record.finished(paths.stage(stage), params, space_name, stage, inputs, redo, outputs, log=log,
                       checkpoint=ckpt_file, data_root=data_root(params)):
        log(f"{stage}: up to date ({paths.stage(stage)} was made with these params and inputs; --redo recomputes it)")
        return True
    if redo and distributed.is_main():
        CheckpointDir(paths.work(stage), {}).clear()
    return False


def load_history(path: Path) -> list[dict]:
    return read_history(path)


