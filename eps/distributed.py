"""Multi-process training under ``torchrun``: process-group setup, rank queries, reductions, replica checks.

Everything is a no-op in a plain single process, so callers need no special case: ``world()`` is 1, ``is_main()`` is
True and reductions return their input. Under ``torchrun --nproc_per_node N`` (which sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous address) ``setup`` joins the group: NCCL on CUDA with one GPU per local rank, gloo on
CPU.
"""
from __future__ import annotations

import datetime
import hashlib
import os

import torch
import torch.distributed as dist

_OWNED = False


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the launcher's process group if there is one; returns this rank's device (cuda:LOCAL_RANK on GPU).

    Non-main ranks also silence their progress bars (EPS_PROGRESS=0) so the console shows one bar.
    """
    global _OWNED
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not active():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                                **({"device_id": device} if device.type == "cuda" else {}))
        _OWNED = True
    if not is_main():
        os.environ["EPS_PROGRESS"] = "0"
    return device


def teardown() -> None:
    """Leave the process group if ``setup`` created it."""
    global _OWNED
    if _OWNED and active():
        dist.destroy_process_group()
    _OWNED = False


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks (in place; ``t`` itself in a single process)."""
    if world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj) -> list:
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) over ranks so every replica holds the same state."""
    if world() == 1:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world()
    offset = 0
    for b in bufs:
        n = b.numel()
        b.copy_(flat[offset:offset + n].view_as(b).to(b.dtype))
        offset += n


def state_digest(state: dict) -> str:
    """sha256 of a state dict's tensors (names, dtypes, shapes and bytes), independent of memory format."""
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:16]
