"""`task=train`: train any model on any dataset, with the objective the model declares.

``python run.py task=train model=i3d_tiny dataset=brushmnist_small`` trains with the optimizer and
scheduler of the ``train`` node and the Trainer arguments of the ``trainer`` node (``max_epochs``
...), writes ``checkpoints/last.ckpt``, ``checkpoints/best.ckpt`` (best validation score) and
``results.json`` into the run directory.

The model config's ``objective`` picks the LightningModule (:data:`OBJECTIVES`):

* ``classification`` (the default): :class:`~stbias.lit.classifier.VideoClassifier`, best
  ``val/acc``. The network is adapted to the dataset: ``num_classes`` from the dataset (or
  ``train.num_classes``) and the input channels from its clips. The checkpoint records these
  changes, so ``model=<name> model.checkpoint=<run>/checkpoints/last.ckpt`` rebuilds it.
* ``segmentation`` (``model=twostream_seg*``):
  :class:`~stbias.lit.segmentation.VideoSegmenter` on a dataset with masks, BCE + soft IoU
  (``train.segmentation``), best ``val/J``; ``results.json`` adds ``J_per_sequence``.
* ``instance_segmentation`` (``model=vistr*``):
  :class:`~stbias.lit.instances.VideoInstanceSegmenter` on a dataset with instance masks,
  Hungarian matching and a set loss (``train.instance_segmentation``), best ``val/mIoU``. The
  network's ``num_classes`` follows the dataset's (or ``train.num_classes``) when they differ;
  the checkpoint records it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor
from torch.utils.data import Dataset

from stbias import io
from stbias.errors import StbiasError
from stbias.lit.checkpoints import RunCheckpointIO, final_and_best_checkpoints
from stbias.lit.classifier import VideoClassifier
from stbias.lit.instances import SetCriterion, VideoInstanceSegmenter
from stbias.lit.segmentation import VideoSegmenter
from stbias.lit.train_data import ClassificationData, EpochSetter, ResumeState
from stbias.models.inputs import InputSpec
from stbias.tasks import train_extras
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
    MODEL_OVERRIDES,
    build_model,
    prepare_model,
    weights_label,
    weights_record,
)
from stbias.tasks.record import complete, write_results
from stbias.tasks.run_config import choice, output_dir, plain
from stbias.tasks.trainer_setup import build_trainer, device_label
from stbias.validation import require_finite

log = logging.getLogger(__name__)


def infer_num_classes(dataset: Dataset, label_key: str = "label") -> int:
    """Classes of ``label_key``: the dataset's ``num_classes`` or ``classes`` (for ``label``)."""
    base = base_dataset(dataset)
    if label_key == "label":
        if getattr(base, "num_classes", None):
            return int(base.num_classes)
        if getattr(base, "classes", None):
            return len(base.classes)
    raise StbiasError(
        f"cannot tell how many classes {label_key!r} has in {type(base).__name__}; "
        "set train.num_classes=<int>"
    )


def infer_channels(dataset: Dataset) -> int:
    """Channels of the dataset's clips: its ``channels`` attribute, else those of sample 0."""
    base = base_dataset(dataset)
    channels = getattr(base, "channels", None)
    if isinstance(channels, int):
        return channels
    return int(dataset[0]["video"].shape[-1])


def adapt_model_config(model_cfg: Any, num_classes: int, channels: int) -> tuple[Any, dict]:
    """A copy of ``model_cfg`` for ``num_classes`` outputs and ``channels``-channel clips.

    Sets ``builder.num_classes`` (and ``num_classes`` where the config has it). When the clips'
    channels differ from ``input.channels`` and the builder takes ``in_channels``, the first
    layer is built for them (``input.mean`` / ``std`` keep their first value per channel);
    otherwise grey clips are repeated into an RGB network (see ``pack_inputs``) and other
    mismatches are errors.

    Returns:
        The adapted config and the changes, ``{"builder": {...}, "input": {...}}``.
    """
    model_cfg = copy.deepcopy(model_cfg)
    changes: dict[str, dict[str, Any]] = {"builder": {"num_classes": int(num_classes)}, "input": {}}
    spec = plain(model_cfg.input)
    if channels != int(spec["channels"]):
        if "in_channels" in model_cfg.builder:
            changes["builder"]["in_channels"] = int(channels)
            changes["input"] = {
                "channels": int(channels),
                "mean": [float(spec["mean"][0])] * channels,
                "std": [float(spec["std"][0])] * channels,
            }
        elif (channels, int(spec["channels"])) != (1, 3):
            raise StbiasError(
                f"clips have {channels} channels but model {model_cfg.get('name')} takes "
                f"{spec['channels']} and its builder has no in_channels argument"
            )
    with open_dict(model_cfg):
        for node, values in changes.items():
            for key, value in values.items():
                model_cfg[node][key] = value
        if "num_classes" in model_cfg:
            model_cfg.num_classes = int(num_classes)
    return model_cfg, changes


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-1 of every parameter and buffer, in state-dict order (equal iff the weights are)."""
    digest = hashlib.sha1()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if torch.is_tensor(v) and v.numel() == 1 and np.isfinite(float(v))
    }


@dataclass
class Objective:
    """What a training objective sets up: the module, its network and what it reports."""

    module: pl.LightningModule
    model: torch.nn.Module
    name: str
    monitor: str  # the validation score checkpoints keep the best of (higher is better)
    record: dict[str, Any] = field(default_factory=dict)  # objective-specific results entries
    report: Callable[[pl.LightningModule, Dataset | None], dict[str, Any]] | None = None


def _optimizers(tcfg: Any) -> tuple[Any, Any]:
    scheduler = instantiate(tcfg.scheduler) if tcfg.get("scheduler") else None
    return instantiate(tcfg.optimizer), scheduler


def classification(cfg: Any, train_set: Dataset, spec: InputSpec) -> Objective:
    """A :class:`VideoClassifier` of ``cfg.model`` adapted to the dataset's classes and channels."""
    tcfg = cfg.train
    label_key = str(tcfg.label_key)
    num_classes = int(tcfg.get("num_classes") or infer_num_classes(train_set, label_key))
    channels = infer_channels(train_set)
    model_cfg, changes = adapt_model_config(cfg.model, num_classes, channels)
    spec = InputSpec.from_dict(plain(model_cfg.input))
    # fine-tuning weights of another class count: all but a new classifier
    model = build_model(model_cfg, new_head=num_classes, checkpoint_settings=False)
    name = str(model_cfg.get("name", "model"))
    module = VideoClassifier(
        model,
        spec,
        num_classes,
        *_optimizers(tcfg),
        shuffle_frames=bool(tcfg.shuffle_frames),
        label_key=label_key,
        seed=int(cfg.seed),
        hparams={MODEL_OVERRIDES: changes, "model": name, "dataset": choice(cfg, "dataset")},
    )
    record = {
        "shuffle_frames": bool(tcfg.shuffle_frames),
        "label_key": label_key,
        "num_classes": num_classes,
        "in_channels": channels,
        MODEL_OVERRIDES: changes,
    }
    return Objective(module, model, name, "val/acc", record)


def _refuse_classifier_keys(cfg: Any, objective: str, allowed: tuple[str, ...] = ()) -> None:
    """One line naming the classifier settings a model of another objective would not read."""
    tcfg = cfg.train
    unused = {
        "train.shuffle_frames": bool(tcfg.shuffle_frames),
        "train.num_classes": tcfg.get("num_classes") is not None,
        "train.label_key": str(tcfg.label_key) != "label",
    }
    keys = ", ".join(k for k, v in unused.items() if v and k not in allowed)
    if keys:
        name = str(cfg.model.get("name", "model"))
        raise StbiasError(
            f"{keys} apply to classifiers; model {name} trains with objective={objective} "
            f"(its settings are under train.{objective})"
        )


def segmentation(cfg: Any, train_set: Dataset, spec: InputSpec) -> Objective:
    """A :class:`VideoSegmenter` of ``cfg.model`` (mask logits) on a dataset with masks."""
    tcfg = cfg.train
    name = str(cfg.model.get("name", "model"))
    _refuse_classifier_keys(cfg, "segmentation")
    seg = tcfg.segmentation
    model = build_model(cfg.model)
    module = VideoSegmenter(
        model,
        spec,
        *_optimizers(tcfg),
        bce_weight=float(seg.bce_weight),
        iou_weight=float(seg.iou_weight),
        threshold=float(seg.threshold),
        hparams={MODEL_OVERRIDES: {}, "model": name, "dataset": choice(cfg, "dataset")},
    )
    record = {"segmentation": plain(seg), MODEL_OVERRIDES: {}}
    return Objective(module, model, name, "val/J", record, report=_sequence_report)


def instance_segmentation(cfg: Any, train_set: Dataset, spec: InputSpec) -> Objective:
    """A :class:`VideoInstanceSegmenter` of ``cfg.model`` on a dataset with instance masks;
    the network's ``builder.num_classes`` follows the dataset's (or ``train.num_classes``)."""
    tcfg = cfg.train
    _refuse_classifier_keys(cfg, "instance_segmentation", allowed=("train.num_classes",))
    model_cfg, changes = cfg.model, {}
    builder_classes = (model_cfg.get("builder") or {}).get("num_classes")
    num_classes = tcfg.get("num_classes") or _dataset_classes(train_set)
    if num_classes is not None and builder_classes is not None:
        if int(num_classes) != int(builder_classes):
            model_cfg, changes = adapt_model_config(model_cfg, int(num_classes), int(spec.channels))
    name = str(model_cfg.get("name", "model"))
    settings = tcfg.instance_segmentation
    model = build_model(model_cfg, checkpoint_settings=not changes)
    criterion = SetCriterion(
        class_weight=float(settings.class_weight),
        bce_weight=float(settings.bce_weight),
        dice_weight=float(settings.dice_weight),
        box_weight=float(settings.box_weight),
        no_object_weight=float(settings.no_object_weight),
    )
    module = VideoInstanceSegmenter(
        model,
        InputSpec.from_dict(plain(model_cfg.input)),
        *_optimizers(tcfg),
        criterion=criterion,
        threshold=float(settings.threshold),
        hparams={MODEL_OVERRIDES: changes, "model": name, "dataset": choice(cfg, "dataset")},
    )
    record = {"instance_segmentation": plain(settings), MODEL_OVERRIDES: changes}
    if num_classes is not None:
        record["num_classes"] = int(num_classes)
    return Objective(module, model, name, "val/mIoU", record)


def _dataset_classes(dataset: Dataset) -> int | None:
    """The dataset's instance classes (``num_classes`` or ``classes``), None if it says none."""
    base = base_dataset(dataset)
    if getattr(base, "num_classes", None):
        return int(base.num_classes)
    if getattr(base, "classes", None):
        return len(base.classes)
    return None


def _sequence_report(module: pl.LightningModule, val_set: Dataset | None) -> dict[str, Any]:
    """``J_per_sequence``: the last validation's J of every sequence, by name."""
    if val_set is None:
        return {}
    base = base_dataset(val_set)
    names = getattr(base, "classes", None)
    per_seq = {}
    for seq, value in sorted(module.last_val_sequences.items()):
        if names and 0 <= seq < len(names):
            key = str(names[seq])
        elif hasattr(base, "clip_info"):
            key = str(base.clip_info(seq)["id"])
        else:
            key = str(seq)
        per_seq[key] = value
    return {"J_per_sequence": per_seq}


# model.objective -> what trains it
OBJECTIVES: dict[str, Callable[[Any, Dataset, InputSpec], Objective]] = {
    "classification": classification,
    "segmentation": segmentation,
    "instance_segmentation": instance_segmentation,
}


def _objective(cfg: Any) -> str:
    objective = str(cfg.model.get("objective") or "classification")
    if objective not in OBJECTIVES:
        raise StbiasError(f"unknown model.objective={objective!r}; valid: {', '.join(OBJECTIVES)}")
    return objective


def _datasets(cfg: Any, spec: InputSpec) -> tuple[Dataset, Dataset | None]:
    """The training clips and, where ``train.val_split`` names one, the validation clips."""
    tcfg = cfg.train
    train_set = build_dataset(cfg.dataset, spec, num_samples=tcfg.get("train_clips"))
    val_set = None
    if tcfg.get("val_split"):
        val_set = build_dataset(cfg.dataset, spec, tcfg.val_split, tcfg.get("val_clips"))
    return train_set, val_set


def _callbacks(
    cfg: Any, setup: Objective, folder: str, train_set: Dataset, val_set: Dataset | None, logger
) -> tuple[list[pl.Callback], dict[str, Any]]:
    """The training's callbacks (checkpoints, resume state, StaticDropout and the checkpoint
    series of ``train``, learning rate where a logger is) and those the record reads."""
    checkpoints = os.path.join(folder, "checkpoints")
    last, best = final_and_best_checkpoints(
        checkpoints, setup.monitor if val_set is not None else None
    )
    # StaticDropout (train.static_dropout) and the checkpoint series (train.checkpoint_every)
    # the module's input spec: the model's, adapted to the clips' channels (grey clips: one)
    extras = train_extras.training_callbacks(
        cfg, setup.model, setup.module.spec, train_set, val_set, checkpoints
    )
    # random streams and minutes trained: a resumed run ends exactly where one run does
    resume_state = ResumeState(os.path.join(folder, "train_minutes.json"))
    # best before last: last.ckpt then holds the best checkpoint's state of the same epoch
    callbacks: list[pl.Callback] = [resume_state, *([best] if best else []), last, EpochSetter()]
    callbacks += extras
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    return callbacks, {"last": last, "best": best, "extras": extras, "resume_state": resume_state}


def _fit(trainer: pl.Trainer, module: pl.LightningModule, data: Any, resume, io_: Any, logger):
    """Fit, resuming from ``resume``; the final metrics go to the logger even when it fails.

    Every checkpoint the run reads, writes or removes goes through the run folder's own I/O
    (``io_``): resumed state is weights, optimizer and counters only; nothing outside the folder
    is touched.
    """
    trainer.strategy.checkpoint_io = io_
    if resume:
        io_.read(resume, module)
    try:
        trainer.fit(
            module, datamodule=data, ckpt_path=resume, weights_only=True if resume else None
        )
    finally:
        if trainer.is_global_zero:
            log_run(logger, summary={f"final/{k}": v for k, v in _metrics(trainer).items()})


def _record(
    cfg: Any, setup: Objective, trainer: pl.Trainer, kept: dict[str, Any], val_set, resume
) -> dict[str, Any]:
    """The results record of a finished training."""
    best = kept["best"]
    overrides = setup.record.pop(MODEL_OVERRIDES)
    return {
        "task": "train",
        "model": setup.name,
        "dataset": choice(cfg, "dataset"),
        "seed": int(cfg.seed),
        "objective": _objective(cfg),
        **setup.record,
        **_metrics(trainer),
        "metrics": _metrics(trainer),
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "minutes": kept["resume_state"].minutes(),
        "resumed_from": resume,
        "resumed_after_epochs": kept["resume_state"].resumed_epochs,
        "checkpoint": kept["last"].best_model_path or None,
        "best_checkpoint": (best.best_model_path or None) if best else None,
        "best": {setup.monitor: float(best.best_model_score)}
        if best and best.best_model_score is not None
        else {},
        **(setup.report(setup.module, val_set) if setup.report else {}),
        "init_checksum": kept["init_checksum"],
        **train_extras.training_record(kept["extras"]),
        MODEL_OVERRIDES: overrides,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
    }


def _write(cfg: Any, folder: str, record: dict[str, Any], trainer, monitor: str, cache: bool):
    """Write ``results.json`` (a training kept for reuse survives a full disk) and say so."""
    require_finite(  # a diverged training logs NaN, which _metrics would leave out unsaid
        dict(trainer.callback_metrics),
        "the training's final metrics",
        f"results.json was not written (a diverged training, or NaN weights?); "
        f"the checkpoints are in {os.path.join(folder, 'checkpoints')}",
    )
    try:
        write_results(folder, record, cfg)
    except io.WriteError as err:
        if not cache:
            raise
        log.warning("%s; the training is not cached, its results are used as they are", err)
    score = record.get(monitor)
    name, dataset = record["model"], record["dataset"]
    log.info(
        "%s (%d epochs, %.2f min); checkpoint: %s",
        f"{name} on {dataset}: {monitor} {score:.4f}" if score is not None else f"{name}: trained",
        record["epochs"],
        record["minutes"],
        record["checkpoint"],
    )
    log.info("results: %s", os.path.join(folder, "results.json"))


def run(cfg: Any, cache: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the results record and the objects used.

    With ``cache`` (a training kept for reuse, :func:`stbias.studies.base.train_once`), a
    ``results.json`` that cannot be written (disk full) is one warning: the record is returned
    and the training runs again next time.
    """
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    prepare_model(cfg, "task=train")
    train_extras.check(cfg)  # StaticDropout and checkpoint-series settings stop here if bad
    tcfg, objective = cfg.train, _objective(cfg)
    folder = str(tcfg.get("output_dir") or output_dir())
    spec = InputSpec.from_dict(plain(cfg.model.input))
    train_set, val_set = _datasets(cfg, spec)
    setup = OBJECTIVES[objective](cfg, train_set, spec)
    init_checksum = weights_checksum(setup.model)
    name, dataset = setup.name, choice(cfg, "dataset")
    data = ClassificationData(
        train_set,
        val_set,
        batch_size=int(tcfg.batch_size),
        num_workers=int(tcfg.num_workers),
        pin_memory=str(cfg.trainer.get("accelerator", "cpu")) not in ("cpu",),
        seed=int(cfg.seed),
    )
    logger = build_logger(cfg.get("logger"), folder, **run_identity("train", name, dataset))
    callbacks, kept = _callbacks(cfg, setup, folder, train_set, val_set, logger)
    kept["init_checksum"] = init_checksum
    if logger:
        header = complete({"task": "train", "model": name, "dataset": dataset}, cfg)
        log_run(logger, config=record_config(header))
    trainer = build_trainer(
        cfg.trainer,
        logger=logger,
        callbacks=callbacks,
        progress=f"training {name}",
        default_root_dir=folder,
    )
    resume = str(tcfg.get("resume")) if tcfg.get("resume") else None
    log.info(
        "train: %s (%s, %s) | %s: %d training, %s validation clips | %s",
        name,
        f"resuming {resume}" if resume else weights_label(weights_record(cfg.model)),
        objective,
        dataset,
        len(train_set),
        len(val_set) if val_set is not None else "no",
        device_label(cfg.trainer),
    )
    try:
        checkpoint_io = RunCheckpointIO(folder, kept["last"].dirpath)
        _fit(trainer, setup.module, data, resume, checkpoint_io, logger)
    except BaseException:
        finish_logger(logger)
        raise
    record = _record(cfg, setup, trainer, kept, val_set, resume)
    if trainer.is_global_zero:
        _write(cfg, folder, record, trainer, setup.monitor, cache)
        log_run(logger, files=run_files(folder))
    finish_logger(logger)
    return record, {"model": setup.model, "module": setup.module, "trainer": trainer, "data": data}
