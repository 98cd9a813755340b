"""Matplotlib set up once for every plot eps writes: a headless backend, and figures saved atomically, each as a
vector SVG (for papers: scales to any size) and a PNG at print resolution (``PRINT_DPI``, for quick viewing)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SCREEN_DPI = 110    # the figure's layout resolution (font sizes relative to the canvas)
PRINT_DPI = 300     # the PNG's resolution: the usual minimum of journals for raster figures


def subplots(*args, **kwargs):
    """``plt.subplots`` on the headless Agg backend (reports run on servers without a display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kwargs.setdefault("dpi", SCREEN_DPI)
    return plt.subplots(*args, **kwargs)


def save(fig, path: str | Path) -> None:
    """Write ``fig`` as PNG at ``path`` (``PRINT_DPI``) and as SVG beside it (``path`` with suffix ``.svg``), each
    atomically (a reader never sees half a file), and free it.

    Both files are byte-identical for an identical figure (no date in the metadata, fixed SVG element ids), so an
    unchanged figure keeps its files and DVC sees no change. SVG text is drawn as paths: it looks the same on a
    machine without the fonts."""
    import matplotlib
    import matplotlib.pyplot as plt
    from eps import io as eio
    fig.tight_layout()
    images = {}
    with matplotlib.rc_context({"svg.hashsalt": "eps", "svg.fonttype": "path"}):
        for fmt, metadata, dpi in (("png", {"Software": None}, PRINT_DPI), ("svg", {"Date": None}, None)):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi or "figure", metadata=metadata)
            images[fmt] = buf.getvalue()
    plt.close(fig)
    path = Path(path)
    eio.update_bytes(path, images["png"])  # an identical figure keeps its file
    eio.update_bytes(path.with_suffix(".svg"), images["svg"])


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
