"""Kowal et al. Fig. 3: per-layer static/dynamic/residual split and unit classes, per model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"dynamic": "#d95f02", "static": "#1b9e77", "joint": "#7570b3", "residual": "#bdbdbd"}


def _pct(entry: Mapping[str, Any], key: str, cls: str) -> float:
    if key == "units":
        units = entry["units"]
        total = sum(units[c] for c in ("dynamic", "static", "joint", "residual"))
        return 100.0 * units[cls] / total if total else 0.0
    return float(entry["percent"][cls])


def fig3(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    unit_layer: str | Mapping[str, str] | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Layer-wise stacked bars (left) and unit-wise class bars (right) for one or more models.

    Args:
        results: model label -> layer alias -> per-layer entry of ``results.json`` (needs
            ``percent`` and ``units``); layers are drawn in the mapping's order.
        unit_layer: the layer whose units the right panel shows, one for all models or one per
            model; default each model's last layer (the representation before the classifier).
        title: figure title.
    """
    models = list(results)
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(
            4
            + 2.2 * sum(len(v) for v in results.values()) / max(len(models), 1)
            + 1.2 * len(models),
            4.2,
        ),
        gridspec_kw={
            "width_ratios": [max(sum(len(v) for v in results.values()), 1), max(len(models), 1) * 2]
        },
    )
    x, ticks, labels, group_centres = 0.0, [], [], []
    for model in models:
        layers = list(results[model])
        start = x
        for layer in layers:
            bottom = 0.0
            for cls in ("dynamic", "static", "residual"):
                value = _pct(results[model][layer], "percent", cls)
                left.bar(
                    x,
                    value,
                    bottom=bottom,
                    color=COLOURS[cls],
                    width=0.8,
                    label=cls if x == 0 else None,
                    edgecolor="white",
                    linewidth=0.5,
                )
                bottom += value
            ticks.append(x)
            labels.append(layer)
            x += 1
        group_centres.append(((start + x - 1) / 2, model))
        x += 0.6
    left.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=8)
    for centre, model in group_centres:
        left.annotate(
            model,
            (centre, 101),
            ha="center",
            va="bottom",
            fontsize=9,
            annotation_clip=False,
            fontweight="bold",
        )
    left.set_ylim(0, 100)
    left.set_ylabel("% of units (layer-wise)")
    left.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=3, fontsize=8, frameon=False)

    chosen = {
        m: (unit_layer.get(m) if isinstance(unit_layer, Mapping) else unit_layer)
        or list(results[m])[-1]
        for m in models
    }
    classes = ("dynamic", "static", "joint", "residual")
    width = 0.8 / len(classes)
    for i, model in enumerate(models):
        for k, cls in enumerate(classes):
            value = _pct(results[model][chosen[model]], "units", cls)
            right.bar(
                i + (k - 1.5) * width,
                value,
                width=width,
                color=COLOURS[cls],
                label=cls if i == 0 else None,
            )
    right.set_xticks(range(len(models)), [f"{m}\n({chosen[m]})" for m in models], fontsize=8)
    right.set_ylim(0, 100)
    right.set_ylabel("% of units (unit-wise)")
    right.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
