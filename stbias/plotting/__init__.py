"""Figures: pure functions from result tables to matplotlib figures, in the papers' layouts."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure

from stbias.io import _atomic_write, write_text
from stbias.plotting.latex import figure_latex
from stbias.plotting.style import SAVE_RC


def save_figure(
    fig: Figure,
    stem: str | os.PathLike,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
) -> list[str]:
    """Save ``fig`` as ``stem.<format>`` for each format, atomically; returns the paths.

    A figure that is a table (a paper table) is also written as ``stem.tex``, a booktabs LaTeX
    table (:mod:`stbias.plotting.latex`); its path comes last.
    """
    paths = []
    for fmt in formats:
        path = f"{os.fspath(stem)}.{fmt}"
        # bbox "tight" keeps legends placed outside the axes (below the panels) in the file;
        # TrueType fonts (SAVE_RC) for any figure, a PaperFigure or not
        with matplotlib.rc_context(SAVE_RC):
            _atomic_write(
                path,
                lambda fh, fmt=fmt: fig.savefig(
                    fh, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.03
                ),
            )
        paths.append(path)
    latex = figure_latex(fig)
    if latex is not None:
        write_text(f"{os.fspath(stem)}.tex", latex)
        paths.append(f"{os.fspath(stem)}.tex")
    return paths


def save_animation(frames, path: str | os.PathLike, fps: float = 4.0) -> str:
    """Save uint8 frames ``(T, H, W, 3)`` as an animated GIF (looping), atomically; returns it."""
    import numpy as np
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in np.asarray(frames, dtype=np.uint8)]
    duration = int(round(1000.0 / float(fps)))

    def write(fh):
        images[0].save(
            fh, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
        )

    _atomic_write(path, write)
    return os.fspath(path)
