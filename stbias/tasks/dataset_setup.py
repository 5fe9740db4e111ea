"""The clips a task reads: a dataset cut at the model's input geometry, the clips chosen of it,
and the base-dataset index of each."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.data import Dataset, Subset

from stbias.data.loading import LOADER_KEYS
from stbias.data.subsets import choose_clips
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec

# dataset key -> model input key: the clip geometry a dataset takes from the model it feeds
GEOMETRY = (("num_frames", "frames"), ("sampling_rate", "sampling_rate"), ("size", "size"))


def check_geometry(dataset_cfg: Any, spec: InputSpec) -> None:
    """Raise unless the dataset cuts clips at the model's input geometry (one source of truth).

    The dataset configs take ``num_frames``, ``sampling_rate`` and ``size`` from ``model.input``;
    a value set on the dataset that differs would feed the model clips it was not built for.
    """
    for key, model_key in GEOMETRY:
        value = dataset_cfg.get(key) if key in dataset_cfg else None
        if value is not None and int(value) != int(getattr(spec, model_key)):
            raise StbiasError(
                f"dataset.{key}={value} conflicts with model.input.{model_key}="
                f"{getattr(spec, model_key)}: clips are cut at the model's input; set "
                f"model.input.{model_key}={value} instead (dataset.{key} follows it)"
            )
    short_side = dataset_cfg.get("short_side") if "short_side" in dataset_cfg else None
    if short_side is not None and int(short_side) < int(spec.size):
        raise StbiasError(
            f"dataset.short_side={short_side} is smaller than model.input.size={spec.size}: "
            "frames are resized so that their shorter side is short_side, then cropped to size"
        )


def build_dataset(
    dataset_cfg: Any, spec: InputSpec, split: str | None = None, num_samples: int | None = None
) -> Dataset:
    """Instantiate a dataset whose clips fit the model's input spec.

    Args:
        dataset_cfg: the ``dataset`` config node (its geometry keys follow ``model.input``; see
            :func:`check_geometry`).
        spec: the model's input spec.
        split: replaces ``split`` (e.g. ``val``).
        num_samples: replaces ``num_samples`` (synthetic datasets); other datasets are cut to
            a seeded random subset of this many clips.
    """
    check_geometry(dataset_cfg, spec)
    dataset_cfg = copy.deepcopy(dataset_cfg)
    with open_dict(dataset_cfg):
        for key, value in (("split", split), ("num_samples", num_samples)):
            if key in dataset_cfg and value is not None:
                dataset_cfg[key] = value
        # DataLoader settings (num_workers, ...) travel in the node but are not the dataset's
        for key in LOADER_KEYS:
            dataset_cfg.pop(key, None)
    dataset = instantiate(dataset_cfg)
    if num_samples is not None and "num_samples" not in dataset_cfg and num_samples < len(dataset):
        picks = np.random.default_rng(0).choice(len(dataset), int(num_samples), replace=False)
        dataset = Subset(dataset, sorted(int(i) for i in picks))
    return dataset


def base_dataset(dataset: Any) -> Any:
    """The dataset under any ``Subset`` wrappers (``None`` stays ``None``)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def dataset_indices(dataset: Any) -> list[int]:
    """The base-dataset index of every clip of ``dataset`` (a ``Subset`` or a dataset)."""
    if isinstance(dataset, Subset):
        return [int(i) for i in dataset.indices]
    return list(range(len(dataset)))


def clip_by_index(dataset: Any, index: int) -> dict[str, Any]:
    """The sample whose base-dataset index is ``index``."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return base[int(index)]


def choose_probe_clips(cfg: Any, spec: InputSpec) -> Any:
    """The dataset of ``cfg`` cut to the clips ``probe.num_clips`` and ``probe.sampling`` choose."""
    dataset = build_dataset(cfg.dataset, spec)
    chosen = choose_clips(dataset, cfg.probe.num_clips, str(cfg.probe.sampling), int(cfg.seed))
    return Subset(dataset, chosen) if len(chosen) < len(dataset) else dataset
