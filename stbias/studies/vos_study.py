"""`task=vos_study`: Kowal et al.'s two-stream segmentation study on data that ships.

For every cross connection of ``task.cross`` and every training dataset of ``task.datasets``, the
two-stream ``model`` (at the clip size of ``model.input``) is trained with ``task=train``
(``task.train`` settings; once: checkpoints are cached under ``task.cache_dir``, keyed by every
setting of the training), then probed with ``task=probe`` on flow-jitter pairs (``probe.*``,
``stylization``, ``metric``) on the validation split of its training dataset (or on
``task.probe_dataset``); on the same split each model's J per sequence is measured beside the
all-foreground J (the foreground fraction: what a segmenter that learnt nothing scores), with
bootstrap intervals over sequences and the paired difference of every cross connection against
``task.reference``. The center bias of every training dataset is measured too. The run
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
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from stbias import io
from stbias.config import compose
from stbias.data import video_to_float
from stbias.data.flow import two_stream_input
from stbias.errors import StbiasError
from stbias.metrics.segmentation import frame_region_similarity
from stbias.models.inputs import InputSpec, pack_inputs
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
from stbias.results import center_bias_arrays, layer_rows
from stbias.studies import base
from stbias.studies.base import label_of, read_run, run_dirs, train_run
from stbias.tasks.center_bias import center_bias
from stbias.tasks.dataset_setup import build_dataset
from stbias.tasks.loggers import publish, record_config, row_table
from stbias.tasks.model_setup import build_model, require_one_model
from stbias.tasks.probe import probe as probe_layers
from stbias.tasks.probe import summary_table
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import choice, output_dir, plain

# short labels for the figures
CROSS_LABELS = {
    "none": "none (FusionSeg-like)",
    "motion_to_appearance": "mot→app (MATNet-like)",
    "appearance_to_motion": "app→mot",
    "bidirectional": "both (RTNet-like)",
}
TABLE_LAYERS = ("fusion5", "fusion2")

log = logging.getLogger(__name__)


def settings(cfg: Any) -> tuple[list[str], list[str]]:
    """The checked cross connections and training datasets of ``task``."""
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
    return train_run(
        cfg,
        {
            "model": model_node,
            "dataset": _dataset_node(cfg, dataset),
            "dataset.split": "train",
            "train.train_clips": int(t.clips),
            "train.num_workers": int(t.num_workers),
        },
    )


def ensure_trained(cfg: Any, model_node: Any, cross: str, dataset: str) -> dict[str, Any]:
    """Train once, reuse after (``<task.cache_dir>/<model>-<cross>-<dataset>-<key>``)."""
    train_cfg = train_config(cfg, model_node, dataset)
    label = f"{model_node.name}-{cross}-{dataset}"
    what = f"{model_node.name} (cross={cross}) on {dataset}"
    return base.ensure_trained(cfg, label, train_cfg, what)


def probe_config(cfg: Any, model_node: Any, checkpoint: str, dataset: str) -> Any:
    """``cfg`` probing the trained ``model_node`` on ``dataset``'s ``task.probe_split``."""
    probe_cfg = copy.deepcopy(cfg)
    with open_dict(probe_cfg):
        probe_cfg.model = copy.deepcopy(model_node)
        probe_cfg.model.checkpoint = checkpoint
        probe_cfg.dataset = _dataset_node(cfg, dataset)
        probe_cfg.dataset.split = str(cfg.task.probe_split)
    return probe_cfg


def sequence_j(
    cfg: Any, model_node: Any, checkpoint: str, dataset: str, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """Per-sequence J of the trained model and of the all-foreground mask.

    On the first ``task.train.val_clips`` clips of ``dataset``'s ``task.probe_split`` (each
    synthetic clip is its own sequence): ``model`` (J of the masks where
    ``sigmoid(logit) > threshold``) and ``all_foreground`` (J of marking every pixel foreground:
    a sequence's foreground fraction), both ``(sequences,)`` in the same order.
    """
    sub = probe_config(cfg, model_node, checkpoint, dataset)
    spec = InputSpec.from_dict(plain(sub.model.input))
    data = build_dataset(
        sub.dataset,
        spec,
        split=str(cfg.task.probe_split),
        num_samples=int(cfg.task.train.val_clips),
    )
    network = build_model(sub.model).eval()
    return dataset_j(network, spec, data, int(cfg.task.train.batch_size), dataset, threshold)


def dataset_j(
    network: torch.nn.Module,
    spec: InputSpec,
    data: torch.utils.data.Dataset,
    batch_size: int,
    name: str,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Per-sequence J of ``network`` and of the all-foreground mask on the clips of ``data``.

    Clips with the same ``label`` are one sequence; only annotated frames count. Returns
    ``model`` and ``all_foreground``, both ``(sequences,)`` in the order of the labels.
    """
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    model_j, all_j, seq = [], [], []
    with torch.no_grad():
        for batch in loader:
            video01 = video_to_float(batch["video"])
            logits = network(pack_inputs(two_stream_input(video01) if spec.flow else video01, spec))
            frames = logits.shape[2]
            target = batch["mask"][:, :frames].flatten(0, 1)
            pred = (torch.sigmoid(logits) > threshold).squeeze(1).flatten(0, 1)
            j, annotated = frame_region_similarity(pred, target)
            j_all, _ = frame_region_similarity(torch.ones_like(target), target)
            ids = torch.as_tensor(batch["label"]).repeat_interleave(frames)
            model_j.append(j[annotated]), all_j.append(j_all[annotated]), seq.append(ids[annotated])
    j, j_all, ids = (torch.cat(v).double().numpy() for v in (model_j, all_j, seq))
    order = np.unique(ids)
    if not len(order):
        raise StbiasError(f"no annotated frame in the {name} clips: J is undefined")
    return {
        "model": np.array([j[ids == s].mean() for s in order]),
        "all_foreground": np.array([j_all[ids == s].mean() for s in order]),
    }


def bootstrap_mean(values: np.ndarray, resamples: int, seed: int) -> list[float]:
    """95 % percentile interval of the mean of ``values`` over resampled sequences."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(int(resamples), len(values)))
    means = values[picks].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def segmentation_scores(per_sequence: dict[str, np.ndarray], resamples: int, seed: int) -> dict:
    """Mean J of the model and of the all-foreground mask, with intervals over sequences."""
    model, base = per_sequence["model"], per_sequence["all_foreground"]
    return {
        "sequences": int(len(model)),
        "J": float(model.mean()),
        "J_ci": bootstrap_mean(model, resamples, seed),
        "J_all_foreground": float(base.mean()),
        "J_all_foreground_ci": bootstrap_mean(base, resamples, seed),
        "J_above_all_foreground": float((model - base).mean()),
        "J_above_all_foreground_ci": bootstrap_mean(model - base, resamples, seed),
    }


def cross_effects(
    per_run: dict[tuple[str, str], np.ndarray], reference: str, resamples: int, seed: int
) -> list[dict[str, Any]]:
    """J of every cross connection minus ``reference``'s on the same sequences (paired)."""
    effects = []
    for (cross, dataset), values in per_run.items():
        base = per_run.get((reference, dataset))
        if cross == reference or base is None or len(base) != len(values):
            continue
        delta = values - base
        effects.append(
            {
                "cross": cross,
                "reference": reference,
                "dataset": dataset,
                "sequences": int(len(delta)),
                "delta_J": float(delta.mean()),
                "ci": bootstrap_mean(delta, resamples, seed),
            }
        )
    return effects


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and probe every (cross connection, dataset); write results and figures."""
    require_one_model(cfg, "task=vos_study")
    crosses, datasets = settings(cfg)
    folder = output_dir()
    runs: list[dict[str, Any]] = []
    per_run: dict[tuple[str, str], np.ndarray] = {}
    resamples = int(cfg.task.get("bootstrap") or 1000)
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
            per_sequence = sequence_j(cfg, node, trained["checkpoint"], target)
            per_run[(cross, dataset)] = per_sequence["model"]
            scores = segmentation_scores(per_sequence, resamples, int(cfg.seed))
            log.info("  (%s on %s: %s)\n", cross, dataset, j_line(scores))
            runs.append(
                {
                    "cross": cross,
                    "dataset": dataset,
                    "probe_dataset": target,
                    "checkpoint": trained["checkpoint"],
                    "train": train_scores,
                    "segmentation": scores,
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
        "cross_effects": cross_effects(per_run, str(cfg.task.reference), resamples, int(cfg.seed)),
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
        meta["J"] = r["segmentation"]["J"]
        meta["J_all_foreground"] = r["segmentation"]["J_all_foreground"]
        rows += layer_rows(r["layers"], meta)
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    figures = draw_study(folder)
    publish(
        cfg.get("logger"),
        folder,
        "vos_study",
        "twostream_seg",
        "vos",
        config=record_config(summary, "stylization", "lam"),
        tables={"vos_study/results": row_table(rows)},
        images={"vos_study/figures": [f for f in figures if f.endswith(".png")]},
    )
    log.info("%s", study_table(summary))
    log.info("figures: %s", ", ".join(f for f in figures if f.endswith(".png")))
    log.info("results: %s", os.path.join(folder, "results.json"))
    return summary, {"figures": figures}


def j_line(scores: dict[str, Any]) -> str:
    """One run's J and all-foreground J with their intervals, for the log."""
    lo, hi = scores["J_ci"]
    blo, bhi = scores["J_all_foreground_ci"]
    return (
        f"val/J {scores['J']:.3f} [{lo:.3f}, {hi:.3f}], all-foreground J (the foreground "
        f"fraction) {scores['J_all_foreground']:.3f} [{blo:.3f}, {bhi:.3f}] "
        f"({scores['sequences']} sequences)"
    )


def study_table(summary: dict[str, Any]) -> str:
    """One line per run: J with its interval beside the all-foreground J (the foreground
    fraction), mean layer-wise dynamic % per stream, units of fusion layer 5; then each cross
    connection's J minus the reference's on the same sequences."""
    lines = [
        f"{'cross':<22} {'dataset':<12} {'val/J [95% interval]':<21} {'fg frac.':>8}  "
        f"dyn% mot/app/fusion   fusion5 units dyn/stat/joint/res"
    ]
    for r in summary["runs"]:
        layers = r["layers"]

        def mean_dyn(prefix: str, layers: dict = layers) -> float:
            values = [e["percent"]["dynamic"] for a, e in layers.items() if a.startswith(prefix)]
            return float(np.mean(values)) if values else float("nan")

        u = layers.get("fusion5", {}).get("units", {})
        seg = r.get("segmentation") or {}
        if seg:
            j = f"{seg['J']:.3f} [{seg['J_ci'][0]:.3f}, {seg['J_ci'][1]:.3f}]"
            base = f"{seg['J_all_foreground']:.3f}"
        else:  # a study written before J was measured per sequence
            j, base = f"{r['train'].get('val/J')}", "–"
        lines.append(
            f"{r['cross']:<22} {r['dataset']:<12} {j:<21} {base:>8}  "
            f"{mean_dyn('mot_'):5.1f}/{mean_dyn('app_'):5.1f}/{mean_dyn('fusion'):5.1f}       "
            f"{u.get('dynamic')}/{u.get('static')}/{u.get('joint')}/{u.get('residual')}"
        )
    for e in summary.get("cross_effects") or []:
        lo, hi = e["ci"]
        lines.append(
            f"J({e['cross']}) - J({e['reference']}) on {e['dataset']}: {e['delta_J']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (paired over {e['sequences']} sequences)"
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


# Paper figures (stbias.figures): every vos_study run of a table as one study -------------------


def _study(table: pd.DataFrame) -> dict[str, Any]:
    """Every vos_study run of the table as one study: runs, datasets, crosses and center bias."""
    study: dict[str, Any] = {"runs": [], "datasets": [], "cross": [], "center_bias": {}}
    for run in run_dirs(table, "vos_study"):
        record = read_run(run)
        maps = center_bias_arrays(run)
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
    study = _study(table)
    dataset = dataset or study["datasets"][0]
    models = {
        CROSS_LABELS.get(r["cross"], r["cross"]): r["layers"]
        for r in study["runs"]
        if r["dataset"] == dataset
    }
    if not models:
        raise StbiasError(f"figure.dataset={dataset}: no model trained on it ({study['datasets']})")
    heading = f"{title}: {study['model']} trained on {label_of(labels, dataset)}" if title else None
    return fig4(models, title=heading)


def vos_table1(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 1: dynamic and static % of fusion layers 5 and 2 per training dataset (the study's
    reference cross connection)."""
    study = _study(table)
    by_dataset = {
        label_of(labels, r["dataset"]): r["layers"]
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
    study = _study(table)
    reference = {
        label_of(labels, r["dataset"]): r["layers"]
        for r in study["runs"]
        if r["cross"] == study["reference"]
    }
    centre = {label_of(labels, d): e for d, e in study["center_bias"].items()}
    return fig7(reference, centre, TABLE_LAYERS, title)


def center_bias_figure(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """The mean foreground mask of every dataset, scaled to [0, 1], with its center mass."""
    entries = {}
    for run in run_dirs(table, "center_bias"):
        record, maps = read_run(run), center_bias_arrays(run)
        for dataset, numbers in record["datasets"].items():
            entries[label_of(labels, dataset)] = {**numbers, "map": maps[dataset]}
    return center_bias_maps(entries, title=title)
