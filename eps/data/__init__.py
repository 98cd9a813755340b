"""Data loading: datasets, splits, batch streams and on-device augmentation."""
from eps.data.files import note_read

__all__ = ["note_read"]
