"""Drawing of a DARTS genotype's normal and reduction cells as a PNG (matplotlib only, no graphviz)."""
from __future__ import annotations

from pathlib import Path

from eps import plotting

OP_COLOURS = {
    "none": "#bbbbbb", "noise": "#9467bd", "skip_connect": "#7f7f7f", "max_pool_3x3": "#2ca02c",
    "avg_pool_3x3": "#98df8a", "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#17becf", "dil_conv_3x3": "#d62728",
    "dil_conv_5x5": "#ff7f0e",
}


def _draw_cell(ax, cell, title: str) -> None:
    pos = {0: (0.0, 1.6), 1: (0.0, -1.6)}
    for i in range(len(cell)):
        pos[2 + i] = (1.6 + 1.5 * i, 1.0 if i % 2 == 0 else -1.0)
    out = (1.6 + 1.5 * len(cell) + 0.6, 0.0)
    names = {0: "c_{k-2}", 1: "c_{k-1}", **{2 + i: str(i) for i in range(len(cell))}}
    for i, node in enumerate(cell):
        x1, y1 = pos[2 + i]
        for op, j in node:
            x0, y0 = pos[j]
            colour = OP_COLOURS.get(op, "black")
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.6, shrinkA=14, shrinkB=14,
                                        connectionstyle="arc3,rad=0.12", linestyle="--" if op == "none" else "-"))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, op, fontsize=7, color=colour, ha="center", va="bottom",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
        ax.annotate("", xy=out, xytext=(x1, y1),
                    arrowprops=dict(arrowstyle="-|>", color="#cccccc", lw=1.0, shrinkA=14, shrinkB=16))
    for k, (x, y) in pos.items():
        ax.text(x, y, f"${names[k]}$" if k < 2 else names[k], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", fc="#d9ead3" if k < 2 else "#cfe2f3", ec="#555555"))
    ax.text(*out, "$c_{k}$", ha="center", va="center", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.35", fc="#fce5cd", ec="#555555"))
    ax.set_title(title)
    ax.set_xlim(-0.8, out[0] + 0.8)
    ax.set_ylim(-2.4, 2.4)
    ax.axis("off")


def draw_genotype(arch, path: str | Path) -> None:
    """``arch`` = (normal, reduce) as DartsCNNSpace stores it; writes both cells side by side to ``path``."""
    fig, axes = plotting.subplots(1, 2, figsize=(13, 4), dpi=110)
    for ax, cell, title in zip(axes, arch, ("normal cell", "reduction cell")):
        _draw_cell(ax, cell, title)
    plotting.save(fig, path)
