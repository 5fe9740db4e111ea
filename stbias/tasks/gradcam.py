"""`metric=gradcam` (task=gradcam): Grad-CAM per time step of one layer, and its blob statistics.

``python run.py metric=gradcam model=<name> dataset=<name> layer=<alias>`` computes the maps of
``metric.num_clips`` clips of ``dataset.split`` (one backward pass per batch, clips split across
processes by the Trainer) and the blobs of every frame. Writes into the run directory:

* ``results.json`` — the settings (Grad-CAM options, every blob detector setting), the blob
  summary (count per frame, size and centre distance per blob: mean, std, n, 95 % interval) and
  every clip's target, prediction, score and blob counts;
* ``results.csv`` — one row per clip; ``blobs.csv`` — one row per blob;
* ``gradcam.npz`` — the maps ``(N, T, H, W)`` (float16, with ``metric.save_maps``) and the
  ReLU'd maps at the layer's resolution ``(N, T', H', W')``; ``blobs.npz`` — per-frame counts and
  per-blob arrays (the samples of the t-tests);
* ``gradcam_<index>.png|pdf`` (frames over their overlays) and ``gradcam_<index>.gif`` for the
  first ``metric.figures`` clips; ``table3.png|pdf`` — the run in Table 3's layout.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from stbias import io
from stbias.data import video_to_float
from stbias.data.subsets import clip_info
from stbias.errors import StbiasError
from stbias.lit.explain import GradCAMModule, packer
from stbias.metrics.gradcam import GradCAM
from stbias.plotting import save_animation, save_figure
from stbias.plotting.explain import gradcam_strip, overlay, table3
from stbias.tasks.dataset_setup import clip_by_index, dataset_indices
from stbias.tasks.explanations import (
    explanation_setup,
    report_explanation,
    run_explanation,
    skipped_note,
)
from stbias.tasks.model_setup import weights_record
from stbias.tasks.record import random_note, write_results
from stbias.tasks.run_config import check_results, choice, output_dir, plain

log = logging.getLogger(__name__)


def resolve_layer(cfg: Any, name: str) -> tuple[str, str]:
    """``(alias, module path)`` of the root key ``layer`` (null: the model's ``gradcam_layer``)."""
    declared = {str(k): str(v) for k, v in (plain(cfg.model.get("layers")) or {}).items()}
    alias = cfg.get("layer") or cfg.model.get("gradcam_layer")
    if not alias:
        raise StbiasError(
            f"metric=gradcam needs a layer: layer=<alias>; layers of {name}: "
            f"{', '.join(declared) or 'none declared (set model.layers)'}"
        )
    alias = str(alias)
    if alias not in declared:
        raise StbiasError(
            f"unknown layer {alias!r}; layers of {name}: {', '.join(declared) or 'none declared'}"
        )
    return alias, declared[alias]


def _rows(record: dict[str, Any], clips: dict[str, np.ndarray], blobs: dict[str, Any], infos):
    counts = blobs["counts"]
    rows = []
    for k, index in enumerate(clips["index"]):
        label = int(clips["labels"][k])
        rows.append(
            {
                "index": int(index),
                "id": infos[int(index)].get("id"),
                "label": label if label >= 0 else None,
                "target": int(clips["target"][k]),
                "predicted": int(clips["predicted"][k]),
                "score": float(clips["score"][k]),
                "probability": float(clips["probability"][k]),
                "blob_count_mean": float(counts[k].mean()),
                "blob_counts": " ".join(str(int(c)) for c in counts[k]),
            }
        )
    return rows


def write_outputs(
    folder: str,
    record: dict[str, Any],
    clips: dict[str, np.ndarray],
    blobs: dict[str, Any],
    dataset: Any,
    figures: int,
    fps: float,
) -> list[str]:
    """results.json / csv, blobs.csv, gradcam.npz, blobs.npz, overlays and the Table 3 layout."""
    arrays = {k: v for k, v in clips.items()}
    io.write_npz(os.path.join(folder, "gradcam.npz"), arrays)
    b = blobs["blobs"]
    io.write_npz(
        os.path.join(folder, "blobs.npz"),
        {"index": blobs["index"], "counts": blobs["counts"], **b},
    )
    io.write_csv(
        os.path.join(folder, "blobs.csv"),
        [
            {
                "index": int(b["clip"][i]),
                "frame": int(b["frame"][i]),
                "x": float(b["xy"][i, 0]),
                "y": float(b["xy"][i, 1]),
                "size": float(b["size"][i]),
                "distance": float(b["distance"][i]),
            }
            for i in range(len(b["clip"]))
        ]
        or [{"index": None, "frame": None, "x": None, "y": None, "size": None, "distance": None}],
    )
    io.write_csv(os.path.join(folder, "results.csv"), record["clips"])
    write_results(folder, record)
    label = f"{record['model']} ({record['dataset']}{random_note(record)})"
    paths = save_figure(table3({label: record["summary"]}), os.path.join(folder, "table3"))
    if "maps" not in clips:
        return paths
    for k in range(min(int(figures), len(clips["index"]))):
        index = int(clips["index"][k])
        video = torch.as_tensor(clip_by_index(dataset, index)["video"])
        frames = video_to_float(video[None])[0].permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
        maps = clips["maps"][k].astype(np.float32)
        row = record["clips"][k]
        title = (
            f"{label}, layer {record['layer']}, clip {index}: class {row['target']} "
            f"(predicted {row['predicted']}), {row['blob_count_mean']:.1f} blobs per frame"
        )
        paths += save_figure(
            gradcam_strip(frames, maps, title), os.path.join(folder, f"gradcam_{index}")
        )
        paths.append(
            save_animation(overlay(frames, maps), os.path.join(folder, f"gradcam_{index}.gif"), fps)
        )
    return paths


def explain_gradcam(cfg: Any, folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grad-CAM maps and blobs of ``cfg``, written into ``folder`` (rank 0).

    Returns:
        ``(record, objects)``; ``record`` is ``{}`` on the other ranks of a multi-process run.
    """
    m = cfg.metric
    name = choice(cfg, "model")
    alias, path = resolve_layer(cfg, name)
    name, spec, dataset, model = explanation_setup(cfg, "gradcam")
    token_order = m.get("token_order") or cfg.model.get("token_order") or "thw"
    explainer = GradCAM(
        model,
        path,
        pack=packer(spec),
        layout=str(cfg.model.get("layout", "cnn")),
        weights=str(m.weights),
        target=str(m.target),
        time=str(m.time),
        normalize=str(m.normalize),
        grid=plain(m.get("grid")),
        token_order=str(token_order),
        eps=m.eps,  # checked by GradCAM: a relative tolerance in [0, 1)
        model_name=name,
    )
    module = GradCAMModule(
        explainer,
        label_key=str(m.label_key),
        target_class=str(m.target_class),
        blob_params=plain(m.get("blobs")) or {},
        keep_maps=bool(m.save_maps),
    )
    trainer = run_explanation(
        cfg, module, dataset, "gradcam", detail=f"layer {alias}", progress=f"Grad-CAM of {name}"
    )
    objects = {"model": model, "module": module, "trainer": trainer, "dataset": dataset}
    if not trainer.is_global_zero:
        return {}, objects
    clips, blobs = module.results["clips"], module.results["blobs"]
    infos = {i: clip_info(dataset, k) for k, i in enumerate(dataset_indices(dataset))}
    labelled = clips["labels"] >= 0
    record = {
        "task": "gradcam",
        "model": name,
        **weights_record(cfg.model),
        "dataset": choice(cfg, "dataset"),
        "split": plain(cfg.dataset.get("split")),
        "seed": int(cfg.seed),
        "layer": alias,
        "layer_path": path,
        "num_clips": int(len(clips["index"])),
        "skipped_clips": int(module.skipped_clips),
        "layer_shape": list(clips["raw"].shape[1:]),
        "map_shape": list(clips["maps"].shape[1:]) if "maps" in clips else None,
        "target_class": str(m.target_class),
        "label_key": str(m.label_key),
        "accuracy": float((clips["predicted"] == clips["labels"])[labelled].mean())
        if labelled.any()
        else None,
        "settings": explainer.settings(),
        "blob_params": blobs["params"],
        "summary": blobs["summary"],
        "clips": [],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }
    record["clips"] = _rows(record, clips, blobs, infos)
    check_results(record, "metric=gradcam")
    objects["figures"] = write_outputs(
        folder, record, clips, blobs, dataset, int(m.figures), float(m.fps)
    )
    return record, objects


def summary_line(record: dict[str, Any]) -> str:
    """One paragraph: the Table 3 numbers of a run."""
    parts = []
    for key, e in record["summary"].items():
        if e["mean"] is None:
            parts.append(f"{key} – (n = 0)")
        else:
            parts.append(f"{key} {e['mean']:.2f} ± {e['std']:.2f} (n = {e['n']})")
    return (
        f"{record['model']} on {record['dataset']}, layer {record['layer']} "
        f"{record['layer_shape']}, {record['num_clips']} clips{skipped_note(record)}: "
        + ", ".join(parts)
    )


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metric=gradcam``: maps, blobs, outputs, log."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    folder = output_dir()
    record, objects = explain_gradcam(cfg, folder)
    if not record:
        return record, objects
    report_explanation(cfg, "gradcam", "gradcam", folder, record, objects, summary_line(record))
    return record, objects
