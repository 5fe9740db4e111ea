"""Kowal et al.'s video instance segmentation figure (extension, Fig. 5): VisTR variants.

A pure function of the per-layer entries of probe ``results.json`` files (``percent``,
``units``) grouped by the study into the model's parts (backbone, transformer encoder,
transformer decoder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from stbias.plotting.style import paper_figure
from stbias.plotting.vos import UNIT_CLASSES, _legend, _stacked, _unit_bars

Layers = Mapping[str, Mapping[str, Any]]


def vis_fig5(
    results: Mapping[str, Layers],
    groups: Mapping[str, Sequence[str]],
    unit_layer: Mapping[str, str],
    title: str | None = None,
) -> Figure:
    """Fig. 5: per VisTR variant (rows), the layer-wise dynamic, static and residual shares of
    every layer of each part (columns: backbone, encoder, decoder); on the right the unit classes
    of every variant.

    Args:
        results: variant label -> layer alias -> per-layer entry of a probe's ``results.json``.
        groups: part name -> the aliases of that part, in depth order (the union over variants;
            a variant without an alias leaves its place empty).
        unit_layer: variant label -> the layer of its unit-wise bars.
        title: figure title.
    """
    variants, parts = list(results), list(groups)
    widths = [max(len(groups[p]), 2) for p in parts]
    fig = paper_figure(figsize=(3.0 + 0.45 * sum(widths), 1.2 + 1.9 * len(variants)))
    grid = fig.add_gridspec(
        len(variants),
        len(parts) + 1,
        width_ratios=[*widths, max(2.5, 1.2 * len(variants))],
        hspace=0.6,
        wspace=0.25,
    )
    for row, variant in enumerate(variants):
        for col, part in enumerate(parts):
            ax = fig.add_subplot(grid[row, col])
            aliases = list(groups[part])
            _stacked(ax, results[variant], aliases, [_short(a, part) for a in aliases])
            if row == 0:
                ax.set_title(part, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{variant}\n% (layer-wise)", fontsize=8)
            else:
                ax.set_yticklabels([])
    ax = fig.add_subplot(grid[:, len(parts)])
    _unit_bars(ax, {f"{v}\n{unit_layer[v]}": results[v].get(unit_layer[v]) for v in variants})
    ax.set_title("units (unit-wise)", fontsize=10)
    ax.yaxis.set_label_position("right")
    ax.yaxis.tick_right()
    ax.set_ylabel("% of units", fontsize=8)
    _legend(fig, UNIT_CLASSES)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(bottom=0.2 if len(variants) < 3 else 0.12, top=0.82)
    return fig


def _short(alias: str, part: str) -> str:
    """An alias without its part's prefix (``encoder_2`` under encoder: ``2``)."""
    rest = alias[len(part) :].lstrip("_.") if alias.startswith(part) else alias
    return rest or alias
