"""Figure targets drawn from what their runs wrote: thin adapters over the tasks' own drawing.

A study task (``task=manttari``, ``task=static_dropout``, ``task=vos_study``,
``task=center_bias``, Byvshev's ``task=test`` / ``task=train`` runs) writes its tables and maps
into its run directory. :func:`stbias.results.load` gives one row per run with the directory in
``run``; each function here reads those directories back with the task's own loaders and calls
the task's own drawing function, so a target shows exactly the numbers the runs wrote. Several
runs (a multirun over datasets) are drawn together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from stbias.errors import StbiasError


def run_dirs(table: pd.DataFrame, task: str, beside: str | None = None) -> list[str]:
    """The run directories of ``task``'s runs in ``table`` (in order, once each).

    Args:
        beside: a file name: the parent folders of those runs that hold it instead (the
            study folder of a task that writes its runs into sub-folders).
    """
    if table.empty or "task" not in table.columns:
        raise StbiasError(f"no runs to draw: the table holds no task={task} run")
    dirs = list(dict.fromkeys(str(r) for r in table.loc[table["task"] == task, "run"]))
    if beside is not None:
        parents = [os.path.dirname(d) for d in dirs]
        dirs = [p for p in dict.fromkeys(parents) if os.path.isfile(os.path.join(p, beside))]
    if not dirs:
        what = f" with {beside} beside them" if beside else ""
        raise StbiasError(f"no runs to draw: the table holds no task={task} run{what}")
    return dirs


def _record(run: str) -> dict[str, Any]:
    from stbias.results import UnreadableRecord, read_record

    path = os.path.join(run, "results.json")
    try:
        return read_record(path)
    except UnreadableRecord as err:
        raise StbiasError(f"{path}: {err}") from None


def _label(labels: Mapping[str, str] | None, name: str) -> str:
    return str((labels or {}).get(name, name))


# Mänttäri et al. ACCV'20 (task=manttari) -------------------------------------------------------


def _manttari_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [_record(run) for run in run_dirs(table, "manttari")]


def _relabel(summaries: Mapping[str, Any], dataset: str, shown: str) -> dict[str, Any]:
    return {k.replace(f"({dataset})", f"({shown})"): v for k, v in summaries.items()}


def _manttari_table(table: pd.DataFrame, pick, columns, title, labels):
    from stbias.plotting.explain import draw_table, table_rows

    records = _manttari_records(table)
    header, rows = None, []
    for record in records:
        dataset = record["dataset"]
        shown = _label(labels, dataset)
        part = pick(record)
        head, body = table_rows(_relabel(part["summaries"], dataset, shown), columns, part["tests"])
        if part["tests"] and len(records) > 1:
            body[-1][0] = f"Welch t-test ({shown})"
        header, rows = head, rows + body
    return draw_table(header, rows, title=title)


def manttari_table1(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 1: top-1 and macro F1 of every model in order and reversed, per dataset."""
    from stbias.plotting.explain import table1

    rows = []
    for record in _manttari_records(table):
        shown = _label(labels, record["dataset"])
        rows += [{"model": f"{m} ({shown})", **r["table1"]} for m, r in record["runs"].items()]
    return table1(rows, title=title)


def manttari_table3(
    table: pd.DataFrame,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    layer_set: int = 1,
):
    """Table 3: Grad-CAM blob count, size and centre distance per model (``layer_set``: which
    position of the models' Grad-CAM layer lists; 1 = the paper's), Welch t-tests."""
    from stbias.plotting.explain import TABLE3

    def pick(record):
        sets = record["tables"]["table3"]
        if not 1 <= layer_set <= len(sets):
            raise StbiasError(f"figure.layer_set={layer_set}: the runs have {len(sets)} layer sets")
        return sets[layer_set - 1]

    return _manttari_table(table, pick, TABLE3, title, labels)


def manttari_table4(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 4: temporal-mask length, drop ratio and drop difference per model, t-tests."""
    from stbias.plotting.explain import TABLE4

    return _manttari_table(table, lambda record: record["tables"]["table4"], TABLE4, title, labels)


# StaticDropout (task=static_dropout) and bias over training (task=probe over a series) ----------


def _static_dropout(table: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of every study's ``static_dropout.csv`` (beside its task=train runs), summarised."""
    from stbias.plotting.static_dropout import read_rows, summarize

    rows = []
    for folder in run_dirs(table, "train", beside="static_dropout.csv"):
        rows += read_rows(os.path.join(folder, "static_dropout.csv"))
    return rows, summarize(rows)


def static_dropout_figure(table: pd.DataFrame, title: str | None = None):
    """Top-1, motion-only top-1 and dynamic units per mode, intervals over seeds."""
    from stbias.plotting.static_dropout import figure

    rows, summary = _static_dropout(table)
    return figure(rows, summary, title)


def static_dropout_table(table: pd.DataFrame, title: str | None = None):
    """The StaticDropout table (``static_dropout.md``'s cells) drawn as a figure: every mode over
    seeds, then every mode against ``none`` paired by seed."""
    from stbias.plotting.explain import draw_table
    from stbias.plotting.static_dropout import paired_differences, table_cells

    runs, summary = _static_dropout(table)
    header, rows = table_cells(summary + paired_differences(runs))
    return draw_table(header, rows, title=title)


def bias_over_training_figure(table: pd.DataFrame, title: str | None = None):
    """The split (%) and ``S_F`` of every layer against the training step of a probed series."""
    from stbias.plotting.bias_over_training import bias_over_training

    if "step" not in table.columns:
        raise StbiasError("no runs to draw: the table holds no probed checkpoint series")
    series = table[(table["task"] == "probe") & table["step"].notna()]
    runs = series["run"].unique()
    if len(runs) != 1:
        raise StbiasError(
            f"bias over training draws one probed series; the table holds {len(runs)}"
        )
    return bias_over_training(series.to_dict("records"), title=title)


# Two-stream segmentation (task=vos_study, task=center_bias) -------------------------------------


def _maps(run: str) -> dict[str, np.ndarray]:
    path = os.path.join(run, "center_bias.npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key.split("/")[0]: npz[key] for key in npz.files if key.endswith("/map")}
    except Exception as err:  # noqa: BLE001 - zip, header and pickle errors alike
        raise StbiasError(f"{path} cannot be read ({type(err).__name__}: {err})") from None


def _study(table: pd.DataFrame) -> dict[str, Any]:
    """Every vos_study run of the table as one study: runs, datasets, crosses and center bias."""
    study: dict[str, Any] = {"runs": [], "datasets": [], "cross": [], "center_bias": {}}
    for run in run_dirs(table, "vos_study"):
        record = _record(run)
        maps = _maps(run)
        study["runs"] += record["runs"]
        study["datasets"] += [d for d in record["datasets"] if d not in study["datasets"]]
        study["cross"] += [c for c in record["cross"] if c not in study["cross"]]
        for dataset, entry in record["center_bias"].items():
            study["center_bias"][dataset] = {**entry, "map": maps[dataset]}
        study.setdefault("model", record["model"])
        study.setdefault("reference", record["reference"])
        study.setdefault("lam", record.get("lam"))
    return study


def vos_fig4(
    table: pd.DataFrame,
    title: str | None = None,
    dataset: str | None = None,
    labels: Mapping[str, str] | None = None,
):
    """Fig. 4: per cross connection, the split of the motion, appearance and fusion layers and
    the unit classes of fusion layer 5, for the models trained on ``dataset`` (default: the
    first)."""
    from stbias.plotting.vos import fig4
    from stbias.tasks.vos_study import CROSS_LABELS

    study = _study(table)
    dataset = dataset or study["datasets"][0]
    models = {
        CROSS_LABELS.get(r["cross"], r["cross"]): r["layers"]
        for r in study["runs"]
        if r["dataset"] == dataset
    }
    if not models:
        raise StbiasError(f"figure.dataset={dataset}: no model trained on it ({study['datasets']})")
    heading = f"{title}: {study['model']} trained on {_label(labels, dataset)}" if title else None
    return fig4(models, title=heading)


def vos_table1(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 1: dynamic and static % of fusion layers 5 and 2 per training dataset (the study's
    reference cross connection)."""
    from stbias.plotting.vos import table1_figure, table1_rows
    from stbias.tasks.vos_study import TABLE_LAYERS

    study = _study(table)
    by_dataset = {
        _label(labels, r["dataset"]): r["layers"]
        for r in study["runs"]
        if r["cross"] == study["reference"]
    }
    rows = table1_rows(by_dataset, TABLE_LAYERS)
    heading = f"{title} (cross = {study['reference']})" if title else None
    return table1_figure(rows, TABLE_LAYERS, title=heading)


def vos_fig7(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Fig. 7: unit classes of fusion layers 5 and 2 per training dataset, and each dataset's
    center bias (the study's reference cross connection)."""
    from stbias.plotting.vos import fig7
    from stbias.tasks.vos_study import TABLE_LAYERS

    study = _study(table)
    reference = {
        _label(labels, r["dataset"]): r["layers"]
        for r in study["runs"]
        if r["cross"] == study["reference"]
    }
    centre = {_label(labels, d): e for d, e in study["center_bias"].items()}
    return fig7(reference, centre, TABLE_LAYERS, title)


def center_bias_figure(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """The mean foreground mask of every dataset, scaled to [0, 1], with its center mass."""
    from stbias.plotting.vos import center_bias_maps

    entries = {}
    for run in run_dirs(table, "center_bias"):
        record, maps = _record(run), _maps(run)
        for dataset, numbers in record["datasets"].items():
            entries[_label(labels, dataset)] = {**numbers, "map": maps[dataset]}
    return center_bias_maps(entries, title=title)


# Byvshev et al. CVIU'22 Tables 1 and 2 (task=test and task=train runs) --------------------------


def byvshev_table1(table: pd.DataFrame, title: str | None = None):
    """Table 1 on BrushMNIST: the error breakdowns (a, b) and reversed-frame accuracy (c)."""
    from stbias.experiments.byvshev import load_records, table1_rows
    from stbias.plotting.byvshev import table1_figure

    records, _ = load_records(run_dirs(table, "test"))
    rows = table1_rows(records)
    if not rows:
        raise StbiasError("no BrushMNIST evaluations (task=test with shape and brush labels)")
    return table1_figure(rows, title)


def byvshev_table2(table: pd.DataFrame, title: str | None = None):
    """Table 2: accuracy on P+F+M over place classes (rows) and motion classes (columns), the
    interval over seeds in every cell and the trend (accuracy per doubling of each) beneath."""
    from stbias.experiments.byvshev import load_records, table2_rows
    from stbias.plotting.byvshev import table2_interval_figure

    records, _ = load_records(run_dirs(table, "train"))
    rows = table2_rows(records)
    if not rows:
        raise StbiasError("no P+F+M training runs with a validation accuracy to tabulate")
    return table2_interval_figure(rows, title)


# Mänttäri et al. Table 2 and Fig. 4 (task=manttari) ------------------------------------------


def manttari_table2(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 2: F1 per class of every model on the held-out clips in order, per dataset."""
    from stbias.plotting.manttari import table2

    classes: list[str] = []
    f1: dict[str, dict[str, float]] = {}
    for record in _manttari_records(table):
        shown = _label(labels, record["dataset"])
        for model, r in record["runs"].items():
            t = r["table1"]
            if "f1_per_class" not in t:
                raise StbiasError(
                    f"{record['dataset']}: the manttari run has no per-class F1 (written before "
                    "Table 2 existed); run it again with FORCE=1"
                )
            named = [f"{c} ({shown})" for c in t["classes"]]
            classes += [c for c in named if c not in classes]
            scores = dict(zip(named, t["f1_per_class"]))
            f1.setdefault(model, {}).update(scores)
    columns = {m: [s.get(c, float("nan")) for c in classes] for m, s in f1.items()}
    return table2(classes, columns, title=title)


def manttari_fig4(
    table: pd.DataFrame,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    layer_set: int = 1,
    bins: int = 20,
):
    """Fig. 4: normalised histograms of the Table 3 (Grad-CAM blobs at ``layer_set``) and
    Table 4 (temporal masks) measures per model and dataset."""
    from stbias.plotting.manttari import fig4
    from stbias.results import blob_samples, mask_samples

    samples: dict[str, dict[str, np.ndarray]] = {}
    for record in _manttari_records(table):
        shown = _label(labels, record["dataset"])
        for model, r in record["runs"].items():
            cams = r["gradcam"]
            if not 1 <= layer_set <= len(cams):
                raise StbiasError(f"figure.layer_set={layer_set}: the runs have {len(cams)} layers")
            samples[f"{model} ({shown})"] = {
                **blob_samples(cams[layer_set - 1]["dir"]),
                **mask_samples(r["temporal_mask"]["dir"]),
            }
    return fig4(samples, title=title, bins=bins)
