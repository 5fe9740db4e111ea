"""Explanations as a Lightning test loop: temporal masks and Grad-CAM over many clips.

Each test step explains one batch of clips (``video`` uint8 ``(B, T, H, W, C)``, ``index``, the
label under ``label_key``) and adds the per-clip results to ``torchmetrics`` states that gather
across processes, so ``Trainer(devices=N, strategy="ddp")`` splits the clips (each process its
own share, none repeated: :class:`stbias.lit.probe.EvalData`) and rank 0 gets every clip's
result. The Trainer must run with ``inference_mode=False``: both methods need gradients, which
each step turns on for itself.

A sample whose own video could not be read (``skipped = 1``: the dataset put the next readable
video in its place) is left out and counted in ``skipped_clips``, so no row carries another
video's numbers; a NaN or infinite result stops the run with one line naming the batch's clips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from stbias.data import video_to_float
from stbias.data.flow import two_stream_input
from stbias.errors import StbiasError
from stbias.lit.probe import channels_last as to_channels_last
from stbias.lit.skipped import SkipCounter, batch_size, clip_names, drop_skipped
from stbias.metrics.blobs import BlobStatistics
from stbias.metrics.gradcam import GradCAM
from stbias.metrics.masks import TARGET_CLASSES, TemporalMask, TemporalMaskStatistics
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.validation import require_finite


def packer(spec: InputSpec, channels_last: bool = True) -> Callable[[Tensor], Any]:
    """Clips ``(B, C, T, H, W)`` in [0, 1] -> the model's input (normalised, pathways; the
    flow image of a two-stream model rendered from the clip first, on the data side's transform).

    In the channels-last memory layout by default, as the probe feeds its models: 3D
    convolutions run faster on it (values are the same).
    """

    def pack(clips: Tensor) -> Any:
        x = pack_inputs(two_stream_input(clips) if spec.flow else clips, spec)
        if not channels_last:
            return x
        return [to_channels_last(p) for p in x] if isinstance(x, list) else to_channels_last(x)

    return pack


class ClipArrays(Metric):
    """Per-clip arrays of many batches (and processes), returned sorted by clip index.

    Args:
        keys: the arrays kept beside ``index``.
    """

    full_state_update = False

    def __init__(self, keys: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys = ("index", *keys)
        for key in self.keys:
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, **arrays: Tensor) -> None:
        """Add one batch: ``index`` ``(B,)`` and every key's ``(B, ...)`` array."""
        self.index.append(torch.as_tensor(index, device=self.device).view(-1).long())
        for key in self.keys[1:]:
            getattr(self, key).append(arrays[key].detach().to(self.device))

    def compute(self) -> dict[str, Any]:
        """Every array as numpy, in clip-index order."""
        index = dim_zero_cat(self.index).cpu()
        order = torch.argsort(index)
        return {k: dim_zero_cat(getattr(self, k)).cpu()[order].numpy() for k in self.keys}


def _labels(batch: Mapping[str, Any], key: str) -> Tensor | None:
    value = batch.get(key)
    return None if value is None else torch.as_tensor(value).long()


def _check_target_class(target_class: str, label_key: str) -> str:
    if target_class not in TARGET_CLASSES:
        raise StbiasError(
            f"unknown metric.target_class {target_class!r}; valid: {', '.join(TARGET_CLASSES)}"
        )
    return target_class


def _target(batch: Mapping[str, Any], target_class: str, label_key: str) -> Tensor | None:
    if target_class == "predicted":
        return None
    labels = _labels(batch, label_key)
    if labels is None:
        raise StbiasError(
            f"metric.target_class=label needs labels under {label_key!r}, and the dataset's "
            f"samples have none (keys: {', '.join(sorted(batch))}); set metric.label_key"
        )
    if bool((labels < 0).any()):
        raise StbiasError("metric.target_class=label needs labelled clips (a label is -1)")
    return labels


def check_outputs(out: Mapping[str, Any], what: str, batch: Mapping[str, Any]) -> None:
    """Stop with one line when ``what`` gave NaN or infinite numbers for the batch's clips."""
    values = dict(out)
    if "drop_ratio" in values:  # NaN by design where the paper's filters leave a clip out
        values["drop_ratio"] = values["drop_ratio"][values["drop_ratio_kept"].bool()]
    require_finite(
        values,
        f"{what} gave NaN or infinite numbers for clips {clip_names(batch)}",
        "nothing was written (a model or setting that produces NaN: check model.checkpoint and "
        "the metric settings)",
    )


def no_clips(skipped: int) -> StbiasError:
    """The error of a run whose every clip was unreadable (or that had no clips)."""
    if skipped:
        return StbiasError(
            f"none of the clips could be read ({skipped} unreadable videos, each named in a "
            "warning above); nothing was written"
        )
    return StbiasError("no clips were explained (an empty split, or limit_test_batches=0)")


class TemporalMaskModule(pl.LightningModule):
    """``Trainer.test`` runs one batched mask search per batch; ``results`` holds the run's.

    Args:
        explainer: the configured :class:`~stbias.metrics.masks.TemporalMask`.
        label_key: sample key of the ground truth (used for CS, and as the target with
            ``target_class="label"``).
        target_class: ``predicted`` or ``label``.
    """

    def __init__(
        self, explainer: TemporalMask, label_key: str = "label", target_class: str = "predicted"
    ) -> None:
        super().__init__()
        self.explainer = explainer
        self.model = explainer.model
        self.label_key = label_key
        self.target_class = _check_target_class(target_class, label_key)
        self.stats = TemporalMaskStatistics(min_drop=explainer.min_drop)
        self.skipped = SkipCounter()
        self.skipped_clips = 0
        self.results: dict[str, Any] = {}
        # set by the progress bar: advances it by a number of clip-iterations
        self.advance: Any = None

    def search_steps(self, clips: int) -> tuple[int, str]:
        """What the progress bar counts: ``clips`` × iterations optimiser steps, and its unit."""
        return int(clips) * self.explainer.iterations, "clip-it"

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Search the masks of one batch and keep every clip's numbers."""
        batch, dropped = drop_skipped(batch)
        self.skipped.add(dropped)
        if batch_size(batch) == 0:
            return
        clips = video_to_float(batch["video"].to(self.device))
        target = _target(batch, self.target_class, self.label_key)
        labels = _labels(batch, self.label_key)
        count = int(clips.shape[0])
        with torch.enable_grad():
            out = self.explainer.run(
                clips,
                target=None if target is None else target.to(self.device),
                labels=None if labels is None else labels.to(self.device),
                on_step=(lambda: self.advance(count)) if self.advance is not None else None,
            )
        check_outputs(out, "the temporal-mask search", batch)
        self.stats.update(torch.as_tensor(batch["index"]).to(self.device), out)

    def on_test_epoch_end(self) -> None:
        """Gather every process's clips and summarise."""
        self.skipped_clips = self.skipped.gather(self)
        if self.skipped.over_processes(self, len(self.stats.index)) == 0:
            raise no_clips(self.skipped_clips)
        self.results = self.stats.compute()


class GradCAMModule(pl.LightningModule):
    """``Trainer.test`` computes Grad-CAM maps and their blobs per batch; see ``results``.

    Args:
        explainer: the configured :class:`~stbias.metrics.gradcam.GradCAM`.
        label_key: sample key of the ground truth.
        target_class: ``predicted`` or ``label``.
        blob_params: detector overrides (see :func:`stbias.metrics.blobs.blob_params`).
        keep_maps: keep the upsampled maps (float16) for the npz file and the figures.
    """

    def __init__(
        self,
        explainer: GradCAM,
        label_key: str = "label",
        target_class: str = "predicted",
        blob_params: Mapping[str, Any] | None = None,
        keep_maps: bool = True,
    ) -> None:
        super().__init__()
        self.explainer = explainer
        self.model = explainer.model
        self.label_key = label_key
        self.target_class = _check_target_class(target_class, label_key)
        self.keep_maps = keep_maps
        self.blobs = BlobStatistics(blob_params)
        keys = ["target", "predicted", "labels", "score", "probability", "raw"]
        self.arrays = ClipArrays(keys + (["maps"] if keep_maps else []))
        self.skipped = SkipCounter()
        self.skipped_clips = 0
        self.results: dict[str, Any] = {}

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Maps, scores and blobs of one batch."""
        batch, dropped = drop_skipped(batch)
        self.skipped.add(dropped)
        if batch_size(batch) == 0:
            return
        clips = video_to_float(batch["video"].to(self.device))
        target = _target(batch, self.target_class, self.label_key)
        labels = _labels(batch, self.label_key)
        out = self.explainer.run(
            clips,
            None if target is None else target.to(self.device),
            None if labels is None else labels.to(self.device),
        )
        check_outputs(out, f"Grad-CAM of layer {self.explainer.layer!r}", batch)
        index = torch.as_tensor(batch["index"]).to(self.device)
        arrays = {k: out[k] for k in ("target", "predicted", "score", "probability", "raw")}
        arrays["labels"] = out.get("labels", torch.full_like(out["target"], -1))
        if self.keep_maps:
            arrays["maps"] = out["maps"].half()
        self.arrays.update(index, **arrays)
        self.blobs.update(index, out["maps"])

    def on_test_epoch_end(self) -> None:
        """Gather every process's clips and summarise."""
        self.skipped_clips = self.skipped.gather(self)
        if self.skipped.over_processes(self, len(self.arrays.index)) == 0:
            raise no_clips(self.skipped_clips)
        self.results = {"clips": self.arrays.compute(), "blobs": self.blobs.compute()}


class BatchExplainModule(pl.LightningModule):
    """``Trainer.test`` runs any explanation given as one function of a batch of clips.

    Each step calls ``explain(clips, target, labels)`` on the batch's float clips ``(B, C, T,
    H, W)`` in [0, 1] (gradients on) and keeps the per-clip arrays it returns (each ``(B, ...)``,
    the names ``outputs``) in clip order, gathered across processes; ``results["clips"]`` holds
    them with ``index``, ``target`` and ``labels``. Skipped clips and NaN are handled as by
    :class:`GradCAMModule`.

    Args:
        explain: ``explain(clips, target, labels) -> {name: (B, ...) tensor}``; ``target`` is
            None for the predicted class.
        model: the explained network (moved to the device with the module).
        outputs: the names of ``explain``'s arrays.
        label_key: sample key of the ground truth.
        target_class: ``predicted`` or ``label``.
        what: the method's name, for messages.
    """

    def __init__(
        self,
        explain: Callable[[Tensor, Tensor | None, Tensor | None], Mapping[str, Tensor]],
        model: torch.nn.Module,
        outputs: Sequence[str],
        label_key: str = "label",
        target_class: str = "predicted",
        what: str = "the explanation",
    ) -> None:
        super().__init__()
        self.explain = explain
        self.model = model
        self.outputs = tuple(outputs)
        if not self.outputs:
            raise StbiasError(f"{what} names no outputs (its per-clip arrays)")
        self.label_key = label_key
        self.target_class = _check_target_class(target_class, label_key)
        self.what = what
        self.arrays = ClipArrays(["labels", *self.outputs])
        self.skipped = SkipCounter()
        self.skipped_clips = 0
        self.results: dict[str, Any] = {}

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Explain one batch and keep every clip's arrays."""
        batch, dropped = drop_skipped(batch)
        self.skipped.add(dropped)
        if batch_size(batch) == 0:
            return
        clips = video_to_float(batch["video"].to(self.device))
        target = _target(batch, self.target_class, self.label_key)
        labels = _labels(batch, self.label_key)
        with torch.enable_grad():
            out = dict(
                self.explain(
                    clips,
                    None if target is None else target.to(self.device),
                    None if labels is None else labels.to(self.device),
                )
            )
        missing = [k for k in self.outputs if k not in out]
        if missing:
            raise StbiasError(f"{self.what} returned no {', '.join(missing)} for a batch")
        out = {k: torch.as_tensor(out[k]).detach() for k in self.outputs}
        check_outputs(out, self.what, batch)
        count = int(clips.shape[0])
        out["labels"] = labels if labels is not None else torch.full((count,), -1)
        index = torch.as_tensor(batch["index"]).to(self.device)
        self.arrays.update(index, **{k: v.to(self.device) for k, v in out.items()})

    def on_test_epoch_end(self) -> None:
        """Gather every process's clips."""
        self.skipped_clips = self.skipped.gather(self)
        if self.skipped.over_processes(self, len(self.arrays.index)) == 0:
            raise no_clips(self.skipped_clips)
        self.results = {"clips": self.arrays.compute()}
