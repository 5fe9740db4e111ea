"""`task=explain`: any explanation method of the common shape, and the driver every one shares.

An explanation method is a class of :class:`stbias.api.Explanation`'s shape: constructed from a
model, a layer and settings, ``run(clips)`` returning results with ``table()``, ``plot()`` and
``save(folder)``. ``conf/metric/<name>.yaml`` names the class under ``method._target_`` (its
settings beside it) and names this task as the one it runs in::

    name: occlusion
    task: explain
    method:
      _target_: my_package.FrameOcclusion
      fill: 0.0
    target_class: predicted
    label_key: label
    figures: 0

``python run.py metric=occlusion model=i3d_tiny probe.num_clips=16`` then explains 16 clips of the
dataset (the root key ``layer`` picks a layer for a method that takes one) and writes the run
directory the method's results save. ``metric=gradcam`` and ``metric=temporal_mask`` run through
the same driver (:func:`explain`), their methods built from their own keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from stbias.api import Explanation
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec
from stbias.record import check_results
from stbias.tasks.explanations import (
    explanation_clips,
    explanation_setup,
    report_explanation,
    run_explanation,
    skipped_note,
)
from stbias.tasks.run_config import choice, output_dir, plain

log = logging.getLogger(__name__)

Build = Callable[[nn.Module, InputSpec, str], Explanation]


def explain(
    cfg: Any, build: Build, folder: str, detail: str = "", progress: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Explain the clips of ``cfg`` with the method ``build(model, spec, name)`` makes, and save
    the run into ``folder`` (rank 0).

    Returns:
        ``(record, objects)``; ``record`` is ``{}`` on the other ranks of a multi-process run.
    """
    metric = str(cfg.metric.name)
    name, spec, dataset, model = explanation_setup(cfg, metric)
    method = build(model, spec, name)
    trainer, results = run_explanation(
        cfg, method, dataset, metric, detail=detail, progress=progress or f"{metric} of {name}"
    )
    objects = {"model": model, "module": method.last_module, "trainer": trainer}
    objects.update(dataset=dataset, method=method, results=results)
    if results is None:  # a non-zero rank of a multi-process run: rank 0 writes
        return {}, objects
    m = cfg.metric
    header = {
        "dataset": choice(cfg, "dataset"),
        "split": plain(cfg.dataset.get("split")),
        "seed": int(cfg.seed),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    check_results(results.record, f"metric={metric}")
    options = {k: m[k] for k in results.figure_options if k in m}
    results.save(folder, figures=int(m.get("figures") or 0), **options, **header)
    objects["figures"] = results.figures
    return results.record, objects


def method_builder(cfg: Any) -> Build:
    """How ``metric.method`` (a ``_target_`` node) becomes the method of a run."""
    node = cfg.metric.get("method")
    if node is None or "_target_" not in node:
        raise StbiasError(
            f"metric={cfg.metric.get('name')} names no method: task=explain needs "
            "metric.method={_target_: <an Explanation class>, <its settings>}"
        )
    clips = explanation_clips(cfg)

    def build(model: nn.Module, spec: InputSpec, name: str) -> Explanation:
        method = instantiate(
            node,
            model=model,
            layer=cfg.get("layer"),
            input_spec=spec,
            target_class=str(cfg.metric.get("target_class", "predicted")),
            label_key=str(cfg.metric.get("label_key", "label")),
            batch_size=int(clips.batch_size),
            model_name=name,
        )
        if not isinstance(method, Explanation):
            raise StbiasError(
                f"metric.method._target_={node._target_} made a {type(method).__name__}, not an "
                "explanation method (a subclass of stbias.api.Explanation)"
            )
        return method

    return build


def summary_line(record: dict[str, Any]) -> str:
    """One paragraph: every summarised number of a run."""
    parts = []
    for key, e in record["summary"].items():
        if isinstance(e, dict) and "mean" in e:
            mean = "–" if e["mean"] is None else f"{e['mean']:.3g} ± {e['std']:.3g}"
            parts.append(f"{key} {mean} (n = {e['n']})")
    return (
        f"{record.get('method', record['task'])} of {record['model']} on {record['dataset']}, "
        f"{record['num_clips']} clips{skipped_note(record)}: " + ", ".join(parts)
    )


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``task=explain``: the method of ``metric.method`` over the clips; outputs; log."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    folder = output_dir()
    record, objects = explain(cfg, method_builder(cfg), folder)
    if not record:
        return record, objects
    metric = str(cfg.metric.name)
    report_explanation(cfg, "explain", metric, folder, record, objects, summary_line(record))
    return record, objects
