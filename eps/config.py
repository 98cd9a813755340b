"""Params: defaults (the paper's values), YAML overlay, and validation that reports every problem at once.

A params file is a partial or full overlay on the defaults. Each search space contributes the defaults of its own
section (``<space>.space|warmup|search|select|retrain``) through ``DEFAULT_PARAMS`` in its module, so adding a space
adds its params without touching this file. Validation happens before any work starts: unknown keys, wrong types and
out-of-range or inconsistent values are collected and raised together as one ConfigError, one problem per line.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eps.errors import ConfigError


@dataclass(frozen=True)
class Nullable:
    """A default of None whose non-null values must have type ``kind``."""
    kind: type
    default: Any = None


class Choice(str):
    """A string default whose allowed values are listed: ``Choice("eps", ("eps", "random"))``."""

    def __new__(cls, value: str, allowed: tuple[str, ...]):
        obj = super().__new__(cls, value)
        obj.allowed = allowed
        return obj


# Settings of the space-agnostic EPS controller and loop (spec §2.2) and of the final selection, the same paper values
# in every space: a space's ``search`` section is ``{**SEARCH_LOOP_DEFAULTS, <its own keys>}``, ``select`` this dict.
SEARCH_LOOP_DEFAULTS: dict[str, Any] = {
    "strategy": Choice("eps", ("eps", "random")),
    "iterations": 80000,
    "val_interval": 50,
    "population": 256,
    "group": 64,
    "parents": 4,
    "children_per_parent": 1,
    "fitness_batches": 1,
    "fitness_shared": False,  # true: all members of a call are scored on the same batches
    "fitness_momentum": 0.0,
    "fitness_members": Choice("group", ("group", "trained")),
    "on_nonfinite": Choice("stop", ("stop", "skip")),
    "checkpoint_every": 20,  # rounds
}
SELECT_DEFAULTS: dict[str, Any] = {
    "window": 10000,
    "alpha": 1.4,
    "beta": 5.2,
    "rule": Choice("size_prior", ("size_prior", "prior_free")),
}

TOP_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data_root": Nullable(str),
    "device": "auto",
    "deterministic": False,
    "spaces": ["nb201"],
    # `eps study correlation` (eps/study.py): a RandomNAS and an EPS supernet trained side by side, each scoring cells
    # against the benchmark's ground truth. The space's own sections give every other setting (supernet, controller,
    # optimiser); `iterations` replaces search.iterations for both supernets. See eps/study.py for the budget.
    "study": {
        "seeds": [0],
        "iterations": 3000,
        "n_uniform": 100,
        "n_top": 100,
        "top_fraction": 0.2,
        "column": "cifar10_test",
        "fitness_batches": 4,
        "tau_every": 10,
        "tau_cells": 32,
    },
}

# Keys every space's search section has; the evolution loop reads them, so their rules live here.
SEARCH_RULES = [
    ("iterations", lambda v: v >= 0, "must be >= 0"),
    ("val_interval", lambda v: v >= 1, "must be >= 1"),
    ("population", lambda v: v >= 1, "must be >= 1"),
    ("group", lambda v: v >= 1, "must be >= 1"),
    ("parents", lambda v: v >= 0, "must be >= 0"),
    ("children_per_parent", lambda v: v >= 0, "must be >= 0"),
    ("checkpoint_every", lambda v: v >= 1, "must be >= 1"),
    ("lr", lambda v: v > 0, "must be > 0"),
    ("weight_decay", lambda v: v >= 0, "must be >= 0"),
    ("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("batch_size", lambda v: v >= 1, "must be >= 1"),
]


def _plain_default(v: Any) -> Any:
    if isinstance(v, Nullable):
        return v.default
    if isinstance(v, Choice):
        return str(v)
    if isinstance(v, dict):
        return {k: _plain_default(x) for k, x in v.items()}
    return copy.deepcopy(v)


def schema() -> dict[str, Any]:
    from eps.spaces import SPACE_NAMES, space_defaults
    full = dict(TOP_DEFAULTS)
    for name in SPACE_NAMES:
        full[name] = space_defaults(name)
    return full


def defaults() -> dict[str, Any]:
    return _plain_default(schema())


def _type_ok(value: Any, default: Any) -> tuple[bool, str]:
    if isinstance(default, Nullable):
        if value is None:
            return True, ""
        return _type_ok(value, default.kind())
    if isinstance(default, Choice):
        return (isinstance(value, str) and value in default.allowed), f"one of {', '.join(default.allowed)}"
    if isinstance(default, bool):
        return isinstance(value, bool), "true or false"
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if isinstance(default, str):
        return isinstance(value, str), "a string"
    if isinstance(default, list):
        return isinstance(value, list), "a list"
    return True, ""


def _merge(schema_node: dict, overlay: Any, path: str, errors: list[str]) -> dict:
    out = _plain_default(schema_node)
    if overlay is None:
        return out
    if not isinstance(overlay, dict):
        errors.append(f"{path or '<top>'}: expected a mapping, got {type(overlay).__name__}")
        return out
    for key, value in overlay.items():
        kpath = f"{path}.{key}" if path else str(key)
        if key not in schema_node:
            allowed = ", ".join(sorted(map(str, schema_node)))
            errors.append(f"{kpath}: unknown key (allowed here: {allowed})")
            continue
        default = schema_node[key]
        if isinstance(default, dict):
            out[key] = _merge(default, value, kpath, errors)
            continue
        ok, want = _type_ok(value, default)
        if not ok:
            errors.append(f"{kpath}: got {value!r}, expected {want}")
            continue
        out[key] = float(value) if isinstance(default, float) and not isinstance(value, bool) else value
    return out


def validate(params: dict) -> list[str]:
    """Range and consistency checks beyond types; returns problems as 'key.path: message' lines."""
    from eps.spaces import SPACE_NAMES, space_validate
    errors = []
    for name in params["spaces"]:
        if name not in SPACE_NAMES:
            errors.append(f"spaces: unknown space {name!r} (allowed: {', '.join(SPACE_NAMES)})")
    dev = params["device"]
    if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
        errors.append(f"device: got {dev!r}, expected auto, cpu, cuda or cuda:N")
    for name in SPACE_NAMES:
        section = params[name]
        for stage in ("warmup", "search"):
            for key, ok, msg in SEARCH_RULES:
                if key in section[stage] and not ok(section[stage][key]):
                    errors.append(f"{name}.{stage}.{key}: got {section[stage][key]!r}, {msg}")
        s = section["search"]
        if s["group"] > s["population"]:
            errors.append(f"{name}.search.group: {s['group']} is larger than search.population {s['population']}; "
                          f"the trained group is drawn from the population")
        if s["parents"] > s["group"]:
            errors.append(f"{name}.search.parents: {s['parents']} is larger than search.group {s['group']}")
        if s["parents"] * s["children_per_parent"] > s["population"]:
            errors.append(f"{name}.search: parents x children_per_parent exceeds the population")
        errors += [f"{name}.{e}" for e in space_validate(name, section)]
    errors += _validate_study(params["study"])
    return errors


def _validate_study(st: dict) -> list[str]:
    errors = []
    seeds = st["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        errors.append(f"study.seeds: got {seeds!r}, expected a non-empty list of integers >= 0")
    elif len(set(seeds)) != len(seeds):
        errors.append(f"study.seeds: got {seeds!r}, every seed must appear once")
    for key, low in (("iterations", 1), ("n_uniform", 2), ("n_top", 2), ("fitness_batches", 1), ("tau_cells", 2),
                     ("tau_every", 0)):
        if st[key] < low:
            errors.append(f"study.{key}: got {st[key]!r}, must be >= {low}")
    if not 0 < st["top_fraction"] <= 1:
        errors.append(f"study.top_fraction: got {st['top_fraction']!r}, must be in (0, 1]")
    return errors


def load_params(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """Defaults, overlaid with the YAML file at ``path`` (if any) and then ``overrides``; validated."""
    overlay: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"params file {p} not found; pass an existing file with --params")
        try:
            overlay = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"params file {p} is not valid YAML{where}; fix the syntax") from None
    errors: list[str] = []
    params = _merge(schema(), overlay, "", errors)
    if overrides:
        params = _merge(schema(), deep_update(params, overrides), "", errors)
    if not errors:
        errors = validate(params)
    if errors:
        where = f" in {path}" if path else ""
        raise ConfigError(f"{len(errors)} problem(s) with params{where}:\n  " + "\n  ".join(errors))
    return params


def deep_update(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def data_root(params: dict) -> Path:
    """Data root: params ``data_root``, else ``EPS_DATA_DIR``, else ``./data``."""
    root = params.get("data_root") or os.environ.get("EPS_DATA_DIR") or "data"
    return Path(root).expanduser()
