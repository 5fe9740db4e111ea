"""The training data module: a training and a validation dataset behind Lightning loaders."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from stbias.io import write_json


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
        seed: the training order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone
            (not from the global generator), so a resumed run sees the order an uninterrupted
            one does.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        *,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed, self.epoch = int(seed), 0
        # the sampler's own generator, seeded at every epoch; the loader's (worker seeds) apart
        self._order = torch.Generator()
        self._workers = torch.Generator().manual_seed(self.seed)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # BatchNorm cannot train on a batch of one clip: drop a short last batch when there is
        # at least one full batch
        drop_last = train and len(dataset) > self.batch_size
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=RandomSampler(dataset, generator=self._order) if train else None,
            generator=self._workers if train else None,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def set_epoch(self, epoch: int) -> None:
        """Seed the epoch's training order; pass the epoch to a dataset that has ``set_epoch``."""
        self.epoch = int(epoch)
        # its own stream: (seed, epoch, 2), apart from the frame permutations' (seed, epoch, 1)
        order = np.random.SeedSequence((self.seed, self.epoch, 2)).generate_state(1, np.uint64)
        self._order.manual_seed(int(order[0] % (2**62)))
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


def random_streams() -> dict[str, Any]:
    """The global generators' states (torch CPU and CUDA, numpy, ``random``) as tensors and ints,
    so that a checkpoint holding them still loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "random": [version, list(internal), gauss_next],
    }


def set_random_streams(state: dict[str, Any]) -> None:
    """Restore the states :func:`random_streams` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    version, internal, gauss_next = state["random"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))


class ResumeState(pl.Callback):
    """What a resumed run needs beyond Lightning's own state to end exactly where an uninterrupted
    one does: the random streams as they were when a checkpoint was written (the next epoch's
    data order, loader-worker seeds and dropout draws come from them), kept in the checkpoint;
    and the minutes trained so far, kept beside it in ``clock`` (a JSON file), so that the
    checkpoint's bytes, and its sha256, repeat from run to run.

    A run resumed from it restores the streams just before its first epoch starts, so that epoch
    draws what the uninterrupted run drew after writing the checkpoint.

    Args:
        clock: the file of the minutes trained (rewritten with every checkpoint), or None.
    """

    def __init__(self, clock: str | None = None) -> None:
        self.clock = clock
        self.minutes_before = 0.0  # trained before this process started (resumed runs)
        self.resumed_epochs: int | None = None  # epochs the checkpoint had finished
        self._pending: dict[str, Any] | None = None
        self._start = time.time()

    def minutes(self) -> float:
        """Minutes of training over every segment of the run, this one included."""
        return self.minutes_before + (time.time() - self._start) / 60.0

    def state_dict(self) -> dict[str, Any]:
        """The random streams, written into every checkpoint."""
        return {"random_streams": random_streams()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the streams for the first epoch of the resumed run; read the minutes so far."""
        self._pending = state_dict.get("random_streams")
        self._start = time.time()
        if self.clock and os.path.isfile(self.clock):
            try:
                with open(self.clock) as fh:
                    self.minutes_before = float(json.load(fh)["minutes"])
            except (OSError, ValueError, KeyError, TypeError):
                self.minutes_before = 0.0  # a torn clock: the minutes of this segment only

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the minutes trained beside the checkpoint."""
        if self.clock and trainer.is_global_zero:
            write_json(self.clock, {"minutes": self.minutes()})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note how many epochs the checkpoint resumed from had finished."""
        if self._pending is not None:
            self.resumed_epochs = int(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the checkpoint's random streams before the resumed run's first epoch."""
        if self._pending is not None:
            set_random_streams(self._pending)
            self._pending = None
