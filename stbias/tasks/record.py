"""One record for every run: ``results.json`` with the header the shipped schema fixes.

Every task writes its record through :func:`write_results`, which puts the shared header first
(``schema``, ``task``, ``model``, ``dataset``, ``weights``, ``seed``, ``settings``, then
``config`` and ``environment``), fills what the task left out from the composed config, checks
the whole record against ``stbias/schema/results.schema.json`` and writes it atomically. A
record that breaks the schema is never written: the error names the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from stbias import io
from stbias.schema import HEADER, SCHEMA_NAME, validate
from stbias.tasks.model_setup import weights_record
from stbias.tasks.run_config import check_results, choice, plain, resolved

# the config nodes that set a task's numbers: a record's ``settings`` unless the task gives its own
SETTINGS_NODES = ("task", "metric", "probe", "train", "stylization")


def _config_value(cfg: Any, group: str) -> str | None:
    node = cfg.get(group) if cfg is not None else None
    return choice(cfg, group) if node is not None else None


def joined(values: Sequence[Any]) -> str | None:
    """Several runs' values of one header key as one string (``None`` when there are none)."""
    # a table's missing values (NaN) are no value either
    distinct = list(dict.fromkeys(str(v) for v in values if v is not None and v == v))
    return ", ".join(distinct) if distinct else None


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
    filled: dict[str, Any] = {"schema": SCHEMA_NAME, "task": record["task"]}
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
    ordered = {k: record[k] if k in record else filled[k] for k in ("schema", *HEADER)}
    rest = {k: v for k, v in record.items() if k not in ordered}
    rest.setdefault("config", config)
    rest.setdefault("environment", io.environment())
    record.clear()
    record.update(ordered)
    record.update(rest)
    return record


def write_results(folder: str | os.PathLike, record: dict[str, Any], cfg: Any = None) -> str:
    """Complete ``record`` (see :func:`complete`), check it (finite numbers, the schema), write it.

    Returns:
        The path of ``results.json``.
    """
    complete(record, cfg)
    path = os.path.join(os.fspath(folder), "results.json")
    check_results(record, f"task={record['task']}")  # no NaN or inf is written
    validate(io._jsonable(record), where=path)
    io.write_json(path, record)
    return path


def random_note(record: Mapping[str, Any]) -> str:
    """``, random weights`` for a title part when the record's model ran untrained, else ``""``."""
    return ", random weights" if record.get("weights") == "random" else ""


def header(record: Mapping[str, Any]) -> dict[str, Any]:
    """The shared header of a record: what every task logs as its W&B config, same types."""
    return {k: record.get(k) for k in HEADER}
