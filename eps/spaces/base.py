"""The search-space protocol: everything the evolution loop, the trainer and the stages need from a space.

Architectures are hashable, immutable values (nested tuples of ints) internal to the space; everything written to a
file or a report goes through ``encode`` (the benchmark's own notation) and comes back through ``decode``.
"""
from __future__ import annotations

from typing import Any, Hashable, Protocol, runtime_checkable

import numpy as np
import torch.nn as nn

Arch = Hashable


@runtime_checkable
class SearchSpace(Protocol):
    name: str

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture (the space's own sampling rule)."""

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A mutated copy of ``arch`` (the space's own mutation rule and probabilities)."""

    def encode(self, arch: Arch) -> str:
        """The benchmark notation of ``arch`` (NB201 arch string, DARTS Genotype string)."""

    def decode(self, text: str) -> Arch:
        """Parse ``encode``'s notation; raises ArchError with a one-line reason for anything malformed."""

    def largest(self) -> Arch:
        """The architecture whose standalone network is largest (normalises the size prior)."""

    def build_supernet(self) -> nn.Module:
        """The weight-sharing supernet; its forward takes ``(inputs, arch)``."""

    def build_network(self, arch: Arch, **options: Any) -> nn.Module:
        """The standalone network of ``arch`` that retraining trains from scratch."""

    def num_params(self, arch: Arch, **options: Any) -> int:
        """Parameter count of the standalone network (the space's reporting convention)."""

    def search_task(self, params: dict, data_root, device, generator_seed: int):
        """The ``SupernetTask`` that trains and scores this space's supernet (data, loss, optimiser)."""

    def retrain_task(self, arch: Arch, params: dict, data_root, device, seed: int):
        """The ``RetrainTask`` that trains the standalone network of ``arch`` from scratch."""
