"""The params of a run: run-wide settings, the study's section and one section per registered search space,
assembled from the registry at load time (a space brings its section, with its defaults, just by being registered).

A params file is a partial or full overlay on the defaults; ``load_params`` validates it and reports every problem
at once (``eps.settings``). The top of eps's settings layers: it imports the spaces registry and the study.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from pydantic import Field, ValidationError, create_model, field_validator

from eps.errors import ConfigError
from eps.settings import Settings, deep_update, error_lines, read_yaml, section

class TopParams(Settings):
    """Run-wide settings; one field per registered search space is added by :func:`params_model`."""
    seed: int = Field(0, ge=0, lt=2**63)
    data_root: str | None = None
    device: str = "auto"
    deterministic: bool = False
    spaces: list[str] = Field(default_factory=lambda: ["nb201"])
    # Spaces kept outside eps: `path/to/file.py:Class` or `package.module:Class`, imported before validation.
    plugins: list[str] = Field(default_factory=list)

    def problems(self):
        from eps.spaces import broken
        names = [f.alias for f in type(self).model_fields.values() if f.alias]  # one section per space
        for name in self.spaces:
            if name in broken():
                yield "spaces", f"space {name!r} is unusable: {broken()[name]}"
            elif name not in names:
                yield "spaces", (f"unknown space {name!r} (allowed: {', '.join(names)}; a space of your own is "
                                 f"registered with plugins: [path/to/file.py:Class])")

    @field_validator("device")
    @classmethod
    def _known_device(cls, dev: str) -> str:
        if not (dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev)):
            raise ValueError(f"@device: got {dev!r}, expected auto, cpu, cuda or cuda:N")
        return dev


def params_model(refs: tuple[str, ...] | list[str] = ()) -> type[TopParams]:
    """The params model: ``TopParams``, ``study`` and one section per installed space and per space registered from
    ``refs`` (``file.py:Class`` references)."""
    from eps.spaces import space_classes
    from eps.study import StudySettings
    fields = {"study": (StudySettings, section(StudySettings))}
    for name, cls in space_classes(refs).items():
        fields[name.replace("-", "_")] = (cls.Params, Field(default_factory=cls.Params, alias=name))
    return create_model("Params", __base__=TopParams, **fields)


def defaults() -> dict[str, Any]:
    """Every default, as the plain nested dict ``load_params()`` returns."""
    return params_model()().model_dump(by_alias=True, mode="python")


def load_params(path: str | os.PathLike | None = None, overrides: dict | None = None,
                plugins: Iterable[str] = ()) -> dict:
    """Defaults, overlaid with the YAML file at ``path`` (if any) and then ``overrides``; validated.

    ``plugins`` (and the file's own ``plugins`` list) name spaces kept outside eps; they are registered first, so
    their sections validate like the built-in ones. Returns the full params as a plain nested dict.

    Raises ConfigError listing every problem, one ``key.path: message`` line each.
    """
    from eps.spaces import register_ref
    overlay: Any = read_yaml(path) if path is not None else {}
    if overlay is None:
        overlay = {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"params file {path}: expected a mapping of keys at the top, got {type(overlay).__name__}")
    if overrides:
        overlay = deep_update(overlay, overrides)
    refs = list(plugins)
    file_plugins = overlay.get("plugins", [])
    if isinstance(file_plugins, list):
        refs += [r for r in file_plugins if isinstance(r, str)]
    refs = list(dict.fromkeys(refs))
    cli_refs = set(plugins) - set(file_plugins if isinstance(file_plugins, list) else [])
    for ref in refs:
        register_ref(ref, base=Path(path).resolve().parent if path is not None else None, by_name=ref not in cli_refs)
    model = params_model(refs)
    try:
        params = model.model_validate(overlay)
    except ValidationError as err:
        errors = error_lines(err, model)
        where = f" in {path}" if path else ""
        raise ConfigError(f"{len(errors)} problem(s) with params{where}:\n  " + "\n  ".join(errors)) from None
    return params.model_dump(by_alias=True, mode="python")


def data_root(params: dict) -> Path:
    """Data root: params ``data_root``, else ``EPS_DATA_DIR``, else ``./data``."""
    root = params.get("data_root") or os.environ.get("EPS_DATA_DIR") or "data"
    return Path(root).expanduser()
