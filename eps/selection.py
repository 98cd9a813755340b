"""Final selection (spec §1.7, §6 item 4): candidates are the population-wide winners of the snapshots in the last
``window`` iterations, each with its latest winning loss; two rules pick among them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from pydantic import Field

from eps.settings import MAX_STEPS, Number, Settings
from eps.errors import EpsError


class SelectSettings(Settings):
    """Final selection (spec §6 item 4): candidates from the last ``window`` iterations; size-prior constants."""
    window: int = Field(10000, ge=1, le=MAX_STEPS)     # iterations
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


RERUN = "rerun `eps stage search` (or re-import the records) to rewrite the history"


def _where(snap, position: int | None) -> str:
    it = snap.get("iteration") if isinstance(snap, dict) else None
    at = f"iteration {it}" if _is_int(it) else "an unknown iteration"
    return f"snapshot history, record {position + 1} ({at})" if position is not None else f"snapshot at {at}"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_snapshot(snap, position: int | None = None) -> dict:
    """``snap`` if it is a well-formed snapshot record, else an EpsError naming the record, its iteration and the
    problem: ``iteration`` an integer >= 0; ``arch`` a list of strings; ``loss`` (numbers, not NaN, or null) and
    ``count`` (integers >= 0) lists of the same length."""
    def bad(problem: str):
        return EpsError(f"{_where(snap, position)}: {problem}; {RERUN}")
    if not isinstance(snap, dict):
        raise bad(f"expected an object with iteration, arch, loss and count, got {_short(snap)}")
    missing = [k for k in ("iteration", "arch", "loss", "count") if k not in snap]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    it, arch, loss, count = snap["iteration"], snap["arch"], snap["loss"], snap["count"]
    if not _is_int(it) or it < 0:
        raise bad(f"'iteration' is {_short(it)}, expected an integer >= 0")
    if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
        raise bad(f"'arch' is {_short(arch)}, expected a list of architecture strings")
    for key, value in (("loss", loss), ("count", count)):
        if not isinstance(value, list) or len(value) != len(arch):
            got = f"a list of {len(value)}" if isinstance(value, list) else _short(value)
            raise bad(f"'{key}' is {got}, expected a list of {len(arch)} (one per member of 'arch')")
    for i, (l, c) in enumerate(zip(loss, count)):
        if not (l is None or (_is_number(l) and math.isfinite(l))):
            raise bad(f"'loss' of member {i} is {_short(l)}, expected a finite number or null")
        if not _is_int(c) or c < 0:
            raise bad(f"'count' of member {i} is {_short(c)}, expected an integer >= 0")
    return snap


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def snapshot_winner(snap: dict) -> tuple[str, float] | None:
    """The best measured member of one snapshot (count >= 1, lowest loss; first in queue order on ties).
    A malformed snapshot raises EpsError (see ``check_snapshot``)."""
    check_snapshot(snap)
    best = None
    for arch, loss, count in zip(snap["arch"], snap["loss"], snap["count"]):
        if count >= 1 and loss is not None and (best is None or loss < best[1]):
            best = (arch, loss)
    return best


def collect_candidates(snapshots: Iterable[dict], window: int) -> tuple[list[Candidate], int]:
    """Winners of the snapshots with iteration > final - window; returns (candidates, final iteration).
    Every record is checked first (``check_snapshot``): a malformed one raises EpsError naming it."""
    checked = [check_snapshot(s, i) for i, s in enumerate(snapshots)]
    for i in range(1, len(checked)):  # a history is written in order; anything else was edited or mixed up
        if checked[i]["iteration"] < checked[i - 1]["iteration"]:
            raise EpsError(f"snapshot history, record {i + 1}: iteration {checked[i]['iteration']} comes after "
                           f"{checked[i - 1]['iteration']}; the history is out of order: rerun `eps stage search` "
                           f"(or re-import the records)")
    snaps = sorted(checked, key=lambda s: s["iteration"])
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
           alpha: float, beta: float, order: Callable[[str], object] | None = None) -> dict[str, Candidate]:
    """Both rules: the paper's size prior (arg-min of loss + alpha*exp(-beta*params/max_params), ties towards the
    larger model) and the prior-free lowest loss (ties likewise).

    Exact ties of (score, params) go to the candidate whose ``order(arch)`` is last in ascending order, as the
    notebook's scan over the list of op indices (spec §6 item 8); ``order`` is the space's ``decode`` (NB201: the
    six op indices). Without it, or when those values do not compare, the arch string decides the same way.
    """
    if not candidates:
        return {}
    for c in candidates:
        c.params = params_of(c.arch)
        c.score = c.loss + alpha * math.exp(-beta * c.params / max_params)
    return {"size_prior": _best(candidates, lambda c: (c.score, -c.params), order),
            "prior_free": _best(candidates, lambda c: (c.loss, -c.params), order)}


def _best(candidates: list[Candidate], key, order) -> Candidate:
    top = min(key(c) for c in candidates)
    tied = [c for c in candidates if key(c) == top]
    if len(tied) > 1 and order is not None:
        try:
            return max(tied, key=lambda c: order(c.arch))
        except TypeError:  # a space whose architectures do not compare
            pass
    return max(tied, key=lambda c: c.arch)
