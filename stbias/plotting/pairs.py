"""Kowal et al.'s figures from probe tables: Fig. 3, Fig. 5 (left), Fig. 6, Fig. 1, λ sweeps.

Every function takes the table :func:`stbias.results.load` returns (or part of it: the probe rows,
one per run × layer) and returns a matplotlib figure; none reads or writes files. Colours follow
the paper (static red, dynamic blue, joint and residual grey, :mod:`stbias.plotting.style`);
bootstrap intervals are drawn as error bars whenever the rows carry them (``*_lo`` / ``*_hi``,
from ``probe.bootstrap > 0``); the layer-wise panels draw the softmax floor, the 21.2 % an
uninformative layer still gets per factor.

A layer whose numbers repeat an earlier layer of the same run exactly (a ``pool`` tap that is the
global average of the last stage, as in ``i3d_tiny``) is not drawn twice: the repeat is decided
from the numbers (channels, unit counts, dims and scores), so a head that does change the features
(``slowfast_tiny``'s ``pool`` concatenates both pathways) keeps its bar.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stbias.errors import StbiasError
from stbias.plotting.style import (
    COLOURS,
    DOUBLE,
    FLOOR_COLOUR,
    FLOOR_LABEL,
    MARKERS,
    SINGLE,
    SOFTMAX_FLOOR,
    draw_floor,
    fit_title,
    paper_style,
    paper_subplots,
    weights_title,
)
from stbias.results import probe_rows

UNIT_CLASSES = ("dynamic", "static", "joint", "residual")
FACTORS = ("dynamic", "static")
PROBE_TASKS = ("probe", "quickstart")
# columns that tell runs apart in a comparison, in the order their values make up a label
DISTINGUISHING = ("model", "dataset", "weights", "stylization", "seed", "lam")
Labels = Mapping[str, str] | None


# tables


def as_table(results: pd.DataFrame | Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """A probe table from a table, or from ``{label: {layer: results.json entry}}``."""
    if isinstance(results, pd.DataFrame):
        return results
    rows = []
    for label, layers in results.items():
        meta = {"run": str(label), "task": "probe", "model": str(label)}
        rows += probe_rows({"layers": layers}, meta)
    return pd.DataFrame(rows)


def probe_table(table: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
    """The probe rows of ``table`` (``task`` probe or quickstart), checked for what figures use;
    a mapping ``{label: {layer: entry}}`` is turned into its table first."""
    table = as_table(table)
    if table.empty or "task" not in table.columns:
        raise StbiasError("no probe results to draw: the table holds no rows of task=probe")
    rows = table[table["task"].isin(PROBE_TASKS)]
    if rows.empty:
        tasks = ", ".join(sorted(map(str, table["task"].dropna().unique())))
        raise StbiasError(f"no probe results to draw: the runs are of task {tasks}")
    return rows.reset_index(drop=True)


def _same(a: pd.Series, b: pd.Series) -> bool:
    for key in ("channels", *(f"units_{c}" for c in (*UNIT_CLASSES, "dead"))):
        if key in a and a.get(key) != b.get(key):
            return False
    for key in ("dims_dynamic", "dims_static"):
        if a.get(key) != b.get(key):
            return False
    for key in ("scores_dynamic", "scores_static"):
        if not np.isclose(float(a[key]), float(b[key]), rtol=1e-6, atol=1e-9):
            return False
    return True


def distinct_layers(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without the layers whose numbers repeat an earlier layer of the same run.

    Two taps of one run are the same representation when they agree in channels, every unit
    count, the dims and both scores (to 1e-6 relative): e.g. a ``pool`` tap that only averages the
    last stage, which global average pooling in the probe already does.
    """
    keep = []
    for _, run in table.groupby(["run", "model"], sort=False):
        kept: list[pd.Series] = []
        for index, row in run.iterrows():
            if not any(_same(row, other) for other in kept if other["pathway"] == row["pathway"]):
                kept.append(row)
                keep.append(index)
    return table.loc[sorted(keep)]


def _display(column: str, value: Any, labels: Labels) -> str:
    if labels and str(value) in labels:
        return str(labels[str(value)])
    if column == "lam":
        return f"λ = {value:g}"
    if column == "seed":
        return f"seed {value}"
    if column == "weights":
        text = str(value)
        if text.startswith("file:"):
            return _short_path(text[5:])
        return "pretrained" if text.startswith("pretrained:") else text
    return str(value)


def _short_path(path: str) -> str:
    parts = [p for p in path.split(os.sep) if p]
    # run folder and file name: ".../<run>/checkpoints/last.ckpt" -> "<run>/last.ckpt"
    if len(parts) >= 3 and parts[-2] == "checkpoints":
        return f"{parts[-3]}/{parts[-1]}"
    return "/".join(parts[-2:])


def run_labels(table: pd.DataFrame, labels: Labels = None) -> dict[tuple[str, str], str]:
    """A label per (run, model): the values of the columns in which the runs differ."""
    runs = table.drop_duplicates(["run", "model"])
    keys = list(zip(runs["run"], runs["model"]))
    varying = [
        c
        for c in DISTINGUISHING
        if c in runs.columns and runs[c].astype(str).nunique(dropna=False) > 1
    ]
    if not varying and len(keys) > 1:
        return {k: os.path.basename(os.path.normpath(k[0])) for k in keys}
    # as few columns as tell the runs apart: each model's own checkpoint needs no mention
    chosen: list[str] = []
    for column in varying:
        chosen.append(column)
        if not runs[chosen].astype(str).duplicated().any():
            break
    varying = chosen or ["model"]
    out = {}
    for key, (_, row) in zip(keys, runs.iterrows()):
        out[key] = " / ".join(_display(c, row[c], labels) for c in varying)
    return out


def series(
    table: pd.DataFrame, labels: Labels = None, pathways: Sequence[str] = ("slow", "fast")
) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per drawn series: one per run and model, one per pathway of multi-pathway
    models (``slow_*`` / ``fast_*`` layers, each pathway before fusion, as the paper draws them)."""
    names = run_labels(table, labels)
    out = []
    for key, rows in table.groupby(["run", "model"], sort=False):
        run_label = names[key]
        if (rows["pathway"] != "").any():
            for pathway in pathways:
                part = rows[rows["pathway"] == pathway]
                if part.empty:
                    continue
                special = labels.get(f"{key[1]}/{pathway}") if labels else None
                out.append((special or f"{run_label} ({pathway})", part))
        else:
            out.append((run_label, rows))
    return out


def stage(layer: str, pathway: str) -> str:
    """A layer's name without its pathway prefix (``slow_res3`` -> ``res3``)."""
    return layer[len(pathway) + 1 :] if pathway and layer.startswith(pathway + "_") else layer


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _err(rows: pd.DataFrame, key: str, scale: Any = 1.0) -> np.ndarray | None:
    lo, hi = f"{key}_lo", f"{key}_hi"
    if lo not in rows.columns or rows[lo].isna().all():
        return None
    value = rows[key].to_numpy(float) * scale
    low = rows[lo].to_numpy(float) * scale
    high = rows[hi].to_numpy(float) * scale
    return np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])


def _unit_percent(rows: pd.DataFrame, cls: str) -> tuple[np.ndarray, np.ndarray | None]:
    scale = 100.0 / rows["channels"].to_numpy(float)
    value = rows[f"units_{cls}"].to_numpy(float) * scale
    return value, _err(rows, f"units_{cls}", scale)


def _title(title: str | None, table: pd.DataFrame) -> str | None:
    note = weights_title(list(table["weights"])) if "weights" in table.columns else ""
    if not note or (title and "random weights" in title):
        return title
    return f"{title} ({note})" if title else note


def has_intervals(table: pd.DataFrame) -> bool:
    """Whether the rows carry bootstrap intervals (``probe.bootstrap > 0``)."""
    return "percent_dynamic_lo" in table.columns and table["percent_dynamic_lo"].notna().any()


# drawing


def layerwise_panel(
    ax: Axes,
    drawn: Sequence[tuple[str, pd.DataFrame]],
    markers: Mapping[str, str] | None = None,
    key: str = "percent",
) -> list[Line2D]:
    """Dynamic (blue) and static (red) share per layer, one marker per series; returns handles.

    Args:
        ax: the axes.
        drawn: (label, rows) per series.
        markers: marker per series label (default one per series in order).
        key: ``percent`` (the layer-wise share) or ``dims``.
    """
    stages = sorted(
        {stage(layer, p) for _, rows in drawn for layer, p in zip(rows["layer"], rows["pathway"])},
        key=lambda s: next(
            i
            for rows in (r for _, r in drawn)
            for i, (layer, p) in enumerate(zip(rows["layer"], rows["pathway"]))
            if stage(layer, p) == s
        ),
    )
    position = {s: i for i, s in enumerate(stages)}
    handles = []
    for k, (label, rows) in enumerate(drawn):
        x = np.array([position[stage(la, p)] for la, p in zip(rows["layer"], rows["pathway"])])
        marker = (markers or {}).get(label) or MARKERS[k % len(MARKERS)]
        offset = (k - (len(drawn) - 1) / 2) * 0.04  # keeps overlapping error bars apart
        for factor, style in (("dynamic", "-"), ("static", "--")):
            ax.errorbar(
                x + offset,
                rows[f"{key}_{factor}"].to_numpy(float),
                yerr=_err(rows, f"{key}_{factor}"),
                color=COLOURS[factor],
                marker=marker,
                linestyle=style,
                markerfacecolor="white" if factor == "static" else COLOURS[factor],
                elinewidth=0.7,
                gid=f"{label}/{factor}",
            )
        handles.append(Line2D([], [], color="black", marker=marker, linestyle="none", label=label))
    ax.set_xticks(range(len(stages)), stages, rotation=45 if len(stages) > 6 else 0)
    ax.set_xlim(-0.5, len(stages) - 0.5)
    draw_floor(ax)
    return handles


def unit_bars(
    ax: Axes, groups: Sequence[tuple[str, pd.Series | pd.DataFrame]], rotate: bool = False
) -> None:
    """Four bars (dynamic, static, joint, residual, as % of units) per group, with intervals."""
    width = 0.8 / len(UNIT_CLASSES)
    for k, cls in enumerate(UNIT_CLASSES):
        values, errors = [], []
        for _, row in groups:
            rows = row.to_frame().T if isinstance(row, pd.Series) else row
            value, err = _unit_percent(rows, cls)
            values.append(value[0])
            errors.append(err[:, 0] if err is not None else (np.nan, np.nan))
        err = np.array(errors).T
        ax.bar(
            np.arange(len(groups)) + (k - 1.5) * width,
            values,
            width,
            color=COLOURS[cls],
            yerr=None if np.isnan(err).all() else err,
            error_kw={"elinewidth": 0.7, "capsize": 1.2},
            label=cls,
            gid=cls,
            edgecolor="black" if cls == "residual" else "none",
            linewidth=0.3,
        )
    ax.set_xticks(
        range(len(groups)),
        [g for g, _ in groups],
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
    )
    ax.set_ylim(0, 100)


def _class_handles(classes: Sequence[str] = UNIT_CLASSES) -> list[Patch]:
    return [Patch(color=COLOURS[c], label=c) for c in classes]


def _factor_handles() -> list[Line2D]:
    return [
        Line2D([], [], color=COLOURS["dynamic"], linestyle="-", label="dynamic"),
        Line2D([], [], color=COLOURS["static"], linestyle="--", label="static"),
        Line2D([], [], color=FLOOR_COLOUR, linestyle=(0, (4, 2)), label=FLOOR_LABEL),
    ]


def _legend_below(
    fig: Figure,
    ax: Axes | None,
    handles: Sequence[Any],
    right: float | None = None,
    left: float | None = None,
) -> None:
    """A legend under the figure from the left edge of ``ax`` (or ``left``), in as many columns
    as fit before ``right`` (figure fractions; call after tight_layout)."""
    x0 = left if left is not None else ax.get_position().x0
    renderer = fig.canvas.get_renderer()
    for ncol in range(len(handles), 0, -1):
        legend = fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(x0, 0.0),
            ncol=ncol,
            handlelength=2.2,
            columnspacing=1.0,
        )
        width = legend.get_window_extent(renderer).width / fig.bbox.width
        if right is None or x0 + width <= right or ncol == 1:
            return
        legend.remove()


def last_layers(drawn: Sequence[tuple[str, pd.DataFrame]], unit_layer: Any = None) -> list:
    """(label, row) of the layer each series' units are shown at: its last distinct layer."""
    out = []
    for label, rows in drawn:
        chosen = unit_layer.get(label) if isinstance(unit_layer, Mapping) else unit_layer
        if chosen is not None:
            match = rows[rows["layer"] == chosen]
            if match.empty:
                raise StbiasError(
                    f"unit layer {chosen!r} is not among the layers of {label}: "
                    f"{', '.join(rows['layer'])}"
                )
            out.append((label, match.iloc[-1]))
        else:
            out.append((label, rows.iloc[-1]))
    return out


def fig3(
    table: pd.DataFrame | Mapping[str, Mapping[str, Any]],
    panels: Mapping[str, Sequence[str]] | None = None,
    labels: Labels = None,
    unit_layer: str | Mapping[str, str] | None = None,
    pathways: Sequence[str] = ("slow", "fast"),
    title: str | None = None,
) -> Figure:
    """Kowal et al. Fig. 3: layer-wise shares per layer (left panels), unit classes (right).

    Args:
        table: probe rows (one per run × layer), e.g. ``stbias.results.load(...)``, or
            ``{label: {layer: results.json entry}}``.
        panels: panel title -> model names drawn in it (the paper: (a) single-stream 3D CNNs,
            (b) SlowFast variants, (c) transformers); models in no panel get one of their own;
            default one panel for all.
        labels: display names of models, datasets or ``model/pathway`` (``slowfast/slow`` ->
            ``SF-Slow``).
        unit_layer: the layer the right panel shows, for all series or per series label;
            default each series' last distinct layer (the representation before the classifier).
        pathways: pathways of multi-pathway models drawn as their own series.
        title: figure title (random weights are added to it).
    """
    rows = distinct_layers(probe_table(table))
    drawn = series(rows, labels, pathways)
    models = {label: str(r["model"].iloc[0]) for label, r in drawn}
    groups: list[tuple[str | None, list[tuple[str, pd.DataFrame]]]] = []
    listed: set[str] = set()
    for name, members in (panels or {}).items():
        chosen = [(lab, r) for lab, r in drawn if models[lab] in members]
        listed |= {lab for lab, _ in chosen}
        if chosen:
            groups.append((name, chosen))
    rest = [(lab, r) for lab, r in drawn if lab not in listed]
    if rest:
        groups.append(("other models" if groups else None, rest))
    with paper_style():
        widths = [max(3, _stage_count(g)) + 0.6 * len(g) for _, g in groups]
        widths.append(max(3.0, 1.3 * len(drawn)))
        fig, axes = paper_subplots(
            1,
            len(widths),
            figsize=(DOUBLE, 2.6),
            gridspec_kw={"width_ratios": widths},
            squeeze=False,
        )
        axes = list(axes[0])
        handles: list[Any] = []
        markers = {label: MARKERS[k % len(MARKERS)] for k, (label, _) in enumerate(drawn)}
        for ax, (name, members) in zip(axes, groups):
            handles += layerwise_panel(ax, members, markers)
            ax.set_ylim(0, max(60.0, _top(members) + 5))
            if name:
                ax.set_title(name)
            ax.set_xlabel("layer")
        axes[0].set_ylabel("units (%), layer-wise")
        for ax in axes[1 : len(groups)]:
            ax.sharey(axes[0])
        right = axes[-1]
        unit_bars(right, last_layers(drawn, unit_layer), rotate=len(drawn) > 3)
        right.set_ylabel("units (%), unit-wise")
        lam = rows["lam"].dropna().unique()
        right.set_title(
            "last layer" + (f", λ = {lam[0]:g}" if len(lam) == 1 else ""),
        )
        full = _title(title, rows)
        if full:
            fig.suptitle(fit_title(full, fig.get_size_inches()[0]))
        fig.tight_layout()
        _legend_below(fig, axes[0], _factor_handles() + handles, right.get_position().x0 - 0.02)
        _legend_below(fig, right, _class_handles(), 1.0)
    return fig


def _stage_count(members: Sequence[tuple[str, pd.DataFrame]]) -> int:
    return max(len(rows) for _, rows in members)


def _top(members: Sequence[tuple[str, pd.DataFrame]]) -> float:
    tops = []
    for _, rows in members:
        for factor in FACTORS:
            key = f"percent_{factor}_hi" if f"percent_{factor}_hi" in rows else f"percent_{factor}"
            tops.append(float(np.nanmax(rows[key].to_numpy(float))))
    return max(tops)


def _last_per_run(rows: pd.DataFrame, pathways: Sequence[str] = ("slow", "fast")) -> pd.DataFrame:
    """The last distinct layer of each run (of each pathway, for multi-pathway models)."""
    rows = distinct_layers(rows)
    keep = []
    for _, run in rows.groupby(["run", "model"], sort=False):
        if (run["pathway"] != "").any():
            present = [p for p in pathways if (run["pathway"] == p).any()]
            keep += [run[run["pathway"] == p].index[-1] for p in present]
        else:
            keep.append(run.index[-1])
    return rows.loc[keep]


def _order(values: Sequence[Any], order: Sequence[str] | None) -> list[Any]:
    values = list(dict.fromkeys(values))
    if not order:
        return values
    ranked = [v for v in order if v in values]
    return ranked + [v for v in values if v not in ranked]


def _grid(
    table: pd.DataFrame, dataset_column: str, labels: Labels, order: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str], list[Any]]:
    rows = _last_per_run(probe_table(table))
    if dataset_column not in rows.columns:
        raise StbiasError(
            f"no column {dataset_column!r} in the runs; columns: {', '.join(rows.columns)}"
        )
    rows = rows.assign(
        _model=[f"{m}:{p}" if p else m for m, p in zip(rows["model"].astype(str), rows["pathway"])]
    )
    models = _order(rows["_model"], order)
    datasets = _order(rows[dataset_column], order)
    return rows, models, datasets


def fig5_left(
    table: pd.DataFrame,
    dataset_column: str = "dataset",
    labels: Labels = None,
    order: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Kowal et al. Fig. 5 (left): layer-wise dynamic and static share at the last layer of each
    model (one panel per model, as the paper's table has a column pair per model) for every
    training dataset (x), with the values written on the bars.

    Args:
        table: probe rows; each run one model trained on one dataset.
        dataset_column: the column naming the training dataset (``dataset``, or a sweep key
            such as ``trained_on``).
        labels: display names of models and datasets.
        order: models and datasets in this order first.
        title: figure title.
    """
    rows, models, datasets = _grid(table, dataset_column, labels, order)
    with paper_style():
        fig, axes = paper_subplots(
            1,
            len(models),
            figsize=(SINGLE if len(models) == 1 else DOUBLE * 0.62, 2.3),
            sharey=True,
            squeeze=False,
        )
        for ax, model in zip(axes[0], models):
            part = rows[rows["_model"] == model]
            width = 0.38
            for k, factor in enumerate(FACTORS):
                values, errs = [], []
                for dataset in datasets:
                    cell = part[part[dataset_column] == dataset]
                    if cell.empty:
                        values.append(np.nan)
                        errs.append((np.nan, np.nan))
                        continue
                    values.append(float(cell[f"percent_{factor}"].iloc[0]))
                    err = _err(cell.iloc[:1], f"percent_{factor}")
                    errs.append(err[:, 0] if err is not None else (np.nan, np.nan))
                err = np.array(errs).T
                bars = ax.bar(
                    np.arange(len(datasets)) + (k - 0.5) * width,
                    values,
                    width,
                    color=COLOURS[factor],
                    yerr=None if np.isnan(err).all() else err,
                    error_kw={"elinewidth": 0.7, "capsize": 1.2},
                    label=factor,
                    gid=f"{model}/{factor}",
                )
                ax.bar_label(bars, fmt="%.1f", fontsize=5.5, padding=1)
            draw_floor(ax, label=False)
            ax.set_xticks(
                range(len(datasets)),
                [_wrap(_display(dataset_column, d, labels)) for d in datasets],
            )
            ax.set_title(_model_label(model, labels))
            ax.set_ylim(0, max(50.0, np.nanmax(rows[["percent_dynamic", "percent_static"]]) + 10))
        axes[0][0].set_ylabel("units (%), layer-wise, last layer")
        fig.legend(
            handles=_class_handles(FACTORS)
            + [Line2D([], [], color=FLOOR_COLOUR, linestyle=(0, (4, 2)), label=FLOOR_LABEL)],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=3,
        )
        full = _title(title, rows)
        if full:
            fig.suptitle(fit_title(full, fig.get_size_inches()[0]))
        fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 10) -> str:
    """A tick label broken at spaces into lines of about ``width`` characters."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) or text


def _model_label(model: str, labels: Labels) -> str:
    if labels and model in labels:
        return str(labels[model])
    if "/" in model:
        name, pathway = model.split("/", 1)
        return f"{_display('model', name, labels)} ({pathway})"
    return _display("model", model, labels)


def fig6(
    table: pd.DataFrame,
    dataset_column: str = "dataset",
    labels: Labels = None,
    order: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Kowal et al. Fig. 6: unit classes at the last layer, one panel per model (SlowOnly left,
    FastOnly right), one group of four bars per training dataset."""
    rows, models, datasets = _grid(table, dataset_column, labels, order)
    with paper_style():
        fig, axes = paper_subplots(
            1,
            len(models),
            figsize=(SINGLE if len(models) == 1 else DOUBLE * 0.62, 2.3),
            sharey=True,
            squeeze=False,
        )
        for ax, model in zip(axes[0], models):
            part = rows[rows["_model"] == model]
            groups = [
                (
                    _wrap(_display(dataset_column, d, labels)),
                    part[part[dataset_column] == d].iloc[0],
                )
                for d in datasets
                if (part[dataset_column] == d).any()
            ]
            unit_bars(ax, groups)
            ax.set_title(_model_label(model, labels))
        axes[0][0].set_ylabel("units (%), unit-wise, last layer")
        lam = rows["lam"].dropna().unique()
        fig.legend(
            handles=_class_handles(),
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=4,
            title=f"λ = {lam[0]:g}" if len(lam) == 1 else None,
        )
        full = _title(title, rows)
        if full:
            fig.suptitle(fit_title(full, fig.get_size_inches()[0]))
        fig.tight_layout()
    return fig


def fig1(
    table: pd.DataFrame,
    labels: Labels = None,
    dataset_column: str = "dataset",
    markers: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Kowal et al. Fig. 1 (bottom): every model as a point, static share (x) against dynamic
    share (y) at its last layer; colour from red (static) to blue (dynamic) by the dynamic
    fraction of the two; the point of an uninformative layer (both at the softmax floor) marked.

    Args:
        table: probe rows.
        labels: display names of models, pathways (``model/pathway``) and datasets.
        dataset_column: the column naming the dataset a point's model was trained on; it is
            written beside the point when runs differ in it.
        markers: marker per ``task`` kind column value (default squares: action recognition).
        title: figure title.
    """
    rows = _last_per_run(probe_table(table))
    if dataset_column not in rows.columns:
        rows = rows.assign(**{dataset_column: rows["dataset"]})
    # runs without the column (another experiment) name their dataset in `dataset`
    rows[dataset_column] = rows[dataset_column].where(rows[dataset_column].notna(), rows["dataset"])
    # the same model, dataset and weights from two experiments is one point
    rows = rows.drop_duplicates(["model", "pathway", dataset_column, "weights"])
    several = rows[dataset_column].nunique() > 1
    numbered = len(rows) > 6  # many points: numbers beside them, names in the legend
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list(
        "static_dynamic", [COLOURS["static"], "#d9d9d9", COLOURS["dynamic"]]
    )
    names: list[Line2D] = []
    with paper_style():
        fig, ax = paper_subplots(figsize=(SINGLE, 2.9))
        for k, (_, row) in enumerate(rows.iterrows()):
            frame = row.to_frame().T
            x, y = float(row["percent_static"]), float(row["percent_dynamic"])
            share = y / (x + y) if x + y > 0 else 0.5
            xerr, yerr = _err(frame, "percent_static"), _err(frame, "percent_dynamic")
            marker = (markers or {}).get(str(row.get("kind", "")), "s")
            ax.errorbar(
                x,
                y,
                xerr=xerr,
                yerr=yerr,
                marker=marker,
                markersize=5,
                color=cmap(share),
                markeredgecolor="black",
                markeredgewidth=0.4,
                ecolor="#555555",
                elinewidth=0.6,
                linestyle="none",
                gid=f"{row['model']}:{row['pathway']}:{row.get(dataset_column, '')}",
            )
            model = f"{row['model']}/{row['pathway']}" if row["pathway"] else str(row["model"])
            text = _model_label(model, labels)
            if several:
                text += f", {_display(dataset_column, row[dataset_column], labels)}"
            if numbered:
                names.append(
                    Line2D([], [], linestyle="none", marker=f"${k + 1}$", color="black", label=text)
                )
                text = str(k + 1)
            # alternate the side of the label: neighbouring points rarely hide each other's text
            ax.annotate(
                text,
                (x, y),
                xytext=(4, 3 if k % 2 == 0 else -7),
                textcoords="offset points",
                fontsize=5.5,
            )
        ax.plot(
            SOFTMAX_FLOOR,
            SOFTMAX_FLOOR,
            marker="x",
            color=FLOOR_COLOUR,
            linestyle="none",
            label=f"uninformative layer (S = 0): {SOFTMAX_FLOOR:.1f} % each",
        )
        low = min(SOFTMAX_FLOOR, rows["percent_dynamic"].min(), rows["percent_static"].min())
        high = max(SOFTMAX_FLOOR, rows["percent_dynamic"].max(), rows["percent_static"].max())
        lim = (max(0.0, low - 5), min(100.0, high + 8))
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.plot(lim, lim, color="#bbbbbb", linewidth=0.5, zorder=0)
        ax.set_xlabel("static units (%), layer-wise")
        ax.set_ylabel("dynamic units (%), layer-wise")
        full = _title(title, rows)
        if full:
            ax.set_title(fit_title(full, SINGLE))
        fig.tight_layout()
        floor = ax.get_legend_handles_labels()[0]
        _legend_below(fig, None, floor + names, right=0.99, left=0.0)
    return fig


def lam_sweep(
    table: pd.DataFrame,
    layer: str | None = None,
    labels: Labels = None,
    title: str | None = None,
) -> Figure:
    """Units per class (% of units) against λ, one panel per model (run group), at one layer.

    Args:
        table: probe rows of runs that differ in ``lam`` (e.g. ``python run.py -m
            metric.lam=0.1,0.3,0.5,0.7,0.9``).
        layer: the layer drawn; default each model's last distinct layer.
        labels: display names.
        title: figure title.
    """
    rows = probe_table(table)
    if rows["lam"].nunique() < 2:
        raise StbiasError(
            f"a λ sweep needs runs with different metric.lam; these runs all have λ = "
            f"{rows['lam'].iloc[0]}"
        )
    rest = [c for c in DISTINGUISHING if c != "lam" and c in rows.columns]
    keys = rows[rest].astype(str).agg(" / ".join, axis=1)
    rows = rows.assign(_group=keys)
    groups = list(dict.fromkeys(keys))
    # the panel titles name as few of the differing columns as tell the groups apart
    heads = rows.drop_duplicates("_group")
    telling: list[str] = []
    for column in (c for c in rest if heads[c].astype(str).nunique() > 1):
        telling.append(column)
        if not heads[telling].astype(str).duplicated().any():
            break
    with paper_style():
        fig, axes = paper_subplots(
            1,
            len(groups),
            figsize=(SINGLE if len(groups) == 1 else DOUBLE, 2.4),
            sharey=True,
            squeeze=False,
        )
        for ax, group in zip(axes[0], groups):
            part = rows[rows["_group"] == group]
            first = distinct_layers(part[part["lam"] == part["lam"].iloc[0]])
            chosen = layer or str(first["layer"].iloc[-1])
            part = part[part["layer"] == chosen].sort_values("lam")
            if part.empty:
                raise StbiasError(f"layer {chosen!r} is not among the probed layers")
            lams = part["lam"].to_numpy(float)
            for cls in UNIT_CLASSES:
                value, err = _unit_percent(part, cls)
                ax.errorbar(
                    lams,
                    value,
                    yerr=err,
                    color=COLOURS[cls],
                    marker="o",
                    label=cls,
                    gid=cls,
                    elinewidth=0.7,
                )
            ax.axvline(0.5, color=FLOOR_COLOUR, linewidth=0.6, linestyle=":", zorder=0)
            model = str(part["model"].iloc[0])
            name = _display("model", model, labels)
            if len(groups) > 1:
                name = " / ".join(_display(c, part[c].iloc[0], labels) for c in telling) or name
            ax.set_title(f"{name}, {chosen}")
            ax.set_xlabel("λ (unit-wise threshold)")
            ax.set_ylim(0, 100)
        axes[0][0].set_ylabel("units (%)")
        full = _title(title, rows)
        if full:
            fig.suptitle(fit_title(full, fig.get_size_inches()[0]))
        fig.tight_layout()
        _legend_below(fig, axes[0][0], _class_handles(), 1.0)
    return fig
