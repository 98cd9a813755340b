"""Checkpoints with a checksum, a params fingerprint and a kept previous copy.

File layout: ``MAGIC`` + 64 hex chars of sha256(payload) + newline + payload, where the payload is a
``torch.save`` of a dict of tensors and plain Python containers, loaded back with ``weights_only=True`` so a
checkpoint can never run code. ``last.pt`` is the newest checkpoint, ``prev.pt`` the one before it; a corrupt
``last.pt`` (a torn write cannot happen thanks to rename, but disks and copies do fail) falls back to ``prev.pt``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from eps import io as eio
from eps.errors import CheckpointError

MAGIC = b"EPSCKPT1"


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (params section plus upstream artifact hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
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


def save(path: str | os.PathLike, state: dict) -> None:
    eio.write_bytes(path, dumps(state))


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; run the upstream stage first") from None
    return loads(data, str(path))


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two nested dicts (for 'made with other params' messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "<root>"]


class CheckpointDir:
    """``last.pt`` + ``prev.pt`` in one folder, tied to a fingerprint of what the run depends on."""

    def __init__(self, directory: str | os.PathLike, identity: dict, log=print):
        self.dir = Path(directory)
        self.identity = identity
        self.key = fingerprint(identity)
        self.log = log

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def prev(self) -> Path:
        return self.dir / "prev.pt"

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = dumps({"identity_key": self.key, "identity": self.identity, "state": state})
        if self.last.exists():
            os.replace(self.last, self.prev)
        eio.write_bytes(self.last, data)

    def load_latest(self, restart: bool = False) -> dict | None:
        """The newest good checkpoint's state, or None to start fresh.

        Raises CheckpointError when checkpoints exist but none is usable, unless ``restart`` is set, so that hours of
        work are never silently thrown away.
        """
        problems = []
        for path in (self.last, self.prev):
            if not path.exists():
                continue
            try:
                ckpt = load(path)
            except CheckpointError as err:
                self.log(f"warning: {err}; trying the previous checkpoint")
                problems.append(str(err))
                continue
            if ckpt.get("identity_key") != self.key:
                changed = diff_keys(ckpt.get("identity", {}), self.identity)
                msg = (f"checkpoint {path} was made with different params or inputs (changed: {', '.join(changed) or '?'}); "
                       f"restore them, or rerun with --restart to discard it")
                if restart:
                    self.log(f"note: {msg}; starting afresh")
                    return None
                raise CheckpointError(msg)
            return ckpt["state"]
        if problems and not restart:
            raise CheckpointError(f"no usable checkpoint in {self.dir} ({problems[-1]}); rerun with --restart to start afresh")
        return None

    def clear(self) -> None:
        for p in (self.last, self.prev):
            p.unlink(missing_ok=True)
