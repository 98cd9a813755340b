"""Matplotlib set up once for every plot eps writes: a headless backend, and figures saved atomically."""
from __future__ import annotations

import io
from pathlib import Path


def subplots(*args, **kwargs):
    """``plt.subplots`` on the headless Agg backend (reports run on servers without a display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kwargs.setdefault("dpi", 110)
    return plt.subplots(*args, **kwargs)


def save(fig, path: str | Path) -> None:
    """Write ``fig`` as PNG at ``path`` atomically (a reader never sees half a file) and free it."""
    import matplotlib.pyplot as plt
    from eps import io as eio
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    eio.write_bytes(Path(path), buf.getvalue())
