"""Kowal et al. Fig. 5 (right): relative top-1 drop of shuffled-frame training, per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from stbias.plotting.style import (
    SINGLE,
    fit_title,
    paper_style,
    paper_subplots,
    weights_title,
)
from stbias.results import shuffled_drops

# datasets are told apart by neutral shades: red and blue mean static and dynamic in these papers
DATASET_SHADES = ("#3a3a3a", "#8c8c8c", "#cfcfcf", "#606060", "#b0b0b0", "#e8e8e8")


def shuffled_drop(
    rows: Sequence[Mapping[str, Any]],
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Bars of ``100 * drop`` per model, one shade per dataset, the value on each bar.

    Args:
        rows: one per (model, dataset) with ``model``, ``dataset`` and ``drop`` =
            ``(acc_std - acc_shuf) / acc_std`` (the rows of ``shuffled_baseline.csv``, or of
            :func:`stbias.results.shuffled_drops`).
        title: figure title.
        labels: display names of models and datasets.
    """
    labels = labels or {}
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    width = 0.8 / max(len(datasets), 1)
    with paper_style():
        fig, ax = paper_subplots(figsize=(SINGLE, 2.3))
        for k, dataset in enumerate(datasets):
            xs, heights = [], []
            for i, model in enumerate(models):
                for row in rows:
                    if str(row["model"]) == model and str(row["dataset"]) == dataset:
                        xs.append(i + (k - (len(datasets) - 1) / 2) * width)
                        heights.append(100.0 * float(row["drop"]))
            bars = ax.bar(
                xs,
                heights,
                width,
                label=labels.get(dataset, dataset),
                color=DATASET_SHADES[k % len(DATASET_SHADES)],
                edgecolor="black",
                linewidth=0.4,
                gid=dataset,
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(models)), [labels.get(m, m) for m in models])
        ax.set_ylabel("relative top-1 drop (%)")
        ax.legend(title="trained on", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
        if title:
            ax.set_title(fit_title(title, SINGLE))
        fig.tight_layout()
    return fig


def fig5_right(
    table: pd.DataFrame,
    dataset_column: str = "dataset",
    labels: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Kowal et al. Fig. 5 (right) from training runs: the relative top-1 drop of shuffled-frame
    training against standard training, per model (x) and dataset (shade).

    Args:
        table: ``task=train`` rows, a standard and a shuffled run (``train.shuffle_frames``) of
            each model on each dataset, from one initialisation.
        dataset_column: the column naming the dataset (``dataset`` or a sweep key).
        labels: display names of models and datasets.
        order: models and datasets in this order first.
        title: figure title (random initialisation is added to it).
    """
    drops = shuffled_drops(table, dataset_column)
    rank = {name: i for i, name in enumerate(order or ())}
    drops = drops.sort_values(
        ["model", "dataset"],
        key=lambda col: col.map(lambda v: (rank.get(str(v), len(rank)), str(v))),
        kind="stable",
    )
    rows = drops.to_dict("records")
    note = weights_title(list(drops["weights"]))
    note = note.replace("weights", "initialisation") if note else ""
    full = f"{title} ({note})" if title and note else (title or note or None)
    return shuffled_drop(rows, full, labels)
