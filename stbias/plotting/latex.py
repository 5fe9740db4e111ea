"""Paper tables as LaTeX: booktabs rules, cells as the tables show them (``a ± b``, ``[lo, hi]``).

``latex_table(header, rows)`` goes through pandas' ``Styler.to_latex`` (``hrules=True``:
``\\toprule``, ``\\midrule``, ``\\bottomrule``; ``\\usepackage{booktabs}`` in the preamble). Text is
escaped for LaTeX and the symbols the tables use (±, λ, –, ×, ...) become math or dashes, so the
file compiles with pdfLaTeX as it is. :func:`stbias.plotting.save_figure` writes ``<stem>.tex``
beside every figure that is a table (a matplotlib table, or a figure a plotting function has
given its cells with :func:`attach_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

# LaTeX's special characters, backslash first
SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# what pdfLaTeX cannot take as text: -> LaTeX
SYMBOLS = {
    "±": r"$\pm$",
    "λ": r"$\lambda$",
    "Δ": r"$\Delta$",
    "σ": r"$\sigma$",
    "μ": r"$\mu$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\rightarrow$",
    "–": "--",
    "—": "---",
    "−": "$-$",
}
ATTRIBUTE = "_stbias_table"


def latex_text(text: Any) -> str:
    """One cell's text escaped for LaTeX, with the tables' symbols as LaTeX."""
    out = []
    for char in str(text):
        out.append(SPECIAL.get(char) or SYMBOLS.get(char) or char)
    return "".join(out)


def latex_table(
    header: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    caption: str | None = None,
    note: str | None = None,
) -> str:
    """A booktabs ``tabular`` of ``header`` over ``rows`` (cells as text, first column left).

    Args:
        caption: a ``table`` environment with this caption around the tabular.
        note: a line under the tabular (what ``±`` means, the interval's level).
    """
    names = [f"c{k}" for k in range(len(header))]
    frame = pd.DataFrame([[latex_text(c) for c in row] for row in rows], columns=names)
    frame.columns = pd.Index([latex_text(h) for h in header])  # repeated headings allowed
    tabular = frame.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "c" * (len(header) - 1)
    )
    if not caption and not note:
        return tabular
    parts = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        parts.append(f"\\caption{{{latex_text(caption)}}}")
    parts.append(tabular.rstrip("\n"))
    if note:
        parts.append(f"\\par\\smallskip{{\\footnotesize {latex_text(note)}}}")
    parts.append(r"\end{table}")
    return "\n".join(parts) + "\n"


def markdown_cells(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a Markdown table (``| a | b |`` lines; the rule line skipped)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    body = [row for row in cells[1:] if not all(set(c) <= set("-: ") for c in row)]
    return cells[0], body


def attach_table(fig: Any, header: Sequence[Any], rows: Sequence[Sequence[Any]], note=None):
    """Give a figure its table's cells, so that saving it also writes ``<stem>.tex``."""
    setattr(fig, ATTRIBUTE, (list(header), [list(r) for r in rows], note))
    return fig


def figure_latex(fig: Any) -> str | None:
    """The LaTeX table of a table figure (its title as caption), or None for other figures."""
    found = figure_table(fig)
    if found is None:
        return None
    header, rows, note = found
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    title = title or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
    return latex_table(header, rows, caption=" ".join(title.split()) or None, note=note)


def figure_table(fig: Any) -> tuple[list[str], list[list[str]], str | None] | None:
    """The cells of a table figure: attached ones, else those of its matplotlib table."""
    attached = getattr(fig, ATTRIBUTE, None)
    if attached is not None:
        return attached
    for ax in fig.axes:
        for table in ax.tables:
            cells = table.get_celld()
            nrows = 1 + max(r for r, _ in cells)
            ncols = 1 + max(c for _, c in cells)
            grid = [
                [
                    cells[(r, c)].get_text().get_text() if (r, c) in cells else ""
                    for c in range(ncols)
                ]
                for r in range(nrows)
            ]
            return grid[0], grid[1:], None
    return None
