"""One progress bar per phase (training, probing, ...) with an ETA, instead of one per epoch."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar
from tqdm.auto import tqdm


class PhaseProgressBar(ProgressBar):
    """A single tqdm bar over all of training (every epoch's batches) or all of testing.

    Args:
        description: what the bar says (e.g. ``training i3d_tiny``); the phase name otherwise.
    """

    def __init__(self, description: str | None = None) -> None:
        super().__init__()
        self.description = description
        self._enabled = True
        self._bar: Any = None
        self._per_step = False  # the bar counts a searching module's steps, not batches

    def disable(self) -> None:
        """Called by Lightning on non-zero ranks: only one process draws."""
        self._enabled = False

    def enable(self) -> None:
        """Draw again."""
        self._enabled = True

    def _open(self, phase: str, total: float | None, unit: str = "batch") -> None:
        self._close()
        total = None if total is None or not math.isfinite(total) else int(total)
        interactive = sys.stderr.isatty()
        self._bar = tqdm(
            total=total,
            desc=self.description or phase,
            disable=not self._enabled,
            dynamic_ncols=True,
            leave=True,
            file=sys.stderr,
            # a log file gets a line every 30 s rather than every update
            mininterval=0.2 if interactive else 30.0,
            unit=unit,
        )

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _postfix(self, trainer: pl.Trainer) -> None:
        shown = {}
        for key in ("train/loss", "val/acc"):
            value = trainer.callback_metrics.get(key)
            if value is not None and value.numel() == 1:
                shown[key] = f"{float(value):.3f}"
        if self._bar is not None and shown:
            self._bar.set_postfix(shown, refresh=False)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One bar for every epoch's training batches."""
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        per_epoch = self.total_train_batches
        self._open("training", epochs * per_epoch if epochs else None)
        if self._bar is not None and trainer.current_epoch and per_epoch:
            self._bar.update(int(trainer.current_epoch * per_epoch))  # resumed

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Advance by one batch."""
        if self._bar is not None:
            self._postfix(trainer)
            self._bar.update(1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Show the new validation accuracy."""
        self._postfix(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the bar."""
        self._postfix(trainer)
        self._close()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One bar for all test batches (the probe's clips), or, for a module that searches
        (``search_steps``: the temporal masks), for every clip's every iteration."""
        self._per_step = hasattr(pl_module, "search_steps")
        if self._per_step:
            loaders = trainer.test_dataloaders
            loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
            clips = sum(len(loader.dataset) for loader in loaders if loader is not None)
            total, unit = pl_module.search_steps(clips)
            self._open("searching", total, unit)
            pl_module.advance = self._advance
            return
        total = sum(trainer.num_test_batches) if trainer.num_test_batches else None
        self._open("testing", total)

    def _advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Advance by one batch (a searching module advances the bar itself)."""
        if self._bar is not None and not self._per_step:
            self._bar.update(1)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the bar."""
        if self._per_step:
            pl_module.advance = None
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, err: Any) -> None:
        """Leave the terminal clean when a run stops."""
        self._close()
