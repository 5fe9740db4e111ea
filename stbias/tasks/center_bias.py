"""`task=center_bias`: the center bias of segmentation datasets (Kowal et al. Fig. 7).

``python run.py task=center_bias dataset=davis dataset.root=/data/DAVIS`` averages every
ground-truth mask of the dataset's split at ``task.size`` x ``task.size`` (whole frames, no crop)
and writes the map scaled to [0, 1] with its numbers (see :mod:`stbias.metrics.segmentation`):
``results.json``, ``center_bias.npz`` (``<dataset>/map`` and ``<dataset>/mean_map``) and
``center_bias.{png,pdf}``. ``task.datasets=[camouflage,salient]`` draws several side by side
(``task.roots={davis: /data/DAVIS}`` gives the roots of real ones). The model plays no part.

Real datasets are read mask file by mask file (every annotated frame of every video);
synthetic ones sample by sample (``probe.num_clips`` clips, default all of ``num_samples``).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.data import Dataset

from stbias import io
from stbias.config import compose
from stbias.errors import StbiasError
from stbias.metrics.segmentation import CenterBias
from stbias.plotting import save_figure
from stbias.plotting.vos import center_bias_maps
from stbias.tasks.loggers import (
    build_logger,
    finish_logger,
    log_run,
    record_config,
    run_files,
    run_identity,
)
from stbias.tasks.record import write_results
from stbias.tasks.run_config import choice, output_dir, plain

log = logging.getLogger(__name__)


def center_bias(
    dataset: Dataset, size: int = 64, num_clips: int | None = None, normalise: str = "minmax"
) -> dict[str, Any]:
    """The center bias of ``dataset``'s masks (``CenterBias.compute``'s entries; the map scaled
    by ``normalise``, ``minmax`` or ``max``).

    A dataset with ``iter_masks()`` (the real readers) gives every mask file; any other is read
    sample by sample (its first ``num_clips`` samples, all when None), each sample's ``mask``.
    """
    bias = CenterBias(size, str(normalise))
    if hasattr(dataset, "iter_masks"):
        for mask in dataset.iter_masks():
            bias.update(mask)
        skipped = len(getattr(dataset, "skipped", []))
    else:
        count = len(dataset) if num_clips is None else min(int(num_clips), len(dataset))
        for index in range(count):
            sample = dataset[index]
            if "mask" not in sample:
                raise StbiasError(
                    f"{type(dataset).__name__} has no foreground masks (sample keys: "
                    f"{', '.join(sample)}); center bias needs a segmentation dataset"
                )
            bias.update(sample["mask"])
        skipped = 0
    result = bias.compute()
    result["unreadable"] = skipped
    return result


def dataset_nodes(cfg: Any) -> dict[str, Any]:
    """Option name -> dataset node of every dataset to measure (``task.datasets``)."""
    chosen = choice(cfg, "dataset")
    names = [str(n) for n in (plain(cfg.task.get("datasets")) or [chosen])]
    roots = plain(cfg.task.get("roots")) or {}
    unknown = sorted(set(roots) - set(names))
    if unknown:
        raise StbiasError(
            f"task.roots names {', '.join(unknown)}, not in task.datasets ({', '.join(names)})"
        )
    nodes = {}
    for name in names:
        if name == chosen:
            node = copy.deepcopy(cfg.dataset)
        else:
            node = compose([f"dataset={name}"]).dataset
        if name in roots:
            with open_dict(node):
                node.root = roots[name]
        nodes[name] = node
    return nodes


def _graft(cfg: Any, node: Any) -> Any:
    """``node`` as the dataset of a copy of ``cfg`` (its interpolations resolve there)."""
    full = copy.deepcopy(cfg)
    with open_dict(full):
        full.dataset = node
    return full.dataset


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure every dataset; write results, maps and the side-by-side figure."""
    size = int(cfg.task.size)
    num_clips = cfg.probe.get("num_clips")
    normalise = str(cfg.task.get("normalise", "minmax"))
    CenterBias(size, normalise)  # a bad setting stops here, before any data is read
    entries = {}
    for name, node in dataset_nodes(cfg).items():
        dataset = instantiate(_graft(cfg, node))
        entries[name] = center_bias(dataset, size, num_clips, normalise)
        e = entries[name]
        log.info(
            f"{name}: center mass {e['center_mass']:.3f} (0.25 = spread evenly), mean distance "
            f"{e['mean_distance']:.3f} half-diagonals, foreground "
            f"{100 * e['foreground_fraction']:.1f} %, {e['masks']} masks"
        )
    folder = output_dir()
    io.write_npz(
        os.path.join(folder, "center_bias.npz"),
        {f"{n}/{k}": e[k] for n, e in entries.items() for k in ("map", "mean_map")},
    )
    numbers = {
        n: {k: v for k, v in e.items() if not isinstance(v, np.ndarray)} for n, e in entries.items()
    }
    record = {
        "task": "center_bias",
        "model": None,
        "dataset": "+".join(entries),
        "weights": None,
        "size": size,
        "datasets": numbers,
    }
    write_results(folder, record, cfg)
    figures = save_figure(center_bias_maps(entries), os.path.join(folder, "center_bias"))
    logger = build_logger(
        cfg.get("logger"), folder, **run_identity("center_bias", "none", "+".join(entries))
    )
    log_run(
        logger,
        config={**record_config(record), "datasets": list(entries)},
        summary={
            f"center_bias/{k}/{n}": v[k]
            for n, v in numbers.items()
            for k in ("center_mass", "mean_distance", "foreground_fraction")
        },
        images={"center_bias/maps": figures},
        files=run_files(folder),
    )
    finish_logger(logger)
    log.info("results: %s", os.path.join(folder, "results.json"))
    return record, {"figures": figures, "maps": {n: e["map"] for n, e in entries.items()}}
