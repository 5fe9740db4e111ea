"""The instance-segmentation LightningModule: VisTR-style set training of video instance models.

A batch is the default collate of instance samples: ``video`` uint8 ``(B, T, H, W, C)``,
``instance_masks`` bool ``(B, N_max, T, H, W)`` and ``instance_labels`` int64 ``(B, N_max)``
(-1: padding). The model maps the packed clips (:func:`stbias.models.inputs.pack_inputs`) to a
dict: ``pred_logits`` ``(B, N, num_classes + 1)`` (the last class: no object), ``pred_masks``
``(B, N, T, H', W')`` mask logits and, optionally, ``pred_boxes`` ``(B, N, T, 4)`` (cx, cy, w, h
in [0, 1]).

As VisTR, reduced: every clip's predictions are matched one-to-one to its instances by the
Hungarian algorithm (:func:`match`) on the cost ``-class_weight * p(label) + bce_weight * BCE +
dice_weight * dice`` (each mask term over all frames of the instance); the loss is the class
cross-entropy over every query (unmatched ones target no object, weighted ``no_object_weight``),
plus, over matched pairs, mask BCE and dice and the L1 distance of the boxes to those of the
masks (frames where the instance is visible). The masks are compared at the predictions'
resolution (the targets area-averaged down to it). Validation logs ``val/loss`` and ``val/mIoU``:
the mean over every instance of the spatio-temporal IoU of its matched prediction
(``sigmoid > threshold``, upsampled to the masks' size) — not the YouTube-VIS mask AP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from stbias.data import video_to_float
from stbias.errors import StbiasError
from stbias.lit.classifier import optimization
from stbias.models.inputs import InputSpec, pack_inputs

OUTPUT_KEYS = ("pred_logits", "pred_masks")


def pairwise_mask_costs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sigmoid BCE and dice loss of every prediction against every target mask.

    Args:
        logits: mask logits ``(N, P)`` (each instance's frames flattened into ``P`` pixels).
        targets: masks in [0, 1] ``(K, P)``.

    Returns:
        ``(2, N, K)``: the mean BCE over the ``P`` pixels, then ``1 - dice`` (smoothed by 1).
    """
    logits, targets = logits.float(), targets.float()
    pixels = max(logits.shape[1], 1)
    # BCE(x, t) = softplus(x) - x * t, summed pixel by pixel for every (prediction, target)
    bce = F.softplus(logits).sum(1, keepdim=True) - logits @ targets.T
    prob = logits.sigmoid()
    dice = 1 - (2 * prob @ targets.T + 1) / (prob.sum(1)[:, None] + targets.sum(1)[None] + 1)
    return torch.stack([bce / pixels, dice])


def match_costs(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """The matching cost ``(N, K)`` of one clip's ``N`` predictions and ``K`` instances.

    Args:
        class_logits: ``(N, num_classes + 1)``.
        mask_logits: ``(N, T, H, W)``.
        labels: ``(K,)`` class of every instance.
        masks: ``(K, T, H, W)`` in [0, 1], at the predictions' size.
        weights: class, BCE and dice weights.
    """
    prob = class_logits.float().softmax(-1)[:, labels]
    bce, dice = pairwise_mask_costs(mask_logits.flatten(1), masks.flatten(1))
    return -weights[0] * prob + weights[1] * bce + weights[2] * dice


def match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimum-cost one-to-one assignment of a cost matrix ``(N, K)``, ``N >= K``.

    Returns:
        Prediction indices and target indices ``(K,)``, ordered by target.
    """
    if cost.shape[0] < cost.shape[1]:
        raise StbiasError(
            f"{cost.shape[1]} instances in a clip but the model makes {cost.shape[0]} "
            "predictions; use a model with at least as many queries as instances"
        )
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    order = np.argsort(cols)
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order])


def mask_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(..., 4)`` (cx, cy, w, h in [0, 1]) of binary masks ``(..., H, W)`` and whether
    each mask has a pixel (empty masks: zero boxes)."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)
    visible = rows.any(-1)

    def extent(hits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(size, device=hits.device).expand_as(hits)
        first = torch.where(hits, pos, size).min(-1).values
        last = torch.where(hits, pos, -1).max(-1).values + 1
        return first.float() / size, last.float() / size

    y0, y1 = extent(rows, h)
    x0, x1 = extent(cols, w)
    boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)
    return torch.where(visible[..., None], boxes, torch.zeros_like(boxes)), visible


def clip_targets(
    masks: torch.Tensor, labels: torch.Tensor, size: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One clip's instances: labels ``(K,)``, full-size masks ``(K, T, H, W)`` (bool) and the
    masks area-averaged to ``size`` = ``(T', H', W')`` (float, the first ``T'`` frames)."""
    keep = labels >= 0
    labels, masks = labels[keep].long(), masks[keep].bool()
    frames, height, width = size
    if masks.shape[1] < frames:
        raise StbiasError(f"{masks.shape[1]} masked frames for {frames} predicted frames")
    masks = masks[:, :frames]
    if not len(masks):  # a clip without instances: every query targets no object
        return labels, masks, masks.new_zeros((0, frames, height, width), dtype=torch.float)
    small = masks.float()
    if small.shape[-2:] != (height, width):
        small = F.adaptive_avg_pool2d(small.flatten(0, 1), (height, width)).view(
            len(masks), frames, height, width
        )
    return labels, masks, small


class SetCriterion(nn.Module):
    """Hungarian matching and the set loss of a batch (see the module docstring).

    Args:
        class_weight: weight of the class term (cost: ``-p(label)``; loss: cross-entropy).
        bce_weight: weight of the mask BCE.
        dice_weight: weight of the dice loss.
        box_weight: weight of the box L1 (0: off; models without ``pred_boxes`` have none).
        no_object_weight: the no-object class's weight in the cross-entropy.
    """

    def __init__(
        self,
        class_weight: float = 1.0,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        box_weight: float = 1.0,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__()
        weights = {
            "class_weight": class_weight,
            "bce_weight": bce_weight,
            "dice_weight": dice_weight,
            "box_weight": box_weight,
            "no_object_weight": no_object_weight,
        }
        bad = {k: v for k, v in weights.items() if not float(v) >= 0}
        if bad or class_weight + bce_weight + dice_weight <= 0:
            raise StbiasError(
                "instance loss weights must be >= 0 and class, bce and dice not all 0; got "
                + ", ".join(f"{k}={v}" for k, v in weights.items())
            )
        self.weights = {k: float(v) for k, v in weights.items()}

    def matches(
        self, outputs: Mapping[str, torch.Tensor], masks: torch.Tensor, labels: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """Every clip's matching: ``pred`` and ``target`` indices, its ``labels``, full-size
        ``masks`` (bool) and ``small`` masks (at the predictions' size)."""
        w = self.weights
        found = []
        logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        for b in range(logits.shape[0]):
            lab, full, small = clip_targets(masks[b], labels[b], tuple(pred_masks.shape[2:]))
            if len(lab) and int(lab.max()) >= logits.shape[-1] - 1:
                raise StbiasError(
                    f"instance labels must lie in [0, {logits.shape[-1] - 1}) (the model's "
                    f"classes); got {int(lab.max())}"
                )
            with torch.no_grad():
                cost = match_costs(
                    logits[b],
                    pred_masks[b],
                    lab,
                    small.to(pred_masks.device),
                    (w["class_weight"], w["bce_weight"], w["dice_weight"]),
                )
            pred, target = match(cost)
            found.append({"pred": pred, "target": target, "labels": lab, "masks": full})
            found[-1]["small"] = small
        return found

    def forward(
        self, outputs: Mapping[str, torch.Tensor], found: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """The loss terms of a batch and their weighted sum (``loss``) for the matches found."""
        w = self.weights
        logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        device = logits.device
        no_object = logits.shape[-1] - 1
        classes = torch.full(logits.shape[:2], no_object, dtype=torch.long, device=device)
        for b, m in enumerate(found):
            classes[b, m["pred"].to(device)] = m["labels"][m["target"]].to(device)
        class_weights = torch.ones(logits.shape[-1], device=device)
        class_weights[no_object] = w["no_object_weight"]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), classes.flatten(), class_weights)
        pred = torch.cat([pred_masks[b, m["pred"].to(device)] for b, m in enumerate(found)])
        target = torch.cat([m["small"][m["target"]] for m in found]).to(device)
        count = max(len(target), 1)
        flat_pred, flat_target = pred.flatten(1).float(), target.flatten(1).float()
        bce = F.binary_cross_entropy_with_logits(flat_pred, flat_target, reduction="none")
        prob = flat_pred.sigmoid()
        dice = 1 - (2 * (prob * flat_target).sum(1) + 1) / (prob.sum(1) + flat_target.sum(1) + 1)
        terms = {"class": ce, "bce": bce.mean(1).sum() / count, "dice": dice.sum() / count}
        terms["box"] = torch.zeros((), device=device)
        if w["box_weight"] > 0 and "pred_boxes" in outputs and len(target):
            boxes = outputs["pred_boxes"]
            pred_boxes = torch.cat([boxes[b, m["pred"].to(device)] for b, m in enumerate(found)])
            true_boxes, visible = mask_boxes(target > 0.5)
            pred_boxes = pred_boxes[:, : true_boxes.shape[1]].float()
            l1 = (pred_boxes - true_boxes).abs().sum(-1)
            terms["box"] = (l1 * visible).sum() / visible.sum().clamp(min=1)
        terms["loss"] = (
            w["class_weight"] * terms["class"]
            + w["bce_weight"] * terms["bce"]
            + w["dice_weight"] * terms["dice"]
            + w["box_weight"] * terms["box"]
        )
        return terms


def matched_iou(
    pred_masks: torch.Tensor, found: list[dict[str, torch.Tensor]], threshold: float = 0.5
) -> torch.Tensor:
    """The spatio-temporal IoU of every instance with its matched prediction ``(instances,)``.

    Args:
        pred_masks: mask logits ``(B, N, T', H', W')``, upsampled (bilinear) to the masks' size.
        found: :meth:`SetCriterion.matches` of the batch.
        threshold: a pixel is the instance's where ``sigmoid(logit) > threshold``.
    """
    values = []
    for b, m in enumerate(found):
        if not len(m["target"]):
            continue
        target = m["masks"][m["target"]].to(pred_masks.device)
        pred = pred_masks[b, m["pred"].to(pred_masks.device)].float()
        if pred.shape[-2:] != target.shape[-2:]:
            pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
        pred = pred.sigmoid() > threshold
        inter = (pred & target).flatten(1).sum(1).double()
        union = (pred | target).flatten(1).sum(1).double()
        values.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)


class VideoInstanceSegmenter(pl.LightningModule):
    """Set training of a video instance segmentation ``model`` (see the module docstring).

    Args:
        model: a network mapping packed inputs to the dict of predictions; its weights are saved
            under the ``model.`` prefix of Lightning checkpoints.
        spec: the model's input spec.
        optimizer: ``optimizer(params)`` -> optimizer (a Hydra ``_partial_`` object).
        scheduler: ``scheduler(optimizer)`` -> LR scheduler stepped once per epoch, or None.
        criterion: the matching and loss weights.
        threshold: mask probability above which a pixel belongs to the instance (``val/mIoU``).
        hparams: plain values stored in checkpoints beside the module's own.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        *,
        criterion: SetCriterion | None = None,
        threshold: float = 0.5,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < float(threshold) < 1.0:
            raise StbiasError(f"threshold must lie in (0, 1); got {threshold}")
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = criterion or SetCriterion()
        self.threshold = float(threshold)
        # plain values only: checkpoints must load with weights_only=True (stbias.io.load_tensors)
        self.save_hyperparameters(
            {
                "objective": "instance_segmentation",
                **self.criterion.weights,
                "threshold": self.threshold,
                "input": spec.to_dict(),
                **dict(hparams or {}),
            }
        )
        self._val_iou: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Packed inputs -> the model's dict of predictions."""
        outputs = self.model(x)
        if not isinstance(outputs, Mapping) or any(k not in outputs for k in OUTPUT_KEYS):
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise StbiasError(
                f"objective=instance_segmentation needs a model returning a dict with "
                f"{', '.join(OUTPUT_KEYS)}; got {got}"
            )
        return outputs

    def _step(self, batch: Mapping[str, Any]) -> tuple[dict, list[dict], dict]:
        missing = [k for k in ("instance_masks", "instance_labels") if k not in batch]
        if missing:
            raise StbiasError(
                f"instance segmentation training needs {', '.join(missing)} in the samples "
                f"(keys: {', '.join(batch)}); use an instance dataset (vis_synthetic, youtube_vis)"
            )
        outputs = self(pack_inputs(video_to_float(batch["video"]), self.spec))
        found = self.criterion.matches(outputs, batch["instance_masks"], batch["instance_labels"])
        return outputs, found, self.criterion(outputs, found)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train/loss`` and its terms."""
        _, _, terms = self._step(batch)
        size = batch["video"].shape[0]
        self.log("train/loss", terms["loss"], on_step=True, prog_bar=True, batch_size=size)
        for key in ("class", "bce", "dice", "box"):
            self.log(f"train/loss_{key}", terms[key], on_step=False, on_epoch=True, batch_size=size)
        return terms["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Logs ``val/loss``; keeps every instance's IoU for the epoch's ``val/mIoU``."""
        outputs, found, terms = self._step(batch)
        self.log("val/loss", terms["loss"], sync_dist=True, batch_size=batch["video"].shape[0])
        self._val_iou.append(matched_iou(outputs["pred_masks"], found, self.threshold).cpu())

    def on_validation_epoch_end(self) -> None:
        """Logs ``val/mIoU``: the mean IoU of every validation instance with its match."""
        values = torch.cat(self._val_iou) if self._val_iou else torch.zeros(0)
        self._val_iou = []
        total = torch.tensor([float(values.sum()), len(values)], dtype=torch.float64)
        if self.trainer.world_size > 1:
            total = self.all_gather(total.to(self.device)).reshape(-1, 2).sum(0).cpu()
        if total[1] > 0:
            self.log("val/mIoU", (total[0] / total[1]).float(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        """The optimizer over every trainable parameter and, if given, an epoch-wise scheduler."""
        return optimization(self, self.optimizer_factory, self.scheduler_factory, "val/mIoU")
