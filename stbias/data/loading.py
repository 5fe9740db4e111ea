"""DataLoader settings that a dataset config carries beside its clip options.

The real-video datasets' configs hold ``num_workers``, ``prefetch_factor`` and ``pin_memory``
next to the reader's own ``backend`` and ``decode_threads``: they say how the clips reach the
model, not which clips, so they are taken out of the node before the dataset is built
(:func:`split_loader_options`) and handed to the ``DataLoader`` (:func:`loader_kwargs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from stbias.errors import StbiasError

LOADER_KEYS = ("num_workers", "prefetch_factor", "pin_memory")
# settings that change how fast clips arrive, never which pixels: not part of a cache key
SPEED_KEYS = (*LOADER_KEYS, "decode_threads")
PIN_MEMORY = ("auto", True, False)


def split_loader_options(node: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(dataset options, loader options)`` of a plain dataset config mapping."""
    dataset = {k: v for k, v in node.items() if k not in LOADER_KEYS}
    loader = {k: node[k] for k in LOADER_KEYS if k in node}
    return dataset, loader


def resolve_workers(num_workers: int | str | None) -> int:
    """Worker processes: an int >= 0, or ``auto`` (the CPU cores this process may use, less
    one for the main process, at most 8)."""
    if num_workers is None:
        return 0
    if str(num_workers) == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS and Windows have no affinity call
            cores = os.cpu_count() or 1
        return max(min(cores - 1, 8), 0)
    try:
        workers = int(num_workers)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0:
        raise StbiasError(f"num_workers must be an integer >= 0 or 'auto', got {num_workers!r}")
    return workers


def loader_kwargs(
    num_workers: int | str | None = 0,
    prefetch_factor: int | None = None,
    pin_memory: bool | str = "auto",
    device: str = "cpu",
) -> dict[str, Any]:
    """Keyword arguments of ``torch.utils.data.DataLoader`` for these settings.

    Args:
        num_workers: worker processes (``auto``: see :func:`resolve_workers`).
        prefetch_factor: batches each worker loads ahead (``None``: PyTorch's 2; no effect
            without workers).
        pin_memory: page-locked batches for faster copies to an accelerator; ``auto`` pins when
            ``device`` is ``cuda``.
        device: the type of the device the model runs on (``cpu``, ``cuda``, ``mps``, ...).
    """
    workers = resolve_workers(num_workers)
    if pin_memory not in PIN_MEMORY:
        raise StbiasError(f"pin_memory must be auto, true or false, got {pin_memory!r}")
    kwargs: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": device == "cuda" if pin_memory == "auto" else bool(pin_memory),
    }
    if prefetch_factor is not None:
        if int(prefetch_factor) < 1:
            raise StbiasError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
        if workers > 0:
            kwargs["prefetch_factor"] = int(prefetch_factor)
    return kwargs
