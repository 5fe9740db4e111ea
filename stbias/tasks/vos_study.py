"""`task=vos_study`: Kowal et al.'s two-stream segmentation study on data that ships.

For every cross connection of ``task.cross`` and every training dataset of ``task.datasets``, the
two-stream ``model`` (at the clip size of ``model.input``) is trained with ``task=train``
(``task.train`` settings; once: checkpoints are cached under ``task.cache_dir``, keyed by every
setting of the training), then probed with ``task=probe`` on flow-jitter pairs (``probe.*``,
``stylization``, ``metric``) on the validation split of its training dataset (or on
``task.probe_dataset``). The center bias of every training dataset is measured too. The run
directory gets ``results.json`` and ``results.csv`` (every run's training scores and per-layer
probe results), ``center_bias.npz``, and the figures, drawn from those files by
:func:`draw_study`:

* ``fig4_<dataset>``: Fig. 4 — per cross connection, the layer-wise split of the motion,
  appearance and fusion layers, and the unit classes of fusion layer 5;
* ``table1`` (``.md``, ``.csv``, ``.png``): Table 1 — dynamic and static percent of fusion layers 5
  and 2 per training dataset, for every cross connection (the figure: ``task.reference``);
* ``fig7``: Fig. 7 — unit classes of fusion layers 5 and 2 per training dataset and the datasets'
  center bias, for ``task.reference``.

``python run.py experiment=vos_cross_connections`` runs it at a CPU-sized setting.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from stbias import io
from stbias.config import compose
from stbias.errors import StbiasError
from stbias.models.twostream import CROSS
from stbias.plotting import save_figure
from stbias.plotting.vos import (
    center_bias_maps,
    fig4,
    fig7,
    table1_figure,
    table1_markdown,
    table1_rows,
)
from stbias.results import layer_rows
from stbias.tasks.center_bias import center_bias
from stbias.tasks.common import (
    build_logger,
    choice,
    output_dir,
    plain,
    require_one_model,
    task_epochs,
)
from stbias.tasks.loggers import finish_logger, log_run, record_config, run_files, run_identity
from stbias.tasks.probe import probe as probe_layers
from stbias.tasks.probe import summary_table
from stbias.tasks.record import joined, write_results
from stbias.tasks.training_cache import train_once, training_key

# short labels for the figures
CROSS_LABELS = {
    "none": "none (FusionSeg-like)",
    "motion_to_appearance": "mot→app (MATNet-like)",
    "appearance_to_motion": "app→mot",
    "bidirectional": "both (RTNet-like)",
}
TABLE_LAYERS = ("fusion5", "fusion2")

log = logging.getLogger(__name__)


def _settings(cfg: Any) -> tuple[list[str], list[str]]:
    crosses = [str(c) for c in plain(cfg.task.cross)]
    datasets = [str(d) for d in plain(cfg.task.datasets)]
    bad = [c for c in crosses if c not in CROSS]
    if bad or not crosses:
        raise StbiasError(f"task.cross={crosses}: each must be one of {', '.join(CROSS)}")
    if not datasets:
        raise StbiasError("task.datasets is empty; e.g. task.datasets=[camouflage,salient]")
    if str(cfg.task.reference) not in crosses:
        raise StbiasError(f"task.reference={cfg.task.reference} is not in task.cross={crosses}")
    builder = cfg.model.get("builder") or {}
    if "cross" not in builder or not (cfg.model.get("input") or {}).get("flow"):
        raise StbiasError(
            f"task=vos_study varies the cross connections of a two-stream model; model="
            f"{cfg.model.get('name')} has none (use model=twostream_seg or twostream_seg_tiny)"
        )
    return crosses, datasets


def variant(cfg: Any, cross: str) -> Any:
    """The model node with cross connection ``cross``."""
    node = copy.deepcopy(cfg.model)
    with open_dict(node):
        node.builder.cross = cross
    return node


def _dataset_node(cfg: Any, name: str) -> Any:
    return (
        copy.deepcopy(cfg.dataset)
        if name == choice(cfg, "dataset")
        else compose([f"dataset={name}"]).dataset
    )


def train_config(cfg: Any, model_node: Any, dataset: str) -> Any:
    """The ``task=train`` config of one study run: ``task.train`` on ``dataset``."""
    t = cfg.task.train
    train_cfg = compose(["task=train", "logger=none"])
    with open_dict(train_cfg):
        train_cfg.model = copy.deepcopy(model_node)
        train_cfg.dataset = _dataset_node(cfg, dataset)
        train_cfg.dataset.split = "train"
        train_cfg.seed = int(cfg.seed)
        train_cfg.trainer = copy.deepcopy(cfg.trainer)
        train_cfg.trainer.max_epochs = task_epochs(cfg, t.max_epochs)
        train_cfg.train.train_clips = int(t.clips)
        train_cfg.train.val_clips = int(t.val_clips)
        train_cfg.train.batch_size = int(t.batch_size)
        train_cfg.train.num_workers = int(t.num_workers)
        train_cfg.train.optimizer.lr = float(t.lr)
    return train_cfg


def ensure_trained(cfg: Any, model_node: Any, cross: str, dataset: str) -> dict[str, Any]:
    """Train once, reuse after (``<task.cache_dir>/<model>-<cross>-<dataset>-<key>``)."""
    train_cfg = train_config(cfg, model_node, dataset)
    name = f"{model_node.name}-{cross}-{dataset}-{training_key(train_cfg)}"
    folder = os.path.join(os.path.abspath(str(cfg.task.cache_dir)), name)
    return train_once(train_cfg, folder, f"{model_node.name} (cross={cross}) on {dataset}")


def probe_config(cfg: Any, model_node: Any, checkpoint: str, dataset: str) -> Any:
    """``cfg`` probing the trained ``model_node`` on ``dataset``'s ``task.probe_split``."""
    probe_cfg = copy.deepcopy(cfg)
    with open_dict(probe_cfg):
        probe_cfg.model = copy.deepcopy(model_node)
        probe_cfg.model.checkpoint = checkpoint
        probe_cfg.dataset = _dataset_node(cfg, dataset)
        probe_cfg.dataset.split = str(cfg.task.probe_split)
    return probe_cfg


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and probe every (cross connection, dataset); write results and figures."""
    require_one_model(cfg, "task=vos_study")
    crosses, datasets = _settings(cfg)
    folder = output_dir()
    runs = []
    for dataset in datasets:
        for cross in crosses:
            node = variant(cfg, cross)
            trained = ensure_trained(cfg, node, cross, dataset)
            target = str(cfg.task.probe_dataset or dataset)
            record, _, _ = probe_layers(probe_config(cfg, node, trained["checkpoint"], target))
            if not record:  # a non-zero rank of a multi-process run: rank 0 reports
                continue
            log.info("%s", summary_table(record))
            train_scores = {k: trained.get(k) for k in ("val/J", "val/J_frames", "val/loss")}
            train_scores.update(minutes=trained.get("minutes"), epochs=trained.get("epochs"))
            log.info("  (%s on %s: val/J %s)\n", cross, dataset, train_scores["val/J"])
            runs.append(
                {
                    "cross": cross,
                    "dataset": dataset,
                    "probe_dataset": target,
                    "checkpoint": trained["checkpoint"],
                    "train": train_scores,
                    "num_clips": record["num_clips"],
                    "layers": record["layers"],
                }
            )
    if not runs:
        return {}, {}
    centre = {}
    for dataset in datasets:
        full = copy.deepcopy(cfg)
        with open_dict(full):
            full.dataset = _dataset_node(cfg, dataset)
            full.dataset.split = "train"
        centre[dataset] = center_bias(
            instantiate(full.dataset),
            int(cfg.task.center_bias.size),
            cfg.task.center_bias.clips,
            str(cfg.task.center_bias.get("normalise", "minmax")),
        )
    summary = {
        "task": "vos_study",
        "model": str(cfg.model.name),
        "cross": crosses,
        "datasets": datasets,
        "reference": str(cfg.task.reference),
        "stylization": choice(cfg, "stylization"),
        "lam": float(cfg.metric.lam),
        "seed": int(cfg.seed),
        "runs": runs,
        "center_bias": {
            d: {k: v for k, v in e.items() if not isinstance(v, np.ndarray)}
            for d, e in centre.items()
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }
    summary["dataset"] = "+".join(map(str, datasets))
    summary["weights"] = joined(f"file:{r['checkpoint']}" for r in runs if r["checkpoint"])
    write_results(folder, summary, cfg)
    io.write_npz(
        os.path.join(folder, "center_bias.npz"),
        {f"{d}/{k}": e[k] for d, e in centre.items() for k in ("map", "mean_map")},
    )
    rows = []
    for r in runs:
        meta = {"cross": r["cross"], "dataset": r["dataset"], "probe_dataset": r["probe_dataset"]}
        meta["val_J"] = r["train"]["val/J"]
        rows += layer_rows(r["layers"], meta)
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    figures = draw_study(folder)
    logger = build_logger(
        cfg.get("logger"), folder, **run_identity("vos_study", "twostream_seg", "vos")
    )
    columns = list(rows[0]) if rows else []
    log_run(
        logger,
        config=record_config(summary, "stylization", "lam"),
        tables={"vos_study/results": (columns, [[r.get(c) for c in columns] for r in rows])},
        images={"vos_study/figures": [f for f in figures if f.endswith(".png")]},
        files=run_files(folder),
    )
    finish_logger(logger)
    log.info("%s", study_table(summary))
    log.info("figures: %s", ", ".join(f for f in figures if f.endswith(".png")))
    log.info("results: %s", os.path.join(folder, "results.json"))
    return summary, {"figures": figures}


def study_table(summary: dict[str, Any]) -> str:
    """One line per run: J, mean layer-wise dynamic % per stream, units of fusion layer 5."""
    lines = [
        f"{'cross':<22} {'dataset':<12} {'val/J':>6}  dyn% mot/app/fusion   "
        f"fusion5 units dyn/stat/joint/res"
    ]
    for r in summary["runs"]:
        layers = r["layers"]

        def mean_dyn(prefix: str, layers: dict = layers) -> float:
            values = [e["percent"]["dynamic"] for a, e in layers.items() if a.startswith(prefix)]
            return float(np.mean(values)) if values else float("nan")

        u = layers.get("fusion5", {}).get("units", {})
        j = r["train"].get("val/J")
        lines.append(
            f"{r['cross']:<22} {r['dataset']:<12} {j if j is None else f'{j:6.3f}':>6}  "
            f"{mean_dyn('mot_'):5.1f}/{mean_dyn('app_'):5.1f}/{mean_dyn('fusion'):5.1f}       "
            f"{u.get('dynamic')}/{u.get('static')}/{u.get('joint')}/{u.get('residual')}"
        )
    return "\n".join(lines)


def draw_study(folder: str) -> list[str]:
    """Fig. 4, Table 1 and Fig. 7 from a study's ``results.json`` and ``center_bias.npz``.

    Returns the paths written (``fig4_<dataset>``, ``table1``, ``fig7``, ``center_bias``).
    """
    with open(os.path.join(folder, "results.json")) as fh:
        summary = json.load(fh)
    with np.load(os.path.join(folder, "center_bias.npz")) as npz:
        maps = {key.split("/")[0]: npz[key] for key in npz.files if key.endswith("/map")}
    centre = {d: {**e, "map": maps[d]} for d, e in summary["center_bias"].items() if d in maps}
    runs, paths = summary["runs"], []
    lam = summary.get("lam")
    for dataset in summary["datasets"]:
        models = {
            CROSS_LABELS.get(r["cross"], r["cross"]): r["layers"]
            for r in runs
            if r["dataset"] == dataset
        }
        if models:
            title = (
                f"{summary['model']} trained on {dataset}: motion, appearance, fusion (λ = {lam})"
            )
            paths += save_figure(fig4(models, title=title), os.path.join(folder, f"fig4_{dataset}"))
    tables, rows_csv = [], []
    for cross in summary["cross"]:
        by_dataset = {r["dataset"]: r["layers"] for r in runs if r["cross"] == cross}
        rows = table1_rows(by_dataset, TABLE_LAYERS)
        rows_csv += [{"cross": cross, **row} for row in rows]
        tables.append(f"**cross = {cross}**\n\n{table1_markdown(rows, TABLE_LAYERS)}\n")
        if cross == summary["reference"]:
            figure = table1_figure(rows, TABLE_LAYERS, title=f"Table 1 (cross = {cross})")
            paths += save_figure(figure, os.path.join(folder, "table1"))
    io.write_csv(os.path.join(folder, "table1.csv"), rows_csv)
    io.write_text(os.path.join(folder, "table1.md"), "\n".join(tables))
    paths += [os.path.join(folder, "table1.csv"), os.path.join(folder, "table1.md")]
    reference = {r["dataset"]: r["layers"] for r in runs if r["cross"] == summary["reference"]}
    title = f"{summary['model']} (cross = {summary['reference']}): units and center bias"
    paths += save_figure(fig7(reference, centre, TABLE_LAYERS, title), os.path.join(folder, "fig7"))
    if centre:
        paths += save_figure(center_bias_maps(centre), os.path.join(folder, "center_bias"))
    return paths
