"""What a finished stage remembers about how it was made: ``params.yaml`` (the effective params of its space,
loadable with ``--params``) and ``run.json`` (eps version, the digests of the upstream files it read, descriptive strings).

A stage rerun with the same params and inputs is *up to date*: it says so and leaves its outputs (and timings)
alone. A stage whose finished outputs were made with other params is not replaced unless asked (``--redo``), and a
stage whose upstream stage was made with other params than the current ones refuses to run on it: a run folder
is never silently a mix of two settings. ``STAGE_KEYS`` mirror the ``params:`` of each stage in ``dvc.yaml`` (a test
checks it), so the CLI and `dvc repro` agree on what makes a stage stale.
"""
from __future__ import annotations

import io
from pathlib import Path

import yaml

from eps import __version__
from eps import io as eio
from eps.errors import EpsError

# Top-level keys, then keys of the space's section (a dotted key picks one value of a subsection).
STAGE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "warmup": (("seed", "deterministic", "plugins"), ("space", "supernet", "warmup", "search")),
    "search": (("seed", "deterministic", "plugins"), ("space", "supernet", "search", "warmup.iterations")),
    "select": (("plugins",), ("space", "select", "retrain")),
    "retrain": (("seed", "deterministic", "plugins"), ("space", "retrain")),
}
UPSTREAM = {"search": "warmup", "select": "search", "retrain": "select"}
PARAMS_FILE, RUN_FILE = "params.yaml", "run.json"


def _portable_plugins(refs: list[str]) -> list[str]:
    """Plugin references that still resolve from another folder: a ``file.py:Class`` made absolute."""
    from eps.spaces import absolute_ref
    return [absolute_ref(r) for r in refs]


def stage_params(params: dict, space: str, stage: str) -> dict:
    """The part of ``params`` that ``stage`` of ``space`` reads, nested as in params.yaml (plain YAML values); a key
    that ``params`` lacks (a record written by another version) is None."""
    top, keys = STAGE_KEYS[stage]
    out: dict = {k: params.get(k) for k in top}
    if out.get("plugins"):
        out["plugins"] = _portable_plugins(list(out["plugins"]))
    section: dict = {}
    mine = params.get(space) if isinstance(params.get(space), dict) else {}
    for key in keys:
        head, _, leaf = key.partition(".")
        part = mine.get(head)
        if leaf:
            section.setdefault(head, {})[leaf] = part.get(leaf) if isinstance(part, dict) else None
        else:
            section[head] = part
    out[space] = section
    # plain containers, then a YAML round trip, so a comparison with a recorded file sees the same types
    return yaml.safe_load(yaml.safe_dump(_plain(out), sort_keys=False))


def run_params(params: dict, space: str) -> dict:
    """What a stage records: the effective params of its space (every section, so the file reproduces the whole
    run when passed as ``--params``), without the machine's ``device`` and ``data_root``."""
    out = {k: params[k] for k in ("seed", "deterministic")}
    out["plugins"] = _portable_plugins(list(params["plugins"]))
    out["spaces"] = [space]
    out[space] = params[space]
    return yaml.safe_load(yaml.safe_dump(_plain(out), sort_keys=False))


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _flat(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def differences(recorded: dict, current: dict, limit: int = 3) -> str:
    """``key: A there, B here`` for the first keys that differ (empty when none)."""
    a, b = _flat(recorded), _flat(current)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    shown = [f"{k}: {a.get(k, '<absent>')!r} there, {b.get(k, '<absent>')!r} here" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown) + more


def read(folder: Path) -> tuple[dict, dict] | None:
    """(recorded params, run.json) of a finished stage folder; None when it has no record (not finished, or made by
    an eps that kept none). A record that cannot be read is an EpsError naming the file and the stage to rerun."""
    p_file, r_file = folder / PARAMS_FILE, folder / RUN_FILE
    if not p_file.exists():
        return None

    def damaged(path: Path, why: str) -> EpsError:
        from eps.spaces import cli_name
        return EpsError(f"{path} is damaged ({why}); rerun `eps stage {folder.name} --space "
                        f"{cli_name(folder.parent.name)} --out {folder.parent.parent} --redo` to rewrite it")

    try:
        recorded = yaml.safe_load(p_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise damaged(p_file, f"not valid YAML: {' '.join(str(err).split())[:120]}") from None
    try:
        run = eio.read_json(r_file) if r_file.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise damaged(r_file, f"not valid JSON, truncated or corrupt: {err}") from None
    if not isinstance(recorded, dict):
        raise damaged(p_file, "expected a mapping of params")
    if not isinstance(run, dict):
        raise damaged(r_file, "expected a JSON object")
    return recorded, run


def write(folder: Path, params: dict, space: str, stage: str, inputs: dict, **extra) -> None:
    """Write the record of ``stage`` into its staging ``folder``."""
    buf = io.StringIO()
    buf.write(f"# The params eps stage {stage} ran with (loadable: eps ... --params {PARAMS_FILE}).\n")
    yaml.safe_dump(run_params(params, space), buf, sort_keys=False, default_flow_style=False, width=120)
    eio.write_text(folder / PARAMS_FILE, buf.getvalue())
    eio.write_json(folder / RUN_FILE, {"stage": stage, "space": space, "eps_version": __version__,
                                       "inputs": inputs, **extra})


def check_upstream(root: Path, out: Path, space: str, stage: str, params: dict, cli_space: str) -> None:
    """Refuse (EpsError) to run ``stage`` on an upstream stage that was made with other params than ``params``."""
    up = UPSTREAM.get(stage)
    if up is None:
        return
    found = read(root / up)
    if found is None:
        return
    recorded, current = stage_params(found[0], space, up), stage_params(params, space, up)
    if up == "warmup":
        # dvc.yaml makes the warm-up depend on the whole search section (its task reads a few fitness/BPTT keys that
        # differ per space); a search with, say, more iterations still starts from the same warm-up
        for side in (recorded, current):
            if isinstance(side.get(space), dict):
                side[space].pop("search", None)
    diff = differences(recorded, current)
    if diff:
        raise EpsError(f"{root / up} was made with other params ({diff}); use the run's own params "
                       f"(--params {root / up / PARAMS_FILE}) or rerun it: eps stage {up} --space {cli_space} "
                       f"--out {out} --redo")


def finished(folder: Path, params: dict, space: str, stage: str, inputs: dict, redo: bool, outputs: list[str],
             cli_space: str, out: Path) -> bool:
    """Whether ``stage`` is up to date in ``folder`` (same params, same inputs, every output present). Raises
    EpsError when it finished with other params and ``redo`` is not set; False means: (re)compute it."""
    found = read(folder)
    if found is None or redo or not all((folder / name).exists() for name in outputs):
        return False
    recorded, run = found
    diff = differences(stage_params(recorded, space, stage), stage_params(params, space, stage))
    if diff:
        raise EpsError(f"{folder} was made with other params ({diff}); pass --redo to replace it, or use the run's "
                       f"own params: --params {folder / PARAMS_FILE}")
    return run.get("inputs") == inputs


def params_for_report(root: Path, space: str, params: dict, explicit: bool, out: Path) -> dict:
    """The params a report of the run folder ``root`` shows. Without ``explicit`` params (no ``--params``), the params
    the run recorded (its latest finished stage's record: each stage checked its upstream's, so they agree), else
    ``params`` when nothing is recorded. With ``explicit`` params, every finished stage must have been made with them
    (EpsError naming the first that was not)."""
    from eps.config import load_params
    finished = [(stage, found) for stage in ("warmup", "search", "select", "retrain")
                if (found := read(root / stage)) is not None]
    if explicit:
        for stage, (recorded, _) in finished:
            diff = differences(stage_params(recorded, space, stage), stage_params(params, space, stage))
            if diff:
                raise EpsError(f"{root / stage} was made with other params ({diff}); leave out --params to report "
                               f"the run with the params it recorded, or pass the run's: --params "
                               f"{root / stage / PARAMS_FILE}")
        return params
    if not finished:
        return params
    stage = finished[-1][0]
    recorded = load_params(root / stage / PARAMS_FILE)
    recorded.update(device=params["device"], data_root=params["data_root"])
    return recorded
