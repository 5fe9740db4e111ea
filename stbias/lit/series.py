"""A checkpoint series over training (``train.checkpoint_every``) and reading one back.

Training keeps ``checkpoints/series/step<global step>-epoch<epoch>.ckpt`` (zero-padded, so names
sort in training order, and free of ``=``, which Hydra overrides would need quoted) every ``n``
epochs or ``n`` optimizer steps with Lightning's own :class:`ModelCheckpoint` (``save_top_k=-1``),
plus ``step0000000-epoch000.ckpt`` with the weights training starts from. Every file is an
ordinary Lightning checkpoint carrying its ``global_step`` and ``epoch`` (the 0-based epoch it was
saved in).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from stbias.errors import StbiasError
from stbias.io import load_tensors

SERIES_DIR = "series"
FILENAME = "step{step:07d}-epoch{epoch:03d}"
INITIAL = "step0000000-epoch000.ckpt"
_EVERY = re.compile(r"^\s*(\d+)\s*(epochs?|steps?)?\s*$")


def parse_every(value: Any) -> tuple[int, str] | None:
    """``train.checkpoint_every``: None, an int (epochs), ``"<n> epochs"`` or ``"<n> steps"``.

    Returns ``(n, "epochs" | "steps")`` or None (no series).
    """
    if value is None:
        return None
    match = _EVERY.match(str(value)) if not isinstance(value, bool) else None
    n = int(match.group(1)) if match else 0
    if n < 1:
        raise StbiasError(
            f"train.checkpoint_every={value!r} is not valid; give null (no series), a number of "
            "epochs >= 1 (3 or '3 epochs') or of optimizer steps ('200 steps')"
        )
    unit = (match.group(2) or "epochs").rstrip("s") + "s"
    return n, unit


class InitialCheckpoint(pl.Callback):
    """Saves ``step0000000-epoch000.ckpt`` before the first step of a run that starts at step 0."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the initial weights (all processes call, process 0 writes)."""
        if trainer.global_step == 0:
            trainer.save_checkpoint(os.path.join(self.dirpath, INITIAL))


def series_callbacks(checkpoint_dir: str, every: tuple[int, str]) -> list[pl.Callback]:
    """The callbacks that keep the series in ``<checkpoint_dir>/series``."""
    n, unit = every
    dirpath = os.path.join(checkpoint_dir, SERIES_DIR)
    return [
        InitialCheckpoint(dirpath),
        ModelCheckpoint(
            dirpath=dirpath,
            filename=FILENAME,
            auto_insert_metric_name=False,
            monitor=None,
            save_top_k=-1,
            save_last=False,
            every_n_epochs=n if unit == "epochs" else None,
            every_n_train_steps=n if unit == "steps" else None,
            enable_version_counter=False,
        ),
    ]


def checkpoint_position(path: str) -> dict[str, Any]:
    """``{"path", "step", "epoch"}`` of a Lightning checkpoint (read with ``load_tensors``)."""
    obj = load_tensors(path, what="checkpoint")
    if not isinstance(obj, dict) or "global_step" not in obj:
        raise StbiasError(
            f"checkpoint {path!r} carries no global_step; the series takes Lightning checkpoints "
            "written by task=train"
        )
    return {"path": path, "step": int(obj["global_step"]), "epoch": int(obj.get("epoch", 0))}


def resolve_series(items: str | Iterable[str]) -> list[dict[str, Any]]:
    """The checkpoints of one run, one per global step, in training order.

    Args:
        items: ``.ckpt`` files and folders (searched recursively; a run folder gives its series,
            ``best.ckpt`` and ``last.ckpt``), as one string or a list.

    Returns:
        ``{"path", "step", "epoch"}`` sorted by step. Files at a step already seen (``last.ckpt``
        repeating the last series entry) are left out; files inside a ``series`` folder come
        first.
    """
    if isinstance(items, str):
        items = [items]
    files: list[str] = []
    for item in items:
        path = os.path.abspath(os.path.expanduser(str(item)))
        if os.path.isdir(path):
            found = [
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.endswith(".ckpt")
            ]
            if not found:
                raise StbiasError(f"probe.checkpoints: no .ckpt file under {path}")
            in_series = sorted(f for f in found if os.sep + SERIES_DIR + os.sep in f)
            files += in_series + sorted(f for f in found if f not in in_series)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise StbiasError(f"probe.checkpoints: {path} is neither a .ckpt file nor a folder")
    by_step: dict[int, dict[str, Any]] = {}
    for path in files:
        position = checkpoint_position(path)
        by_step.setdefault(position["step"], position)
    if len(by_step) < 1:
        raise StbiasError("probe.checkpoints names no checkpoint")
    return [by_step[s] for s in sorted(by_step)]
