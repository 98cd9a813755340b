"""Training a chosen architecture from scratch: the generic epoch loop with checkpoints that every space's
retrain task runs under, and the settings it reads.
"""
from __future__ import annotations

import time

from pydantic import Field

from eps import distributed
from eps.settings import MAX_BATCH, MAX_STEPS, Number, Settings
from eps.checkpoint import CheckpointDir
from eps.errors import NumericalError
from eps.progress import progress_bar
from eps.train.common import rng_state, set_rng_state


class RetrainSettings(Settings):
    """The epoch loop (``run_retrain``) and the optimiser values every retrain task reads."""
    epochs: int = Field(200, ge=1, le=MAX_STEPS)
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    lr: Number = Field(0.1, gt=0)
    weight_decay: Number = Field(5e-4, ge=0)
    checkpoint_every: int = Field(1, ge=1, le=MAX_STEPS)    # epochs


def run_retrain(task, epochs: int, checkpoint_every: int, ckpt: CheckpointDir, restart: bool = False,
                log=None, on_start=None) -> dict:
    """Epoch loop shared by all spaces: train, evaluate, checkpoint; returns {'history': [...], 'seconds': ...}.

    ``log(row)`` is called after every epoch trained here; ``on_start(rows)`` once before the first, with the rows of
    the epochs a resumed checkpoint already holds (empty when starting afresh), so a live view can be rebuilt."""
    def fits(s: dict) -> str | None:
        done, rows = s.get("epoch"), s.get("history")
        if type(done) is not int or not 0 <= done <= epochs:
            return f"it records epoch {done!r}, outside 0..{epochs} (retrain.epochs)"
        if not isinstance(rows, list) or len(rows) != done:
            return f"it records epoch {done} but {len(rows) if isinstance(rows, list) else 'no'} epoch rows"
        return None
    state = ckpt.load_latest(restart, check=fits)
    history: list[dict] = []
    epoch = 0
    if state is not None:
        task.load_state_dict(state["task"])
        set_rng_state(state["global_rng"], task.device)
        history, epoch = state["history"], state["epoch"]
        ckpt.log(f"retrain: resumed from epoch {epoch} ({ckpt.dir})")
    if on_start is not None:
        on_start(list(history))
    start = time.monotonic()
    # kept out of `history`, so metrics stay bit-identical across interrupted runs; carried in the checkpoint, so a
    # resumed run reports the time of every epoch and the total
    epoch_seconds = list(state.get("epoch_seconds", [])) if state is not None else []
    before = float(state.get("elapsed", 0.0)) if state is not None else 0.0
    with progress_bar("retrain", epochs * task.steps_per_epoch, epoch * task.steps_per_epoch) as bar:
        while epoch < epochs:
            t0 = time.monotonic()
            row = {"epoch": epoch + 1, **task.train_epoch(epoch, bar), **task.evaluate()}
            epoch_seconds.append(time.monotonic() - t0)
            if not all(v == v and abs(v) != float("inf") for v in row.values()):
                raise NumericalError(f"non-finite metric in retrain epoch {epoch + 1} ({row}); "
                                     f"the last good checkpoint is kept; lower the lr")
            history.append(row)
            epoch += 1
            if log:
                log(row)
            if epoch % checkpoint_every == 0 or epoch == epochs:
                # Every rank builds the state (a distributed task gathers per-rank parts); only rank 0 writes.
                state = {"task": task.state_dict(), "global_rng": rng_state(task.device), "history": history,
                         "epoch": epoch, "epoch_seconds": epoch_seconds, "elapsed": before + time.monotonic() - start}
                if distributed.is_main():
                    ckpt.save(state)
    return {"history": history, "seconds": before + time.monotonic() - start, "epoch_seconds": epoch_seconds}
