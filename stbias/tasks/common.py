"""Helpers the tasks share: turning config nodes into objects."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch.utils.data import Dataset, Subset

from stbias.models.inputs import InputSpec

log = logging.getLogger(__name__)

# hyper_parameters key under which task=train stores the model config changes it made
# (num_classes, in_channels, input channels) so that the checkpoint rebuilds its network
MODEL_OVERRIDES = "model_overrides"


def plain(node: Any) -> Any:
    """A config node as plain Python containers (interpolations resolved); None stays None."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def output_dir() -> str:
    """The run directory: Hydra's output folder under ``run.py``, the working directory else."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.output_dir)
    return os.getcwd()


def checkpoint_overrides(path: str | os.PathLike) -> dict[str, Any]:
    """The model config changes a ``task=train`` checkpoint records (``{}`` for other files).

    Returns ``{"builder": {...}, "input": {...}}``: e.g. the ``num_classes`` and ``in_channels``
    the network was trained with. Only Lightning ``.ckpt`` files are opened; anything unreadable
    gives ``{}`` (``load_checkpoint`` reports the problem when it loads the weights).
    """
    path = os.path.expanduser(str(path))
    if not path.endswith(".ckpt") or not os.path.isfile(path):
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the weights loader reports unreadable files properly
        return {}
    hparams = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    overrides = hparams.get(MODEL_OVERRIDES) if isinstance(hparams, Mapping) else None
    return copy.deepcopy(dict(overrides)) if isinstance(overrides, Mapping) else {}


def model_config_for_checkpoint(model_cfg: Any) -> Any:
    """A copy of ``model_cfg`` with the builder and input changes its ``checkpoint`` records.

    A classifier trained by ``task=train`` on a dataset with, say, 16 classes and grey frames has a
    16-way head and one input channel; this makes ``model=<name> model.checkpoint=<ckpt>``
    rebuild exactly that network. Configs without such a checkpoint come back unchanged.
    """
    checkpoint = model_cfg.get("checkpoint") if model_cfg is not None else None
    overrides = checkpoint_overrides(checkpoint) if checkpoint else {}
    if not overrides:
        return model_cfg
    model_cfg = copy.deepcopy(model_cfg)
    with open_dict(model_cfg):
        for node in ("builder", "input"):
            for key, value in dict(overrides.get(node) or {}).items():
                model_cfg[node][key] = value
        if "num_classes" in model_cfg and "num_classes" in dict(overrides.get("builder") or {}):
            model_cfg.num_classes = overrides["builder"]["num_classes"]
    return model_cfg


def build_model(model_cfg: Any) -> torch.nn.Module:
    """Instantiate ``model_cfg.builder`` and load ``model_cfg.checkpoint`` when one is given.

    A checkpoint written by ``task=train`` first adapts the builder to the trained network (see
    :func:`model_config_for_checkpoint`).
    """
    model_cfg = model_config_for_checkpoint(model_cfg)
    model = instantiate(model_cfg.builder)
    checkpoint = model_cfg.get("checkpoint")
    if checkpoint:
        from stbias.models.weights import load_checkpoint

        load_checkpoint(model, str(checkpoint))
    return model


def build_logger(logger_cfg: Any, save_dir: str) -> Any:
    """The Lightning logger ``logger_cfg`` names (``False`` for ``logger=none``).

    ``save_dir`` fills an unset ``save_dir``. W&B never fails a run: if the logger cannot start
    (no network, no account, W&B service down), an online logger is retried offline and, failing
    that, replaced by a CSV logger in ``save_dir``, with a warning.
    """
    if logger_cfg is None or not logger_cfg.get("_target_"):
        return False
    logger_cfg = copy.deepcopy(logger_cfg)
    with open_dict(logger_cfg):
        if "save_dir" in logger_cfg and not logger_cfg.save_dir:
            logger_cfg.save_dir = save_dir
    os.makedirs(save_dir, exist_ok=True)
    is_wandb = str(logger_cfg._target_).rsplit(".", 1)[-1] == "WandbLogger"
    attempts = [logger_cfg]
    if is_wandb and not logger_cfg.get("offline", False):
        offline = copy.deepcopy(logger_cfg)
        with open_dict(offline):
            offline.offline = True
        attempts.append(offline)
    for attempt in attempts:
        try:
            logger = instantiate(attempt, _convert_="all")
            if is_wandb:
                logger.experiment  # noqa: B018 - starts the W&B run now, where failure is caught
            return logger
        except Exception as err:  # noqa: BLE001 - any logger failure must not end the run
            log.warning(
                "logger %s could not start (%s: %s)", attempt._target_, type(err).__name__, err
            )
            if is_wandb:
                _reset_wandb()
    from pytorch_lightning.loggers import CSVLogger

    log.warning("logging to CSV files in %s instead", save_dir)
    return CSVLogger(save_dir=save_dir, name="csv")


def _reset_wandb() -> None:
    # a failed wandb.init leaves its service waiting on the dead run, and the next start (offline)
    # would wait for it too
    try:
        import wandb

        wandb.teardown()
    except Exception:  # noqa: BLE001 - nothing more to clean up
        pass


def choice(cfg: Any, group: str) -> str:
    """The option chosen for a config group: its ``name`` key, else Hydra's record of it."""
    from hydra.core.hydra_config import HydraConfig

    node = cfg.get(group)
    if node is not None and node.get("name"):
        return str(node.name)
    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices.get(group)
        if chosen:
            return str(chosen)
    target = node.get("_target_") if node is not None else None
    return str(target).rsplit(".", 1)[-1] if target else "unknown"


def build_dataset(
    dataset_cfg: Any, spec: InputSpec, split: str | None = None, num_samples: int | None = None
) -> Dataset:
    """Instantiate a dataset at the model's clip length, frame stride and size.

    Args:
        dataset_cfg: the ``dataset`` config node.
        spec: the model's input spec; sets ``num_frames``, ``sampling_rate`` and ``size`` where
            the dataset config has those keys.
        split: replaces ``split`` (e.g. ``val``).
        num_samples: replaces ``num_samples`` (synthetic datasets); other datasets are cut to
            a seeded random subset of this many clips.
    """
    dataset_cfg = copy.deepcopy(dataset_cfg)
    with open_dict(dataset_cfg):
        for key, value in (
            ("num_frames", spec.frames),
            ("sampling_rate", spec.sampling_rate),
            ("size", spec.size),
            ("split", split),
            ("num_samples", num_samples),
        ):
            if key in dataset_cfg and value is not None:
                dataset_cfg[key] = value
    dataset = instantiate(dataset_cfg)
    if num_samples is not None and "num_samples" not in dataset_cfg and num_samples < len(dataset):
        picks = np.random.default_rng(0).choice(len(dataset), int(num_samples), replace=False)
        dataset = Subset(dataset, sorted(int(i) for i in picks))
    return dataset
