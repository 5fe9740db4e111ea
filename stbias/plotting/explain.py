"""Explanation figures (Mänttäri et al.): mask strips, Grad-CAM overlays, Tables 1, 3 and 4.

Pure functions from arrays or result files to figures. The tables take the run summaries that
``metric=temporal_mask`` and ``metric=gradcam`` write (``results.json``, plus ``masks.npz`` /
``blobs.npz`` for the t-tests) and lay them out as the paper does: one row per model (dataset),
"mean ± std" per measure, and, for two runs, Welch's t-test p with its n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from stbias.plotting.style import paper_figure, paper_subplots

# Table 3 and Table 4 columns: (summary key, header)
TABLE3 = (
    ("blob_count", "Blob count"),
    ("blob_size", "Blob size"),
    ("center_distance", "Center distance"),
)
TABLE4 = (
    ("mask_length", "Mask length"),
    ("drop_ratio", "Drop ratio"),
    ("drop_difference", "Drop diff."),
)


def _frames_rgb(frames: Any) -> np.ndarray:
    """Frames ``(T, H, W, C)`` (uint8 or float in [0, 1], C = 1 or 3) as float RGB in [0, 1]."""
    frames = np.asarray(frames)
    frames = frames.astype(np.float64) / 255.0 if frames.dtype == np.uint8 else frames.astype(float)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.clip(frames, 0.0, 1.0)


def overlay(frames: Any, maps: Any, alpha: float = 0.5) -> np.ndarray:
    """Frames ``(T, H, W, C)`` blended with maps ``(T, H, W)`` in [0, 1] (jet): uint8 RGB."""
    rgb = _frames_rgb(frames)
    heat = matplotlib.colormaps["jet"](np.clip(np.asarray(maps, dtype=np.float64), 0, 1))[..., :3]
    return np.rint(255 * ((1 - alpha) * rgb + alpha * heat)).astype(np.uint8)


def mask_strip(
    frames: Any,
    mask: Any,
    perturbed: Any = None,
    title: str | None = None,
    threshold: float = 0.5,
) -> Figure:
    """The frames in a row, the perturbed frames below (optional) and the mask under them.

    Mask bars are red where the mask is on (``> threshold``) and green where it is off, as in the
    paper's figures.

    Args:
        frames: ``(T, H, W, C)`` uint8 or float in [0, 1].
        mask: ``(T,)`` in [0, 1].
        perturbed: frames of the perturbed clip, same layout.
        title: figure title (e.g. the scores).
        threshold: mask value above which a frame counts as masked.
    """
    frames = _frames_rgb(frames)
    mask = np.asarray(mask, dtype=np.float64)
    t = frames.shape[0]
    rows = [frames] + ([_frames_rgb(perturbed)] if perturbed is not None else [])
    fig = paper_figure(figsize=(max(6.0, 0.8 * t), 1.0 + 0.85 * len(rows) + 0.9))
    grid = fig.add_gridspec(len(rows) + 1, t, height_ratios=[1] * len(rows) + [0.9], hspace=0.08)
    for r, row in enumerate(rows):
        for i in range(t):
            ax = fig.add_subplot(grid[r, i])
            ax.imshow(row[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel("input" if r == 0 else "frozen", fontsize=7)
    ax = fig.add_subplot(grid[len(rows), :])
    colours = ["tab:red" if v > threshold else "tab:green" for v in mask]
    ax.bar(np.arange(t), mask, color=colours, width=0.9)
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(t))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("frame", fontsize=8)
    ax.set_ylabel("mask", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def gradcam_strip(frames: Any, maps: Any, title: str | None = None) -> Figure:
    """The frames in a row and their Grad-CAM overlays below."""
    frames = _frames_rgb(frames)
    blended = overlay(frames, maps)
    t = frames.shape[0]
    fig, axes = paper_subplots(2, t, figsize=(max(6.0, 0.8 * t), 2.2), squeeze=False)
    for i in range(t):
        for r, image in enumerate((frames[i], blended[i])):
            axes[r, i].imshow(image, interpolation="nearest")
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[0, i].set_title(str(i), fontsize=7)
    axes[0, 0].set_ylabel("input", fontsize=7)
    axes[1, 0].set_ylabel("Grad-CAM", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    return fig


# decimals shown per measure (the paper's precision, one more for the small drop differences)
DIGITS = {
    "mask_length": 1,
    "drop_ratio": 2,
    "drop_difference": 3,
    "blob_count": 2,
    "blob_size": 1,
    "center_distance": 1,
}


def _cell(entry: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f} (n = {entry['n']})"


def _p_cell(test: Mapping[str, Any] | None) -> str:
    if not test:
        return "–"
    n = "/".join(str(v) for v in test["n"])
    if test.get("p") is None:
        return f"no test (n = {n})"
    return f"p = {test['p']:.2g} (n = {n})"


def draw_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> Figure:
    """A table figure: ``header`` over ``rows`` of strings."""
    # column widths from the longest text in each column
    chars = [max(len(str(r[j])) for r in [header, *rows]) for j in range(len(header))]
    inches = [0.075 * c + 0.3 for c in chars]
    fig, ax = paper_subplots(figsize=(sum(inches) + 0.4, 0.6 + 0.38 * (len(rows) + 1)))
    ax.axis("off")
    table = ax.table(
        cellText=[list(r) for r in rows],
        colLabels=list(header),
        colWidths=[w / sum(inches) for w in inches],
        cellLoc="center",
        loc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def table_rows(
    summaries: Mapping[str, Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    tests: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a paper table: one row per run, then one of t-test p-values."""
    header = ["Model (Dataset)"] + [name for _, name in columns]
    rows = [
        [label] + [_cell(summary.get(key), DIGITS.get(key, 2)) for key, _ in columns]
        for label, summary in summaries.items()
    ]
    if tests:
        rows.append(["Welch t-test"] + [_p_cell(tests.get(key)) for key, _ in columns])
    return header, rows


def table3(
    summaries: Mapping[str, Mapping[str, Any]],
    tests: Mapping[str, Any] | None = None,
    title: str | None = "Table 3: Grad-CAM blob statistics",
) -> Figure:
    """Table 3: blob count, blob size, centre distance (mean ± std) per run.

    Args:
        summaries: label (``"I3D (BrushMNIST)"``) -> the ``blobs`` summary of a Grad-CAM run.
        tests: measure -> :func:`stbias.metrics.blobs.welch_ttest` result, for two runs.
    """
    return draw_table(*table_rows(summaries, TABLE3, tests), title=title)


def table4(
    summaries: Mapping[str, Mapping[str, Any]],
    tests: Mapping[str, Any] | None = None,
    title: str | None = "Table 4: temporal masks",
) -> Figure:
    """Table 4: mask length, drop ratio, drop difference (mean ± std) per run."""
    return draw_table(*table_rows(summaries, TABLE4, tests), title=title)


def table1(
    rows: Sequence[Mapping[str, Any]], title: str | None = "Table 1: reversed frames"
) -> Figure:
    """Table 1: top-1 accuracy and macro F1 per model on clips in order and reversed."""
    header = ["Model", "Top-1", "Top-1 (rev.)", "F1", "F1 (rev.)", "clips"]
    cells = [
        [
            str(r["model"]),
            f"{r['acc']:.3f}",
            f"{r['acc_reversed']:.3f}",
            f"{r['f1']:.3f}",
            f"{r['f1_reversed']:.3f}",
            str(r["clips"]),
        ]
        for r in rows
    ]
    return draw_table(header, cells, title=title)
