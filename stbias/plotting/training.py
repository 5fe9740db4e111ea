"""Kowal et al. Fig. 5 (right): relative top-1 drop of shuffled-frame training, per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def shuffled_drop(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> plt.Figure:
    """Bars of ``100 * drop`` per model, one colour per dataset.

    Args:
        rows: one per (model, dataset) with ``model``, ``dataset`` and ``drop`` =
            ``(acc_std - acc_shuf) / acc_std`` (the rows of ``shuffled_baseline.csv``).
        title: figure title.
    """
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    width = 0.8 / max(len(datasets), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(models) * max(len(datasets), 1) ** 0.5, 3.6))
    cmap = plt.get_cmap("tab10")
    for k, dataset in enumerate(datasets):
        xs, heights = [], []
        for i, model in enumerate(models):
            for row in rows:
                if str(row["model"]) == model and str(row["dataset"]) == dataset:
                    xs.append(i + (k - (len(datasets) - 1) / 2) * width)
                    heights.append(100.0 * float(row["drop"]))
        bars = ax.bar(xs, heights, width, label=dataset, color=cmap(k % 10))
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("relative top-1 drop (%)")
    ax.legend(title="dataset", fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
