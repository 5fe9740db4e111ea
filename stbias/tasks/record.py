"""A task's record: the header of ``results.json`` filled from the composed config.

The writer itself is :func:`stbias.record.write_results` (the Python API saves through it too);
:func:`write_results` here first fills what the task left out from ``cfg``
(:func:`complete`).
"""

from __future__ import annotations

import os
from typing import Any

from stbias import record as base
from stbias.record import header, joined, random_note  # noqa: F401 - the tasks import them here
from stbias.tasks.model_setup import weights_record
from stbias.tasks.run_config import choice, plain, resolved

# the config nodes that set a task's numbers: a record's ``settings`` unless the task gives its own
SETTINGS_NODES = ("task", "metric", "probe", "train", "stylization")


def _config_value(cfg: Any, group: str) -> str | None:
    node = cfg.get(group) if cfg is not None else None
    return choice(cfg, group) if node is not None else None


def complete(record: dict[str, Any], cfg: Any = None) -> dict[str, Any]:
    """``record`` (changed in place and returned) with the schema's header first and filled.

    What the task left out comes from ``cfg``: the model and dataset options, the weights
    (``random``, ``pretrained:...``, ``file:...``), the seed, ``settings`` (the task, metric,
    probe, train and stylization nodes), the resolved config and the environment.
    """
    config = record.get("config")
    if config is None and cfg is not None:
        config = resolved(cfg)
    config = dict(config or {})
    filled: dict[str, Any] = {"config": config}
    if "model" not in record:
        filled["model"] = _config_value(cfg, "model")
    if "dataset" not in record:
        filled["dataset"] = _config_value(cfg, "dataset")
    if "weights" not in record:
        model = cfg.get("model") if cfg is not None else None
        filled["weights"] = weights_record(model)["weights"] if model is not None else None
    if "seed" not in record:
        filled["seed"] = int(cfg.seed) if cfg is not None and cfg.get("seed") is not None else None
    if "settings" not in record:
        filled["settings"] = {k: plain(config[k]) for k in SETTINGS_NODES if k in config}
    return base.order(record, filled)


def write_results(folder: str | os.PathLike, record: dict[str, Any], cfg: Any = None) -> str:
    """Complete ``record`` (see :func:`complete`), then write it (``stbias.record``).

    Returns:
        The path of ``results.json``.
    """
    complete(record, cfg)
    return base.write_results(folder, record)
