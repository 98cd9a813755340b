"""The installed eps version (a leaf: importing it loads nothing else of eps)."""
import importlib.metadata as _metadata

try:
    __version__ = _metadata.version("eps")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
