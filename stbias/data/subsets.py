"""Which clips of a dataset a probe uses: a seeded subset, stratified by label where known."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from stbias.errors import StbiasError

SAMPLING = ("stratified", "random", "first")


def clip_info(dataset: Dataset, index: int) -> dict[str, Any]:
    """``{"id", "label"}`` of sample ``index`` without decoding it (``label`` None if unknown).

    Datasets with a ``clip_info(index)`` method answer it; a ``Subset`` asks its dataset.
    """
    if isinstance(dataset, Subset):
        return clip_info(dataset.dataset, int(dataset.indices[index]))
    info = getattr(dataset, "clip_info", None)
    if info is None:
        return {"id": str(index), "label": None}
    return dict(info(int(index)))


def choose_clips(dataset: Dataset, num_clips: int | None, sampling: str, seed: int) -> list[int]:
    """The indices of ``num_clips`` clips of ``dataset`` (all of them when None or too many).

    Args:
        dataset: a map-style dataset (see :func:`clip_info` for labels).
        num_clips: how many clips.
        sampling: ``stratified`` — seeded, the same number of clips per label (±1) as far as
            each label has clips, labels visited in a seeded order (random where no labels are
            known); ``random`` — a seeded uniform subset; ``first`` — the first ``num_clips``.
        seed: the seed of the random choices.

    Returns:
        Sorted dataset indices (reading in index order keeps a video's clips together).
    """
    if sampling not in SAMPLING:
        raise StbiasError(f"unknown probe.sampling {sampling!r}; valid: {', '.join(SAMPLING)}")
    total = len(dataset)
    if num_clips is None or int(num_clips) >= total:
        return list(range(total))
    n = int(num_clips)
    if n < 1:
        raise StbiasError(f"probe.num_clips must be >= 1 or null (all clips), got {num_clips}")
    if sampling == "first":
        return list(range(n))
    rng = np.random.default_rng([int(seed), 7])
    if sampling == "stratified":
        by_label: dict[Any, list[int]] = defaultdict(list)
        for i in range(total):
            label = clip_info(dataset, i)["label"]
            if label is None or int(label) < 0:
                by_label = {}
                break
            by_label[int(label)].append(i)
        if len(by_label) > 1:
            groups = [list(rng.permutation(by_label[k])) for k in sorted(by_label)]
            order = rng.permutation(len(groups))
            picks: list[int] = []
            while len(picks) < n:
                for g in order:
                    if groups[g] and len(picks) < n:
                        picks.append(int(groups[g].pop()))
            return sorted(picks)
    return sorted(int(i) for i in rng.choice(total, n, replace=False))
