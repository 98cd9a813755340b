"""Search-space registry.

Spaces come from three places, all checked against the ``eps.space`` contract when registered:

- the built-in spaces below (one package each under ``eps/spaces/``);
- installed packages that declare a Python entry point in the ``eps.spaces`` group
  (``[project.entry-points."eps.spaces"] chain = "my_pkg.space:ChainSpace"``);
- a reference given at run time, ``path/to/file.py:Class`` or ``package.module:Class`` (``--space`` or the
  params file's ``plugins`` list).

A space that fails to import or breaks the contract is set aside with a one-line reason; every other space keeps
working, and only using the broken one is an error. Registration is lazy: a space is imported when its params
section or its class is first needed, and built and checked (its notation round-trips, ``decode`` refuses garbage)
when it is first used, so running one space never builds or checks the others.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import contextlib
import inspect
import os
import re
import sys
from pathlib import Path

from pydantic import ValidationError

from eps.errors import SpaceError

BUILTIN = {
    "nb201": "eps.spaces.nb201.space:NB201Space",
    "darts-cnn": "eps.spaces.darts_cnn.space:DartsCNNSpace",
    "darts-rnn": "eps.spaces.darts_rnn.space:DartsRNNSpace",
}
ENTRY_POINT_GROUP = "eps.spaces"
from eps.space import SPACE_METHODS as REQUIRED  # noqa: E402  (what eps calls on a space: eps/space.py)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

_classes: dict[str, type] = {}
_pending: dict[str, str] = {}    # name -> reference of installed spaces not imported yet (built-ins, entry points)
_checked: set[str] = set()       # spaces whose notation was checked (built from defaults once)
_broken: dict[str, str] = {}
_refs: dict[str, str] = {}       # reference -> registered name
_loaded = False


def check_space(cls, where: str, build: bool = True) -> type:
    """``cls`` if it fulfils the contract (``eps.space.SearchSpace``), else SpaceError naming what is missing.
    ``build``: also build it from its defaults and check its notation (round trip, garbage refused)."""
    from eps.space import SpaceParams
    if not inspect.isclass(cls):
        raise SpaceError(f"{where} is not a class")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpaceError(f"{where}: class attribute `name` must be a lower-case name like 'my-space', got {name!r}")
    if name in ("seed", "data_root", "device", "deterministic", "spaces", "plugins", "study"):
        raise SpaceError(f"{where}: name {name!r} is a top-level params key; choose another")
    missing = [m for m in REQUIRED if not callable(getattr(cls, m, None))]
    if missing:
        raise SpaceError(f"{where} (space {name!r}) lacks {', '.join(missing)}; see eps/space.py SearchSpace")
    params = getattr(cls, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, SpaceParams)):
        raise SpaceError(f"{where} (space {name!r}): `Params` must subclass eps.space.SpaceParams")
    try:
        defaults = params().model_dump()
    except ValidationError as err:
        from eps.settings import error_lines
        raise SpaceError(f"{where} (space {name!r}): its Params defaults do not validate: "
                         f"{'; '.join(error_lines(err, params))}") from None
    except Exception as err:  # a problems() rule that crashes on the defaults is broken too
        raise SpaceError(f"{where} (space {name!r}): its Params defaults do not validate "
                         f"({_exc_line(err)})") from None
    if build:
        _check_notation(cls, name, where, params().model_validate(defaults))
    return cls


def _check_notation(cls, name: str, where: str, defaults: dict) -> None:
    """The space built from its defaults must round-trip a sampled architecture and refuse garbage with ArchError,
    so bad architecture strings always end as one line, never in the space's own code."""
    import numpy as np
    from eps.errors import ArchError
    try:
        space = cls.from_params(defaults)
        arch = space.sample(np.random.default_rng(0))
        if space.decode(space.encode(arch)) != arch:
            raise SpaceError(f"{where} (space {name!r}): decode(encode(arch)) != arch for a sampled arch; "
                             f"the notation must round-trip")
    except SpaceError:
        raise
    except Exception as err:
        raise SpaceError(f"{where} (space {name!r}): building it from its defaults and round-tripping a sampled "
                         f"architecture failed ({_exc_line(err)})") from None
    for garbage in ("certainly not an architecture", ""):
        try:
            space.decode(garbage)
        except ArchError:
            continue
        except Exception as err:
            raise SpaceError(f"{where} (space {name!r}): decode({garbage!r}) raised {type(err).__name__}; it must "
                             f"raise eps.errors.ArchError with a one-line reason") from None
        raise SpaceError(f"{where} (space {name!r}): decode({garbage!r}) accepted it; decode must raise "
                         f"eps.errors.ArchError for anything that is not an architecture")


def _import_ref(ref: str, base: Path | None = None):
    """The object named by ``module:attr`` or ``path/to/file.py:attr``."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise SpaceError(f"space reference {ref!r} must be `path/to/file.py:Class` or `package.module:Class`")
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            if not target.endswith(".py"):
                raise SpaceError(f"space reference {ref!r}: {target} is not a Python file; give "
                                 f"path/to/file.py:Class or package.module:Class")
            path = Path(target).expanduser()
            tried = [path.resolve()]
            if not path.is_absolute() and not path.exists() and base is not None:
                # relative to the params file that names it; a stage's record (runs/<space>/<stage>/params.yaml)
                # keeps the reference relative to the params file the run was made with, usually a folder above
                found = next((d / path for d in (base, *base.parents) if (d / path).is_file()), base / path)
                path = found
                tried.append(path.resolve())
            if not path.is_file():
                raise SpaceError(f"space file {target} not found (from {ref!r}; looked at "
                                 f"{' and '.join(map(str, tried))}); give a path to a .py file")
            mod_name = "eps_plugin_" + re.sub(r"\W", "_", str(path.resolve()))
            module = sys.modules.get(mod_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                try:
                    with plugin_output():
                        spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[mod_name]
                    raise
        else:
            with plugin_output():
                module = importlib.import_module(target)
    except SpaceError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # sys.exit or a BaseException of its own at import is a failed import too
        raise SpaceError(f"plugin {ref!r} failed to import: {_exc_line(err)}; fix the plugin or leave it out of "
                         f"plugins") from None
    if not hasattr(module, attr):
        raise SpaceError(f"space {ref!r}: {target} has no attribute {attr!r}")
    return getattr(module, attr)


_origin: dict[str, str] = {}   # registered name -> the reference it came from


def _exc_line(err: BaseException) -> str:
    """``Type: message`` of an exception raised by a plugin, on one line."""
    try:  # a plugin's exception may not turn into text at all (a __str__ that raises or returns a non-str, a huge int)
        text = " ".join(str(err).split())
    except Exception:
        text = ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def plugin_output():
    """Plugin code's prints go to stderr: eps's stdout carries data (``eps params`` YAML, ``eps arch`` lines)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _add(name_hint: str, ref: str, base: Path | None = None, build: bool = True) -> str:
    """Register the space at ``ref``; a failure is recorded under ``name_hint`` (never under a registered name, so a
    plugin that collides with a space already registered cannot take that space down). ``build=False`` defers
    building and checking its notation to its first use (``space_class``)."""
    try:
        obj = _import_ref(ref, base)
        with plugin_output():
            cls = check_space(obj, ref, build=build)
    except SpaceError as err:
        _broken[name_hint] = str(err)
        return name_hint
    if cls.name in _classes and _classes[cls.name] is not cls:
        _broken[name_hint] = (f"space {ref} is named {cls.name!r} like {_origin[cls.name]}, which is registered "
                              f"first; rename it")
        return name_hint
    _classes[cls.name] = cls
    _origin[cls.name] = ref
    if build:
        _checked.add(cls.name)
    _broken.pop(name_hint, None)
    return cls.name


def _load() -> None:
    """Note the installed spaces (built-ins, entry points) without importing them."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _pending.update(BUILTIN)
    try:
        eps_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution must not take eps down
        eps_points = []
    for ep in eps_points:
        if ep.value not in BUILTIN.values():
            _pending.setdefault(f"{ep.name} (entry point {ep.value})", ep.value)


def _import_pending(only: str | None = None) -> None:
    """Import (without building) the pending installed spaces, or just the one named ``only``."""
    _load()
    for hint, ref in list(_pending.items()):
        if only is not None and hint != only and not hint.startswith(f"{only} ("):
            continue
        del _pending[hint]
        _add(hint, ref, build=False)


_by_name: set[str] = set()     # spaces a params file registers, so its users can name them with --space NAME
_bases: dict[str, Path] = {}   # reference -> the folder a relative file in it is relative to (its params file's)


def register_ref(ref: str, base: Path | None = None, by_name: bool = False) -> str:
    """Register the space at ``ref`` (``file.py:Class`` or ``module:Class``); returns its name. ``by_name``: it
    came from a params file's ``plugins``, so the same params let ``--space NAME`` find it again.
    Raises SpaceError (one line) when it cannot be imported or breaks the contract."""
    _load()
    if ref not in _refs:
        name = _add(ref, ref, base)
        if name in _broken:
            raise SpaceError(_broken.pop(name))
        _refs[ref] = name
        _bases[ref] = (base if base is not None else Path.cwd()).resolve()
    if by_name:
        _by_name.add(_refs[ref])
    return _refs[ref]


def resolve(space: str) -> str:
    """A registered space name for ``space``, which is a name or a reference (registered on the way)."""
    _load()
    if ":" in space:
        return register_ref(space)
    return space


def _is_file_ref(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _module_file(name: str) -> Path | None:
    file = getattr(sys.modules.get(_classes[name].__module__), "__file__", None) if name in _classes else None
    return Path(file).resolve() if file else None


def portable_ref(ref: str) -> str:
    """``ref`` as a record keeps it: a ``file.py:Class`` registered in this process becomes the path of that file
    relative to the folder of the params file that named it (the working directory for ``--space``), so a plugin
    project copied or moved elsewhere still matches its run folders; an absolute ``file.py`` reference (an older
    record) naming a registered file becomes that file's relative form. Never imports anything; module references
    and unknown references are returned as they are."""
    _load()
    target, _, attr = ref.rpartition(":")
    if not _is_file_ref(target):
        return ref
    if ref not in _refs:
        if not Path(target).is_absolute():
            return ref
        same = [r for r, n in _refs.items() if r.rpartition(":")[2] == attr and _module_file(n) is not None
                and _module_file(n) == Path(target).resolve()]
        if not same:
            return ref
        ref = same[0]
    file = _module_file(_refs[ref])
    if file is None:
        return ref
    try:
        rel = os.path.relpath(file, _bases.get(ref, Path.cwd()))
    except ValueError:  # another drive (Windows): no relative path exists
        return f"{file}:{attr}"
    return f"{Path(rel).as_posix()}:{attr}"


def registered_for(ref: str, name: str | None = None) -> str | None:
    """The name of the space registered in this process (built in, installed, or from a reference the process
    registered itself) that a file's ``ref`` (and the space ``name`` it recorded, when it did) refers to, or None.
    Only compares: what a file names is never imported (``eps.load_model``: a model file is data)."""
    _load()
    if ":" not in ref:
        return ref if ref in _classes or any(h == ref or h.startswith(f"{ref} (") for h in _pending) else None
    target, _, attr = ref.rpartition(":")
    for r, n in _refs.items():
        if n not in _classes:
            continue
        if r == ref or portable_ref(r) == ref or (name is not None and n == name):
            return n
        if name is None and getattr(_classes[n], "__name__", None) == attr and _is_file_ref(target) and \
                _module_file(n) is not None and _module_file(n).name == Path(target).name:
            return n
    return None


def plugin_failure(err: BaseException) -> str | None:
    """One line naming the plugin whose own code raised ``err`` (the innermost frame of its traceback in a space
    not built into eps) and the function that failed, or None when no plugin code is on the traceback."""
    # eps's own modules (built-in spaces included) are not plugins; a package plugin's helper modules are
    modules = {cls.__module__: _origin.get(n, n) for n, cls in _classes.items()
               if not (cls.__module__ == "eps" or cls.__module__.startswith("eps."))}
    if not modules:
        return None
    found = None
    tb = err.__traceback__
    while tb is not None:
        mod = tb.tb_frame.f_globals.get("__name__", "")
        ref = modules.get(mod) or next((r for m, r in modules.items() if "." in m and
                                        mod.startswith(m.partition(".")[0] + ".")), None)
        if ref is not None:
            found = (ref, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    if found is None:
        return None
    return (f"plugin {found[0]!r} failed in {found[1]}: {_exc_line(err)}; fix the plugin (EPS_DEBUG=1 shows the "
            f"traceback)")


def origin_ref(name: str) -> str | None:
    """The ``file.py:Class`` / ``module:Class`` reference the space ``name`` was registered from at run time, or None
    for an installed space (built-in or entry point)."""
    ref = _origin.get(name)
    return ref if ref in _refs else None


def cli_name(name: str) -> str:
    """What to pass to ``--space`` for the space ``name``: its name, or the ``file.py:Class`` reference it was
    registered from (a name alone does not find a space kept in a file)."""
    _load()
    ref = _origin.get(name, name)
    return ref if ref in _refs and name not in _by_name else name


def registered() -> tuple[str, ...]:
    """Names of the usable spaces, built-ins first (imports the installed spaces; builds none)."""
    _import_pending()
    return tuple(_classes)


def broken() -> dict[str, str]:
    """Spaces that could not be registered, with the one-line reason."""
    _import_pending()
    return dict(_broken)


def space_classes(refs: tuple[str, ...] | list[str] = ()) -> dict[str, type]:
    """The installed spaces (built-in and entry points) plus those registered from ``refs``; spaces other loads
    registered from references in the same process are left out, so a params file only ever has its own."""
    _import_pending()
    by_ref = set(_refs.values())
    wanted = {_refs.get(r, r) for r in refs}
    return {n: c for n, c in _classes.items() if n not in by_ref or n in wanted}


def space_class(name: str) -> type:
    """The class of the space ``name``, built from its defaults and checked on first use (SpaceError if broken)."""
    _import_pending(only=name)
    if name not in _classes and name not in _broken:
        _import_pending()
    if name in _classes:
        if name not in _checked:
            try:
                with plugin_output():
                    check_space(_classes[name], _origin[name])
            except SpaceError as err:
                del _classes[name]
                _broken[name] = str(err)
                raise SpaceError(f"space {name!r} is unusable: {err}") from None
            _checked.add(name)
        return _classes[name]
    if name in _broken:
        raise SpaceError(f"space {name!r} is unusable: {_broken[name]}")
    raise SpaceError(f"unknown search space {name!r}; choose one of {', '.join(_classes)} "
                     f"or pass path/to/file.py:Class")


def get_space(name: str, section: dict):
    """The space ``name`` configured by its validated params section (``params[name]``)."""
    return space_class(name).from_params(section)


__all__ = ["BUILTIN", "broken", "check_space", "cli_name", "get_space", "plugin_failure", "plugin_output",
           "portable_ref", "register_ref", "registered", "registered_for", "resolve", "space_class", "space_classes"]
