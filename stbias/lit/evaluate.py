"""The evaluation LightningModule: a trained classifier on one dataset split (``task=test``).

Run with ``Trainer.test``. A batch is the default collate of dataset samples (``video`` uint8
``(B, T, H, W, C)``, the label under ``label_key``, ``index``, ``id``); clips are turned into the
model's inputs exactly as in training (:func:`stbias.data.video_to_float`, then
:func:`stbias.models.inputs.pack_inputs`). With ``reverse`` every clip's frames are reversed after
packing, each pathway its own frames (a SlowFast model sees its usual slow and fast frames, in
reverse order), as shuffled clips are permuted in training.

Metrics (all sum states, so several processes give the numbers of one): ``test/acc`` (top-1),
``test/acc5``, ``test/loss`` (mean cross-entropy) and, for datasets whose label is a motion and an
appearance factor (``label_factors``, see :mod:`stbias.metrics.breakdown`), ``test/acc_<factor>``
and ``test/err_appearance_only``, ``test/err_motion_only``, ``test/err_both``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from stbias.data import video_to_float
from stbias.errors import StbiasError
from stbias.lit.skipped import batch_size, clip_names, drop_skipped
from stbias.metrics.breakdown import ErrorBreakdown, label_factors, split_label
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.validation import require_finite

Frames = torch.Tensor | list[torch.Tensor]


def reverse_frames(x: Frames) -> Frames:
    """Reverse the frame order of every clip, ``(B, C, T, H, W)`` or one such tensor per pathway."""
    if torch.is_tensor(x):
        return torch.flip(x, dims=[2])
    return [torch.flip(p, dims=[2]) for p in x]


class Evaluator(pl.LightningModule):
    """Accuracy (and the error breakdown) of a frozen classifier; ``results`` after the test.

    Args:
        model: any network mapping packed inputs to logits ``(B, num_classes)``.
        spec: its input spec (normalisation, channels, pathways).
        num_classes: the classifier's outputs.
        label_key: the sample key holding the target class.
        reverse: reverse the frames of every clip.
        factors: the label's factors ``((name, role, size), ...)`` for the error breakdown, or
            None (the breakdown is then not computed).
        keep_predictions: keep one row per clip (``predictions``: index, id, label, pred).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        num_classes: int,
        *,
        label_key: str = "label",
        reverse: bool = False,
        factors: Sequence[Sequence] | None = None,
        keep_predictions: bool = True,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.num_classes = int(num_classes)
        self.label_key = str(label_key)
        self.reverse = bool(reverse)
        self.factors = label_factors(factors) if factors else None
        self.keep_predictions = bool(keep_predictions)
        self.correct = SumMetric()  # top-1 hits; with count, an exact accuracy
        self.acc5 = MulticlassAccuracy(self.num_classes, top_k=min(5, num_classes), average="micro")
        self.loss = MeanMetric()
        self.count = SumMetric()
        self.breakdown = ErrorBreakdown(self.factors) if self.factors else None
        self.skipped = torch.zeros((), dtype=torch.long)
        self.predictions: list[dict[str, Any]] = []
        self.skipped_clips = 0
        self.clips = 0  # clips evaluated (on every process together)
        self.results: dict[str, float] = {}

    def train(self, mode: bool = True) -> Evaluator:
        """Keep the model in eval mode whatever Lightning asks."""
        super().train(mode)
        self.model.eval()
        return self

    def model_inputs(self, batch: Mapping[str, Any]) -> Frames:
        """Packed (and, with ``reverse``, reversed) inputs of a batch of uint8 clips."""
        x = pack_inputs(video_to_float(batch["video"].to(self.device)), self.spec)
        return reverse_frames(x) if self.reverse else x

    def _labels(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.label_key not in batch:
            raise StbiasError(
                f"test.label_key {self.label_key!r} is not in the samples; keys: {', '.join(batch)}"
            )
        labels = torch.as_tensor(batch[self.label_key], device=self.device).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise StbiasError(
                f"labels under {self.label_key!r} lie in {int(labels.min())} .. "
                f"{int(labels.max())} but the model has {self.num_classes} outputs; evaluate a "
                "model trained on this label (test.label_key=<the train.label_key of its run>)"
            )
        return labels

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Add one batch to the metrics (and the per-clip rows).

        A sample whose own video could not be read (the dataset's replacement) is not evaluated,
        only counted in ``skipped_clips``.
        """
        batch, dropped = drop_skipped(batch)
        self.skipped += dropped
        if batch_size(batch) == 0:
            return
        labels = self._labels(batch)
        logits = self.model(self.model_inputs(batch))
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise StbiasError(
                f"the model returned {tuple(logits.shape)}; expected (B, {self.num_classes}) logits"
            )
        require_finite(
            logits,
            f"the model gave NaN or infinite logits for clips {clip_names(batch)}",
            "nothing was written (check model.checkpoint)",
        )
        self.correct.update((logits.argmax(dim=1) == labels).sum().double())
        self.acc5.update(logits, labels)
        losses = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        self.loss.update(losses)
        self.count.update(float(labels.numel()))
        if self.breakdown is not None:
            self.breakdown.update(logits, labels)
        if self.keep_predictions:
            self._keep(batch, labels, logits.argmax(dim=1))

    def _keep(self, batch: Mapping[str, Any], labels: torch.Tensor, preds: torch.Tensor) -> None:
        labels, preds = labels.cpu(), preds.cpu()
        index = (
            torch.as_tensor(batch["index"]).tolist() if "index" in batch else [None] * len(labels)
        )
        ids = list(batch["id"]) if "id" in batch else [None] * len(labels)
        parts = {}
        if self.factors is not None:
            true, pred = split_label(labels, self.factors), split_label(preds, self.factors)
            parts = {f"label_{k}": v.tolist() for k, v in true.items()}
            parts.update({f"pred_{k}": v.tolist() for k, v in pred.items()})
        for k in range(len(labels)):
            row = {"index": index[k], "id": ids[k], "label": int(labels[k]), "pred": int(preds[k])}
            row.update({key: values[k] for key, values in parts.items()})
            self.predictions.append(row)

    def on_test_epoch_end(self) -> None:
        """Compute every metric (summed over processes), log them under ``test/``."""
        self.clips = int(self.count.compute())
        if self.clips == 0:
            skipped = int(self.skipped)
            raise StbiasError(
                f"none of the clips could be read ({skipped} unreadable videos, each named in a "
                "warning above); nothing was written"
                if skipped
                else "no clips were evaluated (an empty split, or limit_test_batches=0)"
            )
        results = {
            "test/acc": float(self.correct.compute()) / self.clips,
            "test/acc5": float(self.acc5.compute()),
            "test/loss": float(self.loss.compute()),
        }
        if self.breakdown is not None:
            results.update(
                {f"test/{k}": v for k, v in self.breakdown.compute().items() if k != "acc"}
            )
        skipped = self.skipped.to(self.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            skipped = self.all_gather(skipped).sum()
            self.predictions = _gather_rows(self.predictions)
        self.skipped_clips = int(skipped)
        for key, value in results.items():
            self.log(key, value, rank_zero_only=True)
        self.results = results


def _gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's rows, in dataset order (the rows of all ranks on every rank)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rows)
    merged = [row for part in gathered for row in part]
    return sorted(merged, key=lambda r: (r["index"] is None, r["index"] or 0))
