"""What the explanation tasks (``metric=gradcam``, ``metric=temporal_mask``) share: the model and
clips they explain, Lightning's test loop over them, and their report and logged run."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Subset

from stbias.data.subsets import choose_clips
from stbias.errors import StbiasError
from stbias.lit.probe import EvalData
from stbias.models.inputs import InputSpec
from stbias.tasks.dataset_setup import build_dataset
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
from stbias.tasks.run_config import choice, plain
from stbias.tasks.trainer_setup import build_trainer, device_label

log = logging.getLogger(__name__)


# fixed Trainer arguments of the explanation tasks: gradients on, every clip once, no checkpoints
EXPLAIN_TRAINER = {
    "inference_mode": False,
    "use_distributed_sampler": False,
    "enable_checkpointing": False,
}


def explanation_clips(cfg: Any) -> Any:
    """The node that says which clips an explanation reads and how many at a time
    (``num_clips``, ``sampling``, ``batch_size``, ``num_workers``): the shared ``probe`` node."""
    return cfg.probe


def explanation_setup(cfg: Any, metric: str) -> tuple[str, InputSpec, Any, torch.nn.Module]:
    """The model name, input spec, chosen clips and model of the explanation task ``metric``."""
    if str(cfg.metric.get("name")) != metric:
        raise StbiasError(
            f"task={metric} takes its settings from metric={metric}, not "
            f"metric={cfg.metric.get('name')} (leave task unset)"
        )
    task = f"metric={metric}"
    name = choice(cfg, "model")
    require_one_model(cfg, task)
    apply_checkpoint_settings(cfg)
    check_weights(cfg.model, name)
    warn_if_random(cfg.model, name)
    spec = InputSpec.from_dict(plain(cfg.model.input))
    m = explanation_clips(cfg)
    dataset = build_dataset(cfg.dataset, spec)
    chosen = choose_clips(dataset, m.num_clips, str(m.sampling), int(cfg.seed), node="probe")
    if len(chosen) < len(dataset):
        dataset = Subset(dataset, chosen)
    return name, spec, dataset, build_model(cfg.model)


def run_explanation(
    cfg: Any,
    explainer: Any,
    dataset: Any,
    metric: str,
    detail: str = "",
    progress: str | None = None,
) -> tuple[Any, Any]:
    """Run an explanation method (``stbias.api.Explanation``) over ``dataset`` with the
    config's Trainer; returns the Trainer and the results (None on the other ranks).

    A header line says what runs, as the probe's does (``temporal_mask: i3d_tiny (random
    weights) | brushmnist_small, split test: 4 clips | 300 iterations per clip | cpu, 1
    process``); ``progress`` is what the progress bar says.
    """
    m = explanation_clips(cfg)
    log.info(
        "%s: %s (%s) | %s, split %s: %d clips%s | %s",
        metric,
        choice(cfg, "model"),
        weights_label(weights_record(cfg.model)),
        choice(cfg, "dataset"),
        cfg.dataset.get("split"),
        len(dataset),
        f" | {detail}" if detail else "",
        device_label(cfg.trainer),
    )
    trainer = build_trainer(
        cfg.trainer, fixed=EXPLAIN_TRAINER, task=f"metric={metric}", progress=progress
    )
    data = EvalData(dataset, m.batch_size, m.num_workers)
    return trainer, explainer.run(data, trainer=trainer)


def skipped_note(record: Mapping[str, Any]) -> str:
    """`` (N unreadable videos skipped)`` for a summary line, or nothing when none was."""
    skipped = int(record.get("skipped_clips") or 0)
    return f" ({skipped} unreadable videos skipped)" if skipped else ""


def report_explanation(
    cfg: Any,
    task: str,
    prefix: str,
    folder: str,
    record: dict[str, Any],
    objects: dict[str, Any],
    summary: str,
) -> None:
    """An explanation task's last steps: summary line, a named logger run, where results are."""
    log.info("%s", summary)
    identity = run_identity(task, record["model"], record["dataset"])
    logger = build_logger(cfg.get("logger"), folder, **identity)
    log_explanation(logger, record, objects["figures"], prefix, folder)
    log.info("results: %s", os.path.join(folder, "results.json"))


def log_explanation(
    logger: Any, record: dict[str, Any], figures: list[str], prefix: str, folder: str | None = None
) -> None:
    """Summary statistics under ``<prefix>/...`` (with the interval of the mean where there is
    one), the per-clip table, the figures and the run's files (``results.json``, masks or maps)
    as an artifact; then close."""
    summary: dict[str, float] = {}
    for key, value in record["summary"].items():
        if isinstance(value, dict) and "mean" in value:
            for stat in ("mean", "std", "n"):
                if value.get(stat) is not None:
                    summary[f"{prefix}/{key}_{stat}"] = float(value[stat])
            if value.get("ci") is not None:
                summary[f"{prefix}/{key}_lo"], summary[f"{prefix}/{key}_hi"] = map(
                    float, value["ci"]
                )
    rows = record.get("clips") or []
    columns = list(rows[0]) if rows else []
    log_run(
        logger,
        config=record_config(record, "layer"),
        summary=summary,
        tables={f"{prefix}/clips": (columns, [[r.get(c) for c in columns] for r in rows])}
        if rows
        else None,
        images={f"{prefix}/figures": figures},
        files=run_files(folder) if folder else (),
    )
    finish_logger(logger)
