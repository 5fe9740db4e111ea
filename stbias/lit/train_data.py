"""The training data module: a training and a validation dataset behind Lightning loaders."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


class ClassificationData(pl.LightningDataModule):
    """Loaders for ``train`` (shuffled, last short batch dropped) and ``val`` (in order).

    Datasets with ``set_epoch`` (random clip and crop choices) get the current epoch before every
    training epoch (the :class:`EpochSetter` callback);
    loader workers are not kept alive between epochs, so each epoch's workers start from the
    updated dataset.

    Args:
        train: the training dataset (samples as documented in :mod:`stbias.data`).
        val: the validation dataset, or None to train without validation.
        batch_size: clips per batch and process.
        num_workers: loader worker processes.
        pin_memory: pin host memory (useful on GPUs).
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        *,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.pin_memory = bool(pin_memory)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # BatchNorm cannot train on a batch of one clip: drop a short last batch when there is
        # at least one full batch
        drop_last = train and len(dataset) > self.batch_size
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to a training dataset that has ``set_epoch``."""
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(int(epoch))

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of uint8 ``(B, T, H, W, C)`` clips."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> Any:
        """Validation batches in dataset order (an empty list without a validation set)."""
        return [] if self.val_set is None else self._loader(self.val_set, train=False)


class EpochSetter(pl.Callback):
    """Calls ``ClassificationData.set_epoch`` at the start of every training epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Hand the epoch that starts to the data module."""
        data = trainer.datamodule
        if isinstance(data, ClassificationData):
            data.set_epoch(trainer.current_epoch)
