"""`task=test`: evaluate a classifier on one split of a dataset, optionally with frames reversed.

``python run.py task=test model=i3d_tiny model.checkpoint=<run>/checkpoints/last.ckpt
dataset=brushmnist_small`` evaluates the trained network (its classes, input channels and clip
geometry come from the checkpoint) on ``task.split`` and writes ``results.json`` (``test/acc``,
``test/acc5``, ``test/loss`` and, for datasets whose label is a motion and an appearance factor,
the per-factor accuracies and the error breakdown of :mod:`stbias.metrics.breakdown`) and
``predictions.csv`` (one row per clip) into the run directory. ``task.reverse=true`` reverses
every clip's frames (any dataset, any model); dataset options such as ``dataset.variant=footprint``
pick what is evaluated.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from stbias import io
from stbias.errors import StbiasError
from stbias.lit.evaluate import Evaluator
from stbias.lit.probe import EvalData
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.tasks.dataset_setup import base_dataset, build_dataset
from stbias.tasks.loggers import (
    build_logger,
    finish_logger,
    log_run,
    record_config,
    run_files,
    run_identity,
)
from stbias.tasks.model_setup import (
    apply_checkpoint_settings,
    build_model,
    check_weights,
    require_one_model,
    warn_if_random,
    weights_label,
    weights_record,
)
from stbias.tasks.record import complete, write_results
from stbias.tasks.run_config import choice, output_dir, plain
from stbias.tasks.trainer_setup import build_trainer

log = logging.getLogger(__name__)


def model_outputs(model: torch.nn.Module, model_cfg: Any, spec: InputSpec) -> int:
    """The classifier's output count: ``builder.num_classes``, else from one forward pass."""
    declared = model_cfg.builder.get("num_classes") if model_cfg.get("builder") else None
    if declared is not None:
        return int(declared)
    clip = torch.zeros(1, spec.channels, spec.frames, spec.size, spec.size)
    with torch.inference_mode():
        return int(model.eval()(pack_inputs(clip, spec)).shape[-1])


def dataset_factors(dataset: Dataset, label_key: str, num_classes: int) -> Any:
    """The dataset's ``label_factors`` when ``label`` is evaluated and they span the classes."""
    factors = getattr(base_dataset(dataset), "label_factors", None)
    if label_key != "label" or not factors:
        return None
    total = 1
    for factor in factors:
        total *= int(factor[2])
    return factors if total == num_classes else None


def check_classes(dataset: Dataset, label_key: str, num_classes: int, name: str) -> None:
    """Refuse a dataset whose class count under ``label`` differs from the model's outputs."""
    classes = getattr(base_dataset(dataset), "num_classes", None) if label_key == "label" else None
    if classes is not None and int(classes) != num_classes:
        raise StbiasError(
            f"model {name} has {num_classes} outputs but the dataset has {classes} classes; "
            "give the checkpoint trained on this dataset (model.checkpoint=<run>/checkpoints/"
            "last.ckpt) or the label it was trained on (test.label_key=...)"
        )


def training_record(checkpoint: Any) -> dict[str, Any] | None:
    """What a ``task=train`` checkpoint was trained on, from its run's ``results.json``.

    ``<run>/checkpoints/<name>.ckpt`` -> ``<run>/results.json``: dataset, variant, label and final
    ``val/acc`` (plain JSON values, recorded only). None for other weights files.
    """
    if not checkpoint:
        return None
    path = os.path.abspath(os.path.expanduser(str(checkpoint)))
    results = os.path.join(os.path.dirname(os.path.dirname(path)), "results.json")
    if os.path.basename(os.path.dirname(path)) != "checkpoints" or not os.path.isfile(results):
        return None
    try:
        with open(results) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("task") != "train":
        return None
    dataset = (record.get("config") or {}).get("dataset") or {}
    return {
        "run_dir": os.path.dirname(results),
        "dataset": record.get("dataset"),
        "variant": dataset.get("variant"),
        "label_key": record.get("label_key"),
        "shuffle_frames": record.get("shuffle_frames"),
        "val/acc": record.get("val/acc"),
    }


def summary(record: dict[str, Any]) -> str:
    """Plain-text lines: what was evaluated, the accuracies and the error breakdown."""
    what = [f"split {record['split']}"]
    if record.get("variant"):
        what.append(f"variant {record['variant']}")
    if record["reverse"]:
        what.append("frames reversed")
    lines = [
        f"{record['model']} ({weights_label(record)}) on {record['dataset']} "
        f"[{', '.join(what)}]: {record['num_clips']} clips",
        "  "
        + "  ".join(f"{key[5:]} {record[key]:.4f}" for key in record if key.startswith("test/acc")),
    ]
    if "test/err_both" in record:
        lines.append(
            f"  errors (% of clips): appearance only {100 * record['test/err_appearance_only']:.2f}"
            f"  motion only {100 * record['test/err_motion_only']:.2f}"
            f"  both {100 * record['test/err_both']:.2f}"
        )
    return "\n".join(lines)


def _evaluator(cfg: Any, name: str) -> tuple[Evaluator, Dataset, Any]:
    """The evaluation module of ``cfg.model``, the clips of ``task.split`` it evaluates and the
    dataset's label factors (``None`` without a motion/appearance split)."""
    tcfg, clips = cfg.task, cfg.probe  # the task's own settings; the shared clip selection
    label_key = str(tcfg.label_key)
    spec = InputSpec.from_dict(plain(cfg.model.input))
    dataset = build_dataset(cfg.dataset, spec, split=str(tcfg.split), num_samples=clips.num_clips)
    model = build_model(cfg.model)
    num_classes = model_outputs(model, cfg.model, spec)
    check_classes(dataset, label_key, num_classes, name)
    factors = dataset_factors(dataset, label_key, num_classes)
    module = Evaluator(
        model,
        spec,
        num_classes,
        label_key=label_key,
        reverse=bool(tcfg.reverse),
        factors=factors,
        keep_predictions=bool(tcfg.predictions),
    )
    return module, dataset, factors


def _record(cfg: Any, name: str, module: Evaluator, factors: Any) -> dict[str, Any]:
    """The results record of a finished evaluation."""
    tcfg = cfg.task
    return {
        "task": "test",
        "model": name,
        **weights_record(cfg.model),
        "dataset": choice(cfg, "dataset"),
        "variant": cfg.dataset.get("variant"),
        "split": str(tcfg.split),
        "reverse": bool(tcfg.reverse),
        "label_key": str(tcfg.label_key),
        "num_classes": module.num_classes,
        "factors": [list(f) for f in factors] if factors else None,
        "num_clips": module.clips,
        "skipped_clips": module.skipped_clips,
        "seed": int(cfg.seed),
        "trained_on": training_record(cfg.model.get("checkpoint")),
        **module.results,
        "metrics": dict(module.results),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate ``cfg.model`` on ``task.split`` of ``cfg.dataset``; returns the record, objects."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    require_one_model(cfg, "task=test")
    apply_checkpoint_settings(cfg)
    name = choice(cfg, "model")
    check_weights(cfg.model, name)
    warn_if_random(cfg.model, name)
    module, dataset, factors = _evaluator(cfg, name)
    tcfg = cfg.task
    folder = str(tcfg.get("output_dir") or output_dir())
    logger = build_logger(
        cfg.get("logger"), folder, **run_identity("test", name, choice(cfg, "dataset"))
    )
    header = complete({"task": "test", "model": name, "dataset": choice(cfg, "dataset")}, cfg)
    log_run(logger, config=record_config(header))
    trainer = build_trainer(
        cfg.trainer,
        logger=logger,
        fixed={"use_distributed_sampler": False, "enable_checkpointing": False},
        task="task=test",
        default_root_dir=folder,
    )
    clips = cfg.probe  # the shared clip selection
    data = EvalData(dataset, int(clips.batch_size), int(clips.num_workers))
    try:
        trainer.test(module, datamodule=data, verbose=False)
    except BaseException:
        finish_logger(logger)
        raise
    objects = {"model": module.model, "module": module, "trainer": trainer, "dataset": dataset}
    if not trainer.is_global_zero:
        finish_logger(logger)
        return {}, objects
    record = _record(cfg, name, module, factors)
    write_results(folder, record, cfg)
    if module.predictions:
        io.write_csv(os.path.join(folder, "predictions.csv"), module.predictions)
    log_run(logger, files=run_files(folder))
    finish_logger(logger)
    log.info("%s", summary(record))
    log.info("results: %s", os.path.join(folder, "results.json"))
    return record, objects
