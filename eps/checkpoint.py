"""Checkpoints with a checksum, a params fingerprint and a kept previous copy.

File layout: ``MAGIC`` + 64 hex chars of sha256(payload) + newline + payload, where the payload is a
``torch.save`` of a dict of tensors and plain Python containers, loaded back with ``weights_only=True`` so a
checkpoint can never run code. ``last.pt`` is the newest checkpoint, ``prev.pt`` the one before it; a corrupt
``last.pt`` (a torn write cannot happen thanks to rename, but disks and copies do fail) falls back to ``prev.pt``.
A checkpoint that loads but lacks what the run needs (keys, tensor shapes: ``template``), or that does not belong
to the files beside it (``check``, e.g. the snapshot history), is treated like a corrupt one; and a bad
``last.pt`` is never rotated over a good ``prev.pt``.

``data_fingerprint`` records the data files a task opens, so the identity of a run covers its inputs too.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from eps import io as eio
from eps.errors import CheckpointError, SpaceError

MAGIC = b"EPSCKPT1"


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (params section plus upstream artifact hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    eio.check_regular(path)  # /dev/zero would be hashed forever
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def dumps(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def loads(data: bytes, name: str = "checkpoint") -> dict:
    header = len(MAGIC) + 65
    if len(data) < header or not data.startswith(MAGIC):
        raise CheckpointError(f"{name} is not an eps checkpoint (bad header); delete it or rerun with --restart")
    digest, payload = data[len(MAGIC):header - 1], data[header:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(f"{name} is corrupt (checksum mismatch, {len(data)} bytes); delete it or rerun with --restart")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # a payload with a valid checksum but unloadable content
        raise CheckpointError(f"{name} cannot be loaded ({type(err).__name__}); delete it or rerun with --restart") from None


def check_round_trip(data: bytes, state: dict) -> None:
    """Refuse a state that ``loads`` (``torch.load(weights_only=True)``) cannot read back, naming the first value at
    fault, so a task whose ``state_dict`` holds e.g. a ``numpy.float64`` fails at its first checkpoint instead of at
    the resume hours later. Raises SpaceError (the task's ``state_dict`` is the space author's code)."""
    try:
        loads(data)
    except CheckpointError:
        where, kind = _unloadable(state, "state")
        raise SpaceError(f"checkpoint {where} is a {kind}, which the checkpoint loader (torch.load weights_only) "
                         f"refuses; a task's state_dict must hold tensors and plain Python values (int, float, str, "
                         f"bool, None, lists, tuples, dicts)") from None


def _unloadable(value: Any, where: str) -> tuple[str, str]:
    """The key path and type name of the first value in ``value`` that does not round-trip through ``loads``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                return f"{where} key {k!r}", type(k).__module__ + "." + type(k).__qualname__
            found = _unloadable(v, f"{where}.{k}" if isinstance(k, str) else f"{where}[{k}]")
            if found[0]:
                return found
        return "", ""
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _unloadable(v, f"{where}[{i}]")
            if found[0]:
                return found
        return "", ""
    try:
        loads(dumps({"v": value}))
    except CheckpointError:
        return where, type(value).__module__ + "." + type(value).__qualname__
    return "", ""


def save(path: str | os.PathLike, state: dict) -> None:
    eio.write_bytes(path, dumps(state))


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    # not a regular file: unusable like a corrupt one (a CheckpointDir then falls back to prev.pt)
    eio.check_regular(path, CheckpointError, "delete it or rerun with --restart")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; run the upstream stage first") from None
    return loads(data, str(path))


# Files at most this large are identified by a digest of their content; larger ones by size and modification time.
DIGEST_LIMIT = 16 << 20
@contextlib.contextmanager
def data_fingerprint(root: str | os.PathLike) -> Iterator[dict]:
    """Collect the data files under ``root`` that the block reads (noted by the loaders through
    ``eps.data.files.note_read``) and fill the yielded dict with ``{path relative to root: identity}``: ``sha256:...``
    of files up to ``DIGEST_LIMIT``, ``size ... mtime ...`` of larger ones. Part of a checkpoint's identity, so a
    resume after the data changed (a new split file, another dataset copy) is refused with the file named."""
    from eps.data.files import recording
    base = os.path.abspath(root)
    found: dict = {}
    with recording() as seen:
        yield found
    for p in dict.fromkeys(os.path.abspath(x) for x in seen):
        rel = os.path.relpath(p, base)
        if rel.startswith(os.pardir) or rel in found or not os.path.isfile(p):
            continue
        found[rel] = file_identity(p)


def file_identity(path: str | os.PathLike) -> str | None:
    """How ``data_fingerprint`` identifies a data file (None when it is not a file)."""
    if not os.path.isfile(path):
        return None
    st = os.stat(path)
    return f"sha256:{file_digest(path)}" if st.st_size <= DIGEST_LIMIT else f"size {st.st_size} mtime {st.st_mtime_ns}"


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two nested dicts (for 'made with other params' messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "<root>"]


def missing_keys(template: Any, value: Any, prefix: str = "") -> list[str]:
    """Key paths that ``template`` has and ``value`` lacks (dicts, recursively), plus floating-point tensors whose
    shape differs. Lists and other values are not compared; an empty dict or None in ``template`` accepts anything
    of its kind."""
    if isinstance(template, dict):
        if not isinstance(value, dict):
            return [prefix or "<root>"]
        out = []
        for k, v in template.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out += missing_keys(v, value[k], path) if k in value else [path]
        return out
    if isinstance(template, torch.Tensor) and template.is_floating_point():
        if not isinstance(value, torch.Tensor) or value.shape != template.shape:
            return [f"{prefix} (shape)"]
    return []


class CheckpointDir:
    """``last.pt`` + ``prev.pt`` in one folder, tied to a fingerprint of what the run depends on.

    ``template`` (optional): a state whose key structure every usable checkpoint state must contain (see
    ``missing_keys``); ``load_latest`` also takes one, and a ``check(state)`` returning a problem or None.
    """

    def __init__(self, directory: str | os.PathLike | None, identity: dict, log=print, template: dict | None = None):
        # None: a run without a run folder (the Python API's in-memory runs): nothing is written or resumed, but the
        # first state saved is still checked to round-trip, so a task whose state cannot be resumed fails at once.
        self.dir = Path(directory) if directory is not None else None
        self.identity = identity
        self.key = fingerprint(identity)
        self.log = log
        self.template = template
        self._last_ok: bool | None = None  # whether last.pt is a good checkpoint (None: not known yet)
        self._checked = False               # whether a saved state was shown to round-trip through the loader

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def prev(self) -> Path:
        return self.dir / "prev.pt"

    def save(self, state: dict) -> None:
        data = dumps({"identity_key": self.key, "identity": self.identity, "state": state})
        if not self._checked:
            check_round_trip(data, state)
            self._checked = True
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.last.is_dir() and not self.last.is_symlink():
            self.last.rmdir()  # an empty folder in its place (load_latest refused a non-empty one) blocks the rename
        if self.last.exists():
            if self._last_ok is None:
                self._last_ok = self._problem(self.last) is None
            if self._last_ok:
                os.replace(self.last, self.prev)
            else:  # keep the good prev.pt: the bad last.pt is simply overwritten
                self.log(f"note: replacing the unusable {self.last}; {self.prev} is kept")
        self._last_ok = False  # until the new file is in place
        eio.write_bytes(self.last, data)
        self._last_ok = True

    def _problem(self, path: Path) -> str | None:
        """Why the checkpoint at ``path`` is bad (None when it loads and has the template's keys)."""
        try:
            ckpt = load(path)
        except CheckpointError as err:
            return str(err)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state"), dict):
            return f"{path} is not a checkpoint of a run (no state)"
        return self._check_state(path, ckpt["state"], self.template, None)

    def load_latest(self, restart: bool = False, template: dict | None = None,
                    check: Callable[[dict], str | None] | None = None) -> dict | None:
        """The newest good checkpoint's state, or None to start fresh.

        A checkpoint is good when it loads (checksum), matches this run's identity, has the keys of ``template``
        (default: the one given at construction) and passes ``check(state)`` (a problem as a string, or None).
        Raises CheckpointError when checkpoints exist but none is usable, unless ``restart`` is set, so that hours of
        work are never silently thrown away.
        """
        if self.dir is None:
            return None
        template = self.template if template is None else template
        if self.last.is_dir() and not self.last.is_symlink() and any(self.last.iterdir()):
            # refused before any work: the first save could not replace it, and eps does not delete a user's files
            raise CheckpointError(f"{self.last} is a folder of files, not a checkpoint; move it out of {self.dir} and "
                                  f"run the same command again")
        problems = []
        for path in (self.last, self.prev):
            if not path.exists():
                continue
            try:
                ckpt = load(path)
            except CheckpointError as err:
                ckpt, why = None, str(err)
            else:
                why = None
                if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state"), dict):
                    why = f"{path} is not a checkpoint of a run (no state)"
            if why is None and ckpt.get("identity_key") != self.key:
                changed = diff_keys(ckpt.get("identity", {}), self.identity)
                what = f"checkpoint {path} was made with different params or inputs (changed: {', '.join(changed) or '?'})"
                if restart:
                    self.log(f"note: {what}; starting afresh (--restart)")
                    return None
                raise CheckpointError(f"{what}; restore them, or rerun with --restart to discard it")
            if why is None:
                why = self._check_state(path, ckpt["state"], template, check)
            if why is not None:
                if path == self.last:
                    self._last_ok = False
                problems.append(why)
                continue
            if path == self.last:
                self._last_ok = True
            else:
                for why in problems:
                    self.log(f"warning: {why}; using the previous checkpoint {path}")
            return ckpt["state"]
        if problems and not restart:
            raise CheckpointError(f"no usable checkpoint in {self.dir} ({'; '.join(problems)}); "
                                  f"rerun with --restart to start afresh")
        if problems:
            self.log(f"note: no usable checkpoint in {self.dir} ({'; '.join(problems)}); starting afresh (--restart)")
        return None

    @staticmethod
    def _check_state(path: Path, state: dict, template, check) -> str | None:
        if template is not None:
            missing = missing_keys(template, state)
            if missing:
                shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
                return f"{path} lacks {shown} (incomplete, or from another version of eps)"
        if check is not None:
            try:
                why = check(state)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                why = f"it cannot be checked ({type(err).__name__}: {err})"
            if why:
                return f"{path} does not fit this run: {why}"
        return None

    def clear(self) -> None:
        if self.dir is None:
            return
        for p in (self.last, self.prev):
            p.unlink(missing_ok=True)
        self._last_ok = None
