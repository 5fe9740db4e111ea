"""`task=vos_moca`: the cross-connection segmenters of `task=vos_study` evaluated on MoCA.

Kowal et al.'s supplement relates the motion→appearance cross connection to segmenting
camouflaged moving objects on MoCA (Moving Camouflaged Animals). For every cross connection of
``task.cross`` and every training dataset of ``task.datasets`` the two-stream ``model`` is
trained exactly as ``task=vos_study`` trains it (same settings, same cache key: a study run
before with the same ``task.cache_dir`` is reused, nothing is trained again), then evaluated on
``task.evaluation.dataset`` (``moca``: the real MoCA or MoCA-Mask, :mod:`stbias.data.moca`; on
the box CSV the masks are boxes and J is a box-IoU J; ``camouflage``: the embedded synthetic
set): J per sequence beside the all-foreground J (the foreground fraction), with bootstrap
intervals over sequences, and each cross connection's J minus ``task.reference``'s on the same
sequences. The run directory gets ``results.json``, ``results.csv`` and ``moca_j`` (``.png``,
``.pdf``), drawn from ``results.json`` by :func:`draw_study`.

``python run.py experiment=vos_moca`` runs it on the embedded data at a CPU size.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd
from omegaconf import OmegaConf, open_dict

from stbias import io
from stbias.config import compose
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec
from stbias.plotting import save_figure
from stbias.plotting.vos import j_bars
from stbias.studies.base import label_of, read_run, run_dirs
from stbias.studies.vos_study import (
    CROSS_LABELS,
    cross_effects,
    dataset_j,
    ensure_trained,
    segmentation_scores,
    settings,
    variant,
)
from stbias.tasks.dataset_setup import base_dataset, build_dataset
from stbias.tasks.loggers import publish, record_config, row_table
from stbias.tasks.model_setup import build_model, require_one_model
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import output_dir, plain

log = logging.getLogger(__name__)


def evaluation_node(cfg: Any) -> Any:
    """The ``dataset`` node of ``task.evaluation``: its option, with its root where one is set."""
    evaluation = cfg.task.evaluation
    name = str(evaluation.dataset)
    node = compose([f"dataset={name}"]).dataset
    geometry = cfg.model.input
    with open_dict(node):
        node.seed = int(cfg.seed)
        node.num_frames, node.sampling_rate = geometry.frames, geometry.sampling_rate
        node.size = geometry.size
        if "short_side" in node:
            node.short_side = geometry.get("short_side")
        if evaluation.get("root") is not None:
            node.root = str(evaluation.root)
    if "root" in node and node.root is None:
        raise StbiasError(
            f"task.evaluation.dataset={name} reads files: set task.evaluation.root "
            "(e.g. task.evaluation.root=/data/MoCA)"
        )
    return node


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or reuse) every (cross connection, dataset); J of each on the evaluation set."""
    require_one_model(cfg, "task=vos_moca")
    crosses, datasets = settings(cfg)
    evaluation = cfg.task.evaluation
    name = str(evaluation.dataset)
    spec = InputSpec.from_dict(plain(cfg.model.input))
    clips = evaluation.get("clips")
    data = build_dataset(
        evaluation_node(cfg),
        spec,
        split=str(evaluation.split),
        num_samples=None if clips is None else int(clips),
    )
    resamples, seed = int(cfg.task.get("bootstrap") or 1000), int(cfg.seed)
    batch_size = int(cfg.task.train.batch_size)
    runs, per_run = [], {}
    for dataset in datasets:
        for cross in crosses:
            node = variant(cfg, cross)
            trained = ensure_trained(cfg, node, cross, dataset)
            with open_dict(node):
                node.checkpoint = trained["checkpoint"]
            network = build_model(node).eval()
            per_sequence = dataset_j(network, spec, data, batch_size, name)
            per_run[(cross, dataset)] = per_sequence["model"]
            scores = segmentation_scores(per_sequence, resamples, seed)
            log.info("  (%s trained on %s, J on %s: %.3f)", cross, dataset, name, scores["J"])
            runs.append(
                {
                    "cross": cross,
                    "dataset": dataset,
                    "checkpoint": trained["checkpoint"],
                    "train": {k: trained.get(k) for k in ("val/J", "minutes", "epochs")},
                    "segmentation": scores,
                }
            )
    summary = {
        "task": "vos_moca",
        "model": str(cfg.model.name),
        "cross": crosses,
        "datasets": datasets,
        "evaluation": {
            "dataset": name,
            "split": str(evaluation.split),
            "clips": len(data),
            "box_masks": getattr(base_dataset(data), "regions", None) is not None,
        },
        "reference": str(cfg.task.reference),
        "seed": seed,
        "runs": runs,
        "cross_effects": cross_effects(per_run, str(cfg.task.reference), resamples, seed),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }
    summary["dataset"] = name
    summary["weights"] = joined(f"file:{r['checkpoint']}" for r in runs if r["checkpoint"])
    folder = output_dir()
    write_results(folder, summary, cfg)
    rows = [
        {"cross": r["cross"], "dataset": r["dataset"], "evaluated_on": name, **r["segmentation"]}
        for r in runs
    ]
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    figures = draw_study(folder)
    publish(
        cfg.get("logger"),
        folder,
        "vos_moca",
        "twostream_seg",
        name,
        config=record_config(summary),
        tables={"vos_moca/results": row_table(rows)},
        images={"vos_moca/figures": [f for f in figures if f.endswith(".png")]},
    )
    log.info("%s", moca_table(summary))
    log.info("figures: %s", ", ".join(f for f in figures if f.endswith(".png")))
    log.info("results: %s", os.path.join(folder, "results.json"))
    return summary, {"figures": figures}


def moca_table(summary: Mapping[str, Any]) -> str:
    """One line per (cross connection, training dataset): J on the evaluation set with its
    interval, the all-foreground J beside it; then the paired differences to the reference."""
    ev = summary["evaluation"]
    what = "box-IoU J" if ev.get("box_masks") else "J"
    lines = [
        f"{what} on {ev['dataset']} ({ev['split']}, {ev['clips']} clips)",
        f"{'cross':<22} {'trained on':<12} {'J [95% interval]':<22} {'all-foreground J':<22}",
    ]
    for r in summary["runs"]:
        s = r["segmentation"]
        j = f"{s['J']:.3f} [{s['J_ci'][0]:.3f}, {s['J_ci'][1]:.3f}]"
        lo, hi = s["J_all_foreground_ci"]
        base = f"{s['J_all_foreground']:.3f} [{lo:.3f}, {hi:.3f}]"
        lines.append(f"{r['cross']:<22} {r['dataset']:<12} {j:<22} {base:<22}")
    for e in summary.get("cross_effects") or []:
        lo, hi = e["ci"]
        lines.append(
            f"J({e['cross']}) - J({e['reference']}), trained on {e['dataset']}: "
            f"{e['delta_J']:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired over {e['sequences']} sequences)"
        )
    return "\n".join(lines)


def _groups(runs: list[dict[str, Any]], labels: Mapping[str, str] | None) -> dict[str, dict]:
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        trained_on = label_of(labels, r["dataset"])
        groups.setdefault(trained_on, {})[CROSS_LABELS.get(r["cross"], r["cross"])] = r[
            "segmentation"
        ]
    return groups


def draw_study(folder: str) -> list[str]:
    """``moca_j`` from a study's ``results.json``; returns the paths written."""
    with open(os.path.join(folder, "results.json")) as fh:
        summary = json.load(fh)
    ev = summary["evaluation"]
    title = f"{summary['model']}: cross connections evaluated on {ev['dataset']}"
    figure = j_bars(_groups(summary["runs"], None), ev["dataset"], title)
    return save_figure(figure, os.path.join(folder, "moca_j"))


# Paper figure (stbias.figures) -------------------------------------------------------------------


def vos_moca(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """J of every cross connection on the evaluation set (MoCA, or the embedded camouflage set)
    per training dataset, with intervals over sequences and the all-foreground J."""
    runs, evaluated = [], None
    for run in run_dirs(table, "vos_moca"):
        record = read_run(run)
        runs += copy.deepcopy(record["runs"])
        evaluated = evaluated or record["evaluation"]
    what = "box-IoU J" if evaluated.get("box_masks") else "J"
    name = label_of(labels, evaluated["dataset"])
    heading = f"{title} ({what} on {name})" if title else None
    return j_bars(_groups(runs, labels), name, heading)
