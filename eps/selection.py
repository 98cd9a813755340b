"""Final selection (spec §1.7, §6 item 4): candidates are the population-wide winners of the snapshots in the last
``window`` iterations, each with its latest winning loss; two rules pick among them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from pydantic import Field

from eps.config import Number, Settings


class SelectSettings(Settings):
    """Final selection (spec §6 item 4): candidates from the last ``window`` iterations; size-prior constants."""
    window: int = Field(10000, ge=1)     # iterations
    alpha: Number = 1.4
    beta: Number = 5.2
    rule: Literal["size_prior", "prior_free"] = "size_prior"


@dataclass
class Candidate:
    arch: str
    loss: float          # latest loss: the loss it had the last time it won a snapshot
    wins: int = 0
    last_iteration: int = 0
    params: int = 0
    score: float = math.nan
    extra: dict = field(default_factory=dict)


def snapshot_winner(snap: dict) -> tuple[str, float] | None:
    """The best measured member of one snapshot (count >= 1, lowest loss; first in queue order on ties)."""
    best = None
    for arch, loss, count in zip(snap["arch"], snap["loss"], snap["count"]):
        if count >= 1 and loss is not None and (best is None or loss < best[1]):
            best = (arch, loss)
    return best


def collect_candidates(snapshots: Iterable[dict], window: int) -> tuple[list[Candidate], int]:
    """Winners of the snapshots with iteration > final - window; returns (candidates, final iteration)."""
    snaps = sorted(snapshots, key=lambda s: s["iteration"])
    if not snaps:
        return [], 0
    final = snaps[-1]["iteration"]
    found: dict[str, Candidate] = {}
    for snap in snaps:
        if snap["iteration"] <= final - window:
            continue
        win = snapshot_winner(snap)
        if win is None:
            continue
        c = found.setdefault(win[0], Candidate(win[0], win[1]))
        c.loss, c.wins, c.last_iteration = win[1], c.wins + 1, snap["iteration"]
    return list(found.values()), final


def choose(candidates: list[Candidate], params_of: Callable[[str], int], max_params: int,
           alpha: float, beta: float) -> dict[str, Candidate]:
    """Both rules: the paper's size prior (arg-min of loss + alpha*exp(-beta*params/max_params), ties towards the
    larger model, then the larger arch string, as the notebook's scan) and the prior-free lowest loss."""
    if not candidates:
        return {}
    for c in candidates:
        c.params = params_of(c.arch)
        c.score = c.loss + alpha * math.exp(-beta * c.params / max_params)
    size_prior = min(candidates, key=lambda c: (c.score, -c.params, _desc(c.arch)))
    prior_free = min(candidates, key=lambda c: (c.loss, -c.params, _desc(c.arch)))
    return {"size_prior": size_prior, "prior_free": prior_free}


def _desc(text: str) -> tuple:
    # Sort key that orders strings descending inside an ascending min().
    return tuple(-ord(ch) for ch in text) + (1,)
