"""The segmentation LightningModule: mask training of two-stream (RGB + flow) and other VOS nets.

A batch is the default collate of segmentation samples: ``video`` uint8 ``(B, T, H, W, C)``,
``mask`` uint8 ``(B, T, H, W)`` (0/1, 255 = not annotated), ``label`` (the sequence number) and,
where the dataset reads flow images, ``flow`` uint8 ``(B, T - 1, H, W, 3)``. The model's inputs
come from :func:`stbias.models.inputs.pack_inputs`: for a two-stream model ``[rgb, flow]`` with
the first ``T - 1`` RGB frames and the flow from each to the next (read, or computed on the fly
with OpenCV Farneback), both normalised. The model returns mask logits ``(B, 1, T', H, W)``;
they are compared with the masks of the first ``T'`` frames.

Loss: ``bce_weight * BCE + iou_weight * (1 - soft IoU)`` over annotated pixels. Logged:
``train/loss``, ``val/loss``, ``val/J`` (mean over sequences of the per-sequence mean region
similarity) and ``val/J_frames`` (mean over frames).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from stbias.data import video_to_float
from stbias.data.flow import two_stream_input
from stbias.errors import StbiasError
from stbias.lit.classifier import optimization
from stbias.metrics.segmentation import RegionSimilarity, segmentation_loss
from stbias.models.inputs import InputSpec, pack_inputs

Frames = torch.Tensor | list[torch.Tensor]


class VideoSegmenter(pl.LightningModule):
    """Foreground-mask training of ``model`` (see the module docstring).

    Args:
        model: a network mapping packed inputs to mask logits ``(B, 1, T', H, W)``; its weights
            are saved under the ``model.`` prefix of Lightning checkpoints.
        spec: the model's input spec.
        optimizer: ``optimizer(params)`` -> optimizer (a Hydra ``_partial_`` object).
        scheduler: ``scheduler(optimizer)`` -> LR scheduler stepped once per epoch, or None.
        bce_weight: weight of the binary cross-entropy.
        iou_weight: weight of the soft IoU loss.
        threshold: probability above which a pixel is foreground (J).
        hparams: plain values stored in checkpoints beside the module's own.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        *,
        bce_weight: float = 1.0,
        iou_weight: float = 1.0,
        threshold: float = 0.5,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if bce_weight < 0 or iou_weight < 0 or bce_weight + iou_weight <= 0:
            raise StbiasError(
                f"loss weights must be >= 0 and not both 0; got bce_weight={bce_weight}, "
                f"iou_weight={iou_weight}"
            )
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.bce_weight, self.iou_weight = float(bce_weight), float(iou_weight)
        # plain values only: checkpoints must load with weights_only=True (stbias.io.load_tensors)
        self.save_hyperparameters(
            {
                "objective": "segmentation",
                "bce_weight": self.bce_weight,
                "iou_weight": self.iou_weight,
                "threshold": float(threshold),
                "input": spec.to_dict(),
                **dict(hparams or {}),
            }
        )
        self.val_j = RegionSimilarity(threshold)
        self.last_val_sequences: dict[int, float] = {}

    def forward(self, x: Frames) -> torch.Tensor:
        """Packed inputs -> mask logits."""
        return self.model(x)

    def model_inputs(self, batch: Mapping[str, Any]) -> Frames:
        """Packed model inputs of a batch (flow images from the batch when it has them)."""
        video01 = video_to_float(batch["video"])
        if self.spec.flow and "flow" in batch:
            return pack_inputs([video01[:, :, :-1], video_to_float(batch["flow"])], self.spec)
        return pack_inputs(two_stream_input(video01) if self.spec.flow else video01, self.spec)

    def targets(self, batch: Mapping[str, Any], logits: torch.Tensor) -> torch.Tensor:
        """The masks of the frames the logits cover, shaped like them."""
        if "mask" not in batch:
            raise StbiasError(
                "segmentation training needs foreground masks: the samples have no 'mask' "
                f"(keys: {', '.join(batch)}); use a segmentation dataset (davis, tao_vos, "
                "imagenet_vid, camouflage, salient)"
            )
        mask = batch["mask"].to(logits.device)
        if logits.dim() == 5:
            frames = logits.shape[2]
            if mask.shape[1] < frames:
                raise StbiasError(f"{mask.shape[1]} masks for {frames} predicted frames")
            mask = mask[:, :frames].unsqueeze(1)
        else:
            mask = mask[:, 0:1]
        if mask.shape[-2:] != logits.shape[-2:]:
            raise StbiasError(
                f"masks of {tuple(mask.shape[-2:])} pixels, predictions of "
                f"{tuple(logits.shape[-2:])}"
            )
        return mask

    def _step(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(self.model_inputs(batch))
        target = self.targets(batch, logits)
        loss, _ = segmentation_loss(logits, target, self.bce_weight, self.iou_weight)
        return loss, logits, target

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train/loss``."""
        loss, _, _ = self._step(batch)
        size = batch["mask"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Logs ``val/loss``; adds every annotated frame to the epoch's J."""
        loss, logits, target = self._step(batch)
        size = target.shape[0]
        self.val_j.update(logits, target, torch.as_tensor(batch["label"]))
        self.log("val/loss", loss, sync_dist=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        """Logs ``val/J`` and ``val/J_frames`` and keeps the per-sequence J."""
        if not self.val_j.frame_j:
            return
        with self.val_j.sync_context(should_unsync=True):
            self.last_val_sequences = self.val_j.per_sequence()
        values = self.val_j.compute()
        self.log("val/J", values["J"].float(), prog_bar=True)
        self.log("val/J_frames", values["J_frames"].float())
        self.val_j.reset()

    def configure_optimizers(self) -> Any:
        """The optimizer over every trainable parameter and, if given, an epoch-wise scheduler."""
        return optimization(self, self.optimizer_factory, self.scheduler_factory, "val/J")
