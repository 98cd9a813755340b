"""eps: Evolving the Proxy Search Space, a random-sampling weight-sharing NAS method."""
from __future__ import annotations

import importlib.metadata as _metadata

try:
    __version__ = _metadata.version("eps")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def load_model(path, device="cpu"):
    """The trained network of a run (``runs/nb201``, ``runs/nb201/retrain`` or the ``model.pt`` file itself),
    rebuilt from its model file alone and returned in eval mode on ``device`` (a ``torch.nn.Module``).
    Raises ``eps.errors.EpsError`` (one line) for a missing, foreign or corrupt file. See ``eps.model_file``."""
    from eps.model_file import load_model as _load  # torch is imported only here: `import eps` stays light
    return _load(path, device)


__all__ = ["__version__", "load_model"]
