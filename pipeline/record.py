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

from eps._version import __version__
from eps import io as eio
from eps.errors import EpsError

# Top-level keys, then keys of the space's section (a dotted key picks one value of a subsection).
STAGE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # the warm-up also reads search.on_nonfinite and the search keys of the space's own task (warmup_search_keys)
    "warmup": (("seed", "deterministic", "plugins"), ("space", "supernet", "warmup", "search.on_nonfinite")),
    "search": (("seed", "deterministic", "plugins"), ("space", "supernet", "search", "warmup.iterations")),
    "select": (("plugins",), ("space", "select", "retrain")),
    "retrain": (("seed", "deterministic", "plugins"), ("space", "retrain")),
}
UPSTREAM = {"search": "warmup", "select": "search", "retrain": "select"}
PARAMS_FILE, RUN_FILE = "params.yaml", "run.json"


def _portable_plugins(refs: list[str]) -> list[str]:
    """Plugin references as records keep them: a ``file.py:Class`` relative to the params file that named it, so a
    plugin project copied elsewhere still matches its run folders (``eps.spaces.portable_ref``)."""
    from eps.spaces import portable_ref
    return [portable_ref(r) for r in refs]


def warmup_search_keys(search_keys) -> list[str]:
    """The search keys the warm-up reads, of a space whose search section has ``search_keys``: ``on_nonfinite`` and
    those the space's own settings add to the search loop's (eps.search.SearchSettings), which its supernet task
    reads while training (e.g. darts-rnn's bptt and clip); the loop's own keys (iterations, population ...) never."""
    from eps.search import SearchSettings
    return ["on_nonfinite", *sorted(k for k in search_keys if k not in SearchSettings.model_fields)]


def stage_params(params: dict, space: str, stage: str) -> dict:
    """The part of ``params`` that ``stage`` of ``space`` reads, nested as in params.yaml (plain YAML values); a key
    that ``params`` lacks (a record written by another version) is None."""
    top, keys = STAGE_KEYS[stage]
    out: dict = {k: params.get(k) for k in top}
    if out.get("plugins"):
        out["plugins"] = _portable_plugins(list(out["plugins"]))
    section: dict = {}
    mine = params.get(space) if isinstance(params.get(space), dict) else {}
    if stage == "warmup" and isinstance(mine.get("search"), dict):
        keys = (*keys, *[f"search.{k}" for k in warmup_search_keys(mine["search"]) if k != "on_nonfinite"])
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

    eio.check_regular(p_file)  # a FIFO or /dev/zero would never finish reading
    try:
        text = p_file.read_text(encoding="utf-8")
        recorded = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise damaged(p_file, f"not valid YAML: {' '.join(str(err).split())[:120]}") from None
    if not r_file.exists():  # written with params.yaml by every eps that writes either: a record half gone
        raise damaged(r_file, "missing, so the stage's outputs cannot be checked")
    try:
        run = eio.read_json(r_file)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise damaged(r_file, f"not valid JSON, truncated or corrupt: {err}") from None
    if isinstance(run, dict) and run.get("params_digest") not in (None, _text_digest(text)):
        raise damaged(p_file, "not the params the stage recorded: edited, truncated or corrupt")
    if not isinstance(recorded, dict):
        raise damaged(p_file, "expected a mapping of params")
    if not isinstance(run, dict):
        raise damaged(r_file, "expected a JSON object")
    if run.get("stage") != folder.name or not isinstance(run.get("eps_version"), str):
        raise damaged(r_file, f"not the record of a {folder.name} stage (its 'stage' and 'eps_version' keys)")
    return recorded, run


def write(folder: Path, params: dict, space: str, stage: str, inputs: dict, **extra) -> None:
    """Write the record of ``stage`` into its staging ``folder``, after every other output: ``run.json`` lists each
    output file with its digest, so a later run can tell the outputs are still the ones the stage wrote."""
    buf = io.StringIO()
    buf.write(f"# The params eps stage {stage} ran with (loadable: eps ... --params {PARAMS_FILE}).\n")
    yaml.safe_dump(run_params(params, space), buf, sort_keys=False, default_flow_style=False, width=120)
    eio.write_text(folder / PARAMS_FILE, buf.getvalue())
    eio.write_json(folder / RUN_FILE, {"stage": stage, "space": space, "eps_version": __version__,
                                       "params_digest": _text_digest(buf.getvalue()), "inputs": inputs,
                                       "outputs": _digests(folder), **extra})


def _text_digest(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digests(folder: Path) -> dict:
    from eps.checkpoint import file_digest
    # timing.json is left out: wall times differ between two runs of the same seed, the record must not
    return {p.relative_to(folder).as_posix(): file_digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (PARAMS_FILE, RUN_FILE, "timing.json")}


def damaged_output(folder: Path, run: dict) -> str | None:
    """The first output of a finished stage that is missing or is not the file the stage wrote (None when all are
    as written; a record of an eps that kept no digests is taken on trust)."""
    from eps.checkpoint import file_digest
    for name, digest in (run.get("outputs") or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if file_digest(path) != digest:
            return f"{path} is not the file the stage wrote (changed or damaged)"
    return None


def changed_input(root: Path, run: dict) -> str | None:
    """The first upstream file a finished stage read that has changed since (None when all are as it read them)."""
    from eps.checkpoint import file_digest
    for name, digest in (run.get("inputs") or {}).items():
        path = root / name
        if digest == "initialisation":  # a search without warm-up (0 iterations): the warm-up file is not its input
            continue
        if "/" in name and path.is_file() and file_digest(path) != digest:
            return f"{path} changed after it was read"
    return None


def check_upstream(root: Path, out: Path, space: str, stage: str, params: dict, cli_space: str) -> None:
    """Refuse (EpsError) to run ``stage`` on an upstream stage that was made with other params than ``params``, or
    whose outputs are no longer the ones it wrote."""
    up = UPSTREAM.get(stage)
    if up is None:
        return
    found = read(root / up)
    if found is None:
        return
    recorded, current = stage_params(found[0], space, up), stage_params(params, space, up)
    if up == "warmup":
        # the search keys the warm-up reads (on_nonfinite, a space's BPTT keys) are the search's own params too;
        # a search with, say, more iterations still starts from the same warm-up
        for side in (recorded, current):
            if isinstance(side.get(space), dict):
                side[space].pop("search", None)
    diff = differences(recorded, current)
    if diff:
        raise EpsError(f"{root / up} was made with other params ({diff}); use the run's own params "
                       f"(--params {root / up / PARAMS_FILE}) or rerun it: eps stage {up} --space {cli_space} "
                       f"--out {out} --redo")
    damage = damaged_output(root / up, found[1])
    if damage:
        raise EpsError(f"{damage}; rerun `eps stage {up} --space {cli_space} --out {out} --params "
                       f"{root / up / PARAMS_FILE}` to restore it (it resumes from its last checkpoint)")


def changed_data(run: dict, data_root: Path | None) -> str | None:
    """The first data file a stage read (``run.json`` ``data``: as ``eps.checkpoint.data_fingerprint`` saw it) that
    differs now under ``data_root`` (None when all are the same)."""
    from eps.checkpoint import file_identity
    if data_root is None:
        return None
    for rel, identity in (run.get("data") or {}).items():
        if file_identity(Path(data_root) / rel) != identity:
            return f"the data file {Path(data_root) / rel} changed since the stage read it"
    return None


def finished(folder: Path, params: dict, space: str, stage: str, inputs: dict, redo: bool, outputs: list[str],
             log=None, checkpoint: Path | None = None, data_root: Path | None = None) -> bool:
    """Whether ``stage`` is up to date in ``folder``: same params, same inputs, and every output present and still
    the file the stage wrote. Raises EpsError when it finished with other params and ``redo`` is not set; False
    means: (re)compute it (a damaged output is recomputed, resuming from the stage's last checkpoint)."""
    if redo:  # replaced whatever the record says, even an unreadable one
        return False
    found = read(folder)
    if found is None or not all((folder / name).exists() for name in outputs):
        return False
    recorded, run = found
    diff = differences(stage_params(recorded, space, stage), stage_params(params, space, stage))
    if diff:
        raise EpsError(f"{folder} was made with other params ({diff}); pass --redo to replace it, or use the run's "
                       f"own params: --params {folder / PARAMS_FILE}")
    if run.get("inputs") != inputs:
        return False
    if changed_data(run, data_root):  # rerun: the checkpoint's identity names the file (one line)
        return False
    damage = damaged_output(folder, run)
    if damage:
        if checkpoint is not None and not checkpoint.exists():
            # no checkpoint to restore from: recomputing could take hours, so only when asked
            raise EpsError(f"{damage}, and {checkpoint.parent} holds no checkpoint to restore it from; restore the "
                           f"file (e.g. `dvc checkout`), or recompute the stage with --redo")
        if log is not None:
            log(f"note: {damage}; restoring the stage's outputs from its last checkpoint")
        return False
    return True


def check_run(root: Path, space: str, out: Path) -> None:
    """EpsError unless the finished stages under ``root`` form one run: each stage's outputs are the files it wrote,
    and each stage was made from its upstream's current outputs."""
    from eps.spaces import cli_name
    for stage in ("warmup", "search", "select", "retrain"):
        found = read(root / stage)
        if found is None:
            continue
        problem = damaged_output(root / stage, found[1]) or changed_input(root, found[1])
        if problem:
            raise EpsError(f"{problem}; rerun `eps stage {stage} --space {cli_name(space)} --out {out} --params "
                           f"{root / stage / PARAMS_FILE}`, then `eps report` again")


def params_for_report(root: Path, space: str, params: dict, explicit: bool) -> dict:
    """The params a report of the run folder ``root`` shows.

    Without ``explicit`` params (no ``--params``): the run's own, each stage's keys from that stage's record (a stage
    DVC did not rerun keeps its own settings; the others come from the latest record); ``params`` when nothing is
    recorded. With ``explicit`` params, every finished stage must have been made with them."""
    from eps.params import load_params
    from eps.errors import ConfigError
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
    merged = dict(finished[-1][1][0])
    for stage, (recorded, _) in finished:
        top, keys = STAGE_KEYS[stage]
        section = dict(merged.get(space) or {})
        for key in keys:
            head = key.partition(".")[0]
            if isinstance(recorded.get(space), dict) and head in recorded[space]:
                section[head] = recorded[space][head]
        merged[space] = section
    # A run folder is data: the plugins its records name are never imported (a shared or downloaded folder could name
    # any code). The spaces come from the user's own params and --space only, as the recorded ones only compared.
    from eps.spaces import origin_ref
    own = origin_ref(space)
    merged["plugins"] = list(dict.fromkeys([*(params.get("plugins") or []), *([own] if own else [])]))
    try:
        shown = load_params(overrides=merged)
    except ConfigError as err:
        first = str(err).splitlines()[-1].strip()
        raise EpsError(f"the params recorded in {root} do not load ({first}); rerun the stage whose params.yaml it "
                       f"names with --redo") from None
    shown.update(device=params["device"], data_root=params["data_root"])
    return shown
