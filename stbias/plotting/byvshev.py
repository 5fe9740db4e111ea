"""Byvshev et al. (CVIU'22) Table 1 (BrushMNIST experiments) and Table 2 (P+F+M accuracy grid).

Pure functions from result rows (see :mod:`stbias.studies.byvshev`, which reads them from run
directories) to figures and Markdown tables, with the paper's numbers beside stbias's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from stbias.plotting.latex import attach_table, markdown_cells
from stbias.plotting.static_dropout import interval
from stbias.plotting.style import paper_subplots

# Table 1 of the paper (I3D trained from scratch on BrushMNIST, 150 frames of 224x224), in %
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "a": {"err_appearance_only": 2.49, "err_motion_only": 0.11, "err_both": 0.03},
    "b": {"err_appearance_only": 1.89, "err_motion_only": 2.13, "err_both": 0.04},
    "c": {"acc_normal": 97.4, "acc_reversed": 11.3},
}
# Table 2 of the paper: I3D accuracy on P+F+M, rows = place classes, columns = motion classes
PAPER_TABLE2_CLASSES = (2, 4, 8, 16, 32, 64, 128, 256)
PAPER_TABLE2 = np.array(
    [
        [0.99, 0.98, 0.99, 0.99, 0.99, 0.99, 0.98, 0.98],
        [0.96, 0.98, 0.97, 0.97, 0.97, 0.97, 0.97, 0.96],
        [0.89, 0.89, 0.90, 0.90, 0.89, 0.89, 0.86, 0.86],
        [0.86, 0.86, 0.83, 0.83, 0.82, 0.81, 0.81, 0.80],
        [0.78, 0.78, 0.77, 0.77, 0.76, 0.76, 0.75, 0.75],
        [0.66, 0.66, 0.66, 0.65, 0.65, 0.65, 0.65, 0.64],
        [0.52, 0.51, 0.50, 0.50, 0.49, 0.49, 0.49, 0.48],
        [0.36, 0.35, 0.35, 0.34, 0.33, 0.33, 0.32, 0.32],
    ]
)

# Table 1 settings: (panel, trained on, evaluated on, frames reversed) -> description
TABLE1_SETTINGS: dict[tuple[str, str, str, bool], str] = {
    ("a", "normal", "normal", False): "trained and tested on normal clips",
    ("b", "footprint", "footprint", False): "trained and tested on footprints",
    ("b", "normal", "footprint", False): "trained on normal clips, tested on footprints",
    ("c", "normal", "normal", True): "trained on normal clips, tested on reversed clips",
}
ERROR_LABELS = {
    "err_appearance_only": "appearance (brush)\nonly",
    "err_motion_only": "motion (shape)\nonly",
    "err_both": "both",
}


def table1_setting(row: Mapping[str, Any]) -> str | None:
    """The Table 1 panel a row belongs to (``a``, ``b``, ``c``), or None."""
    key = (str(row["trained_variant"]), str(row["variant"]), bool(row["reverse"]))
    for (panel, trained, variant, reverse), _ in TABLE1_SETTINGS.items():
        if (trained, variant, reverse) == key:
            return panel
    return None


def _pick(rows: Sequence[Mapping[str, Any]], trained: str, variant: str, reverse: bool):
    for row in rows:
        if (str(row["trained_variant"]), str(row["variant"]), bool(row["reverse"])) == (
            trained,
            variant,
            reverse,
        ):
            return row
    return None


def table1_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 1 as Markdown: stbias's numbers (%) beside the paper's.

    Args:
        rows: one per evaluation with ``trained_variant``, ``variant``, ``reverse``, ``acc``,
            ``acc_shape``, ``acc_brush`` and the three ``err_*`` fractions (of all clips).
    """
    lines = [
        "| setting | acc | shape acc | brush acc | appearance-only err | motion-only err "
        "| both err | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    paper = {
        ("normal", "normal", False): "97.4 acc; errors 2.49 / 0.11 / 0.03",
        ("footprint", "footprint", False): "errors 1.89 / 2.13 / 0.04",
        ("normal", "footprint", False): "not reported",
        ("normal", "normal", True): "11.3 acc",
    }
    for (_, trained, variant, reverse), text in TABLE1_SETTINGS.items():
        row = _pick(rows, trained, variant, reverse)
        if row is None:
            continue
        values = [100 * float(row[k]) for k in ("acc", "acc_shape", "acc_brush", *ERROR_LABELS)]
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {text} | {cells} | {paper[(trained, variant, reverse)]} |")
    return "\n".join(lines)


def table1_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Table 1's three panels as bars, stbias beside the paper (hatched), values in %.

    (a) error breakdown of the normally trained model; (b) that of the model trained and tested
    on footprints (and, when present, the normal model tested on footprints); (c) overall, shape
    and brush accuracy of the normal model on normal and on reversed clips (the paper gives only
    the overall accuracy).
    """
    fig, axes = paper_subplots(1, 3, figsize=(13, 3.8))
    errors = list(ERROR_LABELS)
    panels = [
        ("(a) errors, normal clips", [("normal", "normal", False, "stbias", PAPER_TABLE1["a"])]),
        (
            "(b) errors, footprints",
            [
                ("footprint", "footprint", False, "stbias", PAPER_TABLE1["b"]),
                ("normal", "footprint", False, "stbias, trained on normal", None),
            ],
        ),
    ]
    for ax, (name, series) in zip(axes[:2], panels):
        present = [s for s in series if _pick(rows, *s[:3]) is not None]
        n = len(present) + sum(1 for s in present if s[4] is not None)
        width = 0.8 / max(n, 1)
        k = 0
        for trained, variant, reverse, label, paper in present:
            row = _pick(rows, trained, variant, reverse)
            xs = np.arange(len(errors)) + (k - (n - 1) / 2) * width
            bars = ax.bar(xs, [100 * float(row[e]) for e in errors], width, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
            k += 1
            if paper is not None:
                xs = np.arange(len(errors)) + (k - (n - 1) / 2) * width
                bars = ax.bar(
                    xs, [paper[e] for e in errors], width, label="paper", hatch="//", alpha=0.5
                )
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
                k += 1
        ax.set_xticks(range(len(errors)), [ERROR_LABELS[e] for e in errors], fontsize=8)
        ax.set_ylabel("% of test clips")
        ax.set_title(name, fontsize=10)
        if present:
            ax.legend(fontsize=7)
    ax = axes[2]
    groups = [("normal", False), ("reversed", True)]
    for k, (label, key) in enumerate(
        (("overall", "acc"), ("shape", "acc_shape"), ("brush", "acc_brush"))
    ):
        heights, xs = [], []
        for g, (_, reverse) in enumerate(groups):
            row = _pick(rows, "normal", "normal", reverse)
            if row is not None:
                heights.append(100 * float(row[key]))
                xs.append(g + (k - 1.5) * 0.2)
        bars = ax.bar(xs, heights, 0.2, label=f"stbias {label}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    paper = [PAPER_TABLE1["c"]["acc_normal"], PAPER_TABLE1["c"]["acc_reversed"]]
    bars = ax.bar(
        [g + 1.5 * 0.2 for g in range(2)], paper, 0.2, label="paper overall", hatch="//", alpha=0.5
    )
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(2), ["normal clips", "reversed clips"])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title("(c) frame order", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return attach_table(fig, *markdown_cells(table1_markdown(rows)))


def table2_grid(rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int], np.ndarray]:
    """Places (rows), motions (columns) and the mean accuracy over seeds (NaN where none).

    Args:
        rows: one per (places, motions, seed) with ``places``, ``motions`` and ``acc``.
    """
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for row in rows:
        cells[(int(row["places"]), int(row["motions"]))].append(float(row["acc"]))
    places = sorted({p for p, _ in cells})
    motions = sorted({m for _, m in cells})
    grid = np.full((len(places), len(motions)), np.nan)
    for (p, m), accs in cells.items():
        grid[places.index(p), motions.index(m)] = float(np.mean(accs))
    return places, motions, grid


def table2_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 2 as Markdown (mean over seeds), the paper's value in brackets where it has one."""
    places, motions, grid = table2_grid(rows)
    lines = [
        "| places \\ motions | " + " | ".join(str(m) for m in motions) + " |",
        "|---" * (len(motions) + 1) + "|",
    ]
    for i, p in enumerate(places):
        cells = []
        for j, m in enumerate(motions):
            text = "–" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
            if p in PAPER_TABLE2_CLASSES and m in PAPER_TABLE2_CLASSES:
                paper = PAPER_TABLE2[PAPER_TABLE2_CLASSES.index(p), PAPER_TABLE2_CLASSES.index(m)]
                text += f" ({paper:.2f})"
            cells.append(text)
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table2_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Table 2's heat map: accuracy per (place classes, motion classes), mean over seeds.

    Rows are place (appearance) classes, columns motion classes, as in the paper; the paper's own
    grid is drawn beside it for the same class counts.
    """
    places, motions, grid = table2_grid(rows)
    fig, axes = paper_subplots(1, 2, figsize=(4 + 1.2 * len(motions), 1.6 + 0.55 * len(places)))
    ip = [PAPER_TABLE2_CLASSES.index(p) if p in PAPER_TABLE2_CLASSES else None for p in places]
    im = [PAPER_TABLE2_CLASSES.index(m) if m in PAPER_TABLE2_CLASSES else None for m in motions]
    paper = np.array(
        [[np.nan if a is None or b is None else PAPER_TABLE2[a, b] for b in im] for a in ip]
    )
    for ax, values, name in ((axes[0], grid, "stbias"), (axes[1], paper, "paper (I3D)")):
        ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(len(places)):
            for j in range(len(motions)):
                if not np.isnan(values[i, j]):
                    colour = "black" if values[i, j] > 0.6 else "white"
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=colour)
        ax.set_xticks(range(len(motions)), [str(m) for m in motions])
        ax.set_yticks(range(len(places)), [str(p) for p in places])
        ax.set_xlabel("motion classes (M)")
        ax.set_ylabel("place classes (A)")
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    note = "accuracy, mean over seeds; the paper's value in brackets"
    return attach_table(fig, *markdown_cells(table2_markdown(rows)), note=note)


def table2_cells(rows: Sequence[Mapping[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Per (places, motions): seeds, mean accuracy, its Student-t interval over seeds and chance.

    One seed gives ``nan`` bounds; the interval is of the mean over the seeds' final accuracies.
    """
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for row in rows:
        cells[(int(row["places"]), int(row["motions"]))].append(float(row["acc"]))
    out = []
    for (p, m), accs in sorted(cells.items()):
        mean, lo, hi = interval(accs, level)
        out.append(
            {
                "places": p,
                "motions": m,
                "seeds": len(accs),
                "acc": mean,
                "acc_lo": lo,
                "acc_hi": hi,
                "chance": 1.0 / (p * m),
            }
        )
    return out


def _slopes(cells: Mapping[tuple[int, int], float]) -> tuple[float, float]:
    """Least-squares plane ``acc = a + b log2(places) + c log2(motions)`` over the cells: (b, c)."""
    keys = sorted(cells)
    design = np.array([[1.0, np.log2(p), np.log2(m)] for p, m in keys])
    if np.linalg.matrix_rank(design) < 3:
        return float("nan"), float("nan")
    coef, *_ = np.linalg.lstsq(design, np.array([cells[k] for k in keys]), rcond=None)
    return float(coef[1]), float(coef[2])


def table2_trend(rows: Sequence[Mapping[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """The paper's trend in numbers: accuracy change per doubling of place and of motion classes.

    For every seed a plane ``acc = a + b log2(places) + c log2(motions)`` is fitted to its cells
    (least squares); ``places`` = b, ``motions`` = c and ``gap`` = b − c are given as mean and
    Student-t interval over seeds, beside the same fit to the paper's Table 2 on the same cells.
    The paper's trend (more appearance classes cost more than more motion classes) is ``gap < 0``.
    A grid with fewer than two values on either axis has no trend (``nan``).
    """
    by_seed: dict[int, dict[tuple[int, int], float]] = defaultdict(dict)
    for row in rows:
        by_seed[int(row["seed"])][(int(row["places"]), int(row["motions"]))] = float(row["acc"])
    fits = [_slopes(cells) for cells in by_seed.values()]
    out: dict[str, Any] = {"seeds": len(fits)}
    for name, values in (
        ("places", [b for b, _ in fits]),
        ("motions", [c for _, c in fits]),
        ("gap", [b - c for b, c in fits]),
    ):
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = interval(values, level)
    grid = {k for cells in by_seed.values() for k in cells}
    if all(p in PAPER_TABLE2_CLASSES and m in PAPER_TABLE2_CLASSES for p, m in grid):
        paper = {
            (p, m): float(
                PAPER_TABLE2[PAPER_TABLE2_CLASSES.index(p), PAPER_TABLE2_CLASSES.index(m)]
            )
            for p, m in grid
        }
        b, c = _slopes(paper)
        out.update(paper_places=b, paper_motions=c, paper_gap=b - c)
    return out


def _pm(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    if np.isnan(mean):
        return "–"
    if np.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def table2_trend_text(trend: Mapping[str, Any]) -> str:
    """One line: accuracy change per doubling of place / motion classes, and the paper's."""

    def part(key: str) -> str:
        return _pm(trend[key], trend[f"{key}_lo"], trend[f"{key}_hi"], 3)

    text = (
        f"accuracy per doubling of place classes {part('places')}, of motion classes "
        f"{part('motions')}, difference {part('gap')}"
    )
    if "paper_places" in trend:
        text += (
            f" (paper on these cells: {trend['paper_places']:.3f}, {trend['paper_motions']:.3f}, "
            f"{trend['paper_gap']:.3f})"
        )
    return text


def table2_interval_markdown(rows: Sequence[Mapping[str, Any]], level: float = 0.95) -> str:
    """Table 2 as Markdown: mean ± half-width of the interval over seeds, chance and the paper's
    value in brackets, then the trend line (:func:`table2_trend`)."""
    cells = {(c["places"], c["motions"]): c for c in table2_cells(rows, level)}
    places = sorted({p for p, _ in cells})
    motions = sorted({m for _, m in cells})
    lines = [
        "| places \\ motions | " + " | ".join(str(m) for m in motions) + " |",
        "|---" * (len(motions) + 1) + "|",
    ]
    for p in places:
        texts = []
        for m in motions:
            cell = cells.get((p, m))
            if cell is None:
                texts.append("–")
                continue
            text = _pm(cell["acc"], cell["acc_lo"], cell["acc_hi"])
            extra = [f"chance {cell['chance']:.3f}"]
            if p in PAPER_TABLE2_CLASSES and m in PAPER_TABLE2_CLASSES:
                paper = PAPER_TABLE2[PAPER_TABLE2_CLASSES.index(p), PAPER_TABLE2_CLASSES.index(m)]
                extra.append(f"paper {paper:.2f}")
            texts.append(f"{text} ({', '.join(extra)})")
        lines.append(f"| {p} | " + " | ".join(texts) + " |")
    seeds = sorted({int(r["seed"]) for r in rows})
    lines += [
        "",
        f"mean ± half-width of the {100 * level:.0f} % Student-t interval over seeds "
        f"{', '.join(map(str, seeds))}; {table2_trend_text(table2_trend(rows, level))}",
    ]
    return "\n".join(lines)


def table2_interval_figure(
    rows: Sequence[Mapping[str, Any]], title: str | None = None, level: float = 0.95
) -> Figure:
    """Table 2's heat map with the interval over seeds in every cell and the trend beneath.

    Left: stbias (mean ± half-width, chance under it); right: the paper's grid on the same cells;
    beneath: accuracy per doubling of place and of motion classes (:func:`table2_trend`).
    """
    cells = {(c["places"], c["motions"]): c for c in table2_cells(rows, level)}
    places = sorted({p for p, _ in cells})
    motions = sorted({m for _, m in cells})
    grid = np.full((len(places), len(motions)), np.nan)
    for (p, m), cell in cells.items():
        grid[places.index(p), motions.index(m)] = cell["acc"]
    ip = [PAPER_TABLE2_CLASSES.index(p) if p in PAPER_TABLE2_CLASSES else None for p in places]
    im = [PAPER_TABLE2_CLASSES.index(m) if m in PAPER_TABLE2_CLASSES else None for m in motions]
    paper = np.array(
        [[np.nan if a is None or b is None else PAPER_TABLE2[a, b] for b in im] for a in ip]
    )
    fig, axes = paper_subplots(1, 2, figsize=(4.5 + 1.5 * len(motions), 2.2 + 0.6 * len(places)))
    for ax, values, name in ((axes[0], grid, "stbias"), (axes[1], paper, "paper (I3D)")):
        ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for i, p in enumerate(places):
            for j, m in enumerate(motions):
                if np.isnan(values[i, j]):
                    continue
                colour = "black" if values[i, j] > 0.6 else "white"
                if values is grid:
                    cell = cells[(p, m)]
                    text = _pm(cell["acc"], cell["acc_lo"], cell["acc_hi"])
                    text += f"\nchance {cell['chance']:.3f}"
                else:
                    text = f"{values[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(motions)), [str(m) for m in motions])
        ax.set_yticks(range(len(places)), [str(p) for p in places])
        ax.set_xlabel("motion classes (M)")
        ax.set_ylabel("place classes (A)")
        ax.set_title(name, fontsize=10)
    seeds = len({int(r["seed"]) for r in rows})
    fig.text(
        0.5,
        0.01,
        f"{seeds} seed(s); " + table2_trend_text(table2_trend(rows, level)),
        ha="center",
        fontsize=7,
        wrap=True,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    # the cells (mean ± half-width over seeds, chance, the paper's value) also as a LaTeX table
    cells = markdown_cells(table2_interval_markdown(rows, level))
    return attach_table(fig, *cells, note=table2_trend_text(table2_trend(rows, level)))
