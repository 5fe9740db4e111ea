"""Weight temporality task: ``python run.py metric=asdt model=<name>`` (or ``metric=selfconv``).

Reads only weights, no dataset. Writes ``results.json`` and ``results.csv`` (per temporal
convolution: ``asdt``, ``asdt_scaled``, ``temporal_channels``, ``channels``,
``temporal_fraction``, ``depth``, ``kernel``, ...) and the figures ``asdt``, ``asdt_scaled`` and
``temporal_channels`` (PNG and PDF) into the run directory. ``metric.compare`` lists checkpoints
(``null`` = the builder's own weights) measured on the same architecture and drawn on one plot,
labelled by ``metric.labels``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf, open_dict

from stbias import io
from stbias.errors import StbiasError
from stbias.metrics.weights import RULES, weight_temporality
from stbias.plotting import save_figure
from stbias.plotting.style import weights_title
from stbias.plotting.weights import (
    plot_asdt,
    plot_temporal_channels,
)
from stbias.tasks.loggers import (
    build_logger,
    finish_logger,
    log_run,
    record_config,
    run_files,
    run_identity,
)
from stbias.tasks.model_setup import build_model, prepare_model
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import output_dir, resolved

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "run",
    "checkpoint",
    "layer",
    "label",
    "depth",
    "kernel",
    "asdt",
    "asdt_scaled",
    "temporal_channels",
    "channels",
    "temporal_fraction",
    "temporal_kernels",
    "kernels",
)


def _runs(model_cfg: Any, metric_cfg: Any) -> list[tuple[str, str | None]]:
    """(label, checkpoint) of every set of weights to measure."""
    compare = metric_cfg.get("compare")
    if not compare:
        checkpoint = model_cfg.get("checkpoint")
        label = metric_cfg.get("labels") or [_default_label(checkpoint)]
        return [(str(label[0]), str(checkpoint) if checkpoint else None)]
    checkpoints = [None if c in (None, "", "null", "none") else str(c) for c in compare]
    labels = metric_cfg.get("labels")
    if labels is None:
        labels = [_default_label(c) for c in checkpoints]
    labels = [str(x) for x in labels]
    if len(labels) != len(checkpoints):
        raise StbiasError(
            f"metric.labels has {len(labels)} entries {labels} but metric.compare has "
            f"{len(checkpoints)}; give one label per checkpoint, or none"
        )
    if len(set(labels)) != len(labels):
        raise StbiasError(f"metric.labels {labels} repeat a label; give each checkpoint its own")
    missing = [c for c in checkpoints if c is not None and not Path(c).is_file()]
    if missing:
        raise StbiasError(
            f"metric.compare names checkpoints that are not files: {missing}; "
            "give paths to weights files, or null for the builder's own weights"
        )
    return list(zip(labels, checkpoints))


def _default_label(checkpoint: Any) -> str:
    return Path(str(checkpoint)).stem if checkpoint else "init"


def _rows(label: str, checkpoint: str | None, layers: dict[str, dict[str, Any]]) -> list[dict]:
    return [
        {
            "run": label,
            "checkpoint": checkpoint or "",
            "layer": name,
            **{k: v for k, v in values.items() if k in CSV_FIELDS},
            "kernel": "x".join(str(s) for s in values["kernel"]),
        }
        for name, values in layers.items()
    ]


def _build_with_checkpoint(model_cfg: Any, checkpoint: str | None) -> torch.nn.Module:
    """Build the model with ``checkpoint`` in place of ``model.checkpoint``, then restore it."""
    # set in place rather than copy, so interpolations in the model node still see the root
    with open_dict(model_cfg):
        had, original = "checkpoint" in model_cfg, model_cfg.get("checkpoint")
        model_cfg.checkpoint = checkpoint
        try:
            return build_model(model_cfg)
        finally:
            if had:
                model_cfg.checkpoint = original
            else:
                del model_cfg["checkpoint"]


def _weights_kind(model_cfg: Any, checkpoint: str | None) -> str:
    """``file:<path>``, ``pretrained:<source>`` or ``random``: what one run's weights are."""
    if checkpoint:
        return f"file:{Path(checkpoint).expanduser().resolve()}"
    if model_cfg.get("pretrained"):
        return f"pretrained:{model_cfg.get('published_weights')}"
    return "random"


def _measure(cfg: Any, rule: str, delta: float) -> tuple[dict[str, dict[str, Any]], dict]:
    """Every set of weights measured: label -> checkpoint and layers; and what each set is."""
    metric, name = cfg.metric, str(cfg.model.get("name", ""))
    aliases = OmegaConf.to_container(cfg.model.layers) if cfg.model.get("layers") else {}
    runs: dict[str, dict[str, Any]] = {}
    kinds = {}
    for label, checkpoint in _runs(cfg.model, metric):
        kinds[label] = _weights_kind(cfg.model, checkpoint)
        if kinds[label] == "random":
            log.warning(
                "model %s has random weights%s (no checkpoint, model.pretrained=false): the "
                "results describe the initialisation, not a trained network",
                name,
                f" in run {label!r}" if metric.get("compare") else "",
            )
        # the same seed for every run, so builder-initialised weights are reproducible
        torch.manual_seed(int(cfg.get("seed", 0)))
        model = _build_with_checkpoint(cfg.model, checkpoint)
        layers = weight_temporality(model, delta=delta, rule=rule, aliases=aliases)
        runs[label] = {"checkpoint": checkpoint, "layers": layers}
        del model
    return runs, kinds


def _figures(out: Path, runs: dict[str, dict[str, Any]], name: str, kinds: dict) -> dict:
    """ASDT (raw and scaled) and temporal channels of every set of weights, per layer."""
    per_run = {label: r["layers"] for label, r in runs.items()}
    note = weights_title(list(kinds.values()))
    title = f"{name} ({note})" if name and note else (name or note or None)
    return {
        "asdt": save_figure(plot_asdt(per_run, title=title), out / "asdt"),
        "asdt_scaled": save_figure(
            plot_asdt(per_run, scaled=True, title=title), out / "asdt_scaled"
        ),
        "temporal_channels": save_figure(
            plot_temporal_channels(per_run, title=title), out / "temporal_channels"
        ),
    }


def _log(cfg: Any, out: Path, results: dict[str, Any], rows: list[dict], figures: dict) -> None:
    """The run's summary, table, figures and files to the chosen logger."""
    summary = {
        f"weights/{key}/{layer}": values[key]
        for layer, values in results["layers"].items()
        for key in ("asdt", "asdt_scaled", "temporal_fraction")
    }
    logger = build_logger(
        cfg.get("logger"), str(out), **run_identity("weights", results["model"], "none")
    )
    columns = ["model", *CSV_FIELDS]
    log_run(
        logger,
        config=record_config(results, "metric"),
        summary=summary,
        tables={"weights/results": (columns, [[r.get(c) for c in columns] for r in rows])},
        images={f"weights/{k}": v for k, v in figures.items()},
        files=run_files(out),
    )
    finish_logger(logger)


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure ASDT and self-convolution of ``cfg.model``; write results and figures.

    Returns:
        ``(results, objects)``: the ``results.json`` content, and ``{"dir", "figures"}``.
    """
    if cfg.get("model") is None:
        raise StbiasError(
            "metric=asdt/selfconv needs a model: python run.py metric=asdt model=<name>"
        )
    prepare_model(cfg, f"metric={cfg.metric.get('name')}")
    metric = cfg.metric
    rule = str(metric.get("rule", "spec"))
    if rule not in RULES:
        raise StbiasError(f"unknown metric.rule {rule!r}; valid rules: {', '.join(RULES)}")
    delta = float(metric.get("delta", 0.0))
    runs, kinds = _measure(cfg, rule, delta)
    first = next(iter(runs))
    results: dict[str, Any] = {
        "task": "weights",
        "metric": str(metric.get("name", "asdt")),
        "model": str(cfg.model.get("name", "")),
        "dataset": None,
        "weights": joined(kinds.values()),
        "seed": int(cfg.get("seed", 0)),
        "delta": delta,
        "rule": rule,
        "run": first,
        "checkpoint": runs[first]["checkpoint"],
        "layers": runs[first]["layers"],
        "config": resolved(cfg),
        "environment": io.environment(),
    }
    if len(runs) > 1 or metric.get("compare"):
        results["compare"] = runs
    out = Path(output_dir())
    write_results(out, results, cfg)
    rows = [
        {"model": results["model"], **{k: row.get(k, "") for k in CSV_FIELDS}}
        for label, r in runs.items()
        for row in _rows(label, r["checkpoint"], r["layers"])
    ]
    io.write_csv(out / "results.csv", rows)
    figures = _figures(out, runs, results["model"], kinds)
    _log(cfg, out, results, rows, figures)
    log.info(
        "%s: weight temporality of %d layers of %s%s",
        results["metric"],
        len(results["layers"]),
        results["model"],
        f" ({len(runs)} sets of weights)" if len(runs) > 1 else "",
    )
    log.info(
        "results: %s\nfigures: %s",
        out / "results.json",
        ", ".join(str(Path(f[0]).name) for f in figures.values()),
    )
    return results, {"dir": out, "figures": figures}
