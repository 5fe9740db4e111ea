"""Kowal et al.'s video object segmentation figures: Fig. 4, Table 1 and Fig. 7, and center bias.

Pure functions of the per-layer entries of probe ``results.json`` files (``percent``, ``units``)
and of center-bias results (``map``, ``center_mass``). Layer aliases follow the two-stream models:
``mot_res<k>``, ``app_res<k>``, ``fusion<k>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from stbias.plotting.style import (
    COLOURS,
    paper_figure,
    paper_subplots,
)


def _pct(entry: Mapping[str, Any], key: str, cls: str) -> float:
    """A layer entry's share of class ``cls``: layer-wise ``percent`` or unit-wise ``units``."""
    if key == "units":
        units = entry["units"]
        total = sum(units[c] for c in ("dynamic", "static", "joint", "residual"))
        return 100.0 * units[cls] / total if total else 0.0
    return float(entry["percent"][cls])


def _bounds(entry: Mapping[str, Any], key: str, cls: str) -> tuple[float, float] | None:
    """The bootstrap interval of ``_pct(entry, key, cls)`` (``probe.bootstrap > 0``), or None."""
    interval = ((entry.get("ci") or {}).get(key) or {}).get(cls)
    if interval is None:
        return None
    if key == "units":
        units = entry["units"]
        total = sum(units[c] for c in ("dynamic", "static", "joint", "residual"))
        return tuple(100.0 * float(v) / total for v in interval) if total else None
    return float(interval[0]), float(interval[1])


def _interval(ax: Axes, x: float, top: float, value: float, bounds) -> None:
    """The interval of a bar segment's ``value`` (ending at ``top``), drawn from lo to hi as
    they are: a percentile interval of a count can exclude the count."""
    if bounds is None:
        return
    lo, hi = (top - value + b for b in bounds)
    ax.errorbar(
        x,
        (lo + hi) / 2,
        yerr=(hi - lo) / 2,
        fmt="none",
        ecolor="black",
        elinewidth=0.6,
        capsize=1.5,
    )


STREAMS = (("motion", "mot_res{}"), ("appearance", "app_res{}"), ("fusion", "fusion{}"))
STAGES = (2, 3, 4, 5)
UNIT_CLASSES = ("dynamic", "static", "joint", "residual")
Layers = Mapping[str, Mapping[str, Any]]


def _stacked(ax: Axes, layers: Layers, aliases: Sequence[str], labels: Sequence[str]) -> None:
    for x, alias in enumerate(aliases):
        if alias not in layers:
            continue
        bottom = 0.0
        for cls in ("dynamic", "static", "residual"):
            value = _pct(layers[alias], "percent", cls)
            ax.bar(x, value, bottom=bottom, color=COLOURS[cls], width=0.75, edgecolor="white")
            bottom += value
            _interval(ax, x, bottom, value, _bounds(layers[alias], "percent", cls))
    ax.set_xticks(range(len(aliases)), labels, fontsize=8)
    ax.set_ylim(0, 100)


def _unit_bars(ax: Axes, groups: Mapping[str, Mapping[str, Any]]) -> None:
    width = 0.8 / len(UNIT_CLASSES)
    for i, entry in enumerate(groups.values()):
        for k, cls in enumerate(UNIT_CLASSES):
            value = _pct(entry, "units", cls) if entry is not None else 0.0
            x = i + (k - 1.5) * width
            ax.bar(x, value, width=width, color=COLOURS[cls])
            if entry is not None:
                _interval(ax, x, value, value, _bounds(entry, "units", cls))
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylim(0, 100)


def _legend(fig: Figure, classes: Sequence[str]) -> None:
    handles = [Rectangle((0, 0), 1, 1, color=COLOURS[c]) for c in classes]
    fig.legend(handles, classes, loc="lower center", ncol=len(classes), fontsize=8, frameon=False)


def fig4(
    results: Mapping[str, Layers], unit_layer: str = "fusion5", title: str | None = None
) -> Figure:
    """Fig. 4: per model, the layer-wise split of its motion, appearance and fusion layers, and
    the unit classes of ``unit_layer`` (the paper: fusion layer 5) of every model on the right.

    Args:
        results: model label -> layer alias -> per-layer entry of a probe's ``results.json``.
        unit_layer: the layer of the unit-wise panel.
        title: figure title.
    """
    models = list(results)
    fig = paper_figure(figsize=(10.5, 1.0 + 1.9 * len(models)))
    grid = fig.add_gridspec(len(models), 4, width_ratios=[1, 1, 1, 1.4], hspace=0.55, wspace=0.4)
    for row, model in enumerate(models):
        for col, (stream, pattern) in enumerate(STREAMS):
            ax = fig.add_subplot(grid[row, col])
            aliases = [pattern.format(k) for k in STAGES]
            _stacked(ax, results[model], aliases, [str(k) for k in STAGES])
            if row == 0:
                ax.set_title(stream, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{model}\n% (layer-wise)", fontsize=8)
            else:
                ax.set_yticklabels([])
    ax = fig.add_subplot(grid[:, 3])
    _unit_bars(ax, {m: results[m].get(unit_layer) for m in models})
    ax.set_title(f"units of {unit_layer}", fontsize=10)
    ax.yaxis.set_label_position("right")
    ax.yaxis.tick_right()
    ax.set_ylabel("% of units (unit-wise)", fontsize=8)
    for label in ax.get_xticklabels():
        label.set(rotation=30, horizontalalignment="right", fontsize=7)
    _legend(fig, UNIT_CLASSES)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(bottom=0.22 if len(models) < 3 else 0.12)
    return fig


def table1_rows(
    results: Mapping[str, Layers], layers: Sequence[str] = ("fusion5", "fusion2")
) -> list[dict[str, Any]]:
    """Table 1: per training dataset, the dynamic and static percent of ``layers``."""
    rows = []
    for name, entries in results.items():
        row: dict[str, Any] = {"dataset": name}
        for layer in layers:
            entry = entries.get(layer)
            for cls, short in (("dynamic", "dyn"), ("static", "stat")):
                row[f"{layer}_{short}"] = None if entry is None else float(entry["percent"][cls])
        rows.append(row)
    return rows


def table1_markdown(rows: Sequence[Mapping[str, Any]], layers: Sequence[str]) -> str:
    """Table 1 as a Markdown table (``Dyn. (%)`` and ``Stat. (%)`` under each layer)."""
    head = "| Dataset | " + " | ".join(f"{lay} Dyn. (%) | {lay} Stat. (%)" for lay in layers) + " |"
    lines = [head, "|---" * (1 + 2 * len(layers)) + "|"]
    for row in rows:
        cells = []
        for layer in layers:
            for short in ("dyn", "stat"):
                value = row.get(f"{layer}_{short}")
                cells.append("–" if value is None else f"{value:.1f}")
        lines.append(f"| {row['dataset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table1_figure(
    rows: Sequence[Mapping[str, Any]], layers: Sequence[str], title: str | None = None
) -> Figure:
    """Table 1 drawn as a table."""
    columns = [f"{lay}\n{c} (%)" for lay in layers for c in ("Dyn.", "Stat.")]
    cells = [
        [
            "–" if row.get(f"{lay}_{s}") is None else f"{row[f'{lay}_{s}']:.1f}"
            for lay in layers
            for s in ("dyn", "stat")
        ]
        for row in rows
    ]
    fig, ax = paper_subplots(figsize=(1.6 + 1.3 * len(columns), 0.9 + 0.35 * len(rows)))
    ax.axis("off")
    table = ax.table(
        cellText=cells,
        rowLabels=[str(r["dataset"]) for r in rows],
        colLabels=columns,
        loc="center",
        cellLoc="center",
    )
    table.scale(1.0, 1.6)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_height(cell.get_height() * 1.8)
    table.set_fontsize(9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def center_bias_maps(
    entries: Mapping[str, Mapping[str, Any]], title: str | None = "center bias"
) -> Figure:
    """Center-bias maps side by side (Fig. 7 right), each titled with its center mass."""
    names = list(entries)
    fig, axes = paper_subplots(
        1, len(names), figsize=(0.8 + 2.6 * len(names), 3.0), squeeze=False, layout="constrained"
    )
    image = None
    for ax, name in zip(axes[0], names):
        image = ax.imshow(entries[name]["map"], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"{name}\ncenter mass {entries[name]['center_mass']:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def fig7(
    results: Mapping[str, Layers],
    center: Mapping[str, Mapping[str, Any]],
    layers: Sequence[str] = ("fusion5", "fusion2"),
    title: str | None = None,
) -> Figure:
    """Fig. 7: unit classes of ``layers`` per training dataset (left) and center bias (right)."""
    datasets = list(results)
    shown = [d for d in datasets if d in center]
    fig = paper_figure(figsize=(3.2 * len(layers) + 2.4 * max(len(shown), 1), 3.6))
    grid = fig.add_gridspec(1, len(layers) + max(len(shown), 1), wspace=0.35)
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(grid[0, i])
        _unit_bars(ax, {d: results[d].get(layer) for d in datasets})
        ax.set_title(f"units of {layer}", fontsize=10)
        if i == 0:
            ax.set_ylabel("% of units (unit-wise)", fontsize=8)
    for j, name in enumerate(shown):
        ax = fig.add_subplot(grid[0, len(layers) + j])
        ax.imshow(center[name]["map"], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(
            f"{name}: center bias\ncenter mass {center[name]['center_mass']:.2f}", fontsize=9
        )
        ax.set_xticks([])
        ax.set_yticks([])
    _legend(fig, UNIT_CLASSES)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(bottom=0.2, top=0.8)
    return fig


def j_bars(
    groups: Mapping[str, Mapping[str, Mapping[str, Any]]],
    evaluated_on: str,
    title: str | None = None,
) -> Figure:
    """J of every cross connection (bars with their intervals) per training dataset (panels),
    beside the all-foreground J (the foreground fraction: a segmenter that learnt nothing).

    Args:
        groups: ``{training dataset: {cross connection label: scores}}``, the scores with ``J``,
            ``J_ci``, ``J_all_foreground`` and ``J_all_foreground_ci`` (intervals may be None).
        evaluated_on: the evaluation dataset's name, for the axis label.
    """
    names = list(groups)
    fig, axes = paper_subplots(
        1, len(names), figsize=(0.9 + 2.8 * len(names), 3.4), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names):
        labels = list(groups[name])
        for i, label in enumerate(labels):
            scores = groups[name][label]
            ax.bar(i, scores["J"], color=COLOURS["dynamic"], width=0.6)
            ci = scores.get("J_ci")
            if ci:
                ax.errorbar(
                    i,
                    scores["J"],
                    yerr=[[scores["J"] - ci[0]], [ci[1] - scores["J"]]],
                    color="black",
                    capsize=3,
                    lw=1,
                )
        base = groups[name][labels[0]]["J_all_foreground"]
        ax.axhline(base, color=COLOURS["static"], ls="--", lw=1, label="all-foreground J")
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"trained on {name}", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"J on {evaluated_on}", fontsize=9)
    axes[0][0].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
