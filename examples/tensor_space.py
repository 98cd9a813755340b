"""A search space on data of its own: residual MLPs on 8x8 noisy glyph images (10 classes, generated here), with a
width (16, 32, 64 or skip) and an activation per block: (1 + 3 * 3)^3 = 1000 architectures. Run it without touching eps:

    eps run --space examples/tensor_space.py:GlyphSpace --params examples/tensor.yaml --out runs-glyph

Everything the tool demands beyond the space (optimiser, fitness, resume, torchrun) comes with eps.train.tensor.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from eps.settings import Number, section
from eps.errors import ArchError
from eps.space import SpaceParams, SpaceSettings
from eps.train.tensor import TensorRetrainSettings, TensorRetrainTask, TensorSupernetSettings, TensorSupernetTask

ACTS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu}
OPTIONS = {"skip": (0, "relu"), **{f"{a}{w}": (w, a) for w in (16, 32, 64) for a in ACTS}}  # (hidden units, act)
NAMES = tuple(OPTIONS)
BLOCKS = 3


class GlyphSettings(SpaceSettings):
    channels: int = Field(32, ge=1)            # width of the residual stream
    p_mutate: Number = Field(0.3, ge=0, le=1)   # each block's choice is redrawn with this probability
    samples: int = Field(2000, ge=40)          # glyph images generated (60% train, 20% valid, 20% test)


class GlyphParams(SpaceParams):
    space: GlyphSettings = section(GlyphSettings)
    supernet: TensorSupernetSettings = section(TensorSupernetSettings)
    retrain: TensorRetrainSettings = section(TensorRetrainSettings)


def glyphs(n: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``n`` images (N, 8, 8) float of 10 random 8x8 glyphs, each shifted by up to a pixel, with 10% of pixels flipped
    and Gaussian noise; split 60/20/20 into train, valid and test. The same ``n`` and ``seed`` give the same data."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(10, 8, 8, generator=g) < 0.4).float()
    y = torch.randint(0, 10, (n,), generator=g)
    dy, dx = torch.randint(-1, 2, (2, n), generator=g)
    rows = (torch.arange(8) - dy[:, None]) % 8                    # (n, 8): a cyclic shift per image
    cols = (torch.arange(8) - dx[:, None]) % 8
    x = protos[y[:, None, None], rows[:, :, None], cols[:, None, :]]
    x = torch.where(torch.rand(n, 8, 8, generator=g) < 0.1, 1 - x, x) + 0.3 * torch.randn(n, 8, 8, generator=g)
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": (x[:a], y[:a]), "valid": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training augmentation on the device: fresh pixel noise, drawn from the stream's generator (resumable)."""
    return x + 0.1 * torch.randn(x.shape, generator=g, device=x.device)


class Block(nn.Module):
    """x + down(act(up(bn(x)))) on the first ``width`` hidden units: the supernet's blocks (64 units) share their
    first units among the widths; a standalone block has exactly its own."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.bn, self.up, self.down = nn.BatchNorm1d(channels), nn.Linear(channels, width), nn.Linear(width, channels)

    def forward(self, x, width: int, act: str):
        h = ACTS[act](F.linear(self.bn(x), self.up.weight[:width], self.up.bias[:width]))
        return x + F.linear(h, self.down.weight[:, :width], self.down.bias)


class GlyphNet(nn.Module):
    """Input (N, 8, 8) -> logits (N, classes). The standalone network of ``arch``; built for the largest arch, it
    is the supernet, whose ``forward(x, path)`` runs one path."""

    def __init__(self, arch, channels: int, num_classes: int = 10):
        super().__init__()
        self.arch = arch
        self.stem, self.head = nn.Linear(64, channels), nn.Linear(channels, num_classes)
        self.blocks = nn.ModuleList(Block(channels, OPTIONS[NAMES[i]][0]) if i else nn.Identity() for i in arch)

    def forward(self, x, path=None):
        x = self.stem(x.flatten(1))
        for block, i in zip(self.blocks, path or self.arch):
            x = block(x, *OPTIONS[NAMES[i]]) if i else x
        return self.head(x)


class GlyphSpace:
    """Architecture: a tuple of 3 indices into ``NAMES``. Notation: the names joined by '-', e.g. relu64-skip-tanh16."""
    name = "glyph"
    Params = GlyphParams

    @classmethod
    def from_params(cls, section) -> "GlyphSpace":
        return cls(section["space"]["channels"], section["space"]["p_mutate"], section["space"]["samples"])

    def __init__(self, channels: int = 32, p_mutate: float = 0.3, samples: int = 2000):
        self.channels, self.p_mutate, self.samples = channels, p_mutate, samples

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(v) for v in rng.integers(0, len(NAMES), BLOCKS))

    def mutate(self, arch, rng: np.random.Generator) -> tuple[int, ...]:
        redraw, fresh = rng.random(BLOCKS) < self.p_mutate, self.sample(rng)
        return tuple(f if r else a for a, r, f in zip(arch, redraw, fresh))

    def encode(self, arch) -> str:
        return "-".join(NAMES[i] for i in arch)

    def decode(self, text: str) -> tuple[int, ...]:
        parts = str(text).strip().split("-")
        if len(parts) != BLOCKS or any(p not in NAMES for p in parts):
            raise ArchError(f"glyph arch {text!r} must be {BLOCKS} of {', '.join(NAMES)} joined by '-', "
                            f"e.g. relu64-skip-tanh16")
        return tuple(NAMES.index(p) for p in parts)

    def largest(self) -> tuple[int, ...]:
        return (NAMES.index("relu64"),) * BLOCKS

    def build_network(self, arch, num_classes: int = 10, channels: int | None = None) -> GlyphNet:
        return GlyphNet(arch, channels or self.channels, num_classes)

    def num_params(self, arch, **network) -> int:
        with torch.device("meta"):  # shapes only
            return sum(p.numel() for p in self.build_network(arch, **network).parameters())

    def search_task(self, section, data_root, device, seed: int, stage: str = "search") -> TensorSupernetTask:
        data = glyphs(self.samples)
        return TensorSupernetTask(self.build_network(self.largest()), section, stage, data["train"], data["valid"],
                                  device, seed, transform=jitter)

    def retrain_task(self, arch, section, data_root, device, seed: int) -> TensorRetrainTask:
        data, network = glyphs(self.samples), {"num_classes": 10, "channels": self.channels}
        return TensorRetrainTask(self.build_network(arch, **network), section["retrain"], data["train"],
                                 data["test"], device, seed, network=network, transform=jitter)
