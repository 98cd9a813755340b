"""Multi-process training under ``torchrun``: process-group setup, rank queries, reductions, replica checks.

Everything is a no-op in a plain single process, so callers need no special case: ``world()`` is 1, ``is_main()`` is
True and reductions return their input. Under ``torchrun --nproc_per_node N`` (which sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous address) ``setup`` joins the group: NCCL on CUDA with one GPU per local rank, gloo on
CPU.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os

import torch
import torch.distributed as dist

_OWNED = False
_JOINED = False   # this process joined a process group once (it stays True after teardown)


# What gloo and NCCL say when another rank's process died or its connection broke (torch raises RuntimeError or
# DistBackendError with these in the message); matched on the text, as the exception types differ across versions.
_PEER_LOST = ("connection reset by peer", "connection closed by peer", "broken pipe", "remote process exited",
              "nccl communicator was aborted", "ncclremoteerror", "socket timeout", "connection refused",
              "recvbytes", "sendbytes", "read error", "timed out")


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` (in a torchrun rank) means that another rank stopped: a lost connection or a collective that
    timed out, not a problem of this rank. False in a plain single process."""
    if not launched() or isinstance(err, OSError) and not isinstance(err, ConnectionError):
        return False
    name = type(err).__name__
    try:
        text = str(err).lower()
    except Exception:
        return False
    return (name in ("DistBackendError", "DistNetworkError", "DistStoreError") or isinstance(err, ConnectionError)
            or isinstance(err, RuntimeError) and any(s in text for s in _PEER_LOST))


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
    global _OWNED, _JOINED
    if not launched():
        return device
    _JOINED = True
    local = int(os.environ.get("LOCAL_RANK", "0"))
    shared_gpu = False
    if device.type == "cuda":
        # more ranks than GPUs on this node (a check of several processes on one GPU): ranks share GPUs round-robin
        # and talk over gloo, as NCCL refuses two ranks on one device
        gpus = torch.cuda.device_count()
        shared_gpu = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > gpus
        device = torch.device("cuda", local % gpus)
        torch.cuda.set_device(device)
    if not active():
        backend = "nccl" if device.type == "cuda" and not shared_gpu else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                                **({"device_id": device} if backend == "nccl" else {}))
        _OWNED = True
    if not is_main():
        os.environ["EPS_PROGRESS"] = "0"
    return device


def joined() -> bool:
    """Whether this process has joined the launcher's process group (``setup``); still True after ``teardown``."""
    return _JOINED


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


# ---- data-parallel supernet search (one controller per rank, identical decisions) ---------------------------------

def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled; for checkpoint states and small decisions)."""
    if world() == 1:
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn):
    """``fn()`` run on rank 0 only, its result given to every rank. An exception there is re-raised on rank 0 and
    raised as a ``RankError`` with the same message on the others, so no rank waits for a rank that stopped and the
    CLI prints the message once (rank 0's)."""
    from eps.errors import RankError
    if world() == 1:
        return fn()
    result, problem, error = None, None, None
    if is_main():
        try:
            result = fn()
        except Exception as err:  # every rank must hear of it, whatever it is
            error, problem = err, str(err) or type(err).__name__
    result, problem = broadcast_object((result, problem))
    if error is not None:
        raise error
    if problem is not None:
        raise RankError(problem)  # rank 0 reports it: one line from one rank
    return result


def owns(index: int) -> bool:
    """Whether this rank scores member ``index`` of a round (members are dealt round-robin)."""
    return index % world() == rank()


def shard(*tensors: torch.Tensor) -> tuple:
    """This rank's contiguous slice of a batch (first dimension); slices differ by at most one sample."""
    n, r, w = len(tensors[0]), rank(), world()
    lo, hi = n * r // w, n * (r + 1) // w
    return tuple(t[lo:hi] for t in tensors)


def sum_gradients(params, *scalars: torch.Tensor) -> list[torch.Tensor]:
    """Sum the gradients of ``params`` (those that have one; the same set on every rank, as every rank trains the
    same path) and ``scalars`` over the ranks, in one all-reduce. Returns the summed scalars."""
    grads = [p.grad for p in params if p.grad is not None]
    parts = [g.reshape(-1).float() for g in grads] + [s.detach().reshape(1).float() for s in scalars]
    flat = torch.cat(parts)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
    return [flat[offset + k] for k in range(len(scalars))]


_SYNC_BN = False


@contextlib.contextmanager
def synced_batch_norm():
    """Within the block, the BatchNorm layers of models passed to ``global_batch_norm`` normalise a training batch
    with the statistics of the whole batch across ranks (as one process would), not of this rank's slice. Outside
    it (fitness: a member is scored on whole batches by one rank) they are plain BatchNorm layers."""
    global _SYNC_BN
    old, _SYNC_BN = _SYNC_BN, world() > 1
    try:
        yield
    finally:
        _SYNC_BN = old


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: every rank's loss depends on the sum, so the gradient of each rank's input is
    the sum of the ranks' output gradients."""

    @staticmethod
    def forward(ctx, t):
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics span every rank's slice of the batch while ``synced_batch_norm`` is
    active: each rank's count, mean and squared deviations are all-reduced (one differentiable all-reduce per layer
    and pass) and merged; running statistics get the global mean and unbiased variance, as one process with the
    whole batch would compute them (up to float rounding).
    Same parameters and buffers as ``nn.BatchNorm2d``, so state dicts are unchanged. Plain BatchNorm otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_SYNC_BN and self.training):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        # Each rank's count, mean and sum of squared deviations, merged exactly (Chan et al.): one all-reduce, and
        # no cancellation between large sums of squares. The table has one row per rank, zero but for this rank's.
        n = torch.full((1,), float(xf.numel() // c), device=x.device)
        local_mean = xf.sum(dims) / n.clamp(min=1.0)
        local_m2 = ((xf - local_mean.view(shape)) ** 2).sum(dims)
        r, w = rank(), world()
        row = torch.cat([n, n * local_mean, local_m2])[None]
        table = _AllReduceSum.apply(torch.cat([row.new_zeros(r, row.shape[1]), row, row.new_zeros(w - r - 1,
                                                                                                    row.shape[1])]))
        counts = table[:, :1]
        total = counts.sum().clamp(min=1.0)
        mean = table[:, 1:c + 1].sum(0) / total
        rank_means = table[:, 1:c + 1] / counts.clamp(min=1.0)
        var = (table[:, c + 1:].sum(0) + (counts * (rank_means - mean) ** 2).sum(0)) / total
        centred = xf - mean.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * total / (total - 1).clamp(min=1.0)
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean.dtype), alpha=f)
                self.running_var.mul_(1 - f).add_(unbiased.detach().to(self.running_var.dtype), alpha=f)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def global_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Make every ``nn.BatchNorm1d/2d/3d`` of ``model`` a ``GlobalBatchNorm`` in place (a no-op in one process)."""
    if world() == 1:
        return model
    for m in model.modules():
        if type(m) in _GLOBAL:
            m.__class__ = _GLOBAL[type(m)]
    return model


_GLOBAL = {bn: type(f"Global{bn.__name__}", (GlobalBatchNorm, bn), {})
           for bn in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)}
