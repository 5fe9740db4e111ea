"""The papers' look: Kowal et al.'s colour code, paper-column sizes, the softmax floor.

Static is red and dynamic blue (Kowal et al. Fig. 1); joint and residual units are neutral greys,
dark and light, so that no colour suggests a factor they do not carry. Byvshev et al.'s temporal
channels take the dynamic blue, static channels the static red. Widths fit a paper column: 3.3 in
(single) and 6.9 in (double), with 7-8 pt fonts that stay legible at that size.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = {
    "dynamic": "#2166ac",
    "static": "#b2182b",
    "joint": "#5f5f5f",
    "residual": "#c8c8c8",
}
# temporal / static channels of weight temporality take the dynamic / static colours
WEIGHT_COLOURS = {"temporal": COLOURS["dynamic"], "static": COLOURS["static"]}
FLOOR_COLOUR = "#7a7a7a"
SINGLE = 3.3  # inches: one column of a two-column paper
DOUBLE = 6.9  # inches: the full text width
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")


# S_dynamic = S_static = 0 gives softmax([0, 0, 1]) = 1 / (2 + e) for each factor: the share a
# layer with no information about either factor still gets (21.2 %); see docs/measures.md
SOFTMAX_FLOOR = 100.0 / (2.0 + math.e)
FLOOR_LABEL = f"uninformative layer, S = 0 ({SOFTMAX_FLOOR:.1f} %)"

RC = {
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8.5,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "errorbar.capsize": 1.5,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "pdf.fonttype": 42,
}


# what a saved file needs whoever saves it: TrueType (Type 42) fonts that journals accept and
# editors can change, never Type 3; nothing placed outside the axes (legends below panels) cropped
SAVE_RC = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
}


class PaperFigure(Figure):
    """A figure that saves as stbias saves it, whoever calls ``savefig``.

    ``fig.savefig("probe.pdf")`` in a notebook writes TrueType fonts and keeps legends that sit
    outside the axes, exactly as the library's own :func:`stbias.plotting.save_figure`; the
    user's matplotlib settings are left as they were.

    It is drawn on its own Agg canvas, apart from pyplot: making one never selects or switches
    the backend of a notebook or script, and works without a display. A notebook shows it as
    a PNG.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        FigureCanvasAgg(self)

    def savefig(self, fname, **kwargs):  # noqa: D102 - Figure.savefig, settings of SAVE_RC
        kwargs.setdefault("bbox_inches", "tight")
        kwargs.setdefault("pad_inches", SAVE_RC["savefig.pad_inches"])
        with matplotlib.rc_context(SAVE_RC):
            return super().savefig(fname, **kwargs)

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


@contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib settings of every stbias figure (fonts, line widths, no top/right spines)."""
    with matplotlib.rc_context(RC):
        yield


def draw_floor(ax: Axes, label: bool = True) -> None:
    """The softmax floor: the share an uninformative layer still gets for each factor."""
    ax.axhline(
        SOFTMAX_FLOOR,
        color=FLOOR_COLOUR,
        linestyle=(0, (4, 2)),
        linewidth=0.8,
        zorder=0.5,
        label=FLOOR_LABEL if label else None,
    )


def weights_title(weights: list[str]) -> str:
    """The part of a title that says whether the drawn models are trained: ``random weights``."""
    kinds = {str(w) for w in weights if w is not None}
    if not kinds or "random" not in kinds:
        return ""
    return "random weights" if kinds == {"random"} else "* random weights"


def fit_title(text: str | None, inches: float) -> str | None:
    """``text`` broken into lines that fit ``inches`` of width at the title font size."""
    if not text:
        return text
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, int(inches * 12.5)), break_long_words=False))


# the keywords of ``plt.subplots`` that lay out the grid; the others make the figure
GRID_KEYS = (
    "sharex",
    "sharey",
    "squeeze",
    "width_ratios",
    "height_ratios",
    "subplot_kw",
    "gridspec_kw",
)


def paper_subplots(nrows: int = 1, ncols: int = 1, **kwargs) -> tuple[PaperFigure, Any]:
    """``plt.subplots`` without pyplot, making a :class:`PaperFigure`: every figure of stbias
    starts here."""
    grid = {key: kwargs.pop(key) for key in GRID_KEYS if key in kwargs}
    fig = PaperFigure(**kwargs)
    return fig, fig.subplots(nrows, ncols, **grid)


def paper_figure(**kwargs) -> PaperFigure:
    """``plt.figure`` without pyplot, making a :class:`PaperFigure`."""
    return PaperFigure(**kwargs)
