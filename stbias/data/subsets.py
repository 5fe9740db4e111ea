"""Which clips of a dataset a probe uses: a seeded subset, stratified by label where known."""

from __future__ import annotations

import hashlib
import os
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


def choose_clips(
    dataset: Dataset, num_clips: int | None, sampling: str, seed: int, node: str = "probe"
) -> list[int]:
    """The indices of ``num_clips`` clips of ``dataset`` (all of them when None or too many).

    Args:
        dataset: a map-style dataset (see :func:`clip_info` for labels).
        num_clips: how many clips.
        sampling: ``stratified`` — seeded, the same number of clips per label (±1) as far as
            each label has clips, labels visited in a seeded order (random where no labels are
            known); ``random`` — a seeded uniform subset; ``first`` — the first ``num_clips``.
        seed: the seed of the random choices.
        node: the config node the two settings come from, for errors (``probe``, ``metric``).

    Returns:
        Sorted dataset indices (reading in index order keeps a video's clips together).
    """
    if sampling not in SAMPLING:
        raise StbiasError(f"unknown {node}.sampling {sampling!r}; valid: {', '.join(SAMPLING)}")
    total = len(dataset)
    if num_clips is None or int(num_clips) >= total:
        return list(range(total))
    n = int(num_clips)
    if n < 1:
        raise StbiasError(f"{node}.num_clips must be >= 1 or null (all clips), got {num_clips}")
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


def _stat_line(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def files_fingerprint(dataset: Dataset) -> str:
    """A hash of the files a dataset's clips come from: annotations and the videos used.

    Covers the annotation files the reader parsed (``annotations``) and, for every clip of the
    dataset (or of the ``Subset`` given), its video file or every file of its frame folder, by
    path, size and modification time: editing a CSV or replacing a video changes it. Synthetic
    datasets, which read no files, give a constant.
    """
    indices = list(range(len(dataset)))
    base = dataset
    while isinstance(base, Subset):
        indices = [int(base.indices[i]) for i in indices]
        base = base.dataset
    digest = hashlib.sha256()
    for path in sorted(getattr(base, "annotations", []) or []):
        digest.update(_stat_line(os.path.abspath(path)).encode())
    records = getattr(base, "records", None)
    if records is not None:
        views = int(getattr(base, "num_views", 1))
        for vid in sorted({i // views for i in indices}):
            path = os.path.abspath(records[vid].path)
            if os.path.isdir(path):
                for name in sorted(os.listdir(path)):
                    digest.update(_stat_line(os.path.join(path, name)).encode())
            else:
                digest.update(_stat_line(path).encode())
    return digest.hexdigest()[:16]
