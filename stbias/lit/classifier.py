"""The classifier LightningModule: trains any video model, optionally on frame-shuffled clips.

A batch is the default collate of dataset samples: ``video`` uint8 ``(B, T, H, W, C)``, the label
under ``label_key`` and the clip ``index``. On the module's device the clips become float
``(B, C, T, H, W)`` in [0, 1] (:func:`stbias.data.video_to_float`), then the model's inputs
(:func:`stbias.models.inputs.pack_inputs`: normalised, one tensor per pathway). With
``shuffle_frames`` every training and validation clip is shuffled after packing, each pathway's
frames by its own permutation (:func:`stbias.stylization.pairs.permute_frames`), as the static
view of a probe pair: the model receives its usual frames in another order, never re-sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from stbias.data import video_to_float
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.stylization.pairs import clip_generator, permute_frames

Frames = torch.Tensor | list[torch.Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for the training permutations of one epoch (well mixed, stable across runs)."""
    state = np.random.SeedSequence((int(seed), int(epoch), 1)).generate_state(1, np.uint64)[0]
    return int(state % (2**62))


def shuffle_clips(
    x: Frames, indices: Sequence[int], seed: int
) -> tuple[Frames, list[torch.Tensor]]:
    """Shuffle every clip's frames, pathway by pathway, by uniformly drawn permutations.

    Clip ``b`` draws from ``clip_generator(seed, indices[b])``, so a clip gets the same
    permutations whatever batch, process or worker it is in. Unlike the static view of a probe
    pair, the identity is not excluded: a training clip must carry no order information, and a
    "non-identity" permutation of a two-frame slow pathway would always be the reversal.

    Returns:
        The shuffled frames (same type and shapes as ``x``) and the permutations, one
        ``(B, T_p)`` tensor per pathway.
    """
    pathways = [x] if torch.is_tensor(x) else list(x)
    perms = []
    generators = [clip_generator(seed, int(i)) for i in indices]
    for p in pathways:
        rows = [torch.randperm(p.shape[2], generator=g) for g in generators]
        perms.append(torch.stack(rows) if rows else torch.empty(0, p.shape[2], dtype=torch.long))
    return permute_frames(x, perms), perms


class VideoClassifier(pl.LightningModule):
    """Cross-entropy training of ``model`` with top-1 / top-5 accuracy (``train/*``, ``val/*``).

    Args:
        model: any network mapping packed inputs to logits ``(B, num_classes)``; its weights are
            saved under the ``model.`` key prefix of Lightning checkpoints.
        spec: the model's input spec (normalisation, channels, pathways).
        num_classes: classifier outputs (also the accuracy metrics' class count).
        optimizer: ``optimizer(params)`` -> optimizer (a Hydra ``_partial_`` object).
        scheduler: ``scheduler(optimizer)`` -> LR scheduler stepped once per epoch, or None.
        shuffle_frames: shuffle the frames of every training and validation clip.
        label_key: the sample key holding the target class.
        seed: seeds the frame permutations.
        hparams: plain values stored in checkpoints (``hyper_parameters``) beside the module's
            own, e.g. the model config overrides that rebuild the network.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        num_classes: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        shuffle_frames: bool = False,
        label_key: str = "label",
        seed: int = 0,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise StbiasError(f"a classifier needs num_classes >= 2; got {num_classes}")
        self.model = model
        self.spec = spec
        self.num_classes = int(num_classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.shuffle_frames = bool(shuffle_frames)
        self.label_key = str(label_key)
        self.seed = int(seed)
        # plain values only: checkpoints must load with weights_only=True (stbias.io.load_tensors)
        self.save_hyperparameters(
            {
                "num_classes": self.num_classes,
                "shuffle_frames": self.shuffle_frames,
                "label_key": self.label_key,
                "seed": self.seed,
                "input": spec.to_dict(),
                **dict(hparams or {}),
            }
        )
        top5 = min(5, self.num_classes)
        self.train_acc = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_acc = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average="micro")
        self.criterion = nn.CrossEntropyLoss()

    def forward(self, x: Frames) -> torch.Tensor:
        """Packed inputs -> logits ``(B, num_classes)``."""
        return self.model(x)

    def model_inputs(self, batch: Mapping[str, Any], seed: int | None = None) -> Frames:
        """The model's inputs for a batch: packed clips, shuffled when ``shuffle_frames``.

        Args:
            batch: a collated batch with ``video`` uint8 ``(B, T, H, W, C)`` (and ``index``
                when shuffling).
            seed: the permutation seed; default the module's ``seed`` (validation).
        """
        x = pack_inputs(video_to_float(batch["video"]), self.spec)
        if self.shuffle_frames:
            x, _ = shuffle_clips(x, _indices(batch), self.seed if seed is None else seed)
        return x

    def _labels(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.label_key not in batch:
            raise StbiasError(
                f"label_key {self.label_key!r} is not in the samples; keys: {', '.join(batch)}"
            )
        labels = torch.as_tensor(batch[self.label_key], device=self.device).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise StbiasError(
                f"labels must lie in [0, {self.num_classes}) (num_classes={self.num_classes}); "
                f"got {int(labels.min())} .. {int(labels.max())}"
            )
        return labels

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train/loss`` and ``train/acc``."""
        x = self.model_inputs(batch, epoch_seed(self.seed, self.current_epoch))
        labels = self._labels(batch)
        logits = self(x)
        loss = self.criterion(logits, labels)
        self.train_acc(logits, labels)
        size = labels.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Logs ``val/loss``, ``val/acc`` (top-1) and ``val/acc5`` (top-5)."""
        x = self.model_inputs(batch)
        labels = self._labels(batch)
        logits = self(x)
        size = labels.shape[0]
        self.val_acc(logits, labels)
        self.val_acc5(logits, labels)
        self.log("val/loss", self.criterion(logits, labels), sync_dist=True, batch_size=size)
        self.log("val/acc", self.val_acc, prog_bar=True, batch_size=size)
        self.log("val/acc5", self.val_acc5, batch_size=size)

    def configure_optimizers(self) -> Any:
        """The optimizer over every trainable parameter and, if given, an epoch-wise scheduler."""
        return optimization(self, self.optimizer_factory, self.scheduler_factory, "val/acc")


def _indices(batch: Mapping[str, Any]) -> list[int]:
    if "index" not in batch:
        raise StbiasError(
            "shuffle_frames needs each sample's 'index' (its position in the dataset) to seed "
            f"the permutations; the samples have keys: {', '.join(batch)}"
        )
    index = batch["index"]
    return [int(i) for i in (index.tolist() if torch.is_tensor(index) else index)]


def optimization(
    module: pl.LightningModule, optimizer_factory: Any, scheduler_factory: Any, monitor: str
) -> Any:
    """Lightning's ``configure_optimizers`` value: the optimizer over every trainable parameter
    and, if given, an epoch-wise scheduler (``ReduceLROnPlateau`` watches ``monitor``)."""
    optimizer = optimizer_factory(p for p in module.parameters() if p.requires_grad)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer)
    config = {"scheduler": scheduler, "interval": "epoch"}
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = monitor
    return {"optimizer": optimizer, "lr_scheduler": config}
