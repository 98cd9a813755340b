"""The NAS-Bench-201 supernet in path-independent form, for the graph engine (``eps.train.graph``).

``NB201Supernet.forward`` walks the sampled path in Python and runs only the chosen operation of each live edge: its
graph changes with the path, which forbids compiling it once and replaying it as a CUDA graph. Here every candidate
of every edge is computed and the path enters only as data, a one-hot tensor ``sel`` of shape (M, 6, 5) (member,
edge, operation), so one compiled graph serves all 15,625 cells and, batched over M members, a whole fitness group.

The two forms give the same numbers (``tests/test_graph_engine.py``):

- an edge's output is ``sum_op sel[e, op] * op(node)`` with ``sel`` in {0, 1}: the chosen operation's value plus
  exact zeros, so each node is the path engine's sum in the same edge order;
- ``none`` edges and dead edges (spec §1.2; ``model.live_edges``) yield exact zeros without being skipped: a
  ``nor_conv`` of an all-zero node is BN(conv(0)) = 0 with batch statistics, and a node that feeds only ``none``
  edges is multiplied by 0 downstream. Their weights receive exact zero gradients; which weights the optimiser may
  move is not read from gradients but from ``masks`` (the path engine's rule, see ``GraphForm`` in
  ``eps.train.graph``);
- ``nor_conv_1x1`` and ``nor_conv_3x3`` of an edge share one 3x3 convolution whose kernel is
  ``sel_3x3 * W3 + sel_1x1 * pad(W1)`` (one of the two terms is exactly zero), followed by the edge's non-affine
  batch-statistics BN; the gradient reaching W1 is the centre tap of the kernel's gradient, as the 1x1 conv's is.
  The edges leaving one node are one convolution with their kernels stacked on the output channels (BN is per
  channel, so per edge); only rounding order differs from the path engine.

Members are stacked on the channel axis: activations are (B, M*C, H, W) and every convolution is grouped by member
(``groups=M``), so BN over the channels is each member's own batch statistics, exactly as when members are scored one
by one in training mode (spec §1.5 fitness). With M = 1 this is the ordinary single-path training step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eps.spaces.nb201.model import CONV1, CONV3, EDGES, POOL, SKIP, NB201Supernet, live_edges

OUT_EDGES = tuple(tuple(e for e, (_, j) in enumerate(EDGES) if j == src) for src in range(3))  # ((0, 1, 3), (2, 4), (5,))
INTO = tuple(tuple(e for e, (i, _) in enumerate(EDGES) if i == node) for node in (1, 2, 3))
N_OPS = 5
BN_EPS = 1e-5  # nn.BatchNorm2d's default, as every BN of the supernet


def _bn(x: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
    return F.batch_norm(x, None, None, weight, bias, training=True, momentum=0.0, eps=BN_EPS)


def _per_member(w: torch.Tensor, m: int) -> torch.Tensor:
    """A shared weight (or BN affine vector) repeated for ``m`` member groups of a grouped convolution."""
    return w if m == 1 else w.repeat(m, *([1] * (w.dim() - 1)))


class NB201Graph:
    """The path-independent form of one ``NB201Supernet`` (its own parameters, not a copy).

    ``params`` lists the model's parameters in ``named_parameters`` order; ``losses`` is a pure function of a list
    like it, so the engine can differentiate it with ``torch.func`` and update the same tensors in place.
    """

    def __init__(self, model: NB201Supernet):
        self.model = model
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        at = {n: k for k, n in enumerate(self.names)}
        self.stem = at["stem.0.weight"]
        self.fc = (at["classifier.weight"], at["classifier.bias"])
        # per layer: ("cell", position in stage, ((index of W1, index of W3) per edge)) or ("reduction", -1, indices)
        self.layers = []
        for n, (layer, pos) in enumerate(zip(model.layers, model.cell_pos)):
            if pos >= 0:
                convs = tuple((at[f"layers.{n}.edges.{e}.{CONV1}.1.weight"], at[f"layers.{n}.edges.{e}.{CONV3}.1.weight"])
                              for e in range(len(EDGES)))
                self.layers.append(("cell", pos, convs))
            else:
                keys = ("conv_a.1.weight", "conv_a.2.weight", "conv_a.2.bias", "conv_b.1.weight", "conv_b.2.weight",
                        "conv_b.2.bias", "downsample.1.weight")
                self.layers.append(("reduction", -1, tuple(at[f"layers.{n}.{k}"] for k in keys)))
        always = [k for k in range(len(self.names)) if not self._is_cell_weight(k)]
        self._cell_convs = {k: (pos, e, op) for _, pos, convs in self.layers if pos >= 0
                            for e, pair in enumerate(convs) for op, k in zip((CONV1, CONV3), pair)}
        self._classifier = set(self.fc)
        self._always = always

    def _is_cell_weight(self, k: int) -> bool:
        return any(k in pair for kind, _, convs in self.layers if kind == "cell" for pair in convs)

    @property
    def depth(self) -> int:
        """Active cells per stage (the progressive variant, spec §1.8; a host int, part of the compiled graph)."""
        return self.model._depth

    def selection(self, arch) -> torch.Tensor:
        """(6, 5) float one-hot of the path's operations (edge order of ``model.EDGES``)."""
        return F.one_hot(torch.as_tensor(arch), N_OPS).float()

    def masks(self, arch, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Which parameters the path engine's step on ``arch`` gives a gradient (``grad``) and which it counts as used
        (``touch``): (P,) bool host tensors, P = ``len(params)``.

        Source of the rule: ``NB201Supernet.forward`` and ``ImageSupernetTask.train_step``. With dead edges skipped
        (``skip_dead``), only live edges' weights get a gradient; the chosen ops of dead edges (active cells) are
        zero-filled under ``all_used`` (``path_parameters``), so they are used. A path with no live edge makes every
        cell output ``zeros_like`` its input, which cuts the stem and both residual blocks from the loss: only the
        classifier gets a gradient then. Without ``skip_dead`` every chosen op runs and all of them get gradients.
        """
        skip = self.model.skip_dead
        live = {e for e, _, _ in live_edges(tuple(arch))} if skip else set(range(len(EDGES)))
        connected = bool(live)
        grad = torch.zeros(len(self.names), dtype=torch.bool)
        touch = torch.zeros(len(self.names), dtype=torch.bool)
        for k in self._always:
            grad[k] = touch[k] = connected or k in self._classifier
        for k, (pos, e, op) in self._cell_convs.items():
            on = pos < depth and arch[e] == op
            touch[k] = on
            grad[k] = on and e in live
        return grad, touch

    def losses(self, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, sel: torch.Tensor, depth: int,
               label_smoothing: float) -> torch.Tensor:
        """Mean label-smoothed cross entropy of each member on its own batch, in training mode (batch-statistics BN).

        x: (M, B, 3, H, W) normalised images, y: (M, B) labels, sel: (M, 6, 5) one-hot paths, depth: active cells per
        stage. Returns (M,) float32 losses in nats. Same value as ``ImageSupernetTask._loss`` of each member alone.
        """
        m, b = x.shape[0], x.shape[1]
        h = x.transpose(0, 1).reshape(b, m * x.shape[2], *x.shape[3:])
        h = h.contiguous(memory_format=torch.channels_last)
        h = _bn(F.conv2d(h, _per_member(params[self.stem], m), padding=1, groups=m))
        for kind, pos, idx in self.layers:
            if kind == "reduction":
                h = self._reduction(params, h, m, idx)
            elif pos < depth:
                h = self._cell(params, h, sel, m, idx)
        h = F.relu(_bn(h))
        pooled = F.adaptive_avg_pool2d(h, 1).reshape(b, m, -1)
        logits = F.linear(pooled, params[self.fc[0]], params[self.fc[1]])  # (B, M, classes)
        per_sample = F.cross_entropy(logits.float().permute(0, 2, 1), y.t(), label_smoothing=label_smoothing,
                                     reduction="none")
        return per_sample.mean(0)

    @staticmethod
    def _reduction(params, h, m, idx):
        wa, ga, ba, wb, gb, bb, wd = (params[k] for k in idx)
        a = _bn(F.conv2d(F.relu(h), _per_member(wa, m), stride=2, padding=1, groups=m),
                _per_member(ga, m), _per_member(ba, m))
        a = _bn(F.conv2d(F.relu(a), _per_member(wb, m), padding=1, groups=m), _per_member(gb, m), _per_member(bb, m))
        return F.conv2d(F.avg_pool2d(h, 2, 2), _per_member(wd, m), groups=m) + a

    @staticmethod
    def _cell(params, x, sel, m, convs):
        b, mc, hh, ww = x.shape
        c = mc // m
        nodes = [x]
        terms: dict[int, torch.Tensor] = {}
        for src in range(3):
            node = nodes[src]
            edges = OUT_EDGES[src]
            s = sel[:, list(edges)]  # (M, E, 5)
            w1 = torch.stack([params[convs[e][0]] for e in edges])  # (E, C, C, 1, 1)
            w3 = torch.stack([params[convs[e][1]] for e in edges])  # (E, C, C, 3, 3)
            kernel = (s[:, :, CONV3, None, None, None, None] * w3
                      + s[:, :, CONV1, None, None, None, None] * F.pad(w1, (1, 1, 1, 1)))  # (M, E, C, C, 3, 3)
            conv = _bn(F.conv2d(F.relu(node), kernel.reshape(-1, c, 3, 3), padding=1, groups=m))
            conv = conv.view(b, m, len(edges), c, hh, ww)
            same = node.view(b, m, c, hh, ww)
            pooled = F.avg_pool2d(node, 3, 1, 1, count_include_pad=False).view(b, m, c, hh, ww)
            for k, e in enumerate(edges):
                w = lambda op: s[:, k, op].view(1, m, 1, 1, 1)  # noqa: E731
                terms[e] = conv[:, :, k] * (w(CONV1) + w(CONV3)) + same * w(SKIP) + pooled * w(POOL)
            total = terms[INTO[src][0]]
            for e in INTO[src][1:]:
                total = total + terms[e]
            nodes.append(total.reshape(b, mc, hh, ww))
        return nodes[3]
