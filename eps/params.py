"""The params of a run: run-wide settings, the study's section and one section per registered search space,
assembled from the registry at load time (a space brings its section, with its defaults, just by being registered).

A params file is a partial or full overlay on the defaults; ``load_params`` validates it and reports every problem
at once (``eps.settings``). The top of eps's settings layers: it imports the spaces registry and the study.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

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
    # The eps version a DVC pipeline was written for (`eps dvc init`): its stages depend on this key instead of
    # eps's source files, and refuse to run under another version (check_version), so an upgrade is a param change.
    eps_version: str | None = None

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


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_sets(sets: Iterable[str]) -> dict:
    """``key=value`` strings, as DVC's ``-S`` takes them, as a nested overlay dict: dotted keys name nested keys
    (``nb201.search.iterations=2000`` -> ``{"nb201": {"search": {"iterations": 2000}}}``), values are parsed as YAML
    (``1e-3`` a number, ``true`` a bool, ``null`` None, ``[0,1]`` a list, anything else a string); a later one wins.

    Raises ConfigError (one line) for a string without ``=`` or with an empty key. The keys themselves are checked
    when the overlay is validated (``load_params``: an unknown key names the closest valid one)."""
    import yaml
    out: dict = {}
    for text in sets:
        key, eq, raw = str(text).partition("=")
        key = key.strip()
        parts = key.split(".")
        if not eq or not key or not all(parts):
            raise ConfigError(f"-S {text!r}: expected key=value with a dotted key, e.g. "
                              f"-S nb201.search.iterations=2000")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # as DVC: what YAML cannot read is a string
        except RecursionError:
            raise ConfigError(f"-S {key}=...: the value is nested too deeply to be a param; give a number, a "
                              f"string or a short list") from None
        if isinstance(value, str) and _FLOAT.fullmatch(value):
            value = float(value)  # YAML 1.2 (DVC's -S) reads 1e-3 as a number; PyYAML (YAML 1.1) needs 1.0e-3
        out = deep_update(out, _nest(parts, value))
    return out


def _nest(parts: list[str], value: Any) -> dict:
    for part in reversed(parts):
        value = {part: value}
    return value


def _key_paths(data: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a nested dict (inner nodes too)."""
    if not isinstance(data, dict):
        return []
    paths = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths += [path, *_key_paths(value, path)]
    return paths


def _closest(lines: list[str], model: type[TopParams], overlay: dict) -> list[str]:
    """Unknown-key lines with the closest valid key path added (``...; did you mean nb201.search.iterations?``).

    An unknown top-level mapping is a space's section under another name, or a space's keys without the space's
    prefix (``-S search.iterations=3``): the suggestions name the sections of the spaces in use, closest first,
    rather than the closest top-level key (``myspace`` is nearest to ``spaces``, which is no section)."""
    known = _key_paths(model().model_dump(by_alias=True, mode="python"))
    spaces = overlay.get("spaces", TopParams.model_fields["spaces"].get_default(call_default_factory=True))
    sections = [f.alias for f in model.model_fields.values() if f.alias]
    in_use = [n for n in spaces if n in sections] if isinstance(spaces, list) else []
    out = []
    for line in lines:
        path, _, msg = line.partition(": ")
        value = overlay.get(path) if "." not in path else None
        if msg.startswith("unknown key") and "." in path and path in overlay:  # {"nb201.search.lr": 1} in a mapping
            head, *rest = path.split(".")
            msg = (f"a dotted key in a mapping; nest it ({head}: {{{': {'.join(rest)}: VALUE{'}' * len(rest)}) "
                   f"or give it as '{path}=VALUE' (-S, or the list form of overrides)")
        elif msg.startswith("unknown key") and isinstance(value, dict) and in_use:
            msg = msg.replace("unknown key", f"unknown key; {_section_hint(path, value, in_use, known)}", 1)
        elif msg.startswith("unknown key"):
            parent = path.rpartition(".")[0]
            siblings = [k for k in known if k.rpartition(".")[0] == parent]
            match = difflib.get_close_matches(path, siblings, n=1, cutoff=0.6) or \
                difflib.get_close_matches(path, known, n=1, cutoff=0.75)
            if match:
                msg = msg.replace("unknown key", f"unknown key; did you mean {match[0]}?", 1)
        out.append(f"{path}: {msg}")
    return out


def _section_hint(key: str, value: dict, in_use: list[str], known: list[str]) -> str:
    """What an unknown top-level mapping ``key`` was meant to be: a space's keys without its prefix, ``study``
    misspelt, or a space's section under another name than the space's registered one."""
    prefixed = []
    for n in in_use:
        if f"{n}.{key}" in known:
            deeper = [f"{n}.{key}.{p}" for p in _key_paths(value) if f"{n}.{key}.{p}" in known]
            prefixed.append(max(deeper, key=lambda p: p.count("."), default=f"{n}.{key}"))
    if prefixed:
        return f"did you mean {' or '.join(prefixed)}?"
    if difflib.get_close_matches(key, ["study"], n=1, cutoff=0.75):
        return "did you mean study?"
    ranked = sorted(in_use, key=lambda n: -difflib.SequenceMatcher(None, key, n).ratio())
    return (f"a space's section is named by the space's registered name; the sections of the spaces in use, closest "
            f"first: {', '.join(ranked)}")


def load_params(path: str | os.PathLike | None = None, overrides: Mapping | Iterable[str] | None = None,
                plugins: Iterable[str] = ()) -> dict:
    """Defaults, overlaid with the YAML file at ``path`` (if any) and then ``overrides``; validated.

    ``overrides``: a nested dict (``{"nb201": {"search": {"iterations": 2000}}}``) or ``key=value`` strings as DVC's
    ``-S`` takes them (``["nb201.search.iterations=2000"]``, see :func:`parse_sets`). ``plugins`` (and the file's own
    ``plugins`` list) name spaces kept outside eps; they are registered first, so their sections validate like the
    built-in ones. Returns the full params as a plain nested dict.

    Raises ConfigError listing every problem, one ``key.path: message`` line each; an unknown key names the closest
    valid one.
    """
    try:
        return _load(path, overrides, plugins)
    except RecursionError:  # a document YAML could read, nested deeper than the validation can walk
        where = f"params file {path}" if path is not None else "the params overrides"
        raise ConfigError(f"{where} is nested too deeply to be params; params nest a few levels of sections") from None


def _load(path, overrides, plugins) -> dict:
    from eps.spaces import register_ref
    if overrides is not None and not isinstance(overrides, Mapping):
        if isinstance(overrides, (str, bytes)):
            overrides = [overrides]
        overrides = parse_sets(overrides)
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
        errors = _closest(error_lines(err, model), model, overlay)
        where = f" in {path}" if path else ""
        raise ConfigError(f"{len(errors)} problem(s) with params{where}:\n  " + "\n  ".join(errors)) from None
    return params.model_dump(by_alias=True, mode="python")


def check_version(params: dict) -> None:
    """Raises ConfigError (one line) when params pin an ``eps_version`` other than the installed one."""
    from eps._version import __version__
    pinned = params.get("eps_version")
    if pinned is not None and str(pinned) != __version__:
        raise ConfigError(f"eps_version: the params were written for eps {pinned}, eps {__version__} is installed; "
                          f"set eps_version: {__version__} in params.yaml (DVC then reruns the stages, as the code "
                          f"changed) or install eps=={pinned}")


def data_root(params: dict) -> Path:
    """Data root: params ``data_root``, else ``EPS_DATA_DIR``, else ``./data``."""
    root = params.get("data_root") or os.environ.get("EPS_DATA_DIR") or "data"
    return Path(root).expanduser()
