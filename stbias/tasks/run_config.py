"""Reading a task's composed config: plain values, the chosen options, the run directory, epochs,
and the check that a task's results are finite before they are written."""

from __future__ import annotations

import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from stbias.config import compose
from stbias.record import check_results  # noqa: F401 - the tasks import it from here


def plain(node: Any) -> Any:
    """A config node as plain Python containers (interpolations resolved); None stays None."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def resolved(cfg: Any) -> Any:
    """The whole config as plain containers, interpolations resolved where they resolve.

    A task records its config; a node it does not use (the dataset of ``task=weights``) may hold
    interpolations that cannot resolve without a model input spec, and is then kept as written.
    """
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - omegaconf raises several interpolation errors
        return OmegaConf.to_container(cfg, resolve=False)


def output_dir() -> str:
    """The run directory: Hydra's output folder under ``run.py``, the working directory else."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.output_dir)
    return os.getcwd()


def trainer_setting_changed(cfg: Any, key: str) -> bool:
    """Whether ``trainer.<key>`` differs from the value of the chosen ``trainer`` option's file.

    True when the command line (``trainer.max_epochs=1``), an experiment or code set it.
    """

    chosen = None
    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices.get("trainer")
    shipped = compose([f"trainer={chosen}"] if chosen else []).trainer
    return plain(cfg.trainer.get(key)) != plain(shipped.get(key))


def task_epochs(cfg: Any, default: Any) -> int:
    """The epochs of a task's own training: ``trainer.max_epochs`` where it was set (it means
    what Lightning says in every task), else the task's ``default`` (``task.train.max_epochs``)."""
    if trainer_setting_changed(cfg, "max_epochs"):
        return int(cfg.trainer.max_epochs)
    return int(default)


def choice(cfg: Any, group: str) -> str:
    """The option chosen for a config group: its ``name`` key, else Hydra's record of it."""
    node = cfg.get(group)
    if node is not None and node.get("name"):
        return str(node.name)
    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices.get(group)
        if chosen:
            return str(chosen)
    target = node.get("_target_") if node is not None else None
    return str(target).rsplit(".", 1)[-1] if target else "unknown"
