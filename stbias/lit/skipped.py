"""Samples whose own video could not be read, taken out of a batch and counted.

A dataset that meets an unreadable video returns the next readable one in its place with
``skipped = 1`` (:class:`stbias.data.video.VideoClipDataset`; the reader logs one warning per
video). A task that reports per clip must not file that clip's numbers under the unreadable
video's index and id, nor count the replacement twice: it explains, evaluates or scores only the
samples with ``skipped = 0`` and reports how many it left out as ``skipped_clips``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch


def drop_skipped(batch: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """``batch`` without its replaced samples, and how many were dropped.

    Every per-sample entry (a tensor or list whose first dimension is the batch size) keeps the
    rows of the samples read from their own video; other entries are kept as they are.
    """
    if "skipped" not in batch:
        return dict(batch), 0
    skipped = torch.as_tensor(batch["skipped"]).reshape(-1).bool().cpu()
    dropped = int(skipped.sum())
    if dropped == 0:
        return dict(batch), 0
    keep = ~skipped
    size = int(keep.numel())
    kept = keep.tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == size:
            out[key] = value[keep.to(value.device)]
        elif isinstance(value, (list, tuple)) and len(value) == size:
            out[key] = [v for v, k in zip(value, kept) if k]
        else:
            out[key] = value
    return out, dropped


def batch_size(batch: Mapping[str, Any]) -> int:
    """The number of samples in ``batch`` (its ``video`` entry)."""
    return int(batch["video"].shape[0])


class SkipCounter:
    """Counts the replaced samples a module left out, summed over processes at the end."""

    def __init__(self) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.total = 0

    def add(self, dropped: int) -> None:
        """Count ``dropped`` more samples of this process."""
        self.count += float(dropped)

    def gather(self, module: pl.LightningModule) -> int:
        """Every process's count (call from ``on_test_epoch_end``); also kept as ``total``."""
        self.total = self.over_processes(module, self.count)
        return self.total

    @staticmethod
    def over_processes(module: pl.LightningModule, value: float | torch.Tensor) -> int:
        """``value`` summed over the processes of the module's run (itself in one process)."""
        count = torch.as_tensor(value, dtype=torch.float64).to(module.device)
        trainer = module._trainer
        if trainer is not None and trainer.world_size > 1:
            count = module.all_gather(count).sum()
        return int(round(float(count)))


def clip_names(batch: Mapping[str, Any], limit: int = 8) -> list[Any]:
    """The ids (else the indices) of the first ``limit`` samples of ``batch``, for messages."""
    names = batch.get("id", batch.get("index", []))
    names = names.tolist() if torch.is_tensor(names) else list(names)
    return names[:limit]
