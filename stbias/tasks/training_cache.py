"""Train once, reuse after: the trainings that studies cache (the quickstart's, Mänttäri's, the
cross-connection study's), keyed by every setting that changes them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from filelock import FileLock
from omegaconf import OmegaConf, open_dict

from stbias.lit.checkpoints import inside
from stbias.results import UnreadableRecord, read_record
from stbias.tasks.common import plain
from stbias.tasks.train import run as train

log = logging.getLogger(__name__)


def training_key(train_cfg: Any) -> str:
    """A short hash of everything that changes a training: model, dataset, train, trainer, seed."""
    keyed = {k: OmegaConf.to_container(train_cfg[k], resolve=True) for k in ("model", "dataset")}
    keyed.update(
        train={
            k: v for k, v in plain(train_cfg.train).items() if k not in ("output_dir", "resume")
        },
        trainer=plain(train_cfg.trainer),
        seed=int(train_cfg.seed),
    )
    if isinstance(keyed["train"].get("static_dropout"), dict):  # its clips: probe.num_clips
        keyed["train"]["static_dropout"]["probe_clips"] = train_cfg.probe.get("num_clips")
    return hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


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
