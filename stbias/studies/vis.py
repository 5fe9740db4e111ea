"""`task=vis_study`: the static/dynamic bias of a video instance segmentation model, part by part.

Kowal et al.'s extension (Fig. 5) probes the released VisTR-R50 and VisTR-R101 layer-wise and
unit-wise in their three parts: the frame-wise CNN backbone, the transformer encoder and the
transformer decoder. One study run takes one ``model``: with ``task.train_on`` (a dataset option)
it first trains it there with ``task=train`` (objective ``instance_segmentation``, ``task.train``
settings; once: the checkpoint is cached under ``task.cache_dir``, keyed by every setting of the
training), else it keeps the weights the model config names (``model.checkpoint``); then it
probes every layer alias of ``task.parts`` (part -> alias prefix) with ``task=probe`` (``probe``,
``stylization``, ``metric``) on ``dataset``. The run directory gets ``results.json`` (the
training's scores, the parts and every layer's probe results), ``results.csv`` (one row per
layer) and ``fig5`` in the paper's layout, drawn by :func:`draw_study`.

``make vis-fig5`` runs it for each released VisTR on YouTube-VIS; ``make vis-fig5-embedded``
trains ``vistr_tiny`` on the embedded ``vis_synthetic`` and probes it.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd
from omegaconf import OmegaConf, open_dict

from stbias import io
from stbias.config import compose
from stbias.errors import StbiasError
from stbias.plotting import save_figure
from stbias.plotting.vis import vis_fig5 as draw_fig5
from stbias.results import layer_rows
from stbias.studies import base
from stbias.studies.base import label_of, read_run, run_dirs, train_run
from stbias.tasks.loggers import publish, record_config, row_table
from stbias.tasks.model_setup import require_one_model
from stbias.tasks.probe import probe as probe_layers
from stbias.tasks.probe import summary_table
from stbias.tasks.record import write_results
from stbias.tasks.run_config import choice, output_dir, plain

log = logging.getLogger(__name__)
TRAIN_SCORES = ("val/mIoU", "val/loss", "epochs", "minutes")


def parts(cfg: Any) -> dict[str, list[str]]:
    """Part name -> the model's layer aliases that start with its prefix (``task.parts``), in the
    order the model declares them; one line naming a part that has none."""
    aliases = [str(a) for a in (cfg.model.get("layers") or {})]
    prefixes = {str(k): str(v) for k, v in plain(cfg.task.parts).items()}
    if not prefixes:
        raise StbiasError("task.parts is empty; e.g. {backbone: res, encoder: enc, decoder: dec}")
    found = {part: [a for a in aliases if a.startswith(p)] for part, p in prefixes.items()}
    empty = [f"{part} ({prefixes[part]!r})" for part, names in found.items() if not names]
    if empty:
        raise StbiasError(
            f"task.parts: no layer alias of model {cfg.model.get('name')} starts with the prefix "
            f"of {', '.join(empty)}; its aliases: {', '.join(aliases) or 'none'}"
        )
    return found


def unit_layer(cfg: Any, groups: Mapping[str, list[str]]) -> str:
    """``task.unit_layer``, or the last alias of the last part (the decoder's output)."""
    layer = cfg.task.get("unit_layer")
    probed = [a for names in groups.values() for a in names]
    if layer is None:
        return probed[-1]
    if str(layer) not in probed:
        raise StbiasError(f"task.unit_layer={layer} is not a probed layer; probed: {probed}")
    return str(layer)


def _dataset_node(cfg: Any, name: str) -> Any:
    if name == choice(cfg, "dataset"):
        return copy.deepcopy(cfg.dataset)
    return compose([f"dataset={name}", f"model={choice(cfg, 'model')}"]).dataset


def train_config(cfg: Any) -> Any:
    """The ``task=train`` config of the study's training: ``cfg.model`` on ``task.train_on``."""
    t = cfg.task.train
    return train_run(
        cfg,
        {
            "model": copy.deepcopy(cfg.model),
            "dataset": _dataset_node(cfg, str(cfg.task.train_on)),
            "dataset.split": "train",
            "train.train_clips": int(t.clips),
            "train.num_workers": int(t.num_workers),
        },
    )


def ensure_trained(cfg: Any) -> dict[str, Any]:
    """Train once, reuse after (``<task.cache_dir>/<model>-<train_on>-<key>``)."""
    name, dataset = str(cfg.model.name), str(cfg.task.train_on)
    return base.ensure_trained(cfg, f"{name}-{dataset}", train_config(cfg), f"{name} on {dataset}")


def probe_config(cfg: Any, layers: list[str], checkpoint: str | None) -> Any:
    """``cfg`` probing ``layers`` of the model (the trained ``checkpoint`` when there is one)."""
    probe_cfg = copy.deepcopy(cfg)
    with open_dict(probe_cfg):
        probe_cfg.probe.layers = list(layers)
        if checkpoint:
            probe_cfg.model.checkpoint = checkpoint
    return probe_cfg


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (if ``task.train_on``) and probe one VIS model part by part; write and draw."""
    require_one_model(cfg, "task=vis_study")
    groups = parts(cfg)
    layer = unit_layer(cfg, groups)
    folder = output_dir()
    trained: dict[str, Any] = {}
    if cfg.task.get("train_on"):
        trained = ensure_trained(cfg)
    checkpoint = trained.get("checkpoint")
    probed = [a for names in groups.values() for a in names]
    record, _, _ = probe_layers(probe_config(cfg, probed, checkpoint))
    if not record:  # a non-zero rank of a multi-process run: rank 0 reports
        return {}, {}
    log.info("%s", summary_table(record))
    summary = {
        "task": "vis_study",
        "model": str(cfg.model.name),
        "dataset": choice(cfg, "dataset"),
        "trained_on": str(cfg.task.train_on) if cfg.task.get("train_on") else None,
        "train": {k: trained.get(k) for k in TRAIN_SCORES} if trained else {},
        "checkpoint": checkpoint,
        "weights": record.get("weights"),
        "parts": groups,
        "unit_layer": layer,
        "stylization": choice(cfg, "stylization"),
        "lam": float(cfg.metric.lam),
        "seed": int(cfg.seed),
        "num_clips": record["num_clips"],
        "layers": record["layers"],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }
    write_results(folder, summary, cfg)
    part_of = {a: part for part, names in groups.items() for a in names}
    rows = [
        {**row, "part": part_of[row["layer"]]}
        for row in layer_rows(record["layers"], {"model": summary["model"]})
    ]
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    figures = draw_study(folder)
    publish(
        cfg.get("logger"),
        folder,
        "vis_study",
        summary["model"],
        summary["dataset"],
        config=record_config(summary, "stylization", "lam"),
        tables={"vis_study/results": row_table(rows)},
        images={"vis_study/figures": [f for f in figures if f.endswith(".png")]},
    )
    log.info("%s", study_table(summary))
    log.info("figures: %s", ", ".join(f for f in figures if f.endswith(".png")))
    log.info("results: %s", os.path.join(folder, "results.json"))
    return summary, {"figures": figures}


def part_shares(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Part -> the mean layer-wise dynamic, static and residual percent over its layers."""
    shares = {}
    for part, aliases in summary["parts"].items():
        entries = [summary["layers"][a]["percent"] for a in aliases if a in summary["layers"]]
        shares[part] = {
            cls: sum(float(e[cls]) for e in entries) / len(entries)
            for cls in ("dynamic", "static", "residual")
        }
    return shares


def study_table(summary: Mapping[str, Any]) -> str:
    """The training's val/mIoU, then one line per part: its layers' mean dynamic, static and
    residual percent, and the unit classes of the unit layer."""
    lines = []
    train = summary.get("train") or {}
    if train:
        lines.append(
            f"{summary['model']} trained on {summary['trained_on']}: val/mIoU "
            f"{train.get('val/mIoU')} ({train.get('epochs')} epochs)"
        )
    lines.append(f"{'part':<10} {'layers':<28} {'dynamic %':>9} {'static %':>9} {'residual %':>10}")
    for part, share in part_shares(summary).items():
        names = ",".join(summary["parts"][part])
        lines.append(
            f"{part:<10} {names:<28} {share['dynamic']:9.1f} {share['static']:9.1f} "
            f"{share['residual']:10.1f}"
        )
    units = summary["layers"][summary["unit_layer"]]["units"]
    lines.append(
        f"units of {summary['unit_layer']}: "
        + ", ".join(f"{c} {units[c]}" for c in ("dynamic", "static", "joint", "residual"))
    )
    return "\n".join(lines)


def draw_study(folder: str) -> list[str]:
    """``fig5`` (``.png``, ``.pdf``) of one study run from its ``results.json``."""
    summary = read_run(folder)
    figure = draw_fig5(
        {summary["model"]: summary["layers"]},
        summary["parts"],
        {summary["model"]: summary["unit_layer"]},
        title=f"{summary['model']} on {summary['dataset']}: backbone, encoder, decoder "
        f"(λ = {summary['lam']})",
    )
    return save_figure(figure, os.path.join(folder, "fig5"))


# Paper figure (stbias.figures): every vis_study run of a table, one row per model --------------


def vis_fig5(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Fig. 5 (extension): per VisTR variant, the layer-wise split of every backbone, encoder
    and decoder layer, and the unit classes of each variant's unit layer."""
    results, units, groups = {}, {}, {}
    for run in run_dirs(table, "vis_study"):
        record = read_run(run)
        label = label_of(labels, record["model"])
        results[label], units[label] = record["layers"], record["unit_layer"]
        for part, aliases in record["parts"].items():
            known = groups.setdefault(part, [])
            known += [a for a in aliases if a not in known]
    return draw_fig5(results, groups, units, title=title)
