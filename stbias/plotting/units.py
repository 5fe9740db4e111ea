"""Unit-wise figure: the class of every unit (dynamic, static, joint, residual), layer by layer.

What ``metric=unitwise`` draws: for every layer of every run in a probe table (one row per run ×
layer, as :func:`stbias.results.load` gives), the share of its units in each class at λ, stacked.
Layers that merely repeat an earlier one (a ``pool`` tap equal to the last stage) are drawn once.
Runs with bootstrap intervals (``probe.bootstrap > 0``: ``units_<class>_lo`` / ``_hi``) draw each
class's interval as an error bar at the top of its segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stbias.plotting.pairs import UNIT_CLASSES, _title, distinct_layers, probe_table, run_labels
from stbias.plotting.style import (
    COLOURS,
    DOUBLE,
    SINGLE,
    fit_title,
    paper_style,
    paper_subplots,
)


def _interval(row: pd.Series, cls: str) -> tuple[float, float] | None:
    """The bootstrap interval of a class's unit count in ``row``, or None without one."""
    lo, hi = row.get(f"units_{cls}_lo"), row.get(f"units_{cls}_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return None
    return float(lo), float(hi)


def unit_classes(
    table: pd.DataFrame | Mapping[str, Mapping[str, Any]], title: str | None = None
) -> Figure:
    """Stacked bars of the unit classes at λ for every layer of every run in ``table``.

    Args:
        table: probe rows (one per run × layer) or ``{label: {layer: results.json entry}}``.
        title: figure title (random weights are added to it).
    """
    rows = distinct_layers(probe_table(table))
    names = run_labels(rows)
    groups = list(rows.groupby(["run", "model"], sort=False))
    count = len(rows)
    with paper_style():
        width = min(DOUBLE, max(SINGLE, 0.9 + 0.32 * count + 0.25 * len(groups)))
        fig, ax = paper_subplots(figsize=(width, 2.4))
        x, ticks, labels = 0.0, [], []
        for key, run in groups:
            start = x
            for _, row in run.iterrows():
                bottom = 0.0
                for cls in UNIT_CLASSES:
                    value = 100.0 * float(row[f"units_{cls}"]) / float(row["channels"])
                    bounds = _interval(row, cls)
                    if bounds is not None:
                        # the interval itself, from lo to hi above the segment's bottom: a
                        # percentile interval of a count can exclude the count
                        lo, hi = (100.0 * b / float(row["channels"]) for b in bounds)
                        ax.errorbar(
                            x,
                            bottom + (lo + hi) / 2,
                            yerr=(hi - lo) / 2,
                            fmt="none",
                            ecolor="black",
                            elinewidth=0.6,
                            capsize=1.5,
                            zorder=3,
                        )
                    ax.bar(
                        x,
                        value,
                        bottom=bottom,
                        width=0.8,
                        color=COLOURS[cls],
                        edgecolor="black" if cls == "residual" else "none",
                        linewidth=0.3,
                    )
                    bottom += value
                ticks.append(x)
                labels.append(str(row["layer"]))
                x += 1
            if len(groups) > 1:
                ax.annotate(
                    names[key],
                    ((start + x - 1) / 2, 101),
                    ha="center",
                    va="bottom",
                    annotation_clip=False,
                )
            x += 0.6
        ax.set_xticks(ticks, labels, rotation=60, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("units (%), unit-wise")
        lam = rows["lam"].dropna().unique()
        ax.set_xlabel("layer" + (f" (λ = {lam[0]:g})" if len(lam) == 1 else ""))
        handles = [Patch(color=COLOURS[c], label=c) for c in UNIT_CLASSES]
        level = rows["ci_level"].dropna().unique() if "ci_level" in rows else []
        if any(_interval(row, c) is not None for _, row in rows.iterrows() for c in UNIT_CLASSES):
            shown = f"{100 * level[0]:g} % " if len(level) == 1 else ""
            handles.append(Line2D([], [], color="black", linewidth=0.6, label=f"{shown}interval"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        full = _title(title, rows)
        if full:
            ax.set_title(fit_title(full, width), pad=14 if len(groups) > 1 else 4)
        fig.tight_layout()
    return fig
