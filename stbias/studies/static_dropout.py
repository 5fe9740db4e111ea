"""``task=static_dropout``: StaticDropout against its baselines, over several seeds.

For every seed of ``task.seeds`` and mode of ``task.modes`` (``none`` = no dropout, p = 0;
``static``, ``all``, ``random`` = ``train.static_dropout.mode``) it trains the configured model as
``task=train`` does, into ``<run dir>/<mode>-seed<seed>/``, and measures the trained model the same
way for every mode (:func:`stbias.lit.static_dropout.final_report`: the re-probed split, top-1 /
top-5, motion-only and shuffled-frame accuracy, the static units zeroed). Runs of one seed start
from the same initial weights and see the same training clips in the same order (both checked:
the static set is estimated without drawing from the training's random streams). Writes
``static_dropout.csv`` (one row per run), ``static_dropout.md`` (the table over seeds, and every
mode against ``none`` paired by seed, also in ``static_dropout_vs_none.csv``) and
``static_dropout.{png,pdf}``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import open_dict

from stbias import io
from stbias.errors import StbiasError
from stbias.lit.static_dropout import final_report
from stbias.plotting import save_figure
from stbias.plotting.explain import draw_table
from stbias.plotting.latex import latex_table
from stbias.plotting.static_dropout import (
    MODES,
    figure,
    paired_differences,
    summarize,
    table,
    table_cells,
)
from stbias.results import static_dropout_rows
from stbias.studies.base import run_dirs
from stbias.tasks import train, train_extras
from stbias.tasks.loggers import publish, record_config, row_table
from stbias.tasks.model_setup import require_one_model
from stbias.tasks.record import write_results
from stbias.tasks.run_config import check_results, choice, output_dir, plain

log = logging.getLogger(__name__)


def arm_config(cfg: Any, mode: str, seed: int, folder: str) -> Any:
    """The ``task=train`` config of one run: ``cfg`` with this mode, seed and output folder."""
    arm = copy.deepcopy(cfg)
    with open_dict(arm):
        arm.task = {"name": "train"}
        arm.seed = int(seed)
        if mode == "none":
            arm.train.static_dropout.p = 0.0
        else:
            arm.train.static_dropout.mode = mode
        arm.train.output_dir = folder
    return arm


def _check(cfg: Any) -> tuple[list[str], list[int]]:
    modes = [str(m) for m in plain(cfg.task.modes) or []]
    seeds = [int(s) for s in plain(cfg.task.seeds) or []]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise StbiasError(
            f"task.modes={modes}: give one or more of {', '.join(MODES)} (none = no dropout)"
        )
    if not seeds or len(set(seeds)) != len(seeds):
        raise StbiasError(f"task.seeds={seeds}: give one or more different seeds")
    settings = train_extras.dropout_settings(cfg)
    if any(m != "none" for m in modes) and not settings.enabled:
        raise StbiasError(
            "train.static_dropout.p=0 turns the dropout off in every mode; set "
            "train.static_dropout.p to a probability in (0, 1)"
        )
    return modes, seeds


def _no_nan(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def arm_row(mode: str, seed: int, record: dict[str, Any], final: dict[str, Any], run: str) -> dict:
    """One row of ``static_dropout.csv``."""
    layer = final["layer"]
    probed = final["probe"][layer]
    refreshes = (record.get("static_dropout") or {}).get("refreshes", [])
    overlaps = [r["jaccard"] for r in refreshes if r["jaccard"] is not None]
    row = {
        "mode": mode,
        "seed": seed,
        "layer": layer,
        "val/acc": record.get("val/acc"),
        **{k: v for k, v in final.items() if k.startswith(("acc", "drop_"))},
        **{f"units_{k}": v for k, v in probed["units"].items()},
        **{f"percent_{k}": v for k, v in probed["percent"].items()},
        **{f"scores_{k}": v for k, v in probed["scores"].items()},
        "final_static_set": final["set_size"],
        "refreshes": len(refreshes),
        "first_set_size": refreshes[0]["set_size"] if refreshes else None,
        "last_set_size": refreshes[-1]["set_size"] if refreshes else None,
        "mean_jaccard": float(np.mean(overlaps)) if overlaps else None,
        "epochs": record["epochs"],
        "minutes": record["minutes"],
        "init_checksum": record["init_checksum"],
        "data_order": record.get("data_order"),
        "run": run,
    }
    return row


def run(cfg: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train every mode × seed, measure each, write the table and the figure."""
    require_one_model(cfg, "task=static_dropout")
    modes, seeds = _check(cfg)
    folder = output_dir()
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        checksum = order = None
        for mode in modes:
            arm = arm_config(cfg, mode, seed, os.path.join(folder, f"{mode}-seed{seed}"))
            record, objects = train.run(arm)
            if checksum is not None and record["init_checksum"] != checksum:
                raise StbiasError(f"mode {mode} of seed {seed} did not start from the same weights")
            if order is not None and record.get("data_order") != order:
                raise StbiasError(
                    f"mode {mode} of seed {seed} saw its training clips in another order than "
                    f"mode {modes[0]}"
                )
            checksum, order = record["init_checksum"], record.get("data_order")
            if mode == "none":
                settings = train_extras.dropout_settings(arm)
                data, module = objects["data"], objects["module"]
                module.to(objects["trainer"].strategy.root_device)  # fit ends with it on the CPU
                setup = train_extras.probe_setup(
                    arm, module.model, module.spec, data.train_set, data.val_set, settings
                )
                final = final_report(module.model, settings, setup)
            else:
                final = record["static_dropout"]["final"]
            check_results(final, "StaticDropout's final report")
            io.write_json(os.path.join(arm.train.output_dir, "final_report.json"), final)
            rows.append(arm_row(mode, seed, record, final, str(arm.train.output_dir)))
            units = final["probe"][final["layer"]]["units"]
            log.info(
                f"{mode:>6} seed {seed}: top-1 {final.get('acc', float('nan')):.4f}  motion-only "
                f"{final.get('acc_motion_only', float('nan')):.4f}  units dynamic/static/joint/"
                f"residual {units['dynamic']}/{units['static']}/{units['joint']}/"
                f"{units['residual']}"
            )
    summary = summarize(rows)
    differences = paired_differences(rows)
    text = table(summary + differences)
    if differences:
        text += "; rows 'mode − none': the difference to no dropout, seed by seed"
    io.write_csv(os.path.join(folder, "static_dropout.csv"), rows)
    io.write_csv(os.path.join(folder, "static_dropout_summary.csv"), summary)
    if differences:
        io.write_csv(os.path.join(folder, "static_dropout_vs_none.csv"), differences)
    io.write_text(os.path.join(folder, "static_dropout.md"), text + "\n")
    note = "mean ± half-width of the 95 % Student-t interval over seeds"
    io.write_text(
        os.path.join(folder, "static_dropout.tex"), latex_table(*table_cells(summary), note=note)
    )
    # an interval of one seed has no bounds: null in JSON (NaN is not JSON)
    record = {
        "task": "static_dropout",
        "modes": list(modes),
        "seeds": [int(s) for s in seeds],
        "summary": [_no_nan(r) for r in summary],
        "runs": [_no_nan(r) for r in rows],
    }
    write_results(folder, record, cfg)
    title = (
        f"StaticDropout, {choice(cfg, 'model')} on {choice(cfg, 'dataset')}, "
        f"p = {cfg.train.static_dropout.p}, layer {rows[0]['layer']}"
    )
    figures = save_figure(figure(rows, summary, title), os.path.join(folder, "static_dropout"))
    # per mode every measure's mean over seeds with its interval: static_dropout/acc/static, ...
    values = {
        f"static_dropout/{key}/{entry['mode']}": value
        for entry in record["summary"]
        for key, value in entry.items()
        if key not in ("mode", "seeds") and value is not None
    }
    publish(
        cfg.get("logger"),
        folder,
        "static_dropout",
        choice(cfg, "model"),
        choice(cfg, "dataset"),
        config=record_config(record),
        summary=values,
        tables={"static_dropout/summary": row_table(summary)},
        images={"static_dropout/figure": figures},
    )
    log.info("%s", text)
    log.info("results: %s", os.path.join(folder, "static_dropout.csv"))
    return rows, {"summary": summary, "figures": figures}


# Paper figures (stbias.figures): the study's runs read back and drawn ------------------------


def _static_dropout(table: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of every study's ``static_dropout.csv`` (beside its task=train runs), summarised."""
    rows = []
    for folder in run_dirs(table, "train", beside="static_dropout.csv"):
        rows += static_dropout_rows(os.path.join(folder, "static_dropout.csv"))
    return rows, summarize(rows)


def static_dropout_figure(table: pd.DataFrame, title: str | None = None):
    """Top-1, motion-only top-1 and dynamic units per mode, intervals over seeds."""
    rows, summary = _static_dropout(table)
    return figure(rows, summary, title)


def static_dropout_table(table: pd.DataFrame, title: str | None = None):
    """The StaticDropout table (``static_dropout.md``'s cells) drawn as a figure: every mode over
    seeds, then every mode against ``none`` paired by seed."""
    runs, summary = _static_dropout(table)
    header, rows = table_cells(summary + paired_differences(runs))
    return draw_table(header, rows, title=title)
