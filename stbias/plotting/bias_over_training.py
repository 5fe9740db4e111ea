"""Bias over training: the per-layer split and raw scores of a checkpoint series against steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from stbias.plotting.pairs import COLOURS
from stbias.plotting.style import paper_subplots

SPLIT = ("dynamic", "static", "residual")
FACTORS = ("dynamic", "static")


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    return float(value)


def bias_over_training(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Two rows of panels, one column per layer: the split in % (top) and ``S_F`` (bottom).

    Args:
        rows: rows of a series' ``results.csv`` (``step``, ``layer``, ``percent_<class>``,
            ``scores_<factor>`` and, with bootstrapping, ``percent_<class>_lo/_hi`` and
            ``scores_<factor>_lo/_hi``, drawn as bands).
        title: figure title.
    """
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    fig, axes = paper_subplots(
        2, len(layers), figsize=(2.6 * len(layers) + 0.6, 5.0), sharex=True, squeeze=False
    )
    for col, layer in enumerate(layers):
        series = sorted(
            (r for r in rows if str(r["layer"]) == layer), key=lambda r: float(r["step"])
        )
        steps = [float(r["step"]) for r in series]
        top, bottom = axes[0, col], axes[1, col]
        for ax, prefix, names in ((top, "percent", SPLIT), (bottom, "scores", FACTORS)):
            for name in names:
                ys = [float(r[f"{prefix}_{name}"]) for r in series]
                ax.plot(steps, ys, marker="o", markersize=3, color=COLOURS[name], label=name)
                lo = [_number(r, f"{prefix}_{name}_lo") for r in series]
                hi = [_number(r, f"{prefix}_{name}_hi") for r in series]
                if all(v is not None for v in lo + hi):
                    ax.fill_between(steps, lo, hi, color=COLOURS[name], alpha=0.2, linewidth=0)
        top.set_title(layer)
        top.set_ylim(0, 100)
        bottom.set_xlabel("training step")
        if col == 0:
            top.set_ylabel("share of units (%)")
            bottom.set_ylabel("raw score $S_F$")
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[1, 0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
