"""DARTS CNN networks: the weight-sharing supernet of the EPS search (spec §2.3) and DARTS's ``NetworkCIFAR`` used to
retrain a genotype from scratch (spec §2.6), with the Robust-DARTS ``noise`` operation (spec §2.7).

An architecture here is ``(normal, reduce)``; each cell is four nodes, each node a pair of ``(op name, input)``
with input 0 = c_{k-2}, 1 = c_{k-1}, 2 + m = intermediate node m. Edge ``e`` of a cell is slot ``j`` of node ``i``
with ``e = i (i + 3) / 2 + j`` (14 edges); in reduction cells the edges reading c_{k-2} or c_{k-1} have stride 2.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")
OP_NAMES = PRIMITIVES + ("noise",)
STEPS = 4
NUM_EDGES = 14
CONCAT = (2, 3, 4, 5)


def edge_index(node: int, inp: int) -> int:
    return node * (node + 3) // 2 + inp


def reduction_layers(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


def _bn(c: int, affine: bool) -> nn.BatchNorm2d:
    # Search networks (affine=False) use batch statistics only, as the reference supernet does.
    return nn.BatchNorm2d(c, affine=affine, track_running_stats=affine)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, padding, bias=False),
                         _bn(c_out, affine))


class DilConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, k, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out, affine))


class SepConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, k, stride, padding, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_in, 1, bias=False), _bn(c_in, affine),
                         nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, k, 1, padding, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out, affine))


class FactorizedReduce(nn.Module):
    """Two stride-2 1x1 convs on grids offset by one pixel, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(c_out, affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class Noise(nn.Module):
    """Robust-DARTS S4 ``noise``: fresh standard-normal values of the (strided) input's shape; no parameters, no
    gradient to the input. ``generator`` (set by the owning network) makes the draws reproducible per process."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.generator: torch.Generator | None = None

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.stride
        return torch.randn((n, c, -(-h // s), -(-w // s)), device=x.device, dtype=x.dtype, generator=self.generator)


def make_op(name: str, c: int, stride: int, affine: bool = True, search: bool = False) -> nn.Module:
    """DARTS operation ``name`` on ``c`` channels; ``search`` adds the supernet's extra BN after pooling."""
    if name == "none":
        return Zero(stride)
    if name == "noise":
        return Noise(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride=stride, padding=1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
        return nn.Sequential(pool, _bn(c, False)) if search else pool
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2, affine)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2, affine)
    raise ValueError(f"unknown DARTS operation {name!r}")


def _preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool):
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


def _channel_plan(channels: int, layers: int):
    """(c_prev_prev, c_prev, c, reduction, reduction_prev) of every cell, and the stem width."""
    stem = 3 * channels
    c_pp, c_p, c, reduction_prev = stem, stem, channels, False
    plan = []
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        if reduction:
            c *= 2
        plan.append((c_pp, c_p, c, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, len(CONCAT) * c
    return stem, plan


# ----------------------------------------------------------------------------------------------------------- supernet

class SearchCell(nn.Module):
    """Every edge owns each operation of its own candidate list; only the two active edges of a node run."""

    def __init__(self, edge_ops, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        edges = []
        for node in range(STEPS):
            for j in range(node + 2):
                stride = 2 if reduction and j < 2 else 1
                ops = edge_ops[edge_index(node, j)]
                edges.append(nn.ModuleDict({op: make_op(op, c, stride, affine=False, search=True)
                                            for op in ops if op != "none"}))
        self.edges = nn.ModuleList(edges)

    def forward(self, s0, s1, cell):
        uses0 = any(j == 0 for node in cell for _, j in node)
        states = [self.pre0(s0) if uses0 else None, self.pre1(s1)]
        for i, node in enumerate(cell):
            out = None
            for op, j in node:
                if op == "none":  # contributes exactly zero
                    continue
                y = self.edges[edge_index(i, j)][op](states[j])
                out = y if out is None else out + y
            if out is None:
                stride = 2 if self.reduction else 1
                out = torch.zeros_like(states[1][:, :, ::stride, ::stride])
            states.append(out)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(nn.Module):
    """The EPS DARTS search network: evaluation depth, non-affine batch-statistics BN everywhere (spec §2.3).

    ``edge_ops[k][e]`` lists the operations edge ``e`` of a normal (k = 0) or reduction (k = 1) cell can take.
    """

    def __init__(self, edge_ops, channels: int = 16, layers: int = 20, num_classes: int = 10):
        super().__init__()
        stem, plan = _channel_plan(channels, layers)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1, bias=False), _bn(stem, False))
        self.cells = nn.ModuleList(SearchCell(edge_ops[int(red)], c_pp, c_p, c, red, red_prev)
                                   for c_pp, c_p, c, red, red_prev in plan)
        self.classifier = nn.Linear(len(CONCAT) * plan[-1][2], num_classes)

    def forward(self, x, arch):
        normal, reduce = arch
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))


# --------------------------------------------------------------------------------------------- standalone network

class Cell(nn.Module):
    """DARTS evaluation cell: one operation per active edge, drop path on every non-identity output."""

    def __init__(self, cell, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=True)
        ops, indices = [], []
        for node in cell:
            for op, j in node:
                ops.append(make_op(op, c, 2 if reduction and j < 2 else 1, affine=True))
                indices.append(j)
        self._ops = nn.ModuleList(ops)
        self.indices = tuple(indices)
        self.droppable = tuple(not isinstance(op, nn.Identity) for op in ops)
        # Inputs whose preprocessing reaches the output through a parameterised path (noise ignores its input).
        self.inputs_used = tuple(any(j == k and op != "noise" for node in cell for op, j in node) for k in (0, 1))

    def forward(self, s0, s1, masks: torch.Tensor | None):
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(STEPS):
            out = None
            for k in (2 * i, 2 * i + 1):
                h = self._ops[k](states[self.indices[k]])
                if masks is not None and self.droppable[k]:
                    h = h * masks[k].view(-1, 1, 1, 1).to(h.dtype)
                out = h if out is None else out + h
            states.append(out)
        return torch.cat(states[2:], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS auxiliary classifier on the 8x8 output of the second reduction cell."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class NetworkCIFAR(nn.Module):
    """DARTS ``NetworkCIFAR``; forward returns ``(logits, aux_logits)``, aux only in training with a head.

    ``drop_path_prob`` is set by the trainer each epoch; ``generator`` (a torch.Generator on the model's device)
    drives drop-path masks and noise draws so that a run is reproducible and resumable per process.
    """

    def __init__(self, arch, channels: int = 36, layers: int = 20, num_classes: int = 10, auxiliary: bool = True):
        super().__init__()
        normal, reduce = arch
        self.arch = arch
        stem, plan = _channel_plan(channels, layers)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        self.cells = nn.ModuleList(Cell(reduce if red else normal, c_pp, c_p, c, red, red_prev)
                                   for c_pp, c_p, c, red, red_prev in plan)
        self.aux_after = reduction_layers(layers)[1]
        c_aux = len(CONCAT) * plan[self.aux_after][2]
        self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(len(CONCAT) * plan[-1][2], num_classes)
        self.drop_path_prob = 0.0
        self._generator: torch.Generator | None = None

    @property
    def generator(self) -> torch.Generator | None:
        return self._generator

    @generator.setter
    def generator(self, g: torch.Generator | None) -> None:
        self._generator = g
        for m in self.modules():
            if isinstance(m, Noise):
                m.generator = g

    def all_params_reached(self) -> bool:
        """True when every parameter gets a gradient (DDP then needs no unused-parameter search)."""
        return all(all(cell.inputs_used) for cell in self.cells)

    def forward(self, x):
        masks = None
        p = self.drop_path_prob
        if self.training and p > 0:
            keep = 1.0 - p
            masks = torch.empty((len(self.cells), 2 * STEPS, x.shape[0]), device=x.device)
            masks.bernoulli_(keep, generator=self._generator).div_(keep)
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, None if masks is None else masks[i])
            if i == self.aux_after and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))
        return logits, aux
