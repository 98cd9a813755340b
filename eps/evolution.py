"""The EPS controller (spec §1.5): an aging population, a trained group, and mutation of the group's best.

It is space-agnostic: architectures come from ``space.sample`` and ``space.mutate`` and are opaque values here.
``strategy="random"`` turns it into plain RandomNAS at the same budget: training paths are drawn uniformly from the
whole space and the population is refreshed with fresh random cells instead of children, while fitness is measured
exactly as for EPS, so the snapshots and the final selection are comparable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from eps.settings import MAX_BATCH, MAX_COUNT, Number, Settings

if TYPE_CHECKING:
    from eps.space import Arch, SearchSpace


class ControllerSettings(Settings):
    """The EPS controller (spec §1.5, §2.2): population, trained group, parents and fitness bookkeeping."""
    strategy: Literal["eps", "random"] = "eps"
    population: int = Field(256, ge=1, le=MAX_COUNT)
    group: int = Field(64, ge=1, le=MAX_COUNT)  # members trained and measured per round, drawn from the population
    parents: int = Field(4, ge=0, le=MAX_COUNT)           # the group's best, each mutated into children
    children_per_parent: int = Field(1, ge=0, le=MAX_COUNT)
    fitness_momentum: Number = Field(0.0, ge=0, lt=1)  # m in loss <- (1-m) new + m old (spec §6 item 3)
    fitness_members: Literal["group", "trained"] = "group"
    # measurements before a member is ranked by loss (NB201 reference: 2)
    rank_min_count: int = Field(2, ge=1, le=MAX_COUNT)
    first_measurement_offset: Number = 1e-4  # added to a member's first loss (NB201 reference tie-breaker)
    # How children are proposed (spec §1.8): mutation of the group's best (the paper), or the predictor variant:
    # an MLP trained on the measured members picks, parents x children_per_parent times, the best of
    # `predictor_candidates` random architectures (eps/predictor.py).
    proposer: Literal["mutation", "predictor"] = "mutation"
    predictor_candidates: int = Field(256, ge=1, le=MAX_COUNT)
    predictor_steps: int = Field(20, ge=0, le=MAX_COUNT)          # Adam steps per selection
    predictor_batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    predictor_lr: Number = Field(1e-3, gt=0)
    predictor_inputs: Literal["ordinal", "one_hot"] = "ordinal"   # the space's encoding (reference: ordinal)
    predictor_reference_shapes: bool = False        # true: the reference's (B, 1) vs (B,) MSE broadcast (§5 item 13)

    def problems(self):
        if self.group > self.population:
            yield "group", (f"{self.group} is larger than search.population {self.population}; "
                            f"the trained group is drawn from the population")
        if self.parents > self.group:
            yield "parents", f"{self.parents} is larger than search.group {self.group}"
        if self.parents * self.children_per_parent > self.population:
            yield "children_per_parent", "parents x children_per_parent exceeds the population"


@dataclass
class Member:
    uid: int          # birth order, unique within a run
    arch: Arch
    born: int         # round in which the member joined the population
    loss: float = 0.0
    count: int = 0    # number of fitness measurements

    def as_state(self) -> tuple:
        return (self.uid, self.arch, self.born, self.loss, self.count)


class Controller:
    @classmethod
    def from_settings(cls, space: SearchSpace, rng: np.random.Generator, cfg: dict) -> "Controller":
        """A controller configured by a validated ``search`` section (``ControllerSettings`` keys)."""
        return cls(space, rng, population=cfg["population"], group=cfg["group"], parents=cfg["parents"],
                   children_per_parent=cfg["children_per_parent"], strategy=cfg["strategy"],
                   fitness_momentum=cfg["fitness_momentum"], rank_min_count=cfg["rank_min_count"],
                   first_measurement_offset=cfg["first_measurement_offset"], measure=cfg["fitness_members"],
                   predictor=cfg if cfg["proposer"] == "predictor" else None)

    def __init__(self, space: SearchSpace, rng: np.random.Generator, population: int = 256, group: int = 64,
                 parents: int = 4, children_per_parent: int = 1, strategy: str = "eps", fitness_momentum: float = 0.0,
                 rank_min_count: int = 1, first_measurement_offset: float = 0.0, measure: str = "group",
                 predictor: dict | None = None):
        self.space, self.rng = space, rng
        self.population_size, self.group_size = population, group
        self.parents, self.children_per_parent = parents, children_per_parent
        self.strategy, self.momentum = strategy, fitness_momentum
        self.rank_min_count, self.first_offset = rank_min_count, first_measurement_offset
        self.measure = measure
        self.round = 0
        self.next_uid = 0
        self.population: list[Member] = [self._new(space.sample(rng)) for _ in range(population)]
        self.group: list[int] = []   # indices into self.population
        self.trained: set[int] = set()
        self.draw_group()
        self.predictor, self.predictor_cfg = None, predictor
        if predictor is not None and strategy != "random":
            from eps.errors import ConfigError
            from eps.predictor import Featurizable, Predictor
            if not isinstance(space, Featurizable):
                raise ConfigError(f"search.proposer: predictor needs a space with features(arch, kind) (an "
                                  f"eps.space.Featurizable); space {space.name} has none, use proposer: mutation")
            width = len(space.features(space.sample(np.random.default_rng(0)), predictor["predictor_inputs"]))
            self.predictor = Predictor(width, int(rng.integers(2**31)), lr=predictor["predictor_lr"],
                                       steps=predictor["predictor_steps"],
                                       batch_size=predictor["predictor_batch_size"],
                                       reference_shapes=predictor["predictor_reference_shapes"])

    def _new(self, arch: Arch) -> Member:
        m = Member(self.next_uid, arch, self.round)
        self.next_uid += 1
        return m

    def draw_group(self) -> None:
        self.group = [int(i) for i in self.rng.choice(len(self.population), self.group_size, replace=False)]
        self.trained = set()

    def next_train_arch(self) -> Arch:
        """The path for one training step: a uniform draw (with replacement) from the trained group."""
        if self.strategy == "random":
            return self.space.sample(self.rng)
        i = self.group[int(self.rng.integers(len(self.group)))]
        self.trained.add(i)
        return self.population[i].arch

    def to_measure(self) -> list[int]:
        """Population indices scored this round: the whole group (paper) or only those trained in the round."""
        if self.measure == "trained" and self.strategy != "random":
            return [i for i in self.group if i in self.trained]
        return list(self.group)

    def record_fitness(self, indices: list[int], losses: list[float]) -> None:
        for i, loss in zip(indices, losses):
            m = self.population[i]
            if m.count == 0:
                m.loss = loss + self.first_offset
            else:
                m.loss = (1.0 - self.momentum) * loss + self.momentum * m.loss
            m.count += 1

    def ranked_group(self) -> list[int]:
        """Group indices, best first: measured enough -> by loss; the rest keep draw order at the end (stable)."""
        def key(i):
            m = self.population[i]
            return (0, m.loss) if m.count >= self.rank_min_count else (1, 0.0)
        return sorted(self.group, key=key)

    def evolve(self) -> list[Member]:
        """One selection step: children of the group's best join the tail, the oldest leave, a new group is drawn."""
        self.round += 1
        if self.strategy == "random":
            newborn = [self._new(self.space.sample(self.rng))
                       for _ in range(self.parents * self.children_per_parent)]
        elif self.predictor is not None:
            newborn = [self._new(a) for a in self._predicted(self.parents * self.children_per_parent)]
        else:
            newborn = [self._new(self.space.mutate(self.population[i].arch, self.rng))
                       for i in self.ranked_group()[:self.parents] for _ in range(self.children_per_parent)]
        self.population.extend(newborn)
        del self.population[:max(0, len(self.population) - self.population_size)]
        self.draw_group()
        return newborn

    def _predicted(self, n: int) -> list:
        """The predictor variant: fit on the measured members (queue order), then ``n`` times the best-predicted of
        ``predictor_candidates`` fresh random architectures."""
        kind = self.predictor_cfg["predictor_inputs"]
        measured = [m for m in self.population if m.count >= 1]
        self.predictor.fit(np.array([self.space.features(m.arch, kind) for m in measured]).reshape(len(measured), -1),
                           np.array([m.loss for m in measured]))
        chosen = []
        for _ in range(n):
            cands = [self.space.sample(self.rng) for _ in range(self.predictor_cfg["predictor_candidates"])]
            scores = self.predictor.predict(np.array([self.space.features(a, kind) for a in cands]))
            chosen.append(cands[int(np.argmin(scores))])
        return chosen

    def snapshot(self, iteration: int) -> dict:
        """The population in queue order (oldest first), in the notation written to files."""
        enc = self.space.encode
        return {
            "iteration": iteration,
            "arch": [enc(m.arch) for m in self.population],
            "loss": [m.loss if m.count else None for m in self.population],
            "count": [m.count for m in self.population],
            "age": [self.round - m.born for m in self.population],
        }

    def state_dict(self) -> dict:
        state = {"rng": self.rng.bit_generator.state, "round": self.round, "next_uid": self.next_uid,
                 "population": [m.as_state() for m in self.population], "group": list(self.group),
                 "trained": sorted(self.trained)}
        if self.predictor is not None:
            state["predictor"] = self.predictor.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.round, self.next_uid = state["round"], state["next_uid"]
        self.population = [Member(*s) for s in state["population"]]
        self.group, self.trained = list(state["group"]), set(state["trained"])
        if self.predictor is not None:
            self.predictor.load_state_dict(state["predictor"])
