"""NAS-Bench-201 networks: the weight-sharing supernet (spec §1.2) and the standalone network of one cell.

Both follow the benchmark's macro skeleton: stem -> N cells at C -> residual reduction -> N cells at 2C -> residual
reduction -> N cells at 4C -> BN -> ReLU -> global pool -> linear.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV1, CONV3, POOL = range(5)
EDGES = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]  # (to node, from node), in the six-integer order


def relu_conv_bn(c: int, k: int, affine: bool) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c, c, k, 1, k // 2, bias=False),
                         nn.BatchNorm2d(c, affine=affine, track_running_stats=affine))


class _BoxMean3x3(torch.autograd.Function):
    """3x3 stride-1 average over the valid pixels (``avg_pool_3x3`` with ``count_include_pad=False``).

    Computed as a depthwise convolution with an all-ones kernel times the per-pixel reciprocal count: on CPU that is
    ~2.7x faster than ``avg_pool2d`` in channels_last. The all-ones 3x3 kernel is symmetric, so the backward (the
    adjoint) is the same convolution applied to ``grad * reciprocal count``; no zero-filled scatter as in
    ``avg_pool2d_backward``.
    """

    @staticmethod
    def forward(ctx, x, ones, inv_count):
        ctx.save_for_backward(ones, inv_count)
        return F.conv2d(x, ones, padding=1, groups=x.shape[1]).mul_(inv_count)

    @staticmethod
    def backward(ctx, grad):
        ones, inv_count = ctx.saved_tensors
        return F.conv2d(grad * inv_count, ones, padding=1, groups=grad.shape[1]), None, None


class BoxMean3x3(nn.Module):
    """Drop-in for ``nn.AvgPool2d(3, 1, 1, count_include_pad=False)`` on the supernet's fast path (no parameters)."""

    def __init__(self):
        super().__init__()
        self._consts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x):
        if x.device.type != "cpu":  # measured on CPU only
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        if x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            if not torch.is_grad_enabled():  # bf16 avg_pool2d forward is fast; its backward is what is slow
                return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
            with torch.autocast("cpu", enabled=False):  # fp32 box (a bf16 reciprocal multiply would add rounding)
                return self._box(x.float()).to(x.dtype)
        return self._box(x)

    def _box(self, x):
        _, c, h, w = x.shape
        key = (c, h, w, x.device)
        if key not in self._consts:
            # normal tensors even when first built inside inference_mode (a fitness call before any training step),
            # so that a later training step may save them for backward
            with torch.inference_mode(False):
                ones = torch.ones(c, 1, 3, 3, device=x.device)
                counts = F.conv2d(torch.ones(1, 1, h, w, device=x.device), torch.ones(1, 1, 3, 3, device=x.device),
                                  padding=1)
                self._consts[key] = (ones, counts.reciprocal())
        return _BoxMean3x3.apply(x, *self._consts[key])


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def make_op(op: int, c: int, affine: bool) -> nn.Module:
    if op == NONE:
        return Zero()
    if op == SKIP:
        return nn.Identity()
    if op == CONV1:
        return relu_conv_bn(c, 1, affine)
    if op == CONV3:
        return relu_conv_bn(c, 3, affine)
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class ResidualReduction(nn.Module):
    """NB201's ResNet basic block C -> 2C with stride 2 (affine BN, as in the benchmark and the reference)."""

    def __init__(self, c_in: int, c_out: int, track_running_stats: bool = True):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=track_running_stats)  # noqa: E731
        self.conv_a = nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), bn(c_out))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), bn(c_out))
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def live_edges(arch: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """The (edge index, from node, to node) whose output can reach the cell output and is not identically zero.

    An edge carrying ``none``, or leaving a node that receives only zeros, contributes exactly 0 (conv of a zero map
    gives 0 after batch-statistics BN), and so does an edge into a node that feeds nothing live. Skipping them gives
    the same outputs and the same gradients on every weight that can receive one.
    """
    nonzero = {0}
    for e, (i, j) in enumerate(EDGES):
        if arch[e] != NONE and j in nonzero:
            nonzero.add(i)
    useful = {3}
    for e in reversed(range(len(EDGES))):
        i, j = EDGES[e]
        if arch[e] != NONE and i in useful and j in nonzero:
            useful.add(j)
    return tuple((e, j, i) for e, (i, j) in enumerate(EDGES)
                 if arch[e] != NONE and j in nonzero and i in useful)


class SearchCell(nn.Module):
    """Every edge owns all five operations; only the chosen one runs."""

    def __init__(self, c: int):
        super().__init__()
        self.edges = nn.ModuleList(nn.ModuleList(make_op(op, c, affine=False) for op in range(5)) for _ in EDGES)
        self.box_mean = BoxMean3x3()

    def forward(self, x, arch, plan):
        if plan is None:  # plain path: run every edge, `none` included
            nodes = [x]
            for i in (1, 2, 3):
                nodes.append(sum(self.edges[e][arch[e]](nodes[j]) for e, (ii, j) in enumerate(EDGES) if ii == i))
            return nodes[3]
        if not plan:
            return torch.zeros_like(x)
        # Fast path: live edges only. Parameter-free results that depend only on the source node are computed once
        # per node and shared by its edges (ReLU before every conv, the 3x3 average), which changes no value.
        nodes: dict[int, torch.Tensor] = {0: x}
        relu: dict[int, torch.Tensor] = {}
        pooled: dict[int, torch.Tensor] = {}
        for e, j, i in plan:
            op = arch[e]
            if op == SKIP:
                y = nodes[j]
            elif op == POOL:
                if j not in pooled:
                    pooled[j] = self.box_mean(nodes[j])
                y = pooled[j]
            else:
                if j not in relu:
                    relu[j] = F.relu(nodes[j])
                _, conv, bn = self.edges[e][op]
                y = bn(conv(relu[j]))
            nodes[i] = y if i not in nodes else nodes[i] + y
        return nodes[3]


def _skeleton(c: int, n: int, make_cell, affine: bool, track: bool):
    layers, kinds = [], []
    for stage in range(3):
        if stage > 0:
            layers.append(ResidualReduction(c * 2 ** (stage - 1), c * 2 ** stage, track_running_stats=track))
            kinds.append(False)
        for _ in range(n):
            layers.append(make_cell(c * 2 ** stage))
            kinds.append(True)
    stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c, affine=affine, track_running_stats=track))
    last = nn.Sequential(nn.BatchNorm2d(c * 4, affine=affine, track_running_stats=track), nn.ReLU())
    return stem, nn.ModuleList(layers), kinds, last


class NB201Supernet(nn.Module):
    """Single-path weight-sharing supernet. Stem, cell and final BNs are non-affine with batch statistics.

    The two residual blocks keep affine BN as in the reference, but without running statistics: the reference never
    reads them (the supernet never enters eval mode), so outputs are identical and fitness forwards mutate nothing.
    """

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, skip_dead: bool = True,
                 progressive: tuple[int, ...] | None = None, new_cell_init: str = "own"):
        super().__init__()
        self.stem, self.layers, self.is_cell, self.last = _skeleton(
            channels, cells_per_stage, SearchCell, affine=False, track=False)
        self.classifier = nn.Linear(channels * 4, num_classes)
        self.skip_dead = skip_dead
        self._plans: dict[tuple, tuple] = {}
        # Position of each layer within its stage (cells only; -1 for the residual blocks).
        pos, self.cell_pos = 0, []
        for is_cell in self.is_cell:
            pos = pos + 1 if is_cell else 0
            self.cell_pos.append(pos - 1 if is_cell else -1)
        self.cells_per_stage = cells_per_stage
        self.schedule, self.new_cell_init = (tuple(progressive) if progressive is not None else None), new_cell_init
        self._depth = cells_per_stage  # a host-side copy of the active depth, so forward never syncs the device
        if self.schedule is not None:  # the active depth travels with the weights (checkpoints, warm-up files)
            self._depth = self.depth_at(0)
            self.register_buffer("active_cells", torch.tensor(self._depth))
            self.register_load_state_dict_post_hook(lambda module, keys: module._sync_depth())

    def _sync_depth(self) -> None:
        self._depth = int(self.active_cells)

    def depth_at(self, steps: int) -> int:
        """Active cells per stage after ``steps`` training steps: 1, plus one per schedule entry reached."""
        return min(self.cells_per_stage, 1 + sum(steps >= s for s in self.schedule))

    def set_progress(self, steps: int) -> None:
        """Progressive variant (spec §1.8): grow the active depth to ``depth_at(steps)``. A newly activated cell
        keeps its own initialisation (the reference) or, with ``new_cell_init="copy_previous"``, starts as a copy of
        the cell before it in its stage. Growth happens once: the depth is part of the state."""
        if self.schedule is None:
            return
        target, active = self.depth_at(steps), self._depth
        if target <= active:
            return
        if self.new_cell_init == "copy_previous":
            cells = [(layer, p) for layer, p in zip(self.layers, self.cell_pos) if p >= 0]
            for i, (layer, p) in enumerate(cells):
                if active <= p < target:
                    layer.load_state_dict(cells[i - 1][0].state_dict())
        self.active_cells.fill_(target)
        self._depth = target

    def path_parameters(self, arch) -> list[nn.Parameter]:
        """The weights of every cell's chosen operations, dead edges included: the plain computation runs them
        (they get zero gradients), the fast path skips them (``eps.train.image.PathParameters``)."""
        k = self._depth
        return [p for layer, pos in zip(self.layers, self.cell_pos) if 0 <= pos < k
                for e, op in enumerate(arch) for p in layer.edges[e][op].parameters()]

    def plan(self, arch):
        if not self.skip_dead:
            return None
        if arch not in self._plans:
            self._plans[arch] = live_edges(arch)
        return self._plans[arch]

    def forward(self, x, arch):
        plan = self.plan(arch)
        k = self._depth
        x = self.stem(x)
        for layer, pos in zip(self.layers, self.cell_pos):
            if pos >= k:  # progressive variant: cells beyond the active depth are skipped
                continue
            x = layer(x, arch, plan) if pos >= 0 else layer(x)
        x = self.last(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InferCell(nn.Module):
    """A fixed cell: one operation instance per edge, `none` edges included (as the benchmark builds them)."""

    def __init__(self, arch: tuple[int, ...], c: int):
        super().__init__()
        self.arch = arch
        self.ops = nn.ModuleList(make_op(op, c, affine=True) for op in arch)

    def forward(self, x):
        nodes = [x]
        for i in (1, 2, 3):
            nodes.append(sum(self.ops[e](nodes[j]) for e, (ii, j) in enumerate(EDGES) if ii == i))
        return nodes[3]


class NB201Network(nn.Module):
    """The standalone network the benchmark trained for a cell (affine BN with running statistics)."""

    def __init__(self, arch: tuple[int, ...], channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10):
        super().__init__()
        self.arch = tuple(arch)
        self.stem, self.layers, _, self.last = _skeleton(
            channels, cells_per_stage, lambda c: InferCell(self.arch, c), affine=True, track=True)
        self.classifier = nn.Linear(channels * 4, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        x = self.last(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
