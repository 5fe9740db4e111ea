"""Mänttäri et al. ACCV'20 Table 2 (per-class F1) and Fig. 4 (normalised histograms)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from stbias.plotting.explain import TABLE3, TABLE4, draw_table
from stbias.plotting.style import paper_subplots

# the paper's colours: I3D orange, C-LSTM blue; further models take the next default colours
COLOURS = ("tab:orange", "tab:blue", "tab:green", "tab:red")
FIG4 = TABLE3 + TABLE4


def table2(
    classes: Sequence[str], f1: Mapping[str, Sequence[float]], title: str | None = None
) -> Figure:
    """Table 2: one row per class, one column of F1 per model (``model -> per-class F1``)."""
    models = list(f1)
    rows = [
        [str(name), *(f"{float(f1[m][i]):.2f}" for m in models)] for i, name in enumerate(classes)
    ]
    return draw_table(["Class", *(f"{m} F1" for m in models)], rows, title=title)


def fig4(
    samples: Mapping[str, Mapping[str, np.ndarray]],
    title: str | None = None,
    bins: int = 20,
) -> Figure:
    """Fig. 4: per measure of Tables 3 and 4, each model's normalised histogram (density).

    Args:
        samples: model -> measure key (``blob_count``, ..., ``drop_difference``) -> values.
    """
    fig, axes = paper_subplots(2, 3, figsize=(11, 6.2))
    for ax, (key, name) in zip(axes.ravel(), FIG4):
        values = {m: np.asarray(s.get(key, []), dtype=np.float64) for m, s in samples.items()}
        values = {m: v[np.isfinite(v)] for m, v in values.items()}
        pooled = np.concatenate([v for v in values.values() if v.size] or [np.zeros(1)])
        edges = np.histogram_bin_edges(pooled, bins=bins)
        for colour, (model, v) in zip(COLOURS, values.items()):
            if v.size:
                ax.hist(v, bins=edges, density=True, alpha=0.55, color=colour, label=model)
        ax.set_title(name)
        ax.set_ylabel("density")
        ax.text(
            0.98,
            0.95,
            "\n".join(f"n={v.size}" for v in values.values()),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
        )
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
