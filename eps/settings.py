"""Typed settings: the base class every settings section derives from, the number type, YAML reading and the
one-line error text of a failed validation. The leaf of eps: it imports nothing of eps but its errors.

Each settings class is declared next to the code that reads it (the controller's in ``eps.evolution``, the loops'
in ``eps.search``, selection's in ``eps.selection``, the retrain loop's in ``eps.retrain``, the tasks' in
``eps.train``); a search space's ``Params`` (``eps.space.SpaceParams``) composes them and adds only its own keys.
``eps.params`` assembles the full params model from the registered spaces.

Validation happens before any work starts: unknown keys, wrong types, out-of-range and inconsistent values are
collected and raised together, one problem per line, each naming its key path (``nb201.search.lr: got -1, must be
> 0``).
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from eps.errors import ConfigError


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a user means a number, so numeric text becomes a float."""
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
        return float(value)
    return value


FLOAT32_MAX = 3.4e38
Number = Annotated[float, BeforeValidator(_yaml_number), Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
"""A float setting: accepts ints, floats and numeric text (``1e-3``); never NaN or infinity."""

# Upper bounds of integer settings: values a machine can meet. Beyond them a run does not fail, it runs silently
# until killed (1e23 iterations) or crashes inside torch (channels 10**30: TypeError, 100,000 cells: SystemError);
# each integer field of a params section declares one of these as ``le=`` (tests/test_faults_files.py walks them).
MAX_STEPS = 10**9   # training steps, rounds, epochs, windows, intervals: 1e9 steps of 1 ms each are 11.6 days
MAX_COUNT = 10**6   # things held in memory at once: population members, candidates, cells scored, fitness batches
MAX_BATCH = 10**6   # examples (or sequence columns) per batch
MAX_ITEMS = 10**9   # examples or tokens of a data subset (PTB has 0.9e6 training tokens, CIFAR-10 50,000 images)
MAX_WIDTH = 10**5   # channels / hidden units (the same cap as `eps arch params --channels`)
MAX_DEPTH = 1000    # cells or layers (the same cap as `eps arch params --layers`)
MAX_CLASSES = 10**7  # output classes of a network (ImageNet-21k has 21,841; a language model's vocabulary 10**5-10**6)


class Settings(BaseModel):
    """Base of every settings section: unknown keys, wrong types and non-finite numbers are errors.

    Strict types: ``true`` is not an integer and ``"5"`` is not a number (except numeric YAML text for ``Number``).
    A model-level rule reports a problem with :class:`Problem` so it is attached to the key it concerns.
    """
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True,
                              validate_default=True)

    # Read access by key (``cfg["lr"]``), as for the plain dicts spaces received before eps 0.2: a space written
    # against dicts keeps working on the typed objects eps now passes (CHANGELOG: typed settings).
    def __getitem__(self, key: str) -> Any:
        for name, field in type(self).model_fields.items():
            if key == name or key == field.alias:
                return getattr(self, name)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return any(key == n or key == f.alias for n, f in type(self).model_fields.items())

    def keys(self) -> list[str]:
        return [f.alias or n for n, f in type(self).model_fields.items()]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain nested dict (keys as in the params file)."""
        return self.model_dump(by_alias=True, mode="python")

    def problems(self) -> Iterable[tuple[str, str]]:
        """Cross-key rules of this section: yield ``(key, message)`` pairs; override in subclasses."""
        return ()

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler):
        """Field checks, then ``problems()``. When some keys are bad, the cross-key rules still run on the others
        (the bad ones at their defaults), so one pass reports every problem."""
        try:
            obj = handler(data)
        except ValidationError as err:
            details = [{"type": e["type"], "loc": e["loc"], "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e
                                                                                    else {})}
                       for e in err.errors(include_url=False)]
            if isinstance(data, dict):
                bad = {e["loc"][0] for e in details if e["loc"]}
                try:
                    partial = handler({k: v for k, v in data.items() if k not in bad})
                    found = [(k, m) for k, m in partial.problems() if k.split(".")[0] not in bad]
                except (ValidationError, ValueError):
                    found = []
                if found:
                    details.append({"type": "value_error", "loc": (), "input": data,
                                    "ctx": {"error": ValueError(_problem_text(found))}})
            raise ValidationError.from_exception_data(cls.__name__, details) from None
        found = list(obj.problems())
        if found:
            raise ValueError(_problem_text(found))
        return obj


def _problem_text(found: list[tuple[str, str]]) -> str:
    return "\n".join(f"@{key}: {msg}" for key, msg in found)


def section(cls: type[Settings]):
    """A nested section that defaults to ``cls()`` (all its own defaults)."""
    return Field(default_factory=cls)


# ------------------------------------------------------------------------------------------------ error lines

_MOVED = {  # params keys that changed place; the old key's error says where it went
    "search.label_smoothing": "supernet.label_smoothing", "search.channels_last": "supernet.channels_last",
    "search.amp": "supernet.amp", "search.skip_dead_edges": "supernet.skip_dead_edges",
    "search.data_subset": "supernet.data_subset",
}


def _bound(kind: str, ctx: dict) -> str:
    ops = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    key = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}[kind]
    return f"must be {ops[kind]} {ctx[key]}"


def error_lines(err: ValidationError, model: type[BaseModel]) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = [str(p) for p in e["loc"]]
        path = ".".join(loc) or "<top>"
        kind, inp = e["type"], e.get("input")
        if kind == "value_error" and str(e["msg"]).startswith("Value error, @"):
            for line in str(e["msg"])[len("Value error, "):].splitlines():
                key, _, msg = line[1:].partition(": ")
                parts = loc if loc and loc[-1] == key else [*loc, key]  # a field validator's loc names the key
                lines.append(f"{'.'.join(parts)}: {msg}")
            continue
        if kind == "extra_forbidden":
            tail = ".".join(loc[1:]) if len(loc) > 1 else ""
            if tail in _MOVED and _MOVED[tail].split(".")[1] in _allowed(model, [loc[0], "supernet"]):
                lines.append(f"{path}: moved to {loc[0]}.{_MOVED[tail]} (see the migration notes in CHANGELOG.md)")
            elif tail in _MOVED:
                lines.append(f"{path}: removed, it had no effect in {loc[0]}; delete it (see the migration notes in "
                             f"CHANGELOG.md)")
            else:
                lines.append(f"{path}: unknown key (allowed here: {', '.join(_allowed(model, loc[:-1]))})")
            continue
        if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            want = _bound(kind, e.get("ctx", {}))
        elif kind == "literal_error":
            want = "expected " + str(e.get("ctx", {}).get("expected", "")).replace("'", "")
        elif kind.startswith("int"):
            want = "expected an integer"
        elif kind == "finite_number":
            want = "expected a finite number"
        elif kind.startswith("float"):
            want = "expected a number"
        elif kind.startswith("bool"):
            want = "expected true or false"
        elif kind.startswith("string"):
            want = "expected a string"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            want = "expected a mapping of keys"
        elif kind.startswith("list") or kind == "too_short":
            want = "expected a non-empty list" if kind == "too_short" else "expected a list"
        else:
            want = str(e["msg"])
        lines.append(f"{path}: got {_short(inp)}, {want}")
    return lines


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed(model: type[BaseModel], loc: list[str]) -> list[str]:
    cls = model
    for part in loc:
        field = next((f for n, f in cls.model_fields.items() if (f.alias or n) == part or n == part), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return sorted(f.alias or n for n, f in cls.model_fields.items())


# ------------------------------------------------------------------------------------------------ loading

MAX_PARAMS_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: a params file has no use for them, and nested aliases can expand a small
    file into billions of nodes (the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not allowed in a params file",) from None
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        # YAML lets a later key silently replace an earlier one (a second `nb201:` block would drop the first
        # whole); in a params file that is always a mistake.
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document at ``path``; every unreadable file is a one-line ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"params file {p} not found; pass an existing file with --params")
    if not p.is_file():
        raise ConfigError(f"params file {p} is not a regular file; pass a YAML file with --params")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"params file {p} cannot be read ({err.strerror}); check its permissions") from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise ConfigError(f"params file {p} is {len(raw)} bytes; a params file is at most {MAX_PARAMS_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"params file {p} is not UTF-8 text; save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise ConfigError(f"params file {p} is nested too deeply to be a params file; a params file nests a few "
                          f"levels of sections") from None
    except DuplicateKey as dup:
        raise ConfigError(f"params file {p}: key {dup.key!r} appears twice (lines {dup.first} and {dup.again}); the "
                          f"second would silently replace the first: keep one") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        why = f" ({err})" if "aliases" in str(err) else ""
        raise ConfigError(f"params file {p} is not valid YAML{where}{why}; fix the syntax") from None


def deep_update(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out




def as_settings(cfg: Any, cls: type[Settings]) -> Settings:
    """``cfg`` as a settings object: itself when it is one, else ``cls`` built from the already validated mapping
    (callers that still hold plain dicts, e.g. a space written for eps 0.1)."""
    if isinstance(cfg, Settings):
        return cfg
    return cls.model_construct(**{k: v for k, v in dict(cfg).items()})


def plain(value: Any) -> Any:
    """``value`` with every settings object replaced by its plain dict (for JSON records and checkpoint identities)."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="python")
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
