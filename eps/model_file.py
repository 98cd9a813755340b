"""The trained network as a plain PyTorch file (``<space>/retrain/model.pt``) and ``load_model``, which rebuilds it.

Unlike a checkpoint (``eps.checkpoint``: a checksum header before the pickle), ``model.pt`` is a plain
``torch.save`` of one dict of tensors and plain values, so ``torch.load(path, weights_only=True)`` reads it without
eps. Its keys:

``format``          ``"eps-model/1"``
``space``           the space's registered name (``"nb201"``); for a space kept outside eps, the reference it was
                    registered from (``path/to/file.py:Class`` or ``package.module:Class``): only compared with the
                    spaces registered where it is loaded, never imported
``space_name``      the space's registered name (older files lack it)
``arch``            the architecture in the space's notation (``space.encode``)
``network``         the keyword arguments of the space's ``build_network(arch, **network)`` that rebuild the
                    standalone network exactly (classes, widths, depths, auxiliary head, dropouts)
``space_settings``  the space's settings section (``<space>.space``) of the run: the space is built from it, since
                    a setting may decide which architectures decode (darts-cnn's ``variant``)
``state_dict``      the trained weights: contiguous CPU tensors
``weights_sha256``  sha256 (hex) over the state_dict's names, dtypes, shapes and bytes in name order; its first 16
                    characters equal ``eps.distributed.state_digest`` of the same weights
``eps_version``     the eps that wrote the file

``load_model`` needs nothing but the file (no params file, no data) for a built-in or installed space, and the
space itself (registered, or passed as ``space=``) for one kept in a file: it builds the space from
``space_settings`` over the space's defaults, decodes ``arch``, checks ``network`` against the space's bounds and the
weights' shapes, calls ``build_network(arch, **network)`` and loads the weights strictly. No code the file names runs.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from eps import io as eio
from eps.io import plain_values  # noqa: F401  (re-exported: its home before eps 0.2)
from eps.errors import EpsError, SpaceError

FORMAT = "eps-model/1"
FILE_NAME = "model.pt"
KEYS = ("format", "space", "arch", "network", "space_settings", "state_dict", "weights_sha256", "eps_version")


# ------------------------------------------------------------------------------------------------ writing

def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (64 hex characters) over a state dict's names, dtypes, shapes and bytes in name order, independent of
    device and memory format. Fed like ``eps.distributed.state_digest``, so its first 16 characters equal that."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def space_reference(name: str) -> str:
    """What finds the space ``name`` again in another process: the name of a built-in or installed space, else the
    reference it was registered from (a relative file path that does not resolve from here becomes absolute)."""
    from eps import spaces
    spaces._load()
    # The registry keeps where each space came from; a name alone finds only built-in and entry-point spaces.
    ref = spaces._origin.get(name)
    if ref is None or ref not in spaces._refs:
        return name
    target, _, attr = ref.rpartition(":")
    if (target.endswith(".py") or "/" in target or "\\" in target) and not Path(target).expanduser().is_file():
        ref = f"{Path(inspect.getfile(spaces._classes[name])).resolve()}:{attr}"
    return ref


def _cpu_weights(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise SpaceError(f"state_dict entry {name!r} is a {type(t).__name__}; a model file holds tensors only")
        t = t.detach().cpu().contiguous()
        # torch.save writes a tensor's whole storage: a view into a larger one is copied out first.
        out[name] = t.clone() if t.untyped_storage().nbytes() != t.nbytes else t
    return out


def save_model(path: str | Path, *, space: str, arch: str, network: Mapping[str, Any],
               state_dict: Mapping[str, torch.Tensor], space_settings: Mapping[str, Any] | None = None,
               input_spec: Mapping[str, Any] | None = None) -> dict:
    """Write ``path`` (atomically) as a plain ``torch.save`` of the model dict described in the module docstring;
    returns that dict. ``space``: the registered space name; ``arch``: the architecture string (``encode``);
    ``network``: the retrain task's ``network_config``; ``space_settings``: the params section's ``space``;
    ``input_spec``: what the network takes (``eps.space.DescribesInput``), saved as ``input`` when given."""
    from eps._version import __version__
    weights = _cpu_weights(state_dict)
    # Settings go through JSON so that every value is plain, and load validates them in pydantic's JSON mode.
    settings = json.loads(json.dumps(dict(space_settings or {}), default=str))
    record = {"format": FORMAT, "space": space_reference(space), "space_name": space, "arch": str(arch),
              "network": plain_values(dict(network), "network"), "space_settings": settings,
              "state_dict": weights, "weights_sha256": weights_digest(weights), "eps_version": __version__}
    if input_spec is not None:
        record["input"] = plain_values(dict(input_spec), "input")
    buf = io.BytesIO()
    torch.save(record, buf)
    eio.write_bytes(path, buf.getvalue())
    return record


# ------------------------------------------------------------------------------------------------ reading

def model_path(path: str | Path) -> Path:
    """The model file ``path`` names: the file itself, ``<dir>/model.pt``, ``<dir>/retrain/model.pt`` (a space's run
    folder), or the only ``<dir>/*/retrain/model.pt`` (an output root with one space). Raises EpsError otherwise."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise EpsError(f"{p} does not exist; pass a run folder (e.g. runs/nb201), its retrain folder or a "
                       f"{FILE_NAME} file")
    for candidate in (p / FILE_NAME, p / "retrain" / FILE_NAME):
        if candidate.is_file():
            return candidate
    found = sorted(p.glob(f"*/retrain/{FILE_NAME}"))
    if len(found) == 1:
        return found[0]
    if found:
        raise EpsError(f"{p} holds the models of {len(found)} spaces ({', '.join(f.parent.parent.name for f in found)}"
                       f"); pass one space's folder, e.g. {found[0].parent.parent}")
    raise EpsError(f"no {FILE_NAME} in {p} (looked for {FILE_NAME}, retrain/{FILE_NAME} and */retrain/{FILE_NAME}); "
                   f"run `eps stage retrain` first or pass the file itself")


def _refuse_checkpoint(file: Path) -> None:
    from eps.checkpoint import MAGIC
    try:
        with open(file, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as err:
        raise EpsError(f"{file} cannot be read ({err.strerror}); check its permissions") from None
    if head != MAGIC:
        return
    if file.name == FILE_NAME:
        raise EpsError(f"{file} is in the checkpoint format an older eps wrote, not a model file; rerun `eps stage "
                       f"retrain` for that run (same params and --out) to write it in the model format")
    raise EpsError(f"{file} is an eps training checkpoint, not a model file; pass <space>/retrain/{FILE_NAME}")


def read_model(path: str | Path) -> dict:
    """The model dict of ``path`` (a ``model.pt`` file or a folder, as ``model_path``), loaded with
    ``weights_only=True`` on the CPU, its format, keys and ``weights_sha256`` checked. Raises EpsError (one line)
    for a missing file, a file that is not an eps model file, or changed weights."""
    file = model_path(path)
    _refuse_checkpoint(file)
    try:
        record = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn zip, a bad CRC, a pickle of other objects: all "not a model file"
        raise EpsError(f"{file} is corrupt or not an eps model file (torch.load failed: {type(err).__name__}); "
                       f"rerun `eps stage retrain` to write it again") from None
    if not isinstance(record, dict) or not isinstance(record.get("format"), str):
        raise EpsError(f"{file} is not an eps model file (no `format` key); pass the {FILE_NAME} that "
                       f"`eps stage retrain` writes")
    if record["format"] != FORMAT:
        hint = "upgrade eps to read it" if record["format"].startswith("eps-model/") else \
            f"pass the {FILE_NAME} that `eps stage retrain` writes"
        raise EpsError(f"{file} has format {record['format']!r}, this eps reads {FORMAT!r}; {hint}")
    missing = [k for k in KEYS if k not in record]
    bad = [k for k, kind in (("space", str), ("arch", str), ("network", dict), ("space_settings", dict),
                             ("state_dict", dict), ("weights_sha256", str)) if k in record and
           not isinstance(record[k], kind)]
    if not bad and not missing and not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in record["state_dict"].items()):
        bad = ["state_dict"]
    if missing or bad:
        what = f"lacks {', '.join(missing)}" if missing else f"has a malformed {', '.join(bad)}"
        raise EpsError(f"{file} {what}; it is damaged or not written by eps: rerun `eps stage retrain` to write it "
                       f"again")
    if weights_digest(record["state_dict"]) != record["weights_sha256"]:
        raise EpsError(f"{file} is corrupt: its weights do not match their weights_sha256 (changed after eps wrote "
                       f"them); restore the file or rerun `eps stage retrain` to write it again")
    return record


def _check_device(device) -> torch.device:
    """``device`` as a torch.device this machine has; EpsError (one line) for a string torch does not know or a
    device that is not here."""
    if not isinstance(device, (str, torch.device)):
        raise EpsError(f"device must be a str or torch.device such as 'cpu' or 'cuda:0', got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise EpsError(f"device {str(device)[:60]!r} is not a device torch knows; pass 'cpu', 'cuda', 'cuda:N' or "
                       f"'mps'") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise EpsError(f"device {str(device)!r}: this machine has no usable CUDA device; pass device='cpu'")
        if dev.index is not None and dev.index >= count:
            raise EpsError(f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                           f"cuda:{count - 1}; pass one of them or device='cpu'")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EpsError(f"device {str(device)!r}: MPS is not available on this machine; pass device='cpu'")
    elif dev.type == "meta":
        raise EpsError("device 'meta' holds no weights; pass 'cpu' or a GPU")
    elif dev.type == "cpu" and dev.index not in (None, 0):
        raise EpsError(f"device {str(device)!r}: the CPU is one device, 'cpu'; pass device='cpu'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        # torch names more device types (xla, hpu, vulkan, privateuseone ...) than a build supports; eps's networks
        # are tested on these three, and the others fail inside torch with errors that name no fix
        raise EpsError(f"device {str(device)!r} is not one eps loads models onto; pass 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return dev


def _given_space(space) -> type:
    """The class of ``load_model``'s ``space=`` argument: a registered name, a ``file.py:Class`` / ``module:Class``
    reference (the caller's own choice, registered here), a space class or a space instance."""
    import inspect as _inspect

    from eps.spaces import check_space, resolve, space_class
    if isinstance(space, str):
        return space_class(resolve(space))
    cls = space if _inspect.isclass(space) else type(space)
    return check_space(cls, f"space={getattr(cls, '__qualname__', cls)!r}", build=False)


def _space_of(record: dict, file: Path, space=None):
    """The space instance the model was trained in, configured by the saved space settings over the space's
    defaults. Its class is ``space`` when the caller passes one, else a space built into eps, installed, or
    registered in this process that the file's ``space`` entry names: the file's reference is compared with those,
    never imported (a model file is data; running code it names would run whatever a shared file says)."""
    from pydantic import ValidationError

    from eps.settings import error_lines
    from eps.spaces import registered_for, space_class
    ref = record["space"]
    recorded_name = record.get("space_name") if isinstance(record.get("space_name"), str) else None
    if space is not None:
        cls = _given_space(space)
        trained_in = recorded_name or (ref if ":" not in ref else None)
        if trained_in is not None and cls.name != trained_in:
            raise SpaceError(f"{file} was trained in space {trained_in!r}, not in {cls.name!r} (space=); pass "
                             f"that space") from None
    else:
        name = registered_for(ref, recorded_name)
        if name is None:
            fix = ("register the space in this process (eps.spaces.register_ref('path/to/file.py:Class')) or pass "
                   "load_model(..., space=...)") if ":" in ref else \
                "install the package that provides it, or pass load_model(..., space=...)"
            raise SpaceError(f"{file} was trained in space {ref!r}, which is not built in or registered here; a "
                             f"model file never imports the code it names: {fix}")
        cls = space_class(name)
    try:
        section = cls.Params.model_validate_json(json.dumps({"space": record["space_settings"]}))
    except ValidationError as err:
        raise EpsError(f"{file}: the settings of space {ref!r} it was trained with do not validate in this eps "
                       f"({'; '.join(error_lines(err, cls.Params))}); use the eps version that wrote it "
                       f"({record['eps_version']})") from None
    return cls.from_params(section.model_dump(by_alias=True, mode="python"))


def _check_network(space, network: dict, file: Path, ref: str) -> None:
    """The file's ``network`` sizes against the space's ``network_bounds``, before anything is built."""
    for key, (low, high) in (getattr(space, "network_bounds", None) or {}).items():
        value = network.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EpsError(f"{file}: network {key}={str(value)[:40]} is not a whole number from {low:,} to "
                           f"{high:,} (space {ref!r}); the file is damaged or not written by eps: rerun `eps stage "
                           f"retrain` to write it again")


def _fits(net: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading strictly into ``net`` (names, then shapes), or None."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []) + \
            ([f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"] if extra else [])
        return "; ".join(parts)
    for k, shape in want.items():
        if tuple(state[k].shape) != shape:
            return f"{k} has shape {list(state[k].shape)}, the network {list(shape)}"
    return None


def load_model(path: str | Path, device: str | torch.device = "cpu", space=None) -> nn.Module:
    """The trained standalone network of a run, rebuilt from its model file and returned in eval mode on
    ``device``. ``path``: an output root with one space (``runs``), a space's run folder (``runs/nb201``), its
    ``retrain`` folder or the ``model.pt`` file. The network's forward is the space's (e.g. NB201: images
    ``(N, 3, 32, 32)`` normalised floats -> logits ``(N, 10)``; DARTS CNN: ``(logits, aux)``).

    ``space``: the space the model was trained in, when it is not built into eps or installed: a registered name, a
    ``file.py:Class`` reference, a space class or instance (its class is configured from the file's settings).
    Without it, a space kept in a file must have been registered in this process (``eps.spaces.register_ref``):
    the file's ``space`` entry is only compared with the registered spaces, never imported, so a model file runs no
    code. The file's ``network`` sizes are checked against the space's ``network_bounds`` and the network is built
    on the meta device and compared with the weights' names and shapes before anything is allocated.

    Raises EpsError (one line naming the file and the fix) for a missing or foreign file, changed weights, a space
    that is not built in, installed, registered or given, sizes out of bounds, weights that do not fit the rebuilt
    network, or a device this machine does not have. The global RNG is left untouched.
    """
    dev = _check_device(device)
    file = model_path(path)
    record = read_model(file)
    ref = record["space"]
    space_obj = _space_of(record, file, space)
    try:
        arch = space_obj.decode(record["arch"])
    except EpsError as err:
        raise EpsError(f"{file}: its arch does not decode in space {ref!r} ({err}); use the eps version "
                       f"that wrote it ({record['eps_version']}) or rerun `eps stage retrain`") from None
    network = record["network"]
    _check_network(space_obj, network, file, ref)
    # Shapes first, on the meta device (nothing allocated), so a forged width cannot allocate gigabytes before the
    # weights are compared with it; then the real network. Building initialises weights from the global RNG: the
    # caller's random state must not depend on loading.
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                shape = space_obj.build_network(arch, **network)
        except TypeError as err:
            raise EpsError(f"{file}: space {ref!r} cannot rebuild its network from {sorted(network)} "
                           f"({' '.join(str(err).split())[:200]}); use the eps version that wrote it "
                           f"({record['eps_version']})") from None
        except (EpsError, ValueError, RuntimeError, OverflowError) as err:
            raise EpsError(f"{file}: space {ref!r} cannot build the network the file describes "
                           f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); the file is damaged or "
                           f"not written by eps: rerun `eps stage retrain` to write it again") from None
        misfit = _fits(shape, record["state_dict"])
        if misfit:
            raise EpsError(f"{file}: the weights do not fit the network rebuilt from it ({misfit}); the file and "
                           f"the space's build_network disagree: use the eps version that wrote it "
                           f"({record['eps_version']})")
        del shape
        net = space_obj.build_network(arch, **network)
    try:
        net.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise EpsError(f"{file}: the weights do not fit the network rebuilt from it ({detail}); the file and the "
                       f"space's build_network disagree: use the eps version that wrote it "
                       f"({record['eps_version']})") from None
    try:
        return net.to(dev).eval()
    except torch.OutOfMemoryError:
        raise EpsError(f"{file}: the network does not fit in the memory of {dev}; pass device='cpu'") from None


__all__ = ["FORMAT", "load_model", "model_path", "plain_values", "read_model", "save_model", "space_reference",
           "weights_digest"]
