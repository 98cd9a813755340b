"""Search-space registry.

A space is one module exposing ``DEFAULT_PARAMS`` (its params section, paper values), ``validate(section)`` and
``build(section) -> SearchSpace``. Registering a new space is one line here plus its module.
"""
from __future__ import annotations

import importlib
from typing import Any

from eps.spaces.base import SearchSpace

_MODULES = {
    "nb201": "eps.spaces.nb201",
    "darts-cnn": "eps.spaces.darts_cnn",
    "darts-rnn": "eps.spaces.darts_rnn",
}


def _available() -> tuple[str, ...]:
    names = []
    for name, mod in _MODULES.items():
        if importlib.util.find_spec(mod) is not None:
            names.append(name)
    return tuple(names)


SPACE_NAMES: tuple[str, ...] = _available()


def _module(name: str):
    if name not in SPACE_NAMES:
        from eps.errors import ConfigError
        raise ConfigError(f"unknown search space {name!r}; choose one of {', '.join(SPACE_NAMES)}")
    return importlib.import_module(_MODULES[name])


def space_defaults(name: str) -> dict[str, Any]:
    return _module(name).DEFAULT_PARAMS


def space_validate(name: str, section: dict) -> list[str]:
    return _module(name).validate(section)


def get_space(name: str, section: dict) -> SearchSpace:
    """The space ``name`` configured by its params section (``params[name]``)."""
    return _module(name).build(section)


__all__ = ["SPACE_NAMES", "SearchSpace", "get_space", "space_defaults", "space_validate"]
