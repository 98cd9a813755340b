"""NAS-Bench-201 cell space (spec §1): six edges, five operations, 15,625 cells.

Internal architecture: a tuple of six ints in the edge order (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2), the
encoding EPS uses. Files and reports use the benchmark's arch string.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from eps.settings import Number, section
from eps.data.datasets import DATASETS
from eps.errors import ArchError
from eps.space import MAX_CHANNELS, MAX_CLASSES, MAX_LAYERS, SpaceParams, SpaceSettings
from eps.spaces.nb201.model import EDGES, OPS, NB201Network, NB201Supernet
from eps.train.image import ImageRetrainSettings, ImageSupernetSettings

NAME = "nb201"
NUM_CELLS = len(OPS) ** len(EDGES)


class NB201SpaceSettings(SpaceSettings):
    # the data the supernet searches on and the standalone network is retrained on (eps.data.datasets: split,
    # statistics, classes); reports rank cells by the benchmark's column for the same dataset
    dataset: Literal["cifar10", "cifar100", "imagenet16-120"] = "cifar10"
    channels: int = Field(16, ge=1)           # C of the first stage (NB201: 16)
    cells_per_stage: int = Field(5, ge=1)     # N (NB201: 5)
    p_opwise: Number = Field(0.5, ge=0, le=1)  # mutation: each edge redrawn with this probability (EPS code)


class NB201SupernetSettings(ImageSupernetSettings):
    skip_dead_edges: bool = True   # skip edges whose output cannot reach the cell output (same loss, less work)
    # Progressive variant (spec §1.8, §5 item 14): active cells per stage grow 1, 2, ... at these search
    # iterations (the reference: [15000, 30000, 45000, 60000]); null = every cell from the start (the paper).
    progressive: list[Annotated[int, Field(ge=1)]] | None = None
    new_cell_init: Literal["own", "copy_previous"] = "own"   # a newly enabled cell: its own init (reference)

    def problems(self):
        if self.progressive is not None and list(self.progressive) != sorted(set(self.progressive)):
            yield "progressive", f"got {self.progressive}, expected increasing iterations, e.g. [15000, 30000]"


class NB201Params(SpaceParams):
    """NAS-Bench-201 on CIFAR-10 (or CIFAR-100, ImageNet16-120): the search loop, selection and retrain values are
    the generic paper defaults."""
    space: NB201SpaceSettings = section(NB201SpaceSettings)
    supernet: NB201SupernetSettings = section(NB201SupernetSettings)
    retrain: ImageRetrainSettings = section(ImageRetrainSettings)


_NODE_RE = re.compile(r"^\|(?:[^|~+]+~\d+\|)+$")


def arch_to_str(arch: tuple[int, ...]) -> str:
    groups, e = [], 0
    for i in (1, 2, 3):
        ops = []
        for j in range(i):
            ops.append(f"{OPS[arch[e]]}~{j}")
            e += 1
        groups.append("|" + "|".join(ops) + "|")
    return "+".join(groups)


def str_to_arch(text: str) -> tuple[int, ...]:
    """Parse a NAS-Bench-201 arch string; every malformed input raises ArchError with the reason."""
    if not isinstance(text, str):
        raise ArchError(f"NB201 arch must be a string, got {type(text).__name__}")
    s = text.strip()
    example = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    groups = s.split("+")
    if len(groups) != 3:
        raise ArchError(f"NB201 arch {text!r} has {len(groups)} node group(s) joined by '+', expected 3; e.g. {example}")
    arch = []
    for i, group in enumerate(groups, start=1):
        if not _NODE_RE.match(group):
            raise ArchError(f"NB201 arch {text!r}: node {i} group {group!r} is not of the form |op~j|...|")
        entries = group.strip("|").split("|")
        if len(entries) != i:
            raise ArchError(f"NB201 arch {text!r}: node {i} has {len(entries)} input(s), expected {i}")
        for j, entry in enumerate(entries):
            op, _, src = entry.partition("~")
            if op not in OPS:
                raise ArchError(f"NB201 arch {text!r}: unknown operation {op!r}; allowed: {', '.join(OPS)}")
            if src != str(j):
                raise ArchError(f"NB201 arch {text!r}: node {i} input {j} is written ~{src}, expected ~{j}")
            arch.append(OPS.index(op))
    return tuple(arch)


def ints_to_arch(values) -> tuple[int, ...]:
    """The six-integer EPS encoding (e.g. ``[3, 3, 3, 1, 3, 3]`` or ``[[3], [3, 3], [1, 3, 3]]``) as an arch."""
    flat = [v for group in values for v in (group if isinstance(group, (list, tuple)) else [group])]
    if len(flat) != len(EDGES) or not all(isinstance(v, (int, np.integer)) and 0 <= v < len(OPS) for v in flat):
        raise ArchError(f"NB201 encoding {values!r} must be six integers in 0..{len(OPS) - 1}")
    return tuple(int(v) for v in flat)


def arch_index(arch: tuple[int, ...]) -> int:
    """Position of ``arch`` in base-5 order (0..15,624); used for enumeration, not the benchmark's index."""
    idx = 0
    for v in arch:
        idx = idx * len(OPS) + v
    return idx


def all_archs():
    for idx in range(NUM_CELLS):
        digits, rest = [], idx
        for _ in EDGES:
            digits.append(rest % len(OPS))
            rest //= len(OPS)
        yield tuple(reversed(digits))


class NB201Space:
    """The NAS-Bench-201 cell space (spec §1.1); mutation redraws each edge with ``p_opwise`` (EPS code)."""
    name = NAME
    Params = NB201Params
    network_bounds = {"num_classes": (1, MAX_CLASSES), "channels": (1, MAX_CHANNELS),
                      "cells_per_stage": (1, MAX_LAYERS)}

    @classmethod
    def from_params(cls, section: dict) -> "NB201Space":
        s = section["space"]
        return cls(s["channels"], s["cells_per_stage"], s["p_opwise"], dataset=s["dataset"])

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, p_opwise: float = 0.5,
                 num_classes: int | None = None, dataset: str = "cifar10"):
        """``dataset``: a key of ``eps.data.datasets.DATASETS``; ``num_classes`` defaults to its class count."""
        self.dataset = dataset
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.num_classes = num_classes or DATASETS[dataset].classes
        self.p_opwise = p_opwise
        self._params_cache: dict = {}

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(v) for v in rng.integers(0, len(OPS), size=len(EDGES)))

    def mutate(self, arch, rng: np.random.Generator) -> tuple[int, ...]:
        # Reference rule: each position independently redrawn with p_opwise; the old op may be drawn again.
        redraw = rng.random(len(EDGES)) < self.p_opwise
        fresh = rng.integers(0, len(OPS), size=len(EDGES))
        return tuple(int(f) if r else a for a, r, f in zip(arch, redraw, fresh))

    def encode(self, arch) -> str:
        return arch_to_str(arch)

    def decode(self, text: str) -> tuple[int, ...]:
        return str_to_arch(text)

    def features(self, arch, kind: str = "ordinal") -> np.ndarray:
        """The six op indices (``ordinal``, the reference predictor's input) or 6 x 5 indicators (``one_hot``)."""
        ops = np.asarray(arch, dtype=np.int64)
        if kind == "one_hot":
            return np.eye(len(OPS), dtype=np.float32)[ops].reshape(-1)
        return ops.astype(np.float32)

    def largest(self) -> tuple[int, ...]:
        return (OPS.index("nor_conv_3x3"),) * len(EDGES)

    def build_supernet(self, skip_dead_edges: bool = True, progressive: list[int] | None = None,
                       new_cell_init: str = "own") -> NB201Supernet:
        return NB201Supernet(self.channels, self.cells_per_stage, self.num_classes, skip_dead=skip_dead_edges,
                             progressive=progressive, new_cell_init=new_cell_init)

    def _network(self) -> dict:
        """The ``build_network`` keywords of this space's standalone network (the retrain task's network_config)."""
        return {"num_classes": self.num_classes, "channels": self.channels, "cells_per_stage": self.cells_per_stage}

    def build_network(self, arch, num_classes: int | None = None, channels: int | None = None,
                      cells_per_stage: int | None = None) -> NB201Network:
        """The benchmark's standalone network: ``channels`` = C of the first stage, ``cells_per_stage`` = N; a
        keyword left out takes the space's setting. Input (B, 3, S, S) normalised images (S = 32 for CIFAR, 16 for
        ImageNet16-120: the head pools globally), output (B, classes) logits."""
        return NB201Network(arch, channels or self.channels, cells_per_stage or self.cells_per_stage,
                            num_classes or self.num_classes)

    def num_params(self, arch, num_classes: int | None = None, channels: int | None = None,
                   layers: int | None = None) -> int:
        """``channels`` = C, ``layers`` = cells per stage (``eps arch params --channels/--layers``)."""
        import torch
        key = (arch, num_classes, channels, layers)
        if key not in self._params_cache:
            with torch.device("meta"):  # shapes only: nothing is allocated, however wide the network
                net = NB201Network(arch, channels or self.channels, layers or self.cells_per_stage,
                                   num_classes or self.num_classes)
            self._params_cache[key] = sum(p.numel() for p in net.parameters())
        return self._params_cache[key]

    def search_task(self, section: dict, data_root, device, seed: int, stage: str = "search"):
        from eps import distributed
        from eps.spaces.nb201.graph import NB201Graph
        from eps.train.graph import GraphSupernetTask, choose_engine
        from eps.train.image import ImageSupernetTask
        net = section["supernet"]
        model = self.build_supernet(net["skip_dead_edges"], net["progressive"], net["new_cell_init"])
        if choose_engine(net["engine"], device, has_graph=True, world=distributed.world()) == "graph":
            return GraphSupernetTask(model, section, stage, data_root, device, seed,
                                     dataset=section["space"]["dataset"], form=NB201Graph)
        return ImageSupernetTask(model, section, stage, data_root, device, seed, dataset=section["space"]["dataset"])

    def benchmark(self, data_root):
        """NAS-Bench-201 ground truth for the space's dataset when the CSV is under the data root (its columns for
        that dataset, ranked by its test column), None when it is absent; a CSV that is present but unreadable,
        truncated, malformed or without a column for the dataset raises DataError rather than silently dropping the
        benchmark."""
        from eps.spaces.nb201.groundtruth import GroundTruth
        bench = GroundTruth.load_if_present(data_root)
        return None if bench is None else bench.for_dataset(self.dataset)

    def retrain_task(self, arch, section: dict, data_root, device, seed: int):
        from eps.train.image import ImageRetrainTask
        network = self._network()
        return ImageRetrainTask(self.build_network(arch, **network), section["retrain"], data_root, device, seed,
                                dataset=section["space"]["dataset"], network=network)
