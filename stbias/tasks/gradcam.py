"""`metric=gradcam` (task=gradcam): Grad-CAM per time step of one layer, and its blob statistics.

``python run.py metric=gradcam model=<name> dataset=<name> layer=<alias>`` computes the maps of
``probe.num_clips`` clips of ``dataset.split`` (one backward pass per batch, clips split across
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
from typing import Any

import pytorch_lightning as pl

from stbias.api import GradCAM
from stbias.errors import StbiasError
from stbias.tasks.explain import explain
from stbias.tasks.explanations import report_explanation, skipped_note
from stbias.tasks.run_config import choice, output_dir, plain

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


def explain_gradcam(cfg: Any, folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grad-CAM maps and blobs of ``cfg``, written into ``folder`` (rank 0).

    Returns:
        ``(record, objects)``; ``record`` is ``{}`` on the other ranks of a multi-process run.
    """
    m = cfg.metric
    alias, _ = resolve_layer(cfg, choice(cfg, "model"))

    def build(model: Any, spec: Any, name: str) -> GradCAM:
        return GradCAM(
            model,
            alias,
            spec,
            weights=str(m.weights),
            target=str(m.target),
            time=str(m.time),
            normalize=str(m.normalize),
            grid=plain(m.get("grid")),
            token_order=m.get("token_order") or None,
            eps=m.eps,  # checked by GradCAM: a relative tolerance in [0, 1)
            blob_params=plain(m.get("blobs")) or {},
            keep_maps=bool(m.save_maps),
            target_class=str(m.target_class),
            label_key=str(m.label_key),
            batch_size=int(cfg.probe.batch_size),
            model_name=name,
        )

    name = choice(cfg, "model")
    return explain(cfg, build, folder, detail=f"layer {alias}", progress=f"Grad-CAM of {name}")


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
