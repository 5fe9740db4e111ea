"""The Lightning ``Trainer`` a task runs, built from the ``trainer`` node as Lightning+Hydra
projects build it, and where it runs."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import open_dict
from pytorch_lightning.callbacks.progress import ProgressBar

from stbias.errors import StbiasError
from stbias.lit.progress import PhaseProgressBar
from stbias.tasks.run_config import plain


def device_label(trainer_cfg: Any) -> str:
    """``cpu, 1 process`` / ``gpu, 8 processes (ddp)``: where the trainer node runs."""
    devices = trainer_cfg.get("devices", 1)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    count = "all visible" if devices in (-1, "auto") else int(devices) * nodes
    strategy = str(trainer_cfg.get("strategy", "auto"))
    plural = "" if count == 1 else "es"
    return f"{trainer_cfg.get('accelerator', 'cpu')}, {count} process{plural}" + (
        f" ({strategy})" if strategy != "auto" else ""
    )


def build_trainer(
    trainer_cfg: Any,
    *,
    logger: Any = False,
    callbacks: Sequence[Any] = (),
    fixed: Mapping[str, Any] | None = None,
    task: str = "this task",
    progress: str | None = None,
    **defaults: Any,
) -> Any:
    """The Lightning ``Trainer`` of the ``trainer`` node, built as Lightning+Hydra projects do.

    ``instantiate(cfg.trainer, logger=..., callbacks=...)``: every key of the node is a Trainer
    argument and means what Lightning says. The task adds its logger and callbacks (after those
    of ``trainer.callbacks``, a list of callback configs).

    Args:
        trainer_cfg: the ``trainer`` config node (``_target_: pytorch_lightning.Trainer``).
        logger: the logger built from the ``logger`` group (``False`` for none).
        callbacks: the task's own callbacks.
        fixed: arguments the task needs set one way (the probe: no distributed sampler); a node
            that sets one of them to another value is an error naming the key.
        task: the task's name, for that error.
        progress: what the progress bar says (one bar per phase, with an ETA) while
            ``trainer.enable_progress_bar`` is true and no progress bar callback is given.
        **defaults: arguments used unless the node sets them (e.g. ``default_root_dir``).
    """
    node = copy.deepcopy(trainer_cfg)
    with open_dict(node):
        if "logger" in node:
            raise StbiasError(
                "trainer.logger is not set through the trainer node: choose logger=wandb|csv|none "
                "(and logger.<key>=... for its settings)"
            )
        extra = plain(node.pop("callbacks", None)) or []
        if not isinstance(extra, list) or not all(isinstance(c, Mapping) for c in extra):
            raise StbiasError(
                "trainer.callbacks must be a list of callback configs, e.g. "
                "'+trainer.callbacks=[{_target_: pytorch_lightning.callbacks.RichModelSummary}]'"
            )
        for key, value in (fixed or {}).items():
            if node.get(key) is not None and plain(node[key]) != value:
                raise StbiasError(
                    f"trainer.{key}={plain(node[key])} cannot be used with {task}, which needs "
                    f"{key}={value}; leave trainer.{key} unset"
                )
            node.pop(key, None)
        for key, value in defaults.items():
            if node.get(key) is None:
                node[key] = value

    user_callbacks = [instantiate(c) for c in extra]
    callbacks = [*user_callbacks, *callbacks]
    wants_bar = node.get("enable_progress_bar", True) is not False
    if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(PhaseProgressBar(progress))
    return instantiate(node, logger=logger, callbacks=callbacks, **dict(fixed or {}))
