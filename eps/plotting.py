"""Matplotlib set up once for every plot eps writes: a headless backend, and figures saved atomically."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np


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
    eio.update_bytes(Path(path), buf.getvalue())  # an identical figure keeps its file


def integer_ticks(ax) -> None:
    """Only whole numbers on the x axis (epochs, rounds): a short run would otherwise get ticks like 1.5."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def robust_limits(values, quantiles: tuple[float, float] = (5.0, 95.0), reach: float = 1.0,
                  pad: float = 0.05) -> tuple[float, float] | None:
    """Axis limits that show the bulk of ``values`` and leave isolated outliers out.

    The core is the ``quantiles`` range (percent); every value within ``reach`` times the core's width of it is
    kept, so the tails of a cluster stay in view while a point far from it (a cell that failed to train, at 10 %
    accuracy amid 90 %) does not squash the rest. The kept values' range is padded by ``pad`` of its width (a
    constant set gets a margin of 5 % of its value, or 1). Non-finite values are ignored; None when none is left.
    A caller draws the values outside the limits at the edge and says how many there are.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo_q, hi_q = np.percentile(v, quantiles)
    span = hi_q - lo_q
    kept = v[(v >= lo_q - reach * span) & (v <= hi_q + reach * span)]
    lo, hi = float(kept.min()), float(kept.max())
    margin = pad * (hi - lo) if hi > lo else (0.05 * abs(lo) or 1.0)
    return lo - margin, hi + margin
