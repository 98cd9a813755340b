"""DARTS CNN space and the Robust-DARTS spaces S1-S4 (spec §2, §2.7; decisions §6 items 2, 4, 5).

Internal architecture: ``(normal, reduce)``, each cell a tuple of 4 nodes, each node a tuple of two
``(op name, input index)`` pairs in ascending input order: a hashable nested tuple. Files and reports use the DARTS
``Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])`` string, normal cell
first (the reference stores reduction first, §5 item 16). Operations are always names, resolved through the
per-edge candidate lists of the chosen variant, never indices.
"""
from __future__ import annotations

import ast

import numpy as np

from typing import Literal

from pydantic import Field

from eps.settings import Number, section
from eps.errors import ArchError
from eps.search import SearchSettings
from eps.space import MAX_CHANNELS, MAX_CLASSES, MAX_LAYERS, SpaceParams, SpaceSettings
from eps.spaces.darts_cnn.retrain import DartsRetrainSettings
from eps.train.image import ImageSupernetSettings
from eps.spaces.darts_cnn.model import (CONCAT, NUM_EDGES, OP_NAMES, PRIMITIVES, STEPS, DartsSupernet, NetworkCIFAR,
                                  _channel_plan, edge_index, make_op)

NAME = "darts-cnn"
VARIANTS = ("darts", "s1", "s2", "s3", "s4")
CELL_NAMES = ("normal", "reduce")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}

# Robust-DARTS S1 (search_cnn_rdarts/genotypes.py:3-58): per edge, (normal op 1, op 2), (reduction op 1, op 2).
S1_EDGES = (
    (("skip_connect", "dil_conv_3x3"), ("max_pool_3x3", "avg_pool_3x3")),   # 0  node 0 <- c_{k-2}
    (("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "dil_conv_3x3")),   # 1  node 0 <- c_{k-1}
    (("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3")),   # 2  node 1 <- c_{k-2}
    (("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "avg_pool_3x3")),   # 3  node 1 <- c_{k-1}
    (("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5")),   # 4  node 1 <- node 0
    (("max_pool_3x3", "skip_connect"), ("max_pool_3x3", "avg_pool_3x3")),   # 5  node 2 <- c_{k-2}
    (("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "sep_conv_3x3")),   # 6  node 2 <- c_{k-1}
    (("skip_connect", "sep_conv_3x3"), ("skip_connect", "dil_conv_3x3")),   # 7  node 2 <- node 0
    (("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5")),   # 8  node 2 <- node 1
    (("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "avg_pool_3x3")),   # 9  node 3 <- c_{k-2}
    (("max_pool_3x3", "skip_connect"), ("max_pool_3x3", "avg_pool_3x3")),   # 10 node 3 <- c_{k-1}
    (("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5")),   # 11 node 3 <- node 0
    (("dil_conv_3x3", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5")),   # 12 node 3 <- node 1
    (("dil_conv_3x3", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5")),   # 13 node 3 <- node 2
)
SHARED_LISTS = {
    "darts": PRIMITIVES[1:],   # `none` is never drawn in the DARTS space (spec §2.2)
    "s2": ("skip_connect", "sep_conv_3x3"),
    "s3": ("none", "skip_connect", "sep_conv_3x3"),
    "s4": ("noise", "sep_conv_3x3"),
}


def edge_candidates(variant: str) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """The candidate list of every edge, ``[cell][edge]`` with cell 0 = normal, 1 = reduction (spec §2.7)."""
    if variant == "s1":
        return tuple(tuple(S1_EDGES[e][k] for e in range(NUM_EDGES)) for k in (0, 1))
    lst = SHARED_LISTS[variant]
    return ((lst,) * NUM_EDGES,) * 2


def drawable_ops(variant: str, s3_reference_none: bool = False):
    """Operations sampling and mutation draw from, per ``[cell][edge]``; the reference option drops S3's none."""
    cands = edge_candidates(variant)
    if variant == "s3" and s3_reference_none:
        return tuple(tuple(tuple(op for op in lst if op != "none") for lst in cell) for cell in cands)
    return cands


class DartsSpaceSettings(SpaceSettings):
    variant: Literal["darts", "s1", "s2", "s3", "s4"] = "darts"   # DARTS, or Robust-DARTS S1-S4 (spec §2.7)
    s3_reference_none: bool = False   # true: S3 never draws `none` (the reference; makes S2 = S3, spec §6 item 5)
    dataset: Literal["cifar10"] = "cifar10"
    channels: int = Field(16, ge=1)   # supernet width
    layers: int = Field(20, ge=3)     # supernet cells (two of them reduction cells)
    p_opwise: Number = Field(0.2, ge=0, le=1)
    p_edgewise: Number = Field(0.1, ge=0, le=1)


class DartsSearchSettings(SearchSettings):
    rank_min_count: int = Field(1, ge=1)           # DARTS controllers rank members measured once (spec §2.2)
    first_measurement_offset: Number = 0.0


class DartsCNNParams(SpaceParams):
    space: DartsSpaceSettings = section(DartsSpaceSettings)
    supernet: ImageSupernetSettings = section(ImageSupernetSettings)
    search: DartsSearchSettings = section(DartsSearchSettings)
    retrain: DartsRetrainSettings = section(DartsRetrainSettings)


# ------------------------------------------------------------------------------------------------ genotype strings

MAX_GENOTYPE_CHARS = 20000
EXAMPLE = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
           "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
           "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
           "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
           "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


class _Unsupported(Exception):
    pass


def _literal(node: ast.AST):
    """A restricted literal evaluator: str/int constants, negative ints, lists, tuples, range(a, b[, c])."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts] if isinstance(node, ast.List) else tuple(_literal(e) for e in node.elts)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 3):
        args = [_literal(a) for a in node.args]
        if all(type(a) is int for a in args):
            return range(*args)
    raise _Unsupported(type(node).__name__)


def _parse_fields(text: str) -> dict:
    if not isinstance(text, str):
        raise ArchError(f"a DARTS genotype must be a string, got {type(text).__name__}")
    if len(text) > MAX_GENOTYPE_CHARS:
        raise ArchError(f"DARTS genotype is {len(text)} characters long; a genotype is a few hundred")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        raise ArchError(f"DARTS genotype {text[:80]!r} is not valid syntax; expected e.g. {EXAMPLE}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, (ast.Name, ast.Attribute))
            and (tree.func.id if isinstance(tree.func, ast.Name) else tree.func.attr) == "Genotype"):
        raise ArchError(f"DARTS genotype {text[:80]!r} must be of the form Genotype(normal=[...], "
                        f"normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])")
    if len(tree.args) > len(FIELDS) or any(isinstance(a, ast.Starred) for a in tree.args):
        raise ArchError(f"DARTS genotype has {len(tree.args)} positional fields; expected at most 4 "
                        f"({', '.join(FIELDS)})")
    fields: dict = {}
    try:
        for name, node in zip(FIELDS, tree.args):
            fields[name] = _literal(node)
        for kw in tree.keywords:
            if kw.arg is None or kw.arg not in FIELDS:
                raise ArchError(f"DARTS genotype: unknown field {kw.arg or '**'!r}; fields are {', '.join(FIELDS)}")
            if kw.arg in fields:
                raise ArchError(f"DARTS genotype: field {kw.arg!r} given twice")
            fields[kw.arg] = _literal(kw.value)
    except _Unsupported as err:
        raise ArchError(f"DARTS genotype: only literal lists of (op name, input index) pairs and concat lists are "
                        f"accepted (found an expression of type {err})") from None
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise ArchError(f"DARTS genotype is missing field(s) {', '.join(missing)}; expected e.g. {EXAMPLE}")
    return fields


def _parse_cell(value, which: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ArchError(f"DARTS genotype: {which} must be a list of (op name, input index) pairs, "
                        f"got {type(value).__name__}")
    if len(value) != 2 * STEPS:
        raise ArchError(f"DARTS genotype: {which} cell has {len(value)} (op, input) pair(s); expected 8, exactly "
                        f"two inputs for each of the 4 nodes")
    nodes = []
    for i in range(STEPS):
        pairs = []
        for k in (2 * i, 2 * i + 1):
            p = value[k]
            if not (isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
                    and type(p[1]) is int):
                raise ArchError(f"DARTS genotype: {which} entry {k} is {p!r}; expected a pair ('op_name', input)")
            op, j = p
            if op not in OP_NAMES:
                raise ArchError(f"DARTS genotype: {which} node {i}: unknown operation {op!r}; known: "
                                f"{', '.join(OP_NAMES)}")
            if not 0 <= j <= i + 1:
                raise ArchError(f"DARTS genotype: {which} node {i}: input index {j} is out of range; node {i} reads "
                                f"inputs 0..{i + 1} (0 = c_k-2, 1 = c_k-1, 2+m = node m)")
            pairs.append((op, j))
        if pairs[0][1] == pairs[1][1]:
            raise ArchError(f"DARTS genotype: {which} node {i} reads input {pairs[0][1]} twice; "
                            f"each node has exactly two distinct inputs")
        nodes.append(tuple(sorted(pairs, key=lambda p: p[1])))
    return tuple(nodes)


def _check_concat(value, which: str) -> None:
    ok = isinstance(value, (list, tuple, range)) and len(value) == len(CONCAT) and \
        all(type(v) is int for v in value) and tuple(value) == CONCAT
    if not ok:
        shown = value if not isinstance(value, range) else f"range({value.start}, {value.stop})"
        raise ArchError(f"DARTS genotype: {which} is {shown!r}; this space concatenates all four intermediate "
                        f"nodes: [2, 3, 4, 5] (or range(2, 6))")


def parse_genotype(text: str) -> tuple:
    """``(normal, reduce)`` from a Genotype string, structure-checked; any malformed input raises ArchError."""
    try:
        fields = _parse_fields(text)
        arch = (_parse_cell(fields["normal"], "normal"), _parse_cell(fields["reduce"], "reduce"))
        _check_concat(fields["normal_concat"], "normal_concat")
        _check_concat(fields["reduce_concat"], "reduce_concat")
        return arch
    except ArchError:
        raise
    except Exception as err:  # a safety net: any surprise in parsing is still a user-facing ArchError
        raise ArchError(f"DARTS genotype {str(text)[:80]!r} could not be parsed ({type(err).__name__})") from None


def format_genotype(arch) -> str:
    def cell(c):
        return "[" + ", ".join(f"({op!r}, {j})" for node in c for op, j in node) + "]"
    concat = "[" + ", ".join(map(str, CONCAT)) + "]"
    normal, reduce = arch
    return f"Genotype(normal={cell(normal)}, normal_concat={concat}, reduce={cell(reduce)}, reduce_concat={concat})"


# ----------------------------------------------------------------------------------------------------------- space

class DartsCNNSpace:
    """The DARTS CNN space and the Robust-DARTS spaces S1-S4 (spec §2); ``variant`` picks the per-edge lists."""
    name = NAME
    Params = DartsCNNParams
    network_bounds = {"num_classes": (1, MAX_CLASSES), "channels": (1, MAX_CHANNELS), "layers": (1, MAX_LAYERS)}

    @classmethod
    def from_params(cls, section: dict) -> "DartsCNNSpace":
        s, r = section["space"], section["retrain"]
        return cls(s["variant"], s["s3_reference_none"], s["channels"], s["layers"], s["p_opwise"], s["p_edgewise"],
                   r["channels"], r["layers"], NUM_CLASSES[r["dataset"]])

    def __init__(self, variant: str = "darts", s3_reference_none: bool = False, channels: int = 16, layers: int = 20,
                 p_opwise: float = 0.2, p_edgewise: float = 0.1, eval_channels: int = 36, eval_layers: int = 20,
                 num_classes: int = 10, search_classes: int = 10):
        self.variant, self.s3_reference_none = variant, s3_reference_none
        self.channels, self.layers = channels, layers
        self.p_opwise, self.p_edgewise = p_opwise, p_edgewise
        self.eval_channels, self.eval_layers, self.num_classes = eval_channels, eval_layers, num_classes
        self.search_classes = search_classes
        self.candidates = edge_candidates(variant)
        self.drawable = drawable_ops(variant, s3_reference_none)
        self._params_cache: dict = {}

    # sampling and mutation (spec §2.2; ops drawn from the edge's own list)
    def _draw(self, k: int, node: int, inp: int, rng: np.random.Generator) -> str:
        ops = self.drawable[k][edge_index(node, inp)]
        return ops[int(rng.integers(len(ops)))]

    def _sample_cell(self, k: int, rng: np.random.Generator) -> tuple:
        nodes = []
        for i in range(STEPS):
            inputs = sorted(int(j) for j in rng.choice(i + 2, size=2, replace=False))
            nodes.append(tuple((self._draw(k, i, j, rng), j) for j in inputs))
        return tuple(nodes)

    def sample(self, rng: np.random.Generator) -> tuple:
        return (self._sample_cell(0, rng), self._sample_cell(1, rng))

    def _mutate_cell(self, cell: tuple, k: int, rng: np.random.Generator) -> tuple:
        nodes = []
        for i, node in enumerate(cell):
            pairs = [list(p) for p in node]
            for p in pairs:  # op-wise: redraw from the edge's list (the old op may come back)
                if rng.random() < self.p_opwise:
                    p[0] = self._draw(k, i, p[1], rng)
            if i >= 1 and rng.random() < self.p_edgewise:  # edge-wise: move one input to an unused slot
                active = {p[1] for p in pairs}
                inactive = [j for j in range(i + 2) if j not in active]
                which = int(rng.integers(2))
                j = inactive[int(rng.integers(len(inactive)))]
                pairs[which] = [self._draw(k, i, j, rng), j]
            nodes.append(tuple(sorted((tuple(p) for p in pairs), key=lambda p: p[1])))
        return tuple(nodes)

    def mutate(self, arch, rng: np.random.Generator) -> tuple:
        return (self._mutate_cell(arch[0], 0, rng), self._mutate_cell(arch[1], 1, rng))

    # notation
    def encode(self, arch) -> str:
        return format_genotype(arch)

    def decode(self, text: str) -> tuple:
        arch = parse_genotype(text)
        for k, cell in enumerate(arch):
            for i, node in enumerate(cell):
                for op, j in node:
                    allowed = self.candidates[k][edge_index(i, j)]
                    if op not in allowed:
                        raise ArchError(
                            f"DARTS genotype: operation {op!r} is not allowed on edge {edge_index(i, j)} (node {i}, "
                            f"input {j}) of the {CELL_NAMES[k]} cell in variant {self.variant}; "
                            f"allowed there: {', '.join(allowed)}")
        return arch

    def draw(self, arch, path) -> None:
        """PNG of the normal and reduction cells (used by ``eps report``)."""
        from eps.spaces.darts_cnn.cellplot import draw_genotype
        draw_genotype(arch, path)

    # networks
    def _eval_shape(self, num_classes, channels, layers):
        return (num_classes or self.num_classes, channels or self.eval_channels, layers or self.eval_layers)

    def build_supernet(self, skip_dead_edges: bool = True) -> DartsSupernet:
        ops = tuple(tuple(tuple(op for op in lst if op != "none") for lst in cell) for cell in self.candidates)
        return DartsSupernet(ops, self.channels, self.layers, self.search_classes)

    def build_network(self, arch, num_classes: int | None = None, channels: int | None = None,
                      layers: int | None = None, auxiliary: bool = True) -> NetworkCIFAR:
        """DARTS's ``NetworkCIFAR``: ``channels`` = initial width C, ``layers`` = cells (two of them reduction
        cells), ``auxiliary`` = the auxiliary head after the second reduction cell; a size left out takes the
        space's retrain setting. Input (B, 3, 32, 32) normalised images, output ``(logits (B, classes), aux)``."""
        n, c, l = self._eval_shape(num_classes, channels, layers)
        return NetworkCIFAR(arch, c, l, n, auxiliary=auxiliary)

    def num_params(self, arch, num_classes: int | None = None, channels: int | None = None,
                   layers: int | None = None) -> int:
        """Parameters of the standalone network without the auxiliary head (DARTS's convention)."""
        import torch
        key = (arch, *self._eval_shape(num_classes, channels, layers))
        if key not in self._params_cache:
            with torch.device("meta"):  # shapes only, no memory
                net = self.build_network(arch, num_classes, channels, layers, auxiliary=False)
            self._params_cache[key] = sum(p.numel() for p in net.parameters())
        return self._params_cache[key]

    def largest(self) -> tuple:
        """The genotype of the largest standalone network: per node, the two inputs whose best op adds most.

        Parameters are additive over the edges' operations, so each edge's weight is the sum over all cells of its
        type of the operation's size at that cell's width and stride; ties go to the first listed op / lower input.
        """
        import torch
        _, plan = _channel_plan(self.eval_channels, self.eval_layers)
        sizes: dict = {}

        def size(op, c, stride):
            if (op, c, stride) not in sizes:
                with torch.device("meta"):
                    sizes[op, c, stride] = sum(p.numel() for p in make_op(op, c, stride).parameters())
            return sizes[op, c, stride]

        cells = []
        for k in (0, 1):
            widths = [c for _, _, c, red, _ in plan if red == bool(k)]
            nodes = []
            for i in range(STEPS):
                best = []
                for j in range(i + 2):
                    stride = 2 if k == 1 and j < 2 else 1
                    ops = self.drawable[k][edge_index(i, j)]
                    weights = [sum(size(op, c, stride) for c in widths) for op in ops]
                    w = max(weights)
                    best.append((w, j, ops[weights.index(w)]))
                top = sorted(best, key=lambda t: (-t[0], t[1]))[:2]
                nodes.append(tuple(sorted(((op, j) for _, j, op in top), key=lambda p: p[1])))
            cells.append(tuple(nodes))
        return tuple(cells)

    # tasks
    def search_task(self, section: dict, data_root, device, seed: int, stage: str = "search"):
        from eps.train.image import ImageSupernetTask
        return ImageSupernetTask(self.build_supernet(), section, stage, data_root, device, seed,
                                 dataset=section["space"]["dataset"])

    def retrain_task(self, arch, section: dict, data_root, device, seed: int):
        from eps.spaces.darts_cnn.retrain import DartsRetrainTask
        r = section["retrain"]
        network = {"num_classes": NUM_CLASSES[r["dataset"]], "channels": r["channels"], "layers": r["layers"],
                   "auxiliary": r["auxiliary_weight"] > 0}
        return DartsRetrainTask(self.build_network(arch, **network), r, data_root, device, seed, network=network)

