"""Byvshev et al. (CVIU'22) Appendix A: Fig. A.12 and Tables A.3, A.4 from the scene study's
tables (:mod:`stbias.studies.scene_bias`), beside the paper's numbers."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from stbias.plotting.explain import draw_table
from stbias.plotting.style import paper_subplots

# Fig. A.12's one point the text quotes: 80 % of the Kinetics videos score 0.25 or more
PAPER_FIG_A12 = (0.25, 0.80)
# Table A.3 (I3D on Kinetics-400, Places365 VGG16): places, videos, accuracy
PAPER_TABLE_A3 = {"common": (16, 15132, 0.563), "rare": (233, 16434, 0.632)}
# Table A.4 on Places365: (model, pre-training, fixed weights, top-1), fine-tuned then fixed
PAPER_TABLE_A4 = (
    ("Inception v2 (2D)", "ImageNet", False, 0.441),
    ("Inception v2 (2D)", "ImageNet", True, 0.433),
    ("I3D (3D)", "Kinetics", False, 0.413),
    ("I3D (3D)", "Kinetics", True, 0.412),
)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


def table_a3_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table A.3's header and rows: every group of the study, then the paper's."""
    header = [
        "group",
        "places",
        "videos",
        "accuracy (%)",
        "paper: places",
        "paper: videos",
        "paper: acc. (%)",
    ]
    body = []
    for row in rows:
        paper = PAPER_TABLE_A3.get(str(row["group"]), (None, None, None))
        body.append(
            [
                str(row["group"]),
                str(row["places"]),
                str(row["videos"]),
                _pct(row["accuracy"]),
                str(paper[0]),
                str(paper[1]),
                _pct(paper[2]),
            ]
        )
    return header, body


def table_a4_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table A.4's header and rows: every model of the study, then the paper's (fixed weights)."""
    header = ["model", "input", "pre-training", "fixed weights", "top-1 (%)"]
    body = [
        [
            str(r["model"]),
            str(r["kind"]),
            str(r.get("pretraining") or "–"),
            "yes" if r.get("fixed_weights", True) else "no",
            _pct(r["top1"]) + ("" if r.get("probe_converged", True) else " (not converged)"),
        ]
        for r in rows
    ]
    body += [
        [
            f"paper: {name}",
            name.split("(")[-1].rstrip(")"),
            pre,
            "yes" if fixed else "no",
            _pct(acc),
        ]
        for name, pre, fixed, acc in PAPER_TABLE_A4
    ]
    return header, body


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table_a3_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table A.3 as Markdown."""
    return _markdown(*table_a3_cells(rows))


def table_a4_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table A.4 as Markdown."""
    return _markdown(*table_a4_cells(rows))


def table_a3_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Table A.3 drawn as a table (saving it also writes the LaTeX table)."""
    return draw_table(*table_a3_cells(rows), title=title)


def table_a4_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Table A.4 drawn as a table (saving it also writes the LaTeX table)."""
    return draw_table(*table_a4_cells(rows), title=title)


def _bars(ax: Any, labels: Sequence[str], ours: Sequence[Any], paper: Sequence[Any]) -> None:
    """stbias's values (%) beside the paper's (hatched) for each label; None: no bar."""
    xs = range(len(labels))
    for offset, values, kind in ((-0.2, ours, "stbias"), (0.2, paper, "paper")):
        shown = [(x + offset, 100 * float(v)) for x, v in zip(xs, values) if v is not None]
        if not shown:
            continue
        style = {"hatch": "//", "alpha": 0.5} if kind == "paper" else {}
        bars = ax.bar(*zip(*shown), 0.4, label=kind, **style)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(list(xs), list(labels), fontsize=7)
    ax.set_ylim(0, 110)
    ax.legend(fontsize=7, loc="lower right")


def _a4_label(name: str, fixed: bool) -> str:
    """A Table A.4 bar's label: the name over its input kind, and the regime when fine-tuned."""
    return textwrap.fill(name, 12) + ("" if fixed else "\nfine-tuned")


def appendix_a_figure(
    curve: Sequence[Mapping[str, Any]],
    table_a3: Sequence[Mapping[str, Any]],
    table_a4: Sequence[Mapping[str, Any]],
    title: str | None = None,
) -> Figure:
    """(a) Fig. A.12: share of videos whose common place score is at least x, with the paper's
    quoted point; (b) Table A.3's accuracies, common vs rare places; (c) Table A.4's top-1 per
    model; the paper's numbers hatched beside stbias's."""
    fig, axes = paper_subplots(1, 3, figsize=(18, 4.2), width_ratios=[1, 1, 2.1])
    ax = axes[0]
    xs = [float(p["score"]) for p in curve]
    ax.plot(xs, [100 * float(p["share"]) for p in curve], marker="o", ms=3, label="stbias")
    ax.plot(
        [PAPER_FIG_A12[0]], [100 * PAPER_FIG_A12[1]], "s", color="0.4", label="paper (Kinetics)"
    )
    ax.set_xlabel("common place score")
    ax.set_ylabel("videos with score ≥ x (%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 105)
    ax.set_title("(a) Fig. A.12, common place score", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    groups = [str(r["group"]) for r in table_a3]
    _bars(
        ax,
        [f"{r['group']}\n{r['places']} places, {r['videos']} videos" for r in table_a3],
        [r["accuracy"] for r in table_a3],
        [PAPER_TABLE_A3.get(g, (None, None, None))[2] for g in groups],
    )
    ax.set_ylabel("accuracy (%)")
    ax.set_title("(b) Table A.3, common vs rare places", fontsize=10)
    ax = axes[2]
    labels = [_a4_label(str(r["model"]), r.get("fixed_weights", True)) for r in table_a4]
    labels += [_a4_label(f"paper: {name}", fixed) for name, _, fixed, _ in PAPER_TABLE_A4]
    _bars(
        ax,
        labels,
        [r["top1"] for r in table_a4] + [None] * len(PAPER_TABLE_A4),
        [None] * len(table_a4) + [acc for *_, acc in PAPER_TABLE_A4],
    )
    ax.legend(fontsize=7, loc="upper right")  # the paper's bars, on the right, are lower
    ax.set_ylabel("top-1 (%)")
    ax.set_title("(c) Table A.4, places on static clips", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
