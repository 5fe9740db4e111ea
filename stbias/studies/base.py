"""What every study stands on: train once with one cache key, compose a sub-run, read runs back.

A study (``stbias/studies/<name>.py``) combines runs of the single-run tasks: it trains models
(once: :func:`ensure_trained` caches each training under ``task.cache_dir``, keyed by
:func:`training_key`), composes the runs it needs from a node (:func:`sub_run`), and reads run
directories back through :mod:`stbias.results` (:func:`run_dirs`, :func:`read_run`) to draw with
the pure functions of :mod:`stbias.plotting`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd
from filelock import FileLock
from omegaconf import OmegaConf, open_dict

from stbias.config import compose
from stbias.errors import StbiasError
from stbias.lit.checkpoints import inside
from stbias.results import UnreadableRecord, read_record
from stbias.tasks.run_config import plain, task_epochs
from stbias.tasks.train import run as train

log = logging.getLogger(__name__)
# trainer settings that change what the terminal shows, not what is trained
DISPLAY_ONLY = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def sub_run(cfg: Any, node: Mapping[str, Any]) -> Any:
    """The config of one run a study makes, composed from ``node``.

    ``node["defaults"]`` picks options as a Hydra defaults list does (``{"task": "train"}`` or
    ``"dataset=pfm"`` entries); every other key is a dotted path (``model``, ``train.val_clips``)
    whose value replaces what the composition holds there. The study's seed and Trainer carry
    over; the sub-run logs nothing of its own.
    """
    node = dict(node)
    overrides = []
    for entry in node.pop("defaults", ()):
        pairs = entry.items() if isinstance(entry, Mapping) else [str(entry).split("=", 1)]
        overrides += [f"{group}={option}" for group, option in pairs]
    sub = compose([*overrides, "logger=none"])
    with open_dict(sub):
        sub.seed = int(cfg.seed)
        sub.trainer = copy.deepcopy(cfg.trainer)
        for key, value in node.items():
            OmegaConf.update(sub, key, copy.deepcopy(value), merge=False, force_add=True)
    return sub


def train_run(cfg: Any, node: Mapping[str, Any]) -> Any:
    """A ``task=train`` sub-run with the study's ``task.train`` settings (validation clips, batch
    size, learning rate, epochs), then ``node`` (see :func:`sub_run`)."""
    t = cfg.task.train
    return sub_run(
        cfg,
        {
            "defaults": [{"task": "train"}, *node.get("defaults", ())],
            "train.val_clips": int(t.val_clips),
            "train.batch_size": int(t.batch_size),
            "train.optimizer.lr": float(t.lr),
            "trainer.max_epochs": task_epochs(cfg, t.max_epochs),
            **{k: v for k, v in node.items() if k != "defaults"},
        },
    )


def training_key(train_cfg: Any) -> str:
    """A short hash of everything that changes a training: model, dataset, train, trainer, seed.

    The run's own place (``train.output_dir``, ``train.resume``) and what the terminal shows
    (:data:`DISPLAY_ONLY`) are left out: changing them trains nothing new.
    """
    keyed = {k: OmegaConf.to_container(train_cfg[k], resolve=True) for k in ("model", "dataset")}
    keyed.update(
        train={
            k: v for k, v in plain(train_cfg.train).items() if k not in ("output_dir", "resume")
        },
        trainer={k: v for k, v in plain(train_cfg.trainer).items() if k not in DISPLAY_ONLY},
        seed=int(train_cfg.seed),
    )
    if isinstance(keyed["train"].get("static_dropout"), dict):  # its clips: probe.num_clips
        keyed["train"]["static_dropout"]["probe_clips"] = train_cfg.probe.get("num_clips")
    return hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_folder(cfg: Any, label: str, train_cfg: Any) -> str:
    """``<task.cache_dir>/<label>-<training key>``: a changed setting trains a new checkpoint."""
    return os.path.join(
        os.path.abspath(str(cfg.task.cache_dir)), f"{label}-{training_key(train_cfg)}"
    )


def ensure_trained(cfg: Any, label: str, train_cfg: Any, what: str) -> dict[str, Any]:
    """Train ``train_cfg`` once into :func:`cache_folder` and reuse it (see :func:`train_once`)."""
    return train_once(train_cfg, cache_folder(cfg, label, train_cfg), what)


def _cached_training(results: str, folder: str, what: str) -> tuple[dict[str, Any] | None, bool]:
    """The record of a finished training in ``folder`` (or None), and whether it is damaged.

    A ``results.json`` that cannot be read is damaged (one warning naming it): the training runs
    again from the start, its checkpoints untrusted. One whose checkpoint is missing or lies
    outside ``folder`` does not count either: the training runs (or resumes) again.
    """
    if not os.path.isfile(results):
        return None, False
    try:
        record = read_record(results)
    except UnreadableRecord as err:
        log.warning("cannot read the cached training %s: %s; training %s again", results, err, what)
        return None, True
    checkpoint = record.get("checkpoint")
    if not isinstance(checkpoint, str) or not os.path.isfile(checkpoint):
        return None, False
    if not inside(checkpoint, folder):
        log.warning(
            "the cached training %s names a checkpoint outside %s (%r); training %s again",
            results,
            folder,
            checkpoint,
            what,
        )
        return None, False
    return record, False


def train_once(train_cfg: Any, folder: str, what: str) -> dict[str, Any]:
    """Run ``task=train`` with ``train_cfg`` into ``folder`` once and reuse it afterwards.

    A finished training (its ``results.json`` and checkpoint) is read back; an interrupted one
    resumes from its ``last.ckpt``; one whose ``results.json`` cannot be read is trained again
    (a warning names the file). Several processes asking at once (the ranks of a
    multi-GPU run, parallel jobs) train once.

    Returns:
        The training run's results record (``checkpoint``, ``val/acc``, ...).
    """
    results = os.path.join(folder, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    with FileLock(folder + ".lock"):
        record, damaged = _cached_training(results, folder, what)
        if record is not None:
            log.info("%s: trained before, from the cache %s", what, folder)
            return record
        last = os.path.join(folder, "checkpoints", "last.ckpt")
        resume = os.path.isfile(last) and not damaged
        with open_dict(train_cfg):
            train_cfg.train.output_dir = folder
            train_cfg.train.resume = last if resume else None
        if resume:
            log.info("resuming the interrupted training of %s from %s", what, last)
        else:
            log.info("training %s (once; cached in %s)", what, folder)
        record, _ = train(train_cfg, cache=True)
    return record


def run_dirs(table: pd.DataFrame, task: str, beside: str | None = None) -> list[str]:
    """The run directories of ``task``'s runs in ``table`` (in order, once each).

    Args:
        beside: a file name: the parent folders of those runs that hold it instead (the
            study folder of a task that writes its runs into sub-folders).
    """
    if table.empty or "task" not in table.columns:
        raise StbiasError(f"no runs to draw: the table holds no task={task} run")
    dirs = list(dict.fromkeys(str(r) for r in table.loc[table["task"] == task, "run"]))
    if beside is not None:
        parents = [os.path.dirname(d) for d in dirs]
        dirs = [p for p in dict.fromkeys(parents) if os.path.isfile(os.path.join(p, beside))]
    if not dirs:
        what = f" with {beside} beside them" if beside else ""
        raise StbiasError(f"no runs to draw: the table holds no task={task} run{what}")
    return dirs


def read_run(run: str) -> dict[str, Any]:
    """The ``results.json`` record of the run directory ``run``; one line if it cannot be read."""
    path = os.path.join(run, "results.json")
    try:
        return read_record(path)
    except UnreadableRecord as err:
        raise StbiasError(f"{path}: {err}") from None


def label_of(labels: Mapping[str, str] | None, name: str) -> str:
    """``name`` as a figure shows it (the figure's ``labels`` option), else itself."""
    return str((labels or {}).get(name, name))
