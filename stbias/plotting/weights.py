"""Figures for weight temporality: ASDT against depth (Byvshev Fig. 3), temporal channels (Fig. 4).

Each function takes ``{run label: {layer: numbers}}`` where ``numbers`` are the per-layer entries
of ``results.json`` (``depth``, ``asdt``, ``temporal_channels``, ``channels``, ...), so one or
several checkpoints of the same model (e.g. random init against trained) share one plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Layers = Mapping[str, Mapping[str, Any]]


def _sorted(layers: Layers) -> list[Mapping[str, Any]]:
    return sorted(layers.values(), key=lambda v: int(v["depth"]))


def plot_asdt(runs: Mapping[str, Layers], scaled: bool = False, title: str | None = None) -> Figure:
    """ASDT of every temporal layer against its depth, one line per run.

    Args:
        runs: run label -> per-layer results.
        scaled: plot ``asdt_scaled`` instead of ``asdt``.
        title: axes title.
    """
    key = "asdt_scaled" if scaled else "asdt"
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, layers in runs.items():
        rows = _sorted(layers)
        ax.plot(
            [int(r["depth"]) for r in rows],
            [float(r[key]) for r in rows],
            marker="o",
            markersize=3,
            label=label,
        )
    ax.set_xlabel("layer depth (convolutions with temporal extent > 1)")
    ax.set_ylabel("ASDT / std of layer weights" if scaled else "ASDT")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if len(runs) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def plot_temporal_channels(runs: Mapping[str, Layers], title: str | None = None) -> Figure:
    """Temporal and static output channels per layer as stacked bars, runs side by side.

    For every run the lower (solid) bar is the temporal channels and the upper (hatched) bar the
    static ones, so the bar's total height is the layer's number of channels.
    """
    fig, ax = plt.subplots(figsize=(max(7.0, 0.3 * _max_layers(runs) * len(runs)), 4))
    n = max(len(runs), 1)
    width = 0.8 / n
    for k, (label, layers) in enumerate(runs.items()):
        rows = _sorted(layers)
        x = [int(r["depth"]) - 0.4 + width * (k + 0.5) for r in rows]
        temporal = [int(r["temporal_channels"]) for r in rows]
        static = [int(r["channels"]) - int(r["temporal_channels"]) for r in rows]
        color = f"C{k}"
        ax.bar(x, temporal, width, color=color, label=f"{label}: temporal", gid=f"{label}/temporal")
        ax.bar(
            x,
            static,
            width,
            bottom=temporal,
            color=color,
            alpha=0.35,
            hatch="//",
            label=f"{label}: static",
            gid=f"{label}/static",
        )
    ax.set_xlabel("layer depth (convolutions with temporal extent > 1)")
    ax.set_ylabel("output channels")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title)
    # outside the axes: bars fill the plot up to the largest layer
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _max_layers(runs: Mapping[str, Layers]) -> int:
    return max((len(layers) for layers in runs.values()), default=1)
