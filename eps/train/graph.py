"""The graph engine: supernet training steps and fitness groups as one compiled, path-independent graph (issue 23).

The path engine (``ImageSupernetTask``) walks the sampled path in Python: every step dispatches hundreds of small
kernels and builds a different autograd graph per path, which leaves a GPU launch-bound. Here the supernet is a pure
function of its parameters and of the path given as a tensor (a space's ``GraphForm``, e.g.
``eps.spaces.nb201.graph.NB201Graph``), so:

- a training step (forward, ``torch.func`` gradients and the SGD update) is one function compiled once with
  ``torch.compile(fullgraph=True)``; a new path is new data, never a recompilation; on CUDA it is replayed as a CUDA
  graph (``mode="reduce-overhead"``);
- a fitness group is scored in a few calls of a second compiled function, members batched on the channel axis.

The optimiser is the path engine's SGD, written out (source: ``torch.optim.SGD`` with momentum, no dampening, no
Nesterov, and spec §6 item 7). All candidate operations run, so gradients alone no longer say which weights the
path used: the form's ``masks(arch)`` does, from the path engine's rule. ``all_used`` (the reference): a weight that
has been used once (``touch``) is updated at every later step with a zero gradient when off the path, so momentum and
weight decay reach it; a never-used weight keeps no momentum buffer and no decay. ``path_only``: only the weights
that receive a gradient on this path move. Checkpoints keep the path engine's format (SGD state, ``used`` names).

Engines per space: NB201 has a form; the DARTS CNN supernet not yet (it runs the path engine whatever the device).
DARTS RNN stays on the path engine by design: every weight of its supernet is used at every step (spec §6 item 7), so
a path adds no optimiser masks to remove, its step is a 35-step sequential recurrence already dominated by large
(B x 850) matrix products rather than launches, and its dropout masks are drawn in a fixed order from the seeded
generator: a compiled graph draws random numbers differently, so it could not be proven equal value for value.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn as nn

from eps.errors import ConfigError
from eps.train.common import autocast, set_lr
from eps.train.image import ImageSupernetTask

ENGINES = ("auto", "path", "graph")


class GraphForm(Protocol):
    """A supernet in path-independent form (see ``eps.spaces.nb201.graph.NB201Graph``)."""
    names: list[str]
    params: list[nn.Parameter]

    @property
    def depth(self) -> int: ...

    def selection(self, arch) -> torch.Tensor: ...

    def masks(self, arch, depth: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def losses(self, params, x, y, sel, depth: int, label_smoothing: float) -> torch.Tensor: ...


def choose_engine(setting: str, device: torch.device, has_graph: bool, world: int = 1) -> str:
    """``supernet.engine``: ``auto`` is the graph engine on CUDA for a space that has one, the path engine
    elsewhere (on a CPU the path engine's skipped work outweighs its dispatch cost: bench/RESULTS.md)."""
    if setting == "path":
        return "path"
    if setting == "graph":
        if not has_graph:
            raise ConfigError("supernet.engine: graph: this space's supernet has no graph engine (NB201 has one); "
                              "set engine: auto or path")
        if world > 1:
            raise ConfigError("supernet.engine: graph runs in one process; under torchrun set engine: path or auto")
        return "graph"
    return "graph" if has_graph and device.type == "cuda" and world == 1 else "path"


class GraphSupernetTask(ImageSupernetTask):
    """``ImageSupernetTask`` with the graph engine: same data streams, losses, checkpoints and results (within fp32
    rounding), computed by ``form`` (built from the task's model once it is on the device).

    ``compile``: compile the step and the fitness function (default; ``False`` runs the same functions eagerly, for
    tests). ``fitness_chunk``: members per fitness call (default 64 on CUDA, 8 on a CPU); a call with fewer is padded
    with copies of its last member, so every call has one shape and no call recompiles.
    """
    engine = "graph"

    def __init__(self, model: nn.Module, section: dict, stage: str, data_root, device: torch.device, seed: int,
                 dataset: str = "cifar10", form: Callable[[nn.Module], GraphForm] | None = None,
                 compile: bool = True, fitness_chunk: int | None = None):
        super().__init__(model, section, stage, data_root, device, seed, dataset=dataset)
        if self.world > 1:
            raise ConfigError("supernet.engine: graph runs in one process; under torchrun set engine: path or auto")
        self.form = form(self.model)
        self.params = self.form.params
        (momentum,) = {g["momentum"] for g in self.optimizer.param_groups}
        if any(g["nesterov"] or g["dampening"] or g["maximize"] for g in self.optimizer.param_groups):
            raise ConfigError("the graph engine writes out plain SGD with momentum (no nesterov, dampening, maximize)")
        self.momentum = float(momentum)
        decay = {id(p): g["weight_decay"] for g in self.optimizer.param_groups for p in g["params"]}
        self.decay = [float(decay.get(id(p), 0.0)) for p in self.params]
        self.trainable = [id(p) in decay for p in self.params]
        self.bufs = [torch.zeros_like(p) for p in self.params]
        n = len(self.params)
        self.used = torch.zeros(n, dtype=torch.bool, device=device)      # holds a gradient (ImageSupernetTask._used)
        self.has_buf = torch.zeros(n, dtype=torch.bool, device=device)   # torch.optim.SGD would hold a buffer
        self.lr = torch.zeros((), device=device)
        self._codes: dict = {}
        # no wider than a round's jobs, so that a round is not padded with copies
        per_round = section["search"]["group"] * section["search"]["fitness_batches"]
        self.fitness_chunk = max(1, min(fitness_chunk or (64 if device.type == "cuda" else 8), per_round))
        if device.type == "cuda":
            # the step mutates these in place: static addresses let the CUDA graph own them (no copies, no skip)
            for t in (*self.params, *self.bufs, self.used, self.has_buf, self.lr):
                torch._dynamo.mark_static_address(t)
        self._step = self._compiled(self._train_fn, compile)
        self._members = self._compiled(self._fitness_fn, compile)

    def _compiled(self, fn, enabled: bool):
        if not enabled:
            return fn
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        return torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)

    # -- the two compiled functions -------------------------------------------------------------------------------

    def _train_fn(self, x, y, code, depth: int, skip_nonfinite: bool):
        """One SGD step on the path ``code`` (see ``_code``); returns the batch's loss (0-d float32)."""
        sel, grad_mask, touch = code
        ls = self.label_smoothing

        def loss_of(params):
            with autocast(self.device, self.amp):
                return self.form.losses(params, x[None], y[None], sel[None], depth, ls)[0]

        grads, loss = torch.func.grad_and_value(loss_of)(list(self.params))
        ok = torch.isfinite(loss) if skip_nonfinite else torch.ones((), dtype=torch.bool, device=loss.device)
        # The path engine's rule: all_used updates every weight used so far (a skipped step still marks the weights
        # it touched, as their zeroed gradients stay), path_only the weights with a gradient now.
        used = self.used | touch
        step = (grad_mask if self.path_only else used) & ok
        for i, (p, g, b) in enumerate(zip(self.params, grads, self.bufs)):
            if not self.trainable[i]:
                continue
            d = torch.where(grad_mask[i], g, torch.zeros_like(g))
            if self.decay[i]:
                d = d + self.decay[i] * p
            if self.momentum:
                # a fresh buffer is 0, so momentum * 0 + d == d: torch's first-step clone of d
                d = torch.where(step[i], b * self.momentum + d, b)
                b.copy_(d)
            p.copy_(torch.where(step[i], p - self.lr * d, p))
        self.has_buf.copy_(self.has_buf | step)
        # path_only clears gradients before each step, so the path engine's "used" is this step's gradients
        self.used.copy_(grad_mask & ok if self.path_only else used)
        return loss.detach()

    def _fitness_fn(self, x, y, sel, depth: int):
        with autocast(self.device, self.amp):
            return self.form.losses(list(self.params), x, y, sel, depth, self.label_smoothing).float()

    # -- the task interface -----------------------------------------------------------------------------------------

    def _code(self, arch, depth: int):
        """The path as device tensors, built once per cell and depth: (6, 5) selection, (P,) gradient and use masks."""
        key = (tuple(arch), depth)
        if key not in self._codes:
            grad, touch = self.form.masks(arch, depth)
            self._codes[key] = (self.form.selection(arch).to(self.device), grad.to(self.device),
                                touch.to(self.device))
        return self._codes[key]

    def train_step(self, arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        self.model.train()
        set_lr(self.optimizer, lr)  # kept for checkpoints, which store the optimiser's groups
        if self.progressive:
            self.model.set_progress(self.steps)
        self.steps += 1
        x, y = self.train.next()
        self.lr.fill_(lr)
        depth = self.form.depth
        with torch.no_grad():
            loss = self._step(x.contiguous(memory_format=self.memory_format), y, self._code(arch, depth), depth,
                              skip_nonfinite)
        return loss.clone()  # a CUDA graph's output is overwritten by its next replay

    def _score_jobs(self, jobs: list) -> torch.Tensor:
        """Loss of each (arch, (x, y)) job, (J,) float32, in as few calls as the batch shapes allow."""
        depth = self.form.depth
        by_shape: dict = {}
        for k, (_, (x, _)) in enumerate(jobs):
            by_shape.setdefault(tuple(x.shape), []).append(k)
        parts, order = [], []
        for ks in by_shape.values():
            for start in range(0, len(ks), self.fitness_chunk):
                chunk = ks[start:start + self.fitness_chunk]
                padded = chunk + [chunk[-1]] * (self.fitness_chunk - len(chunk))
                xs = torch.stack([jobs[k][1][0] for k in padded])
                ys = torch.stack([jobs[k][1][1] for k in padded])
                sel = torch.stack([self._code(jobs[k][0], depth)[0] for k in padded])
                parts.append(self._members(xs, ys, sel, depth)[:len(chunk)].clone())
                order += chunk
        out = torch.cat(parts)
        if order != sorted(order):  # more than one batch shape: back to job order
            out = torch.empty_like(out).index_copy_(0, torch.as_tensor(order, device=out.device), out)
        return out

    def fitness(self, archs: list) -> torch.Tensor:
        """As ``ImageSupernetTask.fitness`` (same batches drawn in the same order, same values): label-smoothed
        validation loss per arch, (len(archs),) float32; the members are scored together."""
        self.model.train()
        if not archs:
            return torch.empty(0, device=self.device)
        n = self.fitness_batches
        with torch.inference_mode():
            if self.fitness_shared:
                common = [self.valid.next() for _ in range(n)]
                distinct = list(dict.fromkeys(archs))
                losses = self._score_jobs([(a, batch) for a in distinct for batch in common]).view(-1, n).mean(1)
                where = {a: k for k, a in enumerate(distinct)}
                if len(distinct) == len(archs):
                    return losses
                return losses[torch.as_tensor([where[a] for a in archs], device=self.device)]
            jobs = [(a, self.valid.next()) for a in archs for _ in range(n)]
            return self._score_jobs(jobs).view(-1, n).mean(1)

    def score(self, archs: list, batches: list) -> torch.Tensor:
        self.model.train()
        if not archs:
            return torch.empty(0, device=self.device)
        with torch.inference_mode():
            return self._score_jobs([(a, b) for a in archs for b in batches]).view(len(archs), -1).mean(1)

    def _used(self) -> list[str]:
        used = self.used.tolist()
        return [name for name, u in zip(self.form.names, used) if u]

    def state_dict(self) -> dict:
        """The path engine's format: SGD momentum buffers where ``torch.optim.SGD`` would hold one, ``used`` names."""
        self.optimizer.state.clear()
        for p, b, has in zip(self.params, self.bufs, self.has_buf.tolist()):
            if has:
                self.optimizer.state[p]["momentum_buffer"] = b.clone()
        return super().state_dict()

    def _restore_used(self, used: set[str]) -> None:
        """The path engine's state into the written-out SGD: momentum buffers, which of them exist, used weights."""
        has = []
        for p, b in zip(self.params, self.bufs):
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            b.copy_(buf) if buf is not None else b.zero_()
            has.append(buf is not None)
        self.has_buf.copy_(torch.as_tensor(has))
        self.used.copy_(torch.as_tensor([name in used for name in self.form.names]))
        self.optimizer.state.clear()
