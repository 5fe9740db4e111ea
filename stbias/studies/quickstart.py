"""`task=quickstart` (what `python run.py` runs): models trained on the embedded data, probed.

Every model of the ``model`` option — ``model=quickstart`` names ``c2d_tiny`` and ``i3d_tiny``;
any single model works too — is trained briefly on the embedded Places+Faces+MNIST at the clip
size of ``model.input`` (once: the checkpoints are cached under ``task.cache_dir``, keyed by every
setting of the training), then probed on ``dataset`` like ``task=probe`` and drawn side by side.
``c2d_tiny`` convolves each frame on its own and cannot see frame order, so none of its units is
dynamic; ``i3d_tiny`` can.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import pandas as pd
from omegaconf import open_dict

from stbias import io
from stbias.config import option_node
from stbias.errors import StbiasError
from stbias.plotting import save_figure
from stbias.results import layer_rows, rows_of
from stbias.studies import base
from stbias.studies.base import train_run
from stbias.tasks.loggers import publish, record_config, row_table
from stbias.tasks.probe import FIGURE, draw, layer_summary, summary_table
from stbias.tasks.probe import probe as probe_layers
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import check_results, output_dir

log = logging.getLogger(__name__)


def quickstart_models(cfg: Any) -> list[Any]:
    """The model config of every model to train and probe, at the clip size of ``model.input``."""
    names = cfg.model.get("models")
    if cfg.model.get("checkpoint") or cfg.model.get("pretrained"):
        raise StbiasError(
            "task=quickstart trains its models from initialisation; model.checkpoint and "
            "model.pretrained apply to a probe of one model (task=probe model=<name>)"
        )
    if not names:
        return [copy.deepcopy(cfg.model)]
    nodes = []
    for name in names:
        node = option_node("model", str(name))
        with open_dict(node):
            node.input = copy.deepcopy(cfg.model.input)
        nodes.append(node)
    return nodes


def train_config(cfg: Any, model_node: Any) -> Any:
    """The ``task=train`` config of one quickstart model: the embedded P+F+M, ``task.train``."""
    q = cfg.task.train
    return train_run(
        cfg,
        {
            "defaults": [{"dataset": "pfm"}],
            "model": model_node,
            "dataset.num_places": int(q.num_places),
            "dataset.num_motions": int(q.num_motions),
            "dataset.num_samples": int(q.clips),
        },
    )


def ensure_trained(cfg: Any, model_node: Any) -> dict[str, Any]:
    """Train one quickstart model once and reuse it: ``<task.cache_dir>/<model>-<key>``, the key
    hashing every setting of the training (:func:`stbias.studies.base.training_key`).

    Returns:
        The training run's results record (``checkpoint``, ``val/acc``, ...).
    """
    train_cfg = train_config(cfg, model_node)
    what = f"{model_node.name} on the embedded P+F+M"
    return base.ensure_trained(cfg, str(model_node.name), train_cfg, what)


def probe_config(cfg: Any, model_node: Any, checkpoint: str) -> Any:
    """``cfg`` with ``model`` set to one trained quickstart model (everything else unchanged)."""
    probe_cfg = copy.deepcopy(cfg)
    with open_dict(probe_cfg):
        probe_cfg.model = copy.deepcopy(model_node)
        probe_cfg.model.checkpoint = checkpoint
    return probe_cfg


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or load) each model and probe it; write the comparison into the run directory."""
    folder = output_dir()
    records, unit_scores = {}, {}
    for node in quickstart_models(cfg):
        trained = ensure_trained(cfg, node)
        record, scores, _ = probe_layers(probe_config(cfg, node, trained["checkpoint"]))
        if not record:  # a non-zero rank of a multi-process run: rank 0 reports
            continue
        record["train"] = {k: trained.get(k) for k in ("val/acc", "checkpoint", "minutes")}
        name = str(node.name)
        records[name], unit_scores[name] = record, scores
        log.info("%s", summary_table(record))
        acc = trained.get("val/acc")
        if acc is not None:
            log.info("  (%s: validation accuracy %.1f %%)\n", name, 100 * acc)
    if not records:
        return {}, {}
    first = next(iter(records.values()))
    summary = {
        "task": "quickstart",
        "model": "quickstart",
        "dataset": first["dataset"],
        "weights": joined(r["weights"] for r in records.values()),
        "seed": int(cfg.seed),
        "models": list(records),
        "lam": first["lam"],
        "results": records,
    }
    check_results(summary, "task=quickstart")
    for name, scores in unit_scores.items():
        io.write_npz(os.path.join(folder, f"unit_scores_{name}.npz"), scores)
    write_results(folder, summary, cfg)
    rows = [
        row
        for name, record in records.items()
        for row in layer_rows(
            record["layers"], {k: record[k] for k in ("model", "dataset", "stylization", "seed")}
        )
    ]
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    metric = first["metric"]
    figure = draw(
        pd.DataFrame(rows_of(summary, folder)),
        metric,
        f"Models trained on the embedded P+F+M, probed on {first['dataset']}",
    )
    figures = save_figure(figure, os.path.join(folder, FIGURE[metric]))
    # a probe's keys, the model before the layer: probe/dynamic_pct/i3d_tiny/res3
    values = {}
    for name, record in records.items():
        values.update(layer_summary(record, model=f"{name}/"))
        if record["train"].get("val/acc") is not None:
            values[f"val/acc/{name}"] = record["train"]["val/acc"]
    publish(
        cfg.get("logger"),
        folder,
        "quickstart",
        "quickstart",
        first["dataset"],
        config=record_config(summary, "models", "lam"),
        summary=values,
        tables={"probe/results": row_table(rows)},
        images={"probe/figure": figures},
    )
    log.info("figure: %s\nresults: %s", figures[0], os.path.join(folder, "results.json"))
    return summary, {"figures": figures}
