"""Figures for weight temporality: ASDT against depth (Byvshev Fig. 3), temporal channels (Fig. 4).

Each function takes ``{run label: {layer: numbers}}`` where ``numbers`` are the per-layer entries
of ``results.json`` (``depth``, ``asdt``, ``temporal_channels``, ``channels``, ...), so one or
several checkpoints of the same model (e.g. random init against trained) share one plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from stbias.errors import StbiasError
from stbias.plotting.style import (
    DOUBLE,
    MARKERS,
    SINGLE,
    WEIGHT_COLOURS,
    fit_title,
    paper_style,
    paper_subplots,
    weights_title,
)

Layers = Mapping[str, Mapping[str, Any]]
HATCHES = ("", "////", "....", "xxxx", "\\\\", "++")


def runs_from_table(
    table: pd.DataFrame, labels: Mapping[str, str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{run label: {layer: numbers}}`` from the ``task=weights`` rows of a results table.

    A run is one set of weights of one model; its label is the model (with the set's own label
    when a run measured several, ``metric.compare``), renamed by ``labels``.
    """
    rows = table[table["task"] == "weights"] if "task" in table.columns else table
    if rows.empty:
        raise StbiasError("no weight-temporality results to draw: no rows of task=weights")
    several = rows.groupby(["run", "model"])["weights_label"].nunique().max() > 1
    models = rows["model"].nunique() > 1
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (run, model, label), part in rows.groupby(["run", "model", "weights_label"], sort=False):
        name = labels.get(model, model) if labels else model
        if several or not models:
            name = f"{name} ({label})" if models or several else name
        if name in out:
            name = f"{name} [{run}]"
        out[name] = {str(r["layer"]): r.to_dict() for _, r in part.iterrows()}
    return out


def _sorted(layers: Layers) -> list[Mapping[str, Any]]:
    return sorted(layers.values(), key=lambda v: int(v["depth"]))


def plot_asdt(
    runs: Mapping[str, Layers],
    scaled: bool = False,
    title: str | None = None,
    relative: bool = False,
) -> Figure:
    """ASDT of every temporal layer against its depth, one line per run.

    Args:
        runs: run label -> per-layer results.
        scaled: plot ``asdt_scaled`` instead of ``asdt``.
        title: axes title.
        relative: depth as a fraction of the run's temporal layers (first 0, last 1), so that
            models of different depths share the axis (Byvshev et al. Fig. 11).
    """
    key = "asdt_scaled" if scaled else "asdt"
    with paper_style():
        fig, ax = paper_subplots(figsize=(SINGLE, 2.3 + (0.25 * len(runs) if relative else 0)))
        for k, (label, layers) in enumerate(runs.items()):
            rows = _sorted(layers)
            depth = [int(r["depth"]) for r in rows]
            if relative:
                first, last = min(depth), max(depth)
                depth = [(d - first) / max(last - first, 1) for d in depth]
            ax.plot(
                depth,
                [float(r[key]) for r in rows],
                marker=MARKERS[k % len(MARKERS)],
                markersize=2.5 if relative else None,
                color="black" if len(runs) == 1 else f"C{k}",
                label=label,
            )
        if relative:
            ax.set_xlabel("relative layer depth (temporal convolutions)")
        else:
            ax.set_xlabel("layer depth (convolutions with temporal extent > 1)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("ASDT / std of layer weights" if scaled else "ASDT")
        ax.grid(alpha=0.3, linewidth=0.4)
        if title:
            ax.set_title(fit_title(title, fig.get_size_inches()[0]))
        if len(runs) > 1:
            below = -0.3 if relative else -0.22
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, below), ncol=1 if relative else 2)
        fig.tight_layout()
    return fig


def plot_temporal_channels(runs: Mapping[str, Layers], title: str | None = None) -> Figure:
    """Temporal and static output channels per layer as stacked bars, runs side by side.

    For every run the lower (blue) bar is the temporal channels and the upper (red) bar the
    static ones, so the bar's total height is the layer's number of channels; several runs stand
    side by side, told apart by their hatching.
    """
    n = max(len(runs), 1)
    wide = _max_layers(runs) * n > 14
    with paper_style():
        fig, ax = paper_subplots(figsize=(DOUBLE if wide else SINGLE, 2.4))
        width = 0.8 / n
        for k, (label, layers) in enumerate(runs.items()):
            rows = _sorted(layers)
            x = [int(r["depth"]) - 0.4 + width * (k + 0.5) for r in rows]
            temporal = [int(r["temporal_channels"]) for r in rows]
            static = [int(r["channels"]) - int(r["temporal_channels"]) for r in rows]
            hatch = HATCHES[k % len(HATCHES)]
            ax.bar(
                x,
                temporal,
                width,
                color=WEIGHT_COLOURS["temporal"],
                hatch=hatch,
                edgecolor="white",
                linewidth=0.3,
                label=f"{label}: temporal",
                gid=f"{label}/temporal",
            )
            ax.bar(
                x,
                static,
                width,
                bottom=temporal,
                color=WEIGHT_COLOURS["static"],
                hatch=hatch,
                edgecolor="white",
                linewidth=0.3,
                label=f"{label}: static",
                gid=f"{label}/static",
            )
        ax.set_xlabel("layer depth (convolutions with temporal extent > 1)")
        ax.set_ylabel("output channels")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, axis="y", linewidth=0.4)
        if title:
            ax.set_title(fit_title(title, fig.get_size_inches()[0]))
        handles = [
            Patch(color=WEIGHT_COLOURS["temporal"], label="temporal channels"),
            Patch(color=WEIGHT_COLOURS["static"], label="static channels"),
        ]
        if n > 1:
            handles += [
                Patch(
                    facecolor="#999999",
                    hatch=HATCHES[k % len(HATCHES)],
                    edgecolor="white",
                    label=label,
                )
                for k, label in enumerate(runs)
            ]
        fig.tight_layout()
        # below the axes: bars fill the plot up to the largest layer
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    return fig


def _max_layers(runs: Mapping[str, Layers]) -> int:
    return max((len(layers) for layers in runs.values()), default=1)


def _titled(title: str | None, table: pd.DataFrame) -> str | None:
    note = weights_title(list(table["weights"])) if "weights" in table.columns else ""
    if not note:
        return title
    return f"{title} ({note})" if title else note


def asdt_figure(
    table: pd.DataFrame,
    labels: Mapping[str, str] | None = None,
    scaled: bool = False,
    title: str | None = None,
) -> Figure:
    """Byvshev et al. Fig. 3: ASDT against layer depth, one line per model (or set of weights).

    Args:
        table: ``task=weights`` rows (``stbias.results.load`` of ``metric=asdt`` runs).
        labels: display names of models.
        scaled: draw ``asdt_scaled`` (ASDT over the std of the layer's weights).
        title: figure title (random weights are added to it).
    """
    return plot_asdt(runs_from_table(table, labels), scaled=scaled, title=_titled(title, table))


def asdt_models_figure(
    table: pd.DataFrame,
    labels: Mapping[str, str] | None = None,
    scaled: bool = False,
    title: str | None = None,
) -> Figure:
    """Byvshev et al. Fig. 11: ASDT against relative depth, one line per model and weights file,
    so networks of different depths (R(2+1)D-34, ir-CSN-152, I3D) share one plot."""
    runs = runs_from_table(table, labels)
    return plot_asdt(runs, scaled=scaled, title=_titled(title, table), relative=True)


def channels_figure(
    table: pd.DataFrame, labels: Mapping[str, str] | None = None, title: str | None = None
) -> Figure:
    """Byvshev et al. Fig. 4: temporal (blue) and static (red) output channels per layer."""
    return plot_temporal_channels(runs_from_table(table, labels), title=_titled(title, table))
