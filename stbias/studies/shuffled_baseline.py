"""The shuffled-frame baseline (Kowal et al. Fig. 5 right): relative top-1 drop per model and
dataset.

Every model is trained twice from one initialisation, with frames in order and shuffled
(``train.shuffle_frames``); :func:`shuffled_baseline` writes ``shuffled_baseline.csv`` and
``shuffled_baseline.{png,pdf}``. The figure target ``make fig5-right`` (embedded:
``python -m stbias.figures fig5-right-embedded``) runs the same pairs as a multirun
(``experiment=figures/kowal_shuffled*``) and draws them with
:func:`stbias.plotting.training.fig5_right`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
from omegaconf import open_dict

from stbias import io
from stbias.config import compose
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec
from stbias.plotting import save_figure
from stbias.plotting.training import shuffled_drop
from stbias.tasks import train
from stbias.tasks.dataset_setup import build_dataset
from stbias.tasks.loggers import build_logger, finish_logger, log_run, run_identity
from stbias.tasks.model_setup import build_model
from stbias.tasks.run_config import plain
from stbias.tasks.train import (
    adapt_model_config,
    infer_channels,
    infer_num_classes,
    weights_checksum,
)

log = logging.getLogger(__name__)


def compose_config(overrides: Sequence[str]) -> Any:
    """The root config with ``task=train`` and ``overrides`` (works inside a Hydra app too)."""
    return compose(["task=train", *overrides])


def initial_weights(cfg: Any, path: str | os.PathLike) -> str:
    """Build the network ``cfg`` would train, seeded by ``cfg.seed``, and save its weights.

    Returns the weights' checksum. Runs given ``model.checkpoint=<path>`` then start from the
    same initialisation, which their ``init_checksum`` confirms.
    """
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    spec = InputSpec.from_dict(plain(cfg.model.input))
    train_set = build_dataset(cfg.dataset, spec, num_samples=cfg.train.get("train_clips"))
    label_key = str(cfg.train.label_key)
    num_classes = int(cfg.train.get("num_classes") or infer_num_classes(train_set, label_key))
    model_cfg, _ = adapt_model_config(cfg.model, num_classes, infer_channels(train_set))
    model = build_model(model_cfg)
    io.torch_save(model.state_dict(), path)
    return weights_checksum(model)


def shuffled_baseline(
    models: Sequence[str],
    datasets: Sequence[str],
    out_dir: str | os.PathLike,
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Kowal et al. Fig. 5 (right): standard vs shuffled-frame training from one initialisation.

    For every model and dataset, trains twice from the same initial weights, once as usual and
    once with ``train.shuffle_frames=true``, and reports the relative top-1 drop
    ``(acc_std - acc_shuf) / acc_std`` (final ``val/acc`` of each run). Writes
    ``shuffled_baseline.csv`` and ``shuffled_baseline.{png,pdf}`` into ``out_dir`` and each
    run's folder below it.

    Args:
        models: model options (``model=<name>``).
        datasets: dataset options (``dataset=<name>``).
        out_dir: output folder.
        overrides: config overrides for every run (e.g. ``trainer.max_epochs=4``).

    Returns:
        One row per (model, dataset): ``acc_std``, ``acc_shuf``, ``drop``, ``chance``, ...
    """
    out_dir = os.fspath(out_dir)
    rows = []
    for dataset in datasets:
        for model in models:
            folder = os.path.join(out_dir, f"{model}-{dataset}")
            base = compose_config([f"model={model}", f"dataset={dataset}", *overrides])
            init = os.path.join(folder, "init.pt")
            checksum = initial_weights(base, init)
            accs, records = {}, {}
            for variant, shuffle in (("std", False), ("shuf", True)):
                cfg = compose_config(
                    [f"model={model}", f"dataset={dataset}", *overrides]
                    + [f"train.shuffle_frames={str(shuffle).lower()}", f"model.checkpoint={init}"]
                )
                with open_dict(cfg):
                    cfg.train.output_dir = os.path.join(folder, variant)
                record, _ = train.run(cfg)
                if record["init_checksum"] != checksum:
                    raise StbiasError(f"the {variant} run of {model} did not start from {init}")
                accs[variant], records[variant] = float(record["val/acc"]), record
            drop = (accs["std"] - accs["shuf"]) / accs["std"] if accs["std"] > 0 else float("nan")
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "label_key": records["std"]["label_key"],
                    "num_classes": records["std"]["num_classes"],
                    "chance": 1.0 / records["std"]["num_classes"],
                    "acc_std": accs["std"],
                    "acc_shuf": accs["shuf"],
                    "drop": drop,
                    "epochs": records["std"]["epochs"],
                    "minutes": records["std"]["minutes"] + records["shuf"]["minutes"],
                    "init_checksum": checksum,
                }
            )
            log.info(
                "%s on %s (%s, chance %.3f): acc_std %.4f  acc_shuf %.4f  drop %.3f",
                model,
                dataset,
                rows[-1]["label_key"],
                rows[-1]["chance"],
                accs["std"],
                accs["shuf"],
                drop,
            )
    io.write_csv(os.path.join(out_dir, "shuffled_baseline.csv"), rows)
    finite = [r for r in rows if np.isfinite(r["drop"])]
    figures = []
    if finite:
        figures = save_figure(
            shuffled_drop(finite, "shuffled-frame training"),
            os.path.join(out_dir, "shuffled_baseline"),
        )
    identity = run_identity("shuffled_baseline", "+".join(models), "+".join(datasets))
    logger = build_logger(base.get("logger"), out_dir, **identity)
    columns = list(rows[0]) if rows else []
    log_run(
        logger,
        config={
            "task": "shuffled_baseline",
            "model": "+".join(models),
            "dataset": "+".join(datasets),
            "models": list(models),
            "datasets": list(datasets),
        },
        summary={f"shuffled/drop/{r['model']}/{r['dataset']}": r["drop"] for r in finite},
        tables={"shuffled/results": (columns, [[r.get(c) for c in columns] for r in rows])},
        images={"shuffled/figure": figures},
    )
    finish_logger(logger)
    return rows
