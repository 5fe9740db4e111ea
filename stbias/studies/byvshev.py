"""Byvshev et al. (CVIU'22) Table 1 (BrushMNIST) and Table 2 (P+F+M grid) from runs of stbias.

Table 1 (docs/byvshev.md): a model trained on normal BrushMNIST clips and one on footprint clips
(``dataset.variant=footprint``), then four evaluations (``task=test``): normal model on normal
clips (the error breakdown, 1a), footprint model on footprints (1b), normal model on footprints
(test only), normal model on reversed clips (``task.reverse=true``, 1c). :func:`table1` runs them
all; :func:`table1_rows` reads the evaluations back from their run directories.

Table 2: one training per (place classes, motion classes, seed), a Hydra multirun
(``python run.py -m experiment=byvshev_table2_small``); :class:`Table2Sweep` checks before the
first job that the data sources hold the largest grid values, and after the last one writes
``table2.csv`` (one row per run), ``table2.md`` and the heat map into the sweep directory.
:func:`table2_rows` reads the runs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from stbias import io
from stbias.config import compose
from stbias.data.sources import face_images, mnist_digits, place_images
from stbias.errors import StbiasError
from stbias.plotting import save_figure
from stbias.plotting.byvshev import (
    table1_figure,
    table1_markdown,
    table2_cells,
    table2_interval_figure,
    table2_interval_markdown,
    table2_trend,
)
from stbias.results import load_records
from stbias.studies.base import run_dirs
from stbias.tasks import evaluate, train

log = logging.getLogger(__name__)
TABLE1_EXPERIMENT = "byvshev_brushmnist_small"
# (trained on, evaluated on, frames reversed), the evaluations of Table 1
TABLE1_EVALUATIONS = (
    ("normal", "normal", False),
    ("normal", "normal", True),
    ("footprint", "footprint", False),
    ("normal", "footprint", False),
)


def _write_text(path: str, text: str) -> None:
    io._atomic_write(path, lambda fh: fh.write(text), mode="w")


def table1_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per BrushMNIST evaluation (``task=test`` with the shape/brush breakdown)."""
    rows = []
    for record in records:
        factors = [f[0] for f in record.get("factors") or []]
        if record.get("task") != "test" or factors != ["shape", "brush"]:
            continue
        trained = record.get("trained_on") or {}
        rows.append(
            {
                "model": record["model"],
                "trained_variant": trained.get("variant") or "unknown",
                "variant": record.get("variant") or "normal",
                "reverse": bool(record["reverse"]),
                "num_clips": record["num_clips"],
                "acc": record["test/acc"],
                "acc_shape": record["test/acc_shape"],
                "acc_brush": record["test/acc_brush"],
                "err_appearance_only": record["test/err_appearance_only"],
                "err_motion_only": record["test/err_motion_only"],
                "err_both": record["test/err_both"],
                "trained_val_acc": trained.get("val/acc"),
                "run_dir": record["run_dir"],
            }
        )
    return rows


def table2_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per P+F+M training run: places, motions, seed and the final ``val/acc``.

    The validation split of P+F+M is its test split (digits and photographs crops apart from
    the training clips'), so ``acc`` is the test accuracy the paper's Table 2 reports.
    """
    rows = []
    for record in records:
        dataset = (record.get("config") or {}).get("dataset") or {}
        if record.get("task") != "train" or not str(dataset.get("_target_", "")).endswith(
            "PlacesFacesMNIST"
        ):
            continue
        if record.get("val/acc") is None:
            log.warning("skipped %s: no val/acc (trained without validation)", record["run_dir"])
            continue
        rows.append(
            {
                "places": int(dataset["num_places"]),
                "motions": int(dataset["num_motions"]),
                "seed": int(record["seed"]),
                "model": record["model"],
                "num_classes": int(record["num_classes"]),
                "acc": float(record["val/acc"]),
                "best_acc": (record.get("best") or {}).get("val/acc"),
                "epochs": record.get("epochs"),
                "minutes": record.get("minutes"),
                "run_dir": record["run_dir"],
            }
        )
    return sorted(rows, key=lambda r: (r["places"], r["motions"], r["seed"]))


def write_table1(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> list[str]:
    """``table1.csv``, ``table1.md`` and ``table1.{png,pdf}`` in ``out_dir``; returns the paths."""
    out_dir = os.fspath(out_dir)
    if not rows:
        raise StbiasError(f"no BrushMNIST evaluations (task=test results) to tabulate in {out_dir}")
    io.write_csv(os.path.join(out_dir, "table1.csv"), rows)
    text = table1_markdown(rows)
    _write_text(os.path.join(out_dir, "table1.md"), text + "\n")
    model = rows[0]["model"]
    figures = save_figure(
        table1_figure(rows, f"Byvshev et al. Table 1 with {model} on BrushMNIST"),
        os.path.join(out_dir, "table1"),
    )
    return [os.path.join(out_dir, "table1.csv"), os.path.join(out_dir, "table1.md"), *figures]


def write_table2(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> list[str]:
    """``table2.csv`` (one row per run), ``table2_summary.csv`` (per cell: mean and interval over
    seeds, chance), ``table2_trend.json`` (accuracy per doubling of place and of motion classes),
    ``table2.md`` and the heat map ``table2.{png,pdf}`` in ``out_dir``."""
    out_dir = os.fspath(out_dir)
    if not rows:
        raise StbiasError(f"no P+F+M training runs (task=train results) to tabulate in {out_dir}")
    io.write_csv(os.path.join(out_dir, "table2.csv"), rows)
    io.write_csv(os.path.join(out_dir, "table2_summary.csv"), table2_cells(rows))
    trend = table2_trend(rows)  # undefined (one seed, one value on an axis): null, never NaN
    trend = {k: None if isinstance(v, float) and v != v else v for k, v in trend.items()}
    io.write_json(os.path.join(out_dir, "table2_trend.json"), trend)
    _write_text(os.path.join(out_dir, "table2.md"), table2_interval_markdown(rows) + "\n")
    model = rows[0]["model"]
    figures = save_figure(
        table2_interval_figure(rows, f"Byvshev et al. Table 2 with {model} on P+F+M (accuracy)"),
        os.path.join(out_dir, "table2"),
    )
    return [os.path.join(out_dir, "table2.csv"), os.path.join(out_dir, "table2.md"), *figures]


def _compose(task: str, overrides: Sequence[str]) -> Any:
    return compose([f"task={task}", *overrides])


def table1(
    out_dir: str | os.PathLike,
    overrides: Sequence[str] = (),
    experiment: str = TABLE1_EXPERIMENT,
) -> list[dict[str, Any]]:
    """Train on normal and on footprint clips, run Table 1's four evaluations, tabulate them.

    Writes ``train-normal/``, ``train-footprint/`` (training runs), ``test-<trained>-on-<variant>
    [-reversed]/`` (evaluations) and ``table1.{csv,md,png,pdf}`` into ``out_dir``. A training run
    whose ``results.json`` already exists is reused, so an interrupted table resumes.

    Args:
        out_dir: output folder.
        overrides: config overrides for every run (e.g. ``trainer.max_epochs=4``).
        experiment: the experiment option holding the setting (``byvshev_brushmnist`` for the
            paper's, ``byvshev_brushmnist_small`` for the embedded CPU one).

    Returns:
        One row per evaluation (see :func:`table1_rows`).
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    base = [f"experiment={experiment}", *overrides]
    checkpoints = {}
    for variant in ("normal", "footprint"):
        folder = os.path.join(out_dir, f"train-{variant}")
        done = load_records(folder)[0] if os.path.isfile(f"{folder}/results.json") else []
        if done and done[0].get("checkpoint") and os.path.exists(done[0]["checkpoint"]):
            checkpoints[variant] = done[0]["checkpoint"]
            log.info("reusing %s (val/acc %s)", folder, done[0].get("val/acc"))
            continue
        cfg = _compose("train", [*base, f"dataset.variant={variant}"])
        with open_dict(cfg):
            cfg.train.output_dir = folder
        record, _ = train.run(cfg)
        checkpoints[variant] = record["checkpoint"]
    folders = []
    for trained, variant, reverse in TABLE1_EVALUATIONS:
        name = f"test-{trained}-on-{variant}" + ("-reversed" if reverse else "")
        cfg = _compose(
            "test",
            [
                *base,
                f"dataset.variant={variant}",
                f"task.reverse={str(reverse).lower()}",
                f"model.checkpoint={checkpoints[trained]}",
            ],
        )
        with open_dict(cfg):
            cfg.task.output_dir = os.path.join(out_dir, name)
        evaluate.run(cfg)
        folders.append(cfg.task.output_dir)
    records, _ = load_records(folders)
    rows = table1_rows(records)
    write_table1(rows, out_dir)
    return rows


def _sweep_values(config: DictConfig, key: str) -> list[Any]:
    """The values a multirun gives ``key``: sweeper params, then the command line (which wins)."""
    arguments = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    arguments += list(config.hydra.overrides.task)
    values = None
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.get_key_element() != key:
            continue
        if override.is_sweep_override():
            values = list(override.sweep_iterator())
        else:
            values = [override.value()]
    if values is None:
        values = [OmegaConf.select(config, key)]
    return values


def check_pfm_grid(config: DictConfig) -> tuple[list[int], list[int]]:
    """Refuse a P+F+M grid whose largest values the dataset's sources cannot give.

    Builds the sources the largest cell needs (place classes, faces, digits) exactly as the
    dataset does, so a grid beyond the embedded photographs stops with the dataset's message
    naming ``dataset.places_root``. Returns the place and motion values of the grid.
    """
    places = [int(v) for v in _sweep_values(config, "dataset.num_places")]
    motions = [int(v) for v in _sweep_values(config, "dataset.num_motions")]
    bad = [v for v in places + motions if v < 1]
    if bad:
        raise StbiasError(f"grid values must be >= 1 class; got {bad}")
    data = config.dataset
    place_images(data.get("places_root"), max(places))
    face_images(data.get("faces_root"))
    mnist_digits(data.get("mnist_root") or data.get("root"), "train")
    return sorted(set(places)), sorted(set(motions))


class Table2Sweep(Callback):
    """Hydra callback of the Table 2 multirun: checks the grid first, tabulates it at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Stop before any training when the sources cannot hold the largest grid values."""
        try:
            places, motions = check_pfm_grid(config)
        except StbiasError as err:
            print(f"stbias: error: {err}", file=sys.stderr)
            sys.exit(2)
        log.info("P+F+M grid: place classes %s x motion classes %s", places, motions)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write table2.csv, table2.md and the heat map into the sweep directory."""
        sweep_dir = str(config.hydra.sweep.dir)
        records, skipped = load_records(os.path.join(sweep_dir, "*", "results.json"))
        rows = table2_rows(records)
        if not rows:
            log.warning("no P+F+M training results under %s: no Table 2 written", sweep_dir)
            return
        paths = write_table2(rows, sweep_dir)
        log.info("%s", table2_interval_markdown(rows))
        note = f" ({skipped} unreadable results skipped)" if skipped else ""
        log.info("Table 2: %s, %s%s", paths[0], paths[2], note)


# Paper figures (stbias.figures): Tables 1 and 2 drawn from the runs a figure target made -------


def byvshev_table1(table: pd.DataFrame, title: str | None = None):
    """Table 1 on BrushMNIST: the error breakdowns (a, b) and reversed-frame accuracy (c)."""
    records, _ = load_records(run_dirs(table, "test"))
    rows = table1_rows(records)
    if not rows:
        raise StbiasError("no BrushMNIST evaluations (task=test with shape and brush labels)")
    return table1_figure(rows, title)


def byvshev_table2(table: pd.DataFrame, title: str | None = None):
    """Table 2: accuracy on P+F+M over place classes (rows) and motion classes (columns), the
    interval over seeds in every cell and the trend (accuracy per doubling of each) beneath."""
    records, _ = load_records(run_dirs(table, "train"))
    rows = table2_rows(records)
    if not rows:
        raise StbiasError("no P+F+M training runs with a validation accuracy to tabulate")
    return table2_interval_figure(rows, title)
