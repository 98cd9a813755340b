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

from eps.errors import DataError
from eps.settings import MAX_CLASSES, MAX_DEPTH, MAX_WIDTH, Settings, section
from eps.retrain import RetrainSettings
from eps.search import SearchSettings, WarmupSettings
from eps.selection import SelectSettings
from eps.predictor import Featurizable  # noqa: F401  (a capability of spaces, declared where the predictor reads it)

Arch = Hashable

# Upper bounds on the sizes of a standalone network that a machine can build (the params' width and depth settings,
# ``eps arch params`` options and the network a model file rebuilds share them, eps.settings): wider or deeper ones
# would allocate hundreds of GB, or take minutes just to construct, before anything could check them. A space
# declares which of its ``build_network`` keywords they bound in ``network_bounds`` (keyword -> (min, max)).
MAX_CHANNELS, MAX_LAYERS = MAX_WIDTH, MAX_DEPTH


@runtime_checkable
class ProgressBar(Protocol):
    """What a retrain task's ``train_epoch`` receives to report progress (``eps.progress.progress_bar`` yields one:
    a rich bar on a terminal, a line every 30 s elsewhere, nothing under torchrun's other ranks)."""

    def advance(self, n: int = 1, info: str = "") -> None:
        """``n`` more steps done; ``info`` (optional) replaces the bar's short status text (e.g. "loss 1.234")."""


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

    Optional: ``supports_distributed: ClassVar[bool] = True`` declares that the task splits its work across the
    ranks of ``torchrun`` (``eps.distributed``); without it eps refuses to run the task under torchrun, since every
    rank would compute the same whole run. A task that reads data files names them with ``eps.data.note_read`` so
    they join the checkpoint identity.
    """
    model: nn.Module
    device: torch.device

    def train_step(self, arch: Arch, lr: float, skip_nonfinite: bool = False) -> torch.Tensor:
        """One SGD step along the path ``arch`` on the next training batch (the optimiser built from the stage's
        ``batch_size``, ``momentum``, ``weight_decay``); the loss (nats) as a 0-d device tensor. With
        ``skip_nonfinite`` a non-finite loss skips the update (and is still returned)."""

    def fitness(self, archs: list) -> torch.Tensor:
        """Validation loss (nats) of each arch, shape ``(len(archs),)``, on the next fitness batch(es) (spec §6
        item 3); lower is fitter."""

    def state_dict(self) -> dict:
        """Everything a resumed run needs: weights, optimiser, data-stream positions. Tensors and plain Python
        values only (the checkpoint loader is ``torch.load(weights_only=True)``; checked at the first save)."""

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        """Restore ``state_dict()``; ``weights_only`` loads just the supernet weights (warm-up -> search)."""


@runtime_checkable
class RetrainTask(Protocol):
    """Trains one architecture's standalone network from scratch; built by ``SearchSpace.retrain_task``."""
    model: nn.Module
    device: torch.device
    steps_per_epoch: int
    precision: str      # "fp32" or "bf16": what the arithmetic really ran in (reported with the result)

    def train_epoch(self, epoch: int, bar: ProgressBar) -> dict:
        """One epoch (0-based ``epoch``) of ``steps_per_epoch`` steps; calls ``bar.advance(n)`` as steps finish
        (``steps_per_epoch`` in all); returns train metrics as floats (``train_loss`` in nats, ``train_acc`` in
        percent, ...)."""

    def evaluate(self) -> dict:
        """Test (and/or validation) metrics after an epoch, floats with a ``test_``/``valid_`` prefix (accuracies in
        percent, losses in nats, perplexities as numbers)."""

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
        (``num_params`` and the retrain task call it that way). Raises TypeError for a key it does not know.

        Optional: a class attribute ``network_bounds`` (keyword -> ``(min, max)`` whole numbers, e.g.
        ``{"channels": (1, MAX_CHANNELS)}``) bounds the sizes ``eps.load_model`` accepts from a file before it
        builds anything."""

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
    """A tabular benchmark's ground truth (e.g. NAS-Bench-201): accuracies by architecture in the space's notation.

    Accuracies are percent (0-100), higher is better; ranks count from 1 = the best cell of the whole table.
    """
    primary: str        # the column reports rank by (e.g. cifar10_test)
    # Optional (``benchmark_of`` reads them with getattr, so older benchmarks keep working):
    # ``size``: how many architectures the complete table holds (NAS-Bench-201: 15,625). A table with fewer rows is
    # refused: its ranks and top fractions would count only the rows it holds ("rank 2 of 10000") with no word.
    # ``source``: where the table was read from; ``remedy``: how to get the complete table (both for messages).

    @property
    def columns(self) -> list[str]:
        """The accuracy columns (e.g. ``cifar10_valid``, ``cifar10_test``)."""

    @property
    def archs(self) -> list[str]:
        """Every architecture of the table, in the space's notation (``eps study`` draws its cells from them)."""

    def __len__(self) -> int:
        """The number of architectures in the table."""

    def has(self, arch: str) -> bool:
        """Whether ``arch`` is in the table."""

    def accuracy(self, arch: str, column: str) -> float:
        """Accuracy of ``arch`` in ``column``, percent."""

    def column(self, column: str) -> np.ndarray:
        """``column`` for every arch of ``archs``, in that order: float array of shape ``(len(self),)``, percent."""

    def rank(self, arch: str, column: str) -> int:
        """Rank of ``arch`` by ``column`` over the whole table, 1 = best."""

    def top_fraction_mask(self, archs, column: str, fraction: float) -> np.ndarray:
        """Bool array of shape ``(len(archs),)``: which of ``archs`` are in the table's best ``fraction`` (0-1) by
        ``column``."""


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
class ScoringTask(Protocol):
    """A supernet task that scores many archs on the same fixed batches (``eps study correlation``)."""

    def validation_batches(self, n: int, seed: int) -> list:
        """``n`` validation batches drawn with ``seed``, the same for every cell scored on them."""

    def score(self, archs: list, batches: list) -> torch.Tensor:
        """Mean loss (nats) of each arch over ``batches``, shape ``(len(archs),)``; lower is better."""

    def describe_scoring(self, n_batches: int) -> str:
        """How a cell is scored, for the study's captions (e.g. "label-smoothed cross-entropy (nats) on 4 batches
        of 250 validation images per cell")."""


@runtime_checkable
class DistributedTask(Protocol):
    """A task (supernet or retrain) that splits its work across the ranks of ``torchrun`` (every rank builds it;
    rank 0 writes)."""
    supports_distributed: ClassVar[bool]


# Generic settings that a task, not eps, carries out: eps's loops never read them. A task lists in ``honours`` (a
# ClassVar of "stage.key" strings) the ones it implements; setting another one away from its default is refused when
# the task is built, so no setting is accepted and silently ignored.
TASK_SETTINGS = {
    "warmup": ("batch_size", "momentum", "weight_decay"),
    "search": ("batch_size", "momentum", "weight_decay", "fitness_batch_size", "fitness_batches", "fitness_shared"),
    "retrain": ("batch_size", "lr", "weight_decay"),
}
ALL_TASK_SETTINGS = frozenset(f"{stage}.{key}" for stage, keys in TASK_SETTINGS.items() for key in keys)


def unhonoured(task, section: SpaceParams, stages: tuple[str, ...]) -> list[str]:
    """The task-implemented settings of ``stages`` that ``section`` sets away from their defaults although ``task``
    does not list them in its ``honours``."""
    honours = getattr(task, "honours", frozenset())
    found = []
    for stage in stages:
        cfg = getattr(section, stage)
        default = type(cfg)()
        found += [f"{stage}.{k}" for k in TASK_SETTINGS[stage]
                  if f"{stage}.{k}" not in honours and k in type(cfg).model_fields and cfg[k] != default[k]]
    return found


def check_members(obj, members: tuple[str, ...], what: str) -> None:
    """SpaceError naming the members of the contract ``obj`` lacks (``what``: e.g. "the search task of space x")."""
    from eps.errors import SpaceError
    missing = [m for m in members if not hasattr(obj, m)]
    if missing:
        raise SpaceError(f"{what} ({type(obj).__name__}) lacks {', '.join(missing)}; see eps/space.py")


def supports_distributed(task) -> bool:
    """Whether ``task`` declares that it runs data parallel under torchrun."""
    return bool(getattr(task, "supports_distributed", False))


# What eps calls on a space, a task and a benchmark: checked when a space is registered (eps.spaces.check_space).
SPACE_METHODS = ("from_params", "sample", "mutate", "encode", "decode", "largest", "build_network", "num_params",
                 "search_task", "retrain_task")
SUPERNET_TASK_METHODS = ("train_step", "fitness", "state_dict", "load_state_dict")
RETRAIN_TASK_METHODS = ("train_epoch", "evaluate", "state_dict", "load_state_dict")
RETRAIN_TASK_ATTRIBUTES = ("model", "device", "steps_per_epoch", "precision", "network_config")
BENCHMARK_MEMBERS = ("primary", "columns", "archs", "__len__", "has", "accuracy", "column", "rank",
                     "top_fraction_mask")


def benchmark_of(space, data_root: Path) -> Benchmark | None:
    """The space's ground truth if it has one and its file is present, else None (SpaceError when the object it
    returns lacks part of the ``Benchmark`` contract)."""
    bench = space.benchmark(data_root) if isinstance(space, HasBenchmark) else None
    if bench is not None:
        check_members(bench, BENCHMARK_MEMBERS, f"the benchmark of space {space.name}")
        check_complete(bench, space.name)
    return bench


def check_complete(bench, space_name: str) -> None:
    """DataError when ``bench`` declares its ``size`` and holds fewer (or more) architectures: a partial table would
    rank a cell among the rows it holds, not among the space's cells, and every output ranking by it would be wrong
    without a word (a copy cut short, a hand-made subset). Refused rather than flagged: no documented use reads a
    partial table through a run, and eps's own tests build small tables through the space, not the runs."""
    size = getattr(bench, "size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return
    n = len(bench)
    if n != size:
        source = getattr(bench, "source", "") or f"the benchmark of space {space_name}"
        remedy = getattr(bench, "remedy", "") or "replace it with the complete table"
        raise DataError(f"{source} holds {n:,} of the {size:,} architectures of space {space_name}, so ranks and top "
                        f"fractions would count only its rows; {remedy}")
