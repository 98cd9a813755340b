"""eps: Evolving the Proxy Search Space, a random-sampling weight-sharing NAS method.

The Python API (``eps.api``), loaded on first use so ``import eps`` stays light (no torch)::

    import eps
    exp = eps.Experiment("nb201", params="params.yaml")
    found = exp.search()
    chosen = exp.select(found)
    trained = exp.retrain(chosen)

``eps.list_spaces()``, ``eps.build_space(name, overrides)``, ``eps.load_params(path, overrides)``,
``eps.load_model(run_dir)``; the result types ``WarmupResult``, ``SearchResult``, ``Selection``, ``Choice``,
``RetrainResult``; ``eps.run_study`` for the supernet-ranking study.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eps._version import __version__

if TYPE_CHECKING:
    from eps.api import (Choice, Experiment, RetrainResult, SearchResult, Selection, WarmupResult, build_space,
                         list_spaces, load_params)
    from eps.study import run_study

_API = {"Choice", "Experiment", "RetrainResult", "SearchResult", "Selection", "WarmupResult", "build_space",
        "list_spaces", "load_params"}


def load_model(path, device="cpu", space=None):
    """The trained network of a run (``runs/nb201``, ``runs/nb201/retrain`` or the ``model.pt`` file itself),
    rebuilt from its model file and returned in eval mode on ``device`` (a ``torch.nn.Module``). ``space``: the
    space of a model trained in a space kept in a file (a name, ``file.py:Class``, a space class or instance), unless
    this process registered it: the file's own reference to code is never imported.
    Raises ``eps.errors.EpsError`` (one line) for a missing, foreign or corrupt file. See ``eps.model_file``."""
    from eps.model_file import load_model as _load  # torch is imported only here: `import eps` stays light
    return _load(path, device, space=space)


def __getattr__(name: str) -> Any:
    if name in _API:
        from eps import api
        return getattr(api, name)
    if name == "run_study":
        from eps.study import run_study
        return run_study
    raise AttributeError(f"module 'eps' has no attribute {name!r}")


__all__ = ["__version__", "load_model", "run_study", *sorted(_API)]
