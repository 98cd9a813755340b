"""A complete search space kept outside eps: a chain of 4 layers, each one of 4 operations (4^4 = 256 architectures),
on CIFAR-10. Use it without touching eps:

    eps run --space examples/chain_space.py:ChainSpace --params examples/chain.yaml --out runs-chain

docs/tutorials/own-space.md walks through this file. Everything a space must provide is here; everything
else (the EPS controller, warm-up and search loops, selection, retraining loop, checkpoints, reports, DVC stages)
comes from eps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from pydantic import Field

from eps.settings import Number, section
from eps.errors import ArchError
from eps.space import SpaceParams, SpaceSettings
from eps.train.image import ImageRetrainSettings, ImageRetrainTask, ImageSupernetSettings, ImageSupernetTask

OPS = ("conv_3x3", "conv_1x1", "max_pool_3x3", "skip_connect")
LAYERS = 4


# 1. Settings: only this space's own keys; the generic sections (warmup, search, select) come with their defaults.
class ChainSettings(SpaceSettings):
    channels: int = Field(16, ge=1)            # width of every layer
    p_mutate: Number = Field(0.25, ge=0, le=1)  # each layer's op is redrawn with this probability


class ChainParams(SpaceParams):
    space: ChainSettings = section(ChainSettings)
    supernet: ImageSupernetSettings = section(ImageSupernetSettings)
    retrain: ImageRetrainSettings = section(ImageRetrainSettings)


# 2. Networks: a weight-sharing supernet whose forward takes the path, and the standalone network of one arch.
def make_op(name: str, c: int) -> nn.Module:
    if name == "conv_3x3":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    if name == "conv_1x1":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    return nn.Identity()


class ChainNetwork(nn.Module):
    """Stem (3x3 conv) -> one op per layer -> global average pool -> linear. Input (N, 3, 32, 32) floats."""

    def __init__(self, ops_per_layer, channels: int, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.layers = nn.ModuleList(ops_per_layer)
        self.head = nn.Linear(channels, num_classes)

    def features(self, x, modules):
        x = self.stem(x)
        for m in modules:
            x = m(x)
        return self.head(x.mean((2, 3)))


class ChainSupernet(ChainNetwork):
    """All 4 candidates at every layer; ``forward(x, arch)`` runs one path. Logits (N, classes)."""

    def __init__(self, channels: int, num_classes: int = 10):
        super().__init__([nn.ModuleList(make_op(op, channels) for op in OPS) for _ in range(LAYERS)], channels,
                         num_classes)

    def forward(self, x, arch):
        return self.features(x, [layer[op] for layer, op in zip(self.layers, arch)])


class ChainStandalone(ChainNetwork):
    def __init__(self, arch, channels: int, num_classes: int = 10):
        super().__init__([make_op(OPS[op], channels) for op in arch], channels, num_classes)

    def forward(self, x):
        return self.features(x, self.layers)


# 3. The space: sampling, mutation, notation, the standalone network, sizes and the two tasks.
class ChainSpace:
    """Architecture: a tuple of 4 op indices into ``OPS``. Notation: the op names joined by ``-``."""
    name = "chain"
    Params = ChainParams

    @classmethod
    def from_params(cls, section: dict) -> "ChainSpace":
        return cls(section["space"]["channels"], section["space"]["p_mutate"])

    def __init__(self, channels: int = 16, p_mutate: float = 0.25):
        self.channels, self.p_mutate = channels, p_mutate

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(v) for v in rng.integers(0, len(OPS), size=LAYERS))

    def mutate(self, arch, rng: np.random.Generator) -> tuple[int, ...]:
        redraw = rng.random(LAYERS) < self.p_mutate
        fresh = rng.integers(0, len(OPS), size=LAYERS)
        return tuple(int(f) if r else a for a, r, f in zip(arch, redraw, fresh))

    def encode(self, arch) -> str:
        return "-".join(OPS[op] for op in arch)

    def decode(self, text: str) -> tuple[int, ...]:
        names = str(text).strip().split("-")
        if len(names) != LAYERS or any(n not in OPS for n in names):
            raise ArchError(f"chain arch {text!r} must be {LAYERS} of {', '.join(OPS)} joined by '-', "
                            f"e.g. conv_3x3-conv_1x1-max_pool_3x3-skip_connect")
        return tuple(OPS.index(n) for n in names)

    def largest(self) -> tuple[int, ...]:
        return (OPS.index("conv_3x3"),) * LAYERS

    def build_network(self, arch, num_classes: int = 10, channels: int | None = None) -> ChainStandalone:
        """The standalone network from these keywords alone (what ``retrain/model.pt`` saves as ``network`` and
        ``eps.load_model`` passes back); a keyword left out takes the space's setting."""
        return ChainStandalone(arch, channels or self.channels, num_classes)

    def num_params(self, arch, num_classes: int | None = None, channels: int | None = None,
                   layers: int | None = None) -> int:
        if layers not in (None, LAYERS):
            raise ArchError(f"chain networks have {LAYERS} layers; --layers {layers} is not supported")
        with torch.device("meta"):  # shapes only: counting never allocates
            net = self.build_network(arch, num_classes or 10, channels)
        return sum(p.numel() for p in net.parameters())

    def search_task(self, section: dict, data_root, device, seed: int, stage: str = "search"):
        return ImageSupernetTask(ChainSupernet(self.channels), section, stage, data_root, device, seed)

    def retrain_task(self, arch, section: dict, data_root, device, seed: int):
        # `network` is every keyword the network was built with: the task saves it beside the trained weights
        network = {"num_classes": 10, "channels": self.channels}
        return ImageRetrainTask(self.build_network(arch, **network), section["retrain"], data_root, device, seed,
                                network=network)
