"""The contract between eps's generic core and a search space: typed params, the space, its two tasks, and the
optional capabilities a space may offer.

Architectures are hashable, immutable values (e.g. nested tuples of ints) internal to the space; everything written
to a file or a report goes through ``encode`` (the benchmark's own notation, spec §6 item 2) and comes back through
``decode``.

A space is a class with a ``name``, a ``Params`` settings class (its params section, :class:`SpaceParams`) and the
methods of :class:`SearchSpace`. It is checked when registered (``eps.spaces``); ``examples/chain_space.py`` is a
complete one in about a hundred lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Hashable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn

from eps.config import Settings, section
from eps.retrain import RetrainSettings
from eps.search import SearchSettings, WarmupSettings
from eps.selection import SelectSettings

Arch = Hashable


class SupernetSettings(Settings):
    """Settings of the supernet and its training data shared by warm-up and search (a change reruns the warm-up).
    A space's task subclasses it with what it reads (``eps.train.image.ImageSupernetSettings``)."""


class SpaceSettings(Settings):
    """The space's own settings (``<space>.space``): widths, depths, mutation probabilities."""


class SpaceParams(Settings):
    """One space's params section: ``<name>.space|supernet|warmup|search|select|retrain``.

    A space subclasses this and overrides the sections it extends; sections it leaves alone take the generic
    settings with their paper defaults. Cross-section rules go in ``problems()`` with keys like ``search.bptt``.
    """
    space: SpaceSettings = section(SpaceSettings)
    supernet: SupernetSettings = section(SupernetSettings)
    warmup: WarmupSettings = section(WarmupSettings)
    search: SearchSettings = section(SearchSettings)
    select: SelectSettings = section(SelectSettings)
    retrain: RetrainSettings = section(RetrainSettings)


@runtime_checkable
class SupernetTask(Protocol):
    """Trains and scores one space's supernet; built by ``SearchSpace.search_task``.

    Both methods return device tensors, so the search loop synchronises with the device once per round.
    """
    model: nn.Module
    device: torch.device

    def train_step(self, arch: Arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        """One SGD step along the path ``arch`` on the next training batch; the loss as a 0-d device tensor."""

    def fitness(self, archs: list) -> torch.Tensor:
        """Validation loss of each arch, shape ``(len(archs),)``, on the next fitness batch(es) (spec §6 item 3)."""

    def state_dict(self) -> dict:
        """Everything a resumed run needs: weights, optimiser, data-stream positions."""

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        """Restore ``state_dict()``; ``weights_only`` loads just the supernet weights (warm-up -> search)."""


@runtime_checkable
class RetrainTask(Protocol):
    """Trains one architecture's standalone network from scratch; built by ``SearchSpace.retrain_task``."""
    model: nn.Module
    device: torch.device
    steps_per_epoch: int
    precision: str      # "fp32" or "bf16": what the arithmetic really ran in (reported with the result)

    def train_epoch(self, epoch: int, bar) -> dict:
        """One epoch (0-based ``epoch``); advances ``bar`` per step; returns train metrics (floats)."""

    def evaluate(self) -> dict:
        """Test (and/or validation) metrics after an epoch (floats)."""

    @property
    def network_config(self) -> dict:
        """The keyword arguments with which ``SearchSpace.build_network(arch, **network_config)`` rebuilds ``model``
        exactly (classes, widths, depths, heads, dropouts): plain values only (str, int, float, bool, None, lists,
        dicts). Saved as ``network`` in ``retrain/model.pt``, which ``eps.load_model`` rebuilds from."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class SearchSpace(Protocol):
    name: ClassVar[str]
    Params: ClassVar[type[SpaceParams]]

    @classmethod
    def from_params(cls, section: dict) -> "SearchSpace":
        """The space configured by its validated params section (``params[name]``, a plain dict)."""

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture (the space's own sampling rule)."""

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A mutated copy of ``arch`` (the space's own mutation rule and probabilities)."""

    def encode(self, arch: Arch) -> str:
        """The benchmark notation of ``arch`` (NB201 arch string, DARTS Genotype string)."""

    def decode(self, text: str) -> Arch:
        """Parse ``encode``'s notation; raises ArchError with a one-line reason for anything malformed."""

    def largest(self) -> Arch:
        """The architecture whose standalone network is largest (normalises the size prior, spec §6 item 4)."""

    def build_network(self, arch: Arch, **network: Any) -> nn.Module:
        """The standalone network of ``arch``, freshly initialised, built from ``network`` (a retrain task's
        ``network_config``, as ``retrain/model.pt`` saves it) and not from the space's own settings, so
        ``eps.load_model`` rebuilds a trained network from its file alone. Keys left out take the space's settings
        (``num_params`` and the retrain task call it that way). Raises TypeError for a key it does not know."""

    def num_params(self, arch: Arch, **options: Any) -> int:
        """Parameter count of the standalone network (the space's reporting convention). Options the CLI passes:
        ``num_classes``, ``channels``, ``layers``."""

    def search_task(self, section: dict, data_root: Path, device: torch.device, seed: int,
                    stage: str) -> SupernetTask:
        """The task that trains and scores this space's supernet in ``stage`` (``warmup`` or ``search``): the
        optimiser takes ``section[stage]``'s settings."""

    def retrain_task(self, arch: Arch, section: dict, data_root: Path, device: torch.device,
                     seed: int) -> RetrainTask:
        """The task that trains the standalone network of ``arch`` from scratch."""


# ------------------------------------------------------------------------------------------ optional capabilities

@runtime_checkable
class Benchmark(Protocol):
    """A tabular benchmark's ground truth (e.g. NAS-Bench-201): accuracies by architecture in the space's notation."""
    primary: str        # the column reports rank by (e.g. cifar10_test)

    @property
    def columns(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def has(self, arch: str) -> bool: ...

    def accuracy(self, arch: str, column: str) -> float: ...

    def rank(self, arch: str, column: str) -> int: ...

    def top_fraction_mask(self, archs, column: str, fraction: float) -> np.ndarray: ...


@runtime_checkable
class HasOptimum(Protocol):
    """A benchmark that knows its best cell (``eps report`` draws the optimum beside the search's accuracy)."""

    def best(self, column: str) -> float:
        """The highest value of ``column`` over all cells (percent for accuracies)."""


@runtime_checkable
class HasBenchmark(Protocol):
    """A space whose architectures have known accuracies (reports add them; ``eps study`` needs them)."""

    def benchmark(self, data_root: Path) -> Benchmark | None:
        """The ground truth when its file is under ``data_root``, else None."""


@runtime_checkable
class Drawable(Protocol):
    """A space that can draw an architecture (``eps report`` adds the picture)."""

    def draw(self, arch: Arch, path: Path) -> None: ...


@runtime_checkable
class DescribesInput(Protocol):
    """A retrain task that says what its network takes as input (saved as ``input`` in ``retrain/model.pt``, so a
    user of the trained network can feed it without eps), e.g. for images ``{"kind": "image", "shape": [3, 32, 32],
    "scale": 255, "mean": [...], "std": [...]}``: a uint8 image is divided by ``scale``, then normalised per
    channel."""

    @property
    def input_spec(self) -> dict: ...


@runtime_checkable
class Featurizable(Protocol):
    """A space that encodes an architecture as a fixed-length vector (the predictor variant, spec §1.8)."""

    def features(self, arch: Arch, kind: str = "ordinal") -> np.ndarray:
        """``ordinal``: the architecture's op indices as numbers (the reference); ``one_hot``: one indicator per
        (position, op). Shape (F,), float32, the same F for every arch of the space."""


@runtime_checkable
class ScoringTask(Protocol):
    """A supernet task that scores many archs on the same fixed batches (``eps study correlation``)."""

    def validation_batches(self, n: int, seed: int) -> list: ...

    def score(self, archs: list, batches: list) -> torch.Tensor: ...


@runtime_checkable
class DistributedTask(Protocol):
    """A retrain task that trains data-parallel under ``torchrun`` (every rank builds it; rank 0 writes)."""
    supports_distributed: ClassVar[bool]


def benchmark_of(space, data_root: Path) -> Benchmark | None:
    """The space's ground truth if it has one and its file is present, else None."""
    return space.benchmark(data_root) if isinstance(space, HasBenchmark) else None
