"""`metric=temporal_mask` (task=temporal_mask): Mänttäri et al.'s temporal masks of a model.

``python run.py metric=temporal_mask model=<name> dataset=<name> [model.checkpoint=<file>]``
searches one mask per clip for ``probe.num_clips`` clips of ``dataset.split``, batched
(``probe.batch_size`` clips at once) and split across processes by the Trainer
(``trainer.devices=N trainer.strategy=ddp``). Writes into the run directory:

* ``results.json`` — the settings, per-run summary (mask length, drop ratio, drop difference:
  mean, std, n, 95 % interval; filter counts; OS / FS / RS) and every clip's numbers;
* ``results.csv`` — one row per clip (index, id, label, target, predicted, OS, FS, RS, CS,
  length, drop ratio, drop difference, the mask);
* ``masks.npz`` — the masks ``(N, T)``, starting masks and every per-clip array;
* ``mask_<index>.png|pdf`` — frame strips with the frozen frames and the mask under them, for
  the first ``metric.figures`` clips; ``table4.png|pdf`` — the run in Table 4's layout.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl

from stbias.api import TemporalMask
from stbias.metrics.masks import SEARCH_SETTINGS
from stbias.tasks.explain import explain
from stbias.tasks.explanations import report_explanation, skipped_note
from stbias.tasks.run_config import choice, output_dir, plain

log = logging.getLogger(__name__)


def explain_masks(cfg: Any, folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Search the masks of ``cfg`` and write the outputs into ``folder`` (rank 0).

    Returns:
        ``(record, objects)``; ``record`` is ``{}`` on the other ranks of a multi-process run.
    """
    m = cfg.metric
    settings = {k: plain(m[k]) for k in SEARCH_SETTINGS}

    def build(model: Any, spec: Any, name: str) -> TemporalMask:
        return TemporalMask(
            model,
            input_spec=spec,
            target_class=str(m.target_class),
            label_key=str(m.label_key),
            batch_size=int(cfg.probe.batch_size),
            model_name=name,
            **settings,
        )

    iterations = int(settings["iterations"])
    detail = f"{iterations} iterations per clip, batches of {int(cfg.probe.batch_size)} clips"
    progress = f"searching masks of {choice(cfg, 'model')}"
    return explain(cfg, build, folder, detail=detail, progress=progress)


def summary_line(record: dict[str, Any]) -> str:
    """One paragraph: the Table 4 numbers of a run."""
    s = record["summary"]

    def fmt(key: str, digits: int = 2) -> str:
        e = s[key]
        if e["mean"] is None:
            return f"{key} – (n = 0)"
        return f"{key} {e['mean']:.{digits}f} ± {e['std']:.{digits}f} (n = {e['n']})"

    c = s["counts"]
    return (
        f"{record['model']} on {record['dataset']}, {record['num_clips']} clips"
        f"{skipped_note(record)}: "
        f"{fmt('mask_length', 1)}, {fmt('drop_ratio')}, {fmt('drop_difference')}; "
        f"drop ratio filtered on {c['drop_ratio_filtered']} clips"
    )


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metric=temporal_mask``: search, write results and figures, log."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    folder = output_dir()
    record, objects = explain_masks(cfg, folder)
    if not record:
        return record, objects
    report_explanation(cfg, "temporal_mask", "mask", folder, record, objects, summary_line(record))
    return record, objects
