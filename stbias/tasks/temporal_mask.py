"""`metric=temporal_mask` (task=temporal_mask): Mänttäri et al.'s temporal masks of a model.

``python run.py metric=temporal_mask model=<name> dataset=<name> [model.checkpoint=<file>]``
searches one mask per clip for ``metric.num_clips`` clips of ``dataset.split``, batched
(``metric.batch_size`` clips at once) and split across processes by the Trainer
(``trainer.devices=N trainer.strategy=ddp``). Writes into the run directory:

* ``results.json`` — the settings, per-run summary (mask length, drop ratio, drop difference:
  mean, std, n, 95 % interval; filter counts; OS / FS / RS) and every clip's numbers;
* ``results.csv`` — one row per clip (index, id, label, target, predicted, OS, FS, RS, CS,
  length, drop ratio, drop difference, the mask);
* ``masks.npz`` — the masks ``(N, T)``, starting masks and every per-clip array;
* ``mask_<index>.png|pdf`` — frame strips with the frozen frames and the mask under them, for
  the first ``metric.figures`` clips; ``table4.png|pdf`` — the run in Table 4's layout.
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
from stbias.lit.explain import TemporalMaskModule, packer
from stbias.metrics.masks import SEARCH_SETTINGS, TemporalMask, freeze
from stbias.plotting import save_figure
from stbias.plotting.explain import mask_strip, table4
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


def _row(clips: dict[str, np.ndarray], k: int, info: dict[str, Any]) -> dict[str, Any]:
    label = int(clips["labels"][k])
    kept = bool(clips["drop_ratio_kept"][k])
    correct = label < 0 or int(clips["predicted"][k]) == label
    return {
        "index": int(clips["index"][k]),
        "id": info.get("id"),
        "label": label if label >= 0 else None,
        "target": int(clips["target"][k]),
        "predicted": int(clips["predicted"][k]),
        "os": float(clips["os"][k]),
        "fs": float(clips["fs"][k]),
        "rs": float(clips["rs"][k]),
        # the paper's CS: the ground-truth class's score where the prediction is wrong
        "cs": None if correct else float(clips["label_score"][k]),
        "length": int(clips["length"][k]),
        "initial_length": int(clips["initial_length"][k]),
        "drop_ratio": float(clips["drop_ratio"][k]) if kept else None,
        "drop_ratio_kept": kept,
        "drop_difference": float(clips["drop_difference"][k]),
        "loss": float(clips["loss"][k]),
        "mask": " ".join(f"{v:.3f}" for v in clips["mask"][k]),
    }


def write_outputs(
    folder: str, record: dict[str, Any], clips: dict[str, np.ndarray], dataset: Any, figures: int
) -> list[str]:
    """results.json, results.csv, masks.npz, mask strips and the Table 4 layout."""
    io.write_npz(os.path.join(folder, "masks.npz"), clips)
    io.write_csv(os.path.join(folder, "results.csv"), record["clips"])
    write_results(folder, record)
    label = f"{record['model']} ({record['dataset']}{random_note(record)})"
    paths = save_figure(table4({label: record["summary"]}), os.path.join(folder, "table4"))
    for k in range(min(int(figures), len(clips["index"]))):
        index = int(clips["index"][k])
        video = clip_by_index(dataset, index)["video"]
        frames01 = video_to_float(torch.as_tensor(video)[None])  # (1, C, T, H, W)
        frozen = freeze(frames01, torch.as_tensor(clips["mask"][k])[None].float())
        row = record["clips"][k]
        title = (
            f"{label}, clip {index}: class {row['target']}, OS {row['os']:.3f}, "
            f"FS {row['fs']:.3f}, RS {row['rs']:.3f}, mask length {row['length']}"
        )
        figure = mask_strip(
            frames01[0].permute(1, 2, 3, 0).numpy(),
            clips["mask"][k],
            perturbed=frozen[0].permute(1, 2, 3, 0).numpy(),
            title=title,
            threshold=record["settings"]["length_threshold"],
        )
        paths += save_figure(figure, os.path.join(folder, f"mask_{index}"))
    return paths


def explain_masks(cfg: Any, folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Search the masks of ``cfg`` and write the outputs into ``folder`` (rank 0).

    Returns:
        ``(record, objects)``; ``record`` is ``{}`` on the other ranks of a multi-process run.
    """
    m = cfg.metric
    name, spec, dataset, model = explanation_setup(cfg, "temporal_mask")
    settings = {k: plain(m[k]) for k in SEARCH_SETTINGS}
    explainer = TemporalMask(model, pack=packer(spec), **settings)
    module = TemporalMaskModule(
        explainer, label_key=str(m.label_key), target_class=str(m.target_class)
    )
    iterations = int(settings["iterations"])
    trainer = run_explanation(
        cfg,
        module,
        dataset,
        "temporal_mask",
        detail=f"{iterations} iterations per clip, batches of {int(m.batch_size)} clips",
        progress=f"searching masks of {name}",
    )
    objects = {"model": model, "module": module, "trainer": trainer, "dataset": dataset}
    if not trainer.is_global_zero:
        return {}, objects
    results = module.results
    clips = results["clips"]
    infos = {i: clip_info(dataset, k) for k, i in enumerate(dataset_indices(dataset))}
    record = {
        "task": "temporal_mask",
        "model": name,
        **weights_record(cfg.model),
        "dataset": choice(cfg, "dataset"),
        "split": plain(cfg.dataset.get("split")),
        "seed": int(cfg.seed),
        "num_clips": int(len(clips["index"])),
        "skipped_clips": int(module.skipped_clips),
        "frames": int(clips["mask"].shape[1]),
        "target_class": str(m.target_class),
        "label_key": str(m.label_key),
        "settings": explainer.settings(),
        "summary": results["summary"],
        "clips": [_row(clips, k, infos[int(i)]) for k, i in enumerate(clips["index"])],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }
    check_results(record, "metric=temporal_mask")
    figures = write_outputs(folder, record, clips, dataset, int(m.figures))
    objects["figures"] = figures
    return record, objects


def summary_line(record: dict[str, Any]) -> str:
    """One paragraph: the Table 4 numbers of a run."""
    s = record["summary"]

    def fmt(key: str, digits: int = 2) -> str:
        e = s[key]
        if e["mean"] is None:
            return f"{key} – (n = 0)"
        return f"{key} {e['mean']:.{digits}f} ± {e['std']:.{digits}f} (n = {e['n']})"

    c = s["counts"]
    return (
        f"{record['model']} on {record['dataset']}, {record['num_clips']} clips"
        f"{skipped_note(record)}: "
        f"{fmt('mask_length', 1)}, {fmt('drop_ratio')}, {fmt('drop_difference')}; "
        f"drop ratio filtered on {c['drop_ratio_filtered']} clips"
    )


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metric=temporal_mask``: search, write results and figures, log."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    folder = output_dir()
    record, objects = explain_masks(cfg, folder)
    if not record:
        return record, objects
    report_explanation(cfg, "temporal_mask", "mask", folder, record, objects, summary_line(record))
    return record, objects
