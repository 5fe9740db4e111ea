"""`task=compare`: runs side by side in the papers' layouts.

``python run.py task=compare runs=[outputs/a,outputs/b]`` reads every run under ``runs`` with
:func:`stbias.results.load` and writes into its own run directory ``compare.csv`` (the table) and
the figures the runs allow:

* probe runs that differ in model, dataset, weights, stylization or seed: ``fig3`` (Kowal et al.
  Fig. 3 layout: layer-wise shares per layer, unit classes at the last layer) and, when runs of
  one model differ (in dataset, checkpoint, ...), ``fig5`` (Fig. 5 left layout: dynamic and
  static share at the last layer, one panel per model, one bar pair per dataset or checkpoint)
  and ``fig6`` (the unit classes in the same grid);
* probe runs that differ in ``metric.lam`` (a λ sweep, e.g. a ``python run.py -m
  metric.lam=0.1,0.3,0.5,0.7,0.9`` folder): ``lam_sweep``, units per class against λ;
* ``metric=asdt`` runs: ``asdt`` and ``temporal_channels`` (Byvshev et al. Fig. 3 and 4);
* standard and shuffled-frame training runs: ``fig5_right``, the relative top-1 drop;
* ``metric=gradcam`` runs: ``gradcam_table`` (Mänttäri et al. Table 3 layout: blob count, size
  and centre distance per run) and ``metric=temporal_mask`` runs: ``temporal_mask_table``
  (Table 4 layout: mask length, drop ratio, drop difference), each with Welch t-tests (n beside
  every p) when there are two runs of that task, e.g. two models or two checkpoints.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

from stbias import io
from stbias.errors import StbiasError
from stbias.plotting import save_figure
from stbias.plotting.explain import TABLE3, TABLE4, table3, table4
from stbias.plotting.pairs import (
    DISTINGUISHING,
    _display,
    distinct_layers,
    fig3,
    fig5_left,
    fig6,
    lam_sweep,
    probe_table,
)
from stbias.plotting.training import fig5_right
from stbias.plotting.weights import asdt_figure, channels_figure
from stbias.results import explanation_statistics, load
from stbias.tasks.loggers import (
    build_logger,
    finish_logger,
    log_run,
    record_config,
    run_files,
    run_identity,
)
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import output_dir, plain

log = logging.getLogger(__name__)
CONDITIONS = tuple(c for c in DISTINGUISHING if c not in ("model", "lam"))


def _varying(rows: pd.DataFrame, columns: tuple[str, ...]) -> list[str]:
    runs = rows.drop_duplicates(["run", "model"])
    return [c for c in columns if c in runs and runs[c].astype(str).nunique(dropna=False) > 1]


def with_condition(rows: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame | None:
    """``rows`` with a ``condition`` column — the dataset, weights, ... in which the runs of one
    model differ — or None when no model has runs that differ (each model's own checkpoint is
    not a condition)."""
    runs = rows.drop_duplicates(["run", "model"])
    within = [
        c
        for c in CONDITIONS
        if c in runs and (runs.groupby("model")[c].nunique(dropna=False) > 1).any()
    ]
    if not within:
        return None
    chosen: list[str] = []
    for column in within:  # as few as tell the runs of one model apart
        chosen.append(column)
        if not runs[["model", *chosen]].astype(str).duplicated().any():
            break
    names = [" / ".join(_display(c, row[c], labels) for c in chosen) for _, row in rows.iterrows()]
    return rows.assign(condition=names)


def probe_figures(table: pd.DataFrame, folder: str, cfg: Any) -> dict[str, list[str]]:
    """The comparison figures of the probe runs in ``table``."""
    rows = probe_table(table)
    labels = plain(cfg.task.get("labels")) or {}
    layer = cfg.task.get("layer")
    figures = {}
    if rows["lam"].nunique() > 1:
        figures["lam_sweep"] = save_figure(
            lam_sweep(rows, layer=layer, labels=labels, title="units per class against λ"),
            os.path.join(folder, "lam_sweep"),
        )
        others = _varying(rows, CONDITIONS + ("model",))
        if not others:
            return figures
        rows = rows[rows["lam"] == rows["lam"].iloc[0]]
    figures["fig3"] = save_figure(
        fig3(rows, labels=labels, unit_layer=layer), os.path.join(folder, "fig3")
    )
    grid = with_condition(rows, labels)
    if grid is not None:
        for name, draw in (("fig5", fig5_left), ("fig6", fig6)):
            figures[name] = save_figure(
                draw(grid, dataset_column="condition", labels=labels),
                os.path.join(folder, name),
            )
    return figures


def summary(table: pd.DataFrame) -> str:
    """The last layer of every probe run: shares and unit classes, one line each."""
    rows = distinct_layers(probe_table(table))
    last = rows.groupby(["run", "model", "pathway"], sort=False).tail(1)
    lines = [
        f"{'model':<16} {'dataset':<12} {'weights':<22} {'λ':>4} {'layer':<10} "
        f"{'dyn%':>5} {'stat%':>5}  units dyn/stat/joint/res"
    ]
    for _, r in last.iterrows():
        weights = _display("weights", r.get("weights", ""), None)[:22]
        lines.append(
            f"{r['model']:<16} {str(r['dataset']):<12} {weights:<22} {r['lam']:>4g} "
            f"{r['layer']:<10} {r['percent_dynamic']:5.1f} {r['percent_static']:5.1f}  "
            f"{r['units_dynamic']}/{r['units_static']}/{r['units_joint']}/{r['units_residual']}"
        )
    return "\n".join(lines)


def log_comparison(
    cfg: Any,
    folder: str,
    record: dict[str, Any],
    table: pd.DataFrame,
    figures: dict[str, list[str]],
) -> None:
    """A W&B run of its own (``compare-<models>-<datasets>``): the compared runs as a table,
    the figures, and ``compare.csv`` with ``results.json`` as an artifact."""
    logger = build_logger(
        cfg.get("logger"),
        folder,
        **run_identity("compare", record["model"] or "none", record["dataset"] or "none"),
    )
    # one type per column, as a W&B table needs: numbers stay numbers, anything else is text
    shown = table.astype(object).where(table.notna(), None)
    for column in shown.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            shown[column] = [None if v is None else str(v) for v in shown[column]]
    columns = [str(c) for c in shown.columns]
    log_run(
        logger,
        config={**record_config(record), "runs": record["runs"], "num_runs": record["num_runs"]},
        tables={"compare/runs": (columns, shown.values.tolist())},
        images={f"compare/{name}": paths for name, paths in figures.items()},
        files=run_files(folder),
    )
    finish_logger(logger)


EXPLANATIONS = {
    "gradcam": (table3, TABLE3, "Grad-CAM blob statistics"),
    "temporal_mask": (table4, TABLE4, "temporal masks"),
}


def explanation_labels(table: pd.DataFrame, task: str, labels: dict[str, str]) -> dict[str, str]:
    """Label -> run directory of every ``task`` run: ``task.labels[<dir>]``, else the model and
    the directory's name (as many as there are runs, in order)."""
    rows = table[table["task"] == task].drop_duplicates("run")
    named: dict[str, str] = {}
    for _, row in rows.iterrows():
        run_dir = str(row["run"])
        label = labels.get(run_dir) or f"{row.get('model')} ({os.path.basename(run_dir)})"
        while label in named:
            label += "'"
        named[label] = run_dir
    return named


def explanation_tables(
    table: pd.DataFrame, folder: str, labels: dict[str, str]
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Table 3 / Table 4 of every set of Grad-CAM / temporal-mask runs, Welch t-tests for two."""
    figures: dict[str, list[str]] = {}
    record: dict[str, Any] = {}
    for task, (draw, columns, what) in EXPLANATIONS.items():
        if task not in set(table["task"]):
            continue
        runs = explanation_labels(table, task, labels)
        summaries, tests = explanation_statistics(runs, task, [key for key, _ in columns])
        fig = draw(summaries, tests, title=f"{what}, {len(runs)} runs")
        figures[f"{task}_table"] = save_figure(fig, os.path.join(folder, f"{task}_table"))
        record[task] = {"runs": runs, "summaries": summaries, "tests": tests}
        for label, entry in summaries.items():
            cells = ", ".join(
                f"{name} {entry[key]['mean']:.3g} (n={entry[key]['n']})"
                for key, name in columns
                if (entry.get(key) or {}).get("mean") is not None
            )
            log.info("%s: %s", label, cells)
        if tests:
            cells = ", ".join(
                f"{name} p={tests[key]['p']:.2g} (n={'/'.join(map(str, tests[key]['n']))})"
                for key, name in columns
                if (tests.get(key) or {}).get("p") is not None
            )
            log.info("Welch t-test: %s", cells)
        else:
            log.info("%d %s runs: Welch t-tests need exactly two", len(runs), task)
    return figures, record


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``cfg.runs``, write ``compare.csv`` and the figures; returns the record."""
    runs = plain(cfg.get("runs"))
    if isinstance(runs, str):
        runs = [runs]
    if not runs:
        raise StbiasError(
            "task=compare needs the runs to compare: runs=[outputs/a,outputs/b] (run "
            "directories, folders of runs such as a multirun sweep folder, or globs)"
        )
    table = load(runs)
    if table.empty:
        raise StbiasError(f"the runs under {runs} hold no results to compare")
    folder = output_dir()
    io.write_csv(os.path.join(folder, "compare.csv"), table.to_dict("records"))
    tasks = set(table["task"])
    figures: dict[str, list[str]] = {}
    if tasks & {"probe", "quickstart"}:
        figures.update(probe_figures(table, folder, cfg))
        log.info("%s", summary(table))
    labels = plain(cfg.task.get("labels")) or {}
    if "weights" in tasks:
        rows = table[table["task"] == "weights"]
        figures["asdt"] = save_figure(asdt_figure(rows, labels), os.path.join(folder, "asdt"))
        figures["temporal_channels"] = save_figure(
            channels_figure(rows, labels), os.path.join(folder, "temporal_channels")
        )
    if "train" in tasks:
        rows = table[table["task"] == "train"]
        if rows["shuffle_frames"].astype(bool).any():
            figures["fig5_right"] = save_figure(
                fig5_right(rows, labels=labels), os.path.join(folder, "fig5_right")
            )
        else:
            log.info("no shuffled-frame training among the runs: no fig5_right")
    explained, explanations = explanation_tables(table, folder, labels)
    figures.update(explained)
    if not figures:
        raise StbiasError(
            f"nothing to compare in {runs}: runs of task {', '.join(sorted(map(str, tasks)))} "
            "have no comparison figure (probe, weights, train, gradcam and temporal_mask runs do)"
        )
    seeds = table["seed"].dropna().unique() if "seed" in table else []
    record = {
        "task": "compare",
        "model": joined(table["model"]) if "model" in table else None,
        "dataset": joined(table["dataset"]) if "dataset" in table else None,
        "weights": joined(table["weights"]) if "weights" in table else None,
        "seed": int(seeds[0]) if len(seeds) == 1 else None,
        "runs": [str(r) for r in runs],
        "num_runs": int(table["run"].nunique()),
        "skipped": list(table.attrs.get("skipped", [])),
        "figures": {name: paths for name, paths in figures.items()},
        "table": os.path.join(folder, "compare.csv"),
        "explanations": explanations,
    }
    write_results(folder, record, cfg)
    log_comparison(cfg, folder, record, table, figures)
    for name, paths in figures.items():
        log.info("%s: %s", name, paths[0])
    log.info("table: %s", record["table"])
    return record, {"table": table, "figures": figures}
