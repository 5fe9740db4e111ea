"""Unit-wise figure: the class of every unit (dynamic, static, joint, residual), layer by layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stbias.plotting.pairs import COLOURS  # noqa: E402

CLASSES = ("dynamic", "static", "joint", "residual")


def unit_classes(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str | None = None
) -> plt.Figure:
    """Stacked bars of the unit classes at λ for every layer of one or more models.

    Args:
        results: model label -> layer alias -> per-layer entry of ``results.json`` (needs
            ``units``); layers are drawn in the mapping's order, models side by side.
        title: figure title.
    """
    count = sum(len(layers) for layers in results.values())
    fig, ax = plt.subplots(figsize=(min(6.9, 1.4 + 0.45 * count + 0.3 * len(results)), 3.0))
    x, ticks, labels = 0.0, [], []
    for model, layers in results.items():
        start = x
        for layer, entry in layers.items():
            units = entry["units"]
            total = sum(units[c] for c in CLASSES) or 1
            bottom = 0.0
            for cls in CLASSES:
                value = 100.0 * units[cls] / total
                ax.bar(
                    x,
                    value,
                    bottom=bottom,
                    width=0.8,
                    color=COLOURS[cls],
                    label=cls if not ticks else None,
                    edgecolor="white",
                    linewidth=0.4,
                )
                bottom += value
            ticks.append(x)
            labels.append(layer)
            x += 1
        if len(results) > 1:
            ax.annotate(
                model,
                ((start + x - 1) / 2, 101),
                ha="center",
                va="bottom",
                fontsize=8,
                annotation_clip=False,
            )
        x += 0.6
    ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of units (unit-wise, at λ)", fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=8, pad=14 if len(results) > 1 else 6)
    fig.tight_layout()
    return fig
