"""The StaticDropout experiment: accuracy and dynamic units per mode, with intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from stbias.plotting.style import COLOURS, FLOOR_COLOUR, paper_subplots

MODES = ("none", "static", "all", "random")
# what the table and figure show: column -> heading
MEASURES = {
    "acc": "top-1",
    "acc_motion_only": "top-1 motion-only",
    "units_dynamic": "dynamic units",
    "units_static": "static units",
    "acc_shuffled": "top-1 shuffled",
    "drop_static_zeroed": "drop, static zeroed",
    "drop_random_zeroed": "drop, random zeroed",
}
FIGURE = ("acc", "acc_motion_only", "units_dynamic")
# the house colours: dropping static units takes the static red; the other modes, which single
# out no factor, neutral greys (stbias.plotting.style)
MODE_COLOURS = {
    "none": COLOURS["residual"],
    "static": COLOURS["static"],
    "all": COLOURS["joint"],
    "random": FLOOR_COLOUR,
}


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the Student-t interval of the mean over seeds (``nan`` bounds for one seed)."""
    x = np.asarray([v for v in values if v is not None and v == v], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(rows: Sequence[Mapping[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Per mode: the seeds, and mean / lower / upper of every measure present."""
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    out = []
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        entry: dict[str, Any] = {"mode": mode, "seeds": len(mine)}
        for key in MEASURES:
            values = [r.get(key) for r in mine if r.get(key) not in (None, "")]
            if values:
                mean, lo, hi = interval([float(v) for v in values], level)
                entry[key], entry[f"{key}_lo"], entry[f"{key}_hi"] = mean, lo, hi
        out.append(entry)
    return out


def _cell(entry: Mapping[str, Any], key: str) -> str:
    if key not in entry:
        return "–"
    mean, lo, hi = entry[key], entry[f"{key}_lo"], entry[f"{key}_hi"]
    digits = 1 if key.startswith("units") else 3
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def table_cells(summary: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows: mode, seeds, then mean ± half-width of every measure."""
    keys = [k for k in MEASURES if any(k in e for e in summary)]
    header = ["mode", "seeds", *(MEASURES[k] for k in keys)]
    rows = [[str(e["mode"]), str(e["seeds"]), *(_cell(e, k) for k in keys)] for e in summary]
    return header, rows


def table(summary: Sequence[Mapping[str, Any]], level: float = 0.95) -> str:
    """A Markdown table: one row per mode, mean ± half-width of the interval over seeds."""
    header, rows = table_cells(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append(f"mean ± half-width of the {100 * level:.0f} % Student-t interval over seeds")
    return "\n".join(lines)


def figure(
    rows: Sequence[Mapping[str, Any]],
    summary: Sequence[Mapping[str, Any]],
    title: str | None = None,
) -> Figure:
    """Bars per mode (mean, interval over seeds as error bars, each seed as a dot) for top-1
    accuracy, motion-only top-1 accuracy and the dynamic units of the dropout layer."""
    keys = [k for k in FIGURE if any(k in e for e in summary)]
    fig, axes = paper_subplots(1, len(keys), figsize=(2.4 * len(keys) + 0.4, 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, entry in enumerate(summary):
            if key not in entry:
                continue
            mean, lo, hi = entry[key], entry[f"{key}_lo"], entry[f"{key}_hi"]
            err = None if math.isnan(lo) else [[mean - lo], [hi - mean]]
            colour = MODE_COLOURS.get(entry["mode"], "#333333")
            ax.bar(i, mean, 0.7, color=colour, alpha=0.75, yerr=err, capsize=3)
            seeds = [float(r[key]) for r in rows if r["mode"] == entry["mode"] and key in r]
            ax.plot([i] * len(seeds), seeds, "k.", markersize=4)
        ax.set_xticks(range(len(summary)), [e["mode"] for e in summary], fontsize=8)
        ax.set_title(MEASURES[key], fontsize=9)
        if key.startswith("acc"):
            ax.set_ylim(0, 1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def paired_differences(
    rows: Sequence[Mapping[str, Any]], baseline: str = "none", level: float = 0.95
) -> list[dict[str, Any]]:
    """Every other mode against ``baseline``, paired by seed: mean difference and its interval.

    Runs of one seed share the initial weights and the data order, so the per-seed difference
    ``mode − baseline`` removes what seeds change in both; the Student-t interval is of the mean of
    those differences. Entries are shaped as :func:`summarize`'s (``mode`` reads
    ``"static − none"``), so :func:`table` prints them beside it. Empty without ``baseline`` runs.
    """
    base = {r["seed"]: r for r in rows if r["mode"] == baseline}
    out = []
    for mode in [m for m in MODES if m != baseline and any(r["mode"] == m for r in rows)]:
        pairs = [(r, base[r["seed"]]) for r in rows if r["mode"] == mode and r["seed"] in base]
        if not pairs:
            continue
        entry: dict[str, Any] = {"mode": f"{mode} − {baseline}", "seeds": len(pairs)}
        for key in MEASURES:
            values = [
                float(a[key]) - float(b[key])
                for a, b in pairs
                if a.get(key) not in (None, "") and b.get(key) not in (None, "")
            ]
            if values:
                mean, lo, hi = interval(values, level)
                entry[key], entry[f"{key}_lo"], entry[f"{key}_hi"] = mean, lo, hi
        out.append(entry)
    return out
