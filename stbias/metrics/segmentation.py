"""Segmentation measures: region similarity J (DAVIS), the training losses, and center bias.

Masks are ``(..., H, W)`` with 1 = foreground, 0 = background and 255 = not annotated; pixels
(and frames) without annotation count nowhere.

* **Region similarity** ``J = |M ∩ G| / |M ∪ G|`` per annotated frame (1 when both are empty, as
  the DAVIS toolkit counts it); a sequence's J is the mean over its frames, and the reported
  ``J`` the mean over sequences (DAVIS' "J mean"). ``J_frames`` is the mean over all frames.
* **Center bias** of a dataset: the mean of its ground-truth masks resized to one
  resolution (``mean_map``, the fraction of frames in which each pixel is foreground), scaled to
  [0, 1] (``map``): min–max by default, as the authors' ``estimate_dataset_centerbias`` shows it,
  or by the maximum (:func:`scale_center_bias`). stbias adds two numbers: ``center_mass``, the
  share of the mean map's mass inside the central quarter of the frame (the middle half of each
  side; 0.25 for a map spread evenly, 1 when all foreground is central), and ``mean_distance``,
  the mass-weighted mean distance of foreground from the frame centre in half-diagonals.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from stbias.errors import StbiasError

NOT_ANNOTATED = 255


def _split(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground (bool) and annotated (bool) pixels of a 0/1/255 mask."""
    valid = target != NOT_ANNOTATED
    return (target == 1) & valid, valid


def frame_region_similarity(
    pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame J of binary predictions ``(N, H, W)`` against 0/1/255 masks ``(N, H, W)``.

    Returns:
        ``J`` ``(N,)`` (1 where prediction and ground truth are both empty) and ``annotated``
        ``(N,)``, True for frames with at least one annotated pixel (only those count).
    """
    if pred.shape != target.shape:
        raise StbiasError(f"prediction {tuple(pred.shape)} and mask {tuple(target.shape)} differ")
    fg, valid = _split(target)
    pred = pred.bool() & valid
    inter = (pred & fg).flatten(1).sum(1).double()
    union = (pred | fg).flatten(1).sum(1).double()
    j = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return j, valid.flatten(1).any(1)


class RegionSimilarity(Metric):
    """J per frame, grouped by sequence (the states concatenate across processes).

    ``update(logits, target, sequence)``: mask logits and 0/1/255 masks of the same shape
    ``(B, [1,] [T,] H, W)`` and one sequence number per clip ``(B,)``. A pixel is foreground
    where ``sigmoid(logit) > threshold``.
    """

    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 < float(threshold) < 1.0:
            raise StbiasError(f"threshold must lie in (0, 1); got {threshold}")
        self.threshold = float(threshold)
        self.add_state("frame_j", default=[], dist_reduce_fx="cat")
        self.add_state("frame_seq", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor) -> None:
        """Add the annotated frames of a batch of clips."""
        batch = target.shape[0]
        frames = target.reshape(batch, -1, *target.shape[-2:])
        pred = (torch.sigmoid(logits.detach()) > self.threshold).reshape(frames.shape)
        j, annotated = frame_region_similarity(pred.flatten(0, 1), frames.flatten(0, 1))
        seq = torch.as_tensor(sequence, device=j.device).long().repeat_interleave(frames.shape[1])
        self.frame_j.append(j[annotated])
        self.frame_seq.append(seq[annotated])

    def per_sequence(self) -> dict[int, float]:
        """Sequence number -> mean J over its annotated frames."""
        if not self.frame_j:
            return {}
        j, seq = dim_zero_cat(self.frame_j), dim_zero_cat(self.frame_seq)
        return {int(s): float(j[seq == s].mean()) for s in torch.unique(seq).tolist()}

    def compute(self) -> dict[str, torch.Tensor]:
        """``J`` (mean over sequences of their mean J) and ``J_frames`` (mean over frames)."""
        if not self.frame_j or dim_zero_cat(self.frame_j).numel() == 0:
            raise StbiasError("no annotated frame was evaluated: J is undefined")
        j = dim_zero_cat(self.frame_j)
        per_seq = torch.tensor(list(self.per_sequence().values()), dtype=torch.float64)
        return {"J": per_seq.mean(), "J_frames": j.mean()}


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0, iou_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``bce_weight * BCE + iou_weight * (1 - soft IoU)`` over the annotated pixels.

    Args:
        logits: mask logits ``(B, [1,] [T,] H, W)``.
        target: 0/1/255 masks of the same shape.

    The soft IoU ``Σ p g / Σ (p + g - p g)`` (``p`` the sigmoid) is taken per frame and averaged
    over the frames with annotated pixels. Returns the loss and its two parts.
    """
    if logits.shape != target.shape:
        raise StbiasError(f"logits {tuple(logits.shape)} and masks {tuple(target.shape)} differ")
    fg, valid = _split(target)
    fg, valid = fg.to(logits.dtype), valid.to(logits.dtype)
    count = valid.sum()
    if float(count) == 0:
        zero = logits.sum() * 0.0
        return zero, {"bce": zero.detach(), "iou": zero.detach()}
    bce = F.binary_cross_entropy_with_logits(logits, fg, weight=valid, reduction="sum") / count
    p = torch.sigmoid(logits) * valid
    frames = (-1, *logits.shape[-2:])
    p, g, v = p.reshape(frames), (fg * valid).reshape(frames), valid.reshape(frames)
    inter = (p * g).flatten(1).sum(1)
    union = (p + g - p * g).flatten(1).sum(1)
    annotated = v.flatten(1).sum(1) > 0
    soft_iou = (inter + 1.0) / (union + 1.0)
    iou_loss = (1.0 - soft_iou[annotated]).mean()
    loss = float(bce_weight) * bce + float(iou_weight) * iou_loss
    return loss, {"bce": bce.detach(), "iou": iou_loss.detach()}


CENTER_BIAS_NORMALISE = ("minmax", "max")


def _check_normalise(normalise: str) -> str:
    if normalise not in CENTER_BIAS_NORMALISE:
        valid = ", ".join(CENTER_BIAS_NORMALISE)
        raise StbiasError(f"unknown center bias normalise {normalise!r}; valid: {valid}")
    return normalise


def scale_center_bias(mean_map: np.ndarray, normalise: str = "minmax") -> np.ndarray:
    """The center-bias image: ``mean_map`` scaled to [0, 1].

    ``minmax``: ``(m − min) / (max − min)``, as the authors' ``estimate_dataset_centerbias``
    shows its summed masks (``imshow`` scales from the smallest to the largest value); ``max``:
    ``m / max``, which keeps 0 for "never foreground" (the two differ where no pixel is always
    background). A flat map (every pixel equal) is 1 everywhere under both.
    """
    _check_normalise(normalise)
    low, high = float(mean_map.min()), float(mean_map.max())
    if normalise == "max" or high == low:
        return mean_map / high
    return (mean_map - low) / (high - low)


class CenterBias:
    """The mean of foreground masks at one resolution, accumulated mask by mask.

    Args:
        size: the side of the square every mask is resized to (area interpolation, so a pixel
            holds the foreground fraction of the region it covers; bilinear for smaller masks).
        normalise: how ``map`` is scaled to [0, 1]: ``minmax`` (the authors') or ``max``
            (:func:`scale_center_bias`).
    """

    def __init__(self, size: int = 64, normalise: str = "minmax"):
        if int(size) < 2:
            raise StbiasError(f"center bias size must be >= 2; got {size}")
        self.normalise = _check_normalise(normalise)
        self.size = int(size)
        self.total = np.zeros((self.size, self.size), dtype=np.float64)
        self.count = 0
        self.skipped = 0  # frames without any annotated pixel

    def update(self, masks: np.ndarray | torch.Tensor | Iterable) -> None:
        """Add masks ``(H, W)`` or ``(N, H, W)`` (0/1, 255 = not annotated, counted as 0)."""
        if isinstance(masks, torch.Tensor):
            masks = masks.cpu().numpy()
        masks = np.asarray(masks)
        if masks.ndim == 2:
            masks = masks[None]
        for mask in masks.reshape(-1, *masks.shape[-2:]):
            annotated = mask != NOT_ANNOTATED
            if not annotated.any():
                self.skipped += 1
                continue
            fg = ((mask == 1) & annotated).astype(np.float32)
            shrink = min(fg.shape) >= self.size
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            self.total += cv2.resize(fg, (self.size, self.size), interpolation=interpolation)
            self.count += 1

    def compute(self) -> dict[str, Any]:
        """``mean_map``, ``map`` (scaled to [0, 1] by ``normalise``), ``center_mass``,
        ``mean_distance`` (both from ``mean_map``), counts."""
        if self.count == 0:
            raise StbiasError("center bias of no mask: the dataset gave no annotated frame")
        mean_map = self.total / self.count
        peak = float(mean_map.max())
        if peak <= 0:
            raise StbiasError(f"no foreground pixel in any of the {self.count} masks")
        quarter, mass = self.size // 4, float(mean_map.sum())
        centre = mean_map[quarter : self.size - quarter, quarter : self.size - quarter]
        yy, xx = np.mgrid[: self.size, : self.size] + 0.5
        half = self.size / 2.0
        distance = np.hypot(yy - half, xx - half) / (half * np.sqrt(2.0))
        return {
            "mean_map": mean_map,
            "map": scale_center_bias(mean_map, self.normalise),
            "normalise": self.normalise,
            "center_mass": float(centre.sum()) / mass,
            "mean_distance": float((distance * mean_map).sum()) / mass,
            "foreground_fraction": float(mean_map.mean()),
            "masks": self.count,
            "skipped": self.skipped,
        }
