"""`task=scene_bias`: Byvshev et al. (CVIU'22) Appendix A, scene bias, from runs of stbias.

* **Fig. A.12**: a per-frame place classifier labels every frame of each video's clip; the video's
  dominant place is the most frequent prediction and its *common place score* the share of frames
  predicting it (:func:`stbias.metrics.scene.common_place`); the curve is the share of videos
  whose score is at least ``x``.
* **Table A.3**: the action model's accuracy on videos of common places (the most frequent
  dominant places that together hold more than half of the videos) and of the other, rare ones,
  with the count of videos and places of each group.
* **Table A.4**: a linear classifier trained on frozen features of place images (fixed weights),
  or trained with every weight of the network (``fixed_weights: false``, :func:`fine_tune_probe`),
  for every model of ``task.linear_probe.models``: video models see static clips (the image
  repeated in time), their 2D counterparts the image itself; top-1 on held-out images.

The place classifier is a released Places365 CNN (``task.places.arch`` and ``weights``) or, on the
embedded data (``arch: tiny``), a small 2D CNN trained once on crops of the embedded place
photographs (cached under ``task.cache_dir``). The action model is ``model`` with its
``model.checkpoint``, or, without one, trained once on the embedded P+F+M as ``task=quickstart``
trains (``task.train``; cached). :func:`run` writes ``scene_bias.json`` (every table),
``videos.csv`` (one row per video), ``table_a3.md``, ``table_a4.md`` and the figure into the run
directory; :func:`appendix_a` draws them back for the figure target ``byvshev-appendix-a``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from filelock import FileLock
from omegaconf import OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader

from stbias import io
from stbias.config import option_node
from stbias.data.loading import loader_kwargs, split_loader_options
from stbias.data.sources import EMBEDDED_PLACES, place_crops
from stbias.errors import StbiasError
from stbias.metrics.scene import (
    LinearProbe,
    common_place,
    common_places,
    linear_probe,
    score_curve,
)
from stbias.models.inflate import inflate
from stbias.models.inputs import pack_inputs
from stbias.models.places import (
    PLACES365_MEAN,
    PLACES365_STD,
    image_backbone,
    image_tiny,
    places365,
)
from stbias.models.registry import model_info
from stbias.models.taps import LayerTap, pool_outputs
from stbias.plotting import save_figure
from stbias.plotting.scene_bias import (
    appendix_a_figure,
    table_a3_figure,
    table_a3_markdown,
    table_a4_figure,
    table_a4_markdown,
)
from stbias.studies import quickstart
from stbias.studies.base import read_run, run_dirs
from stbias.tasks.dataset_setup import build_dataset
from stbias.tasks.loggers import publish, record_config
from stbias.tasks.model_setup import build_model
from stbias.tasks.record import write_results
from stbias.tasks.run_config import choice, output_dir, task_epochs

log = logging.getLogger(__name__)
THRESHOLDS = np.round(np.linspace(0.0, 1.0, 21), 2)  # Fig. A.12's x axis


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# The per-frame place classifier ---------------------------------------------------------------


class PlaceClassifier:
    """A per-frame place classifier: images ``(N, H, W, 3)`` uint8 -> class indices ``(N,)``."""

    def __init__(
        self, model: nn.Module, names: Sequence[str], size: int, mean, std, device: str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.names = [str(n) for n in names]
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> normalised ``(N, 3, size, size)`` on the device."""
        x = images.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The predicted place of every image."""
        out = [
            self.model(self.inputs(images[i : i + batch_size])).argmax(1)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).cpu().numpy()


def device_of(cfg: Any) -> str:
    """``cuda`` when ``trainer.accelerator`` asks for a GPU (``gpu``, ``cuda``, or ``auto`` with
    one present), else ``cpu``: where the study's forward passes run."""
    accelerator = str(cfg.trainer.get("accelerator") or "cpu")
    wants = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if wants and not torch.cuda.is_available():
        raise StbiasError(f"trainer.accelerator={accelerator} but no CUDA device is present")
    return "cuda" if wants else "cpu"


def _training_limit(cfg: Any) -> int | None:
    """Batches per epoch of the place classifier's training: ``trainer.limit_train_batches``
    when it is a count (``debug=fast``), else every batch."""
    limit = cfg.trainer.get("limit_train_batches")
    return int(limit) if isinstance(limit, int) and not isinstance(limit, bool) else None


def train_tiny_places(cfg: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Train the tiny 2D place classifier on crops of the embedded place photographs, once.

    Cached in ``<task.cache_dir>/places-<key>/`` (``places.pt`` and ``record.json``), the key a
    hash of ``task.places``, the epochs, the batch limit and the seed.
    """
    p = cfg.task.places
    epochs, limit = task_epochs(cfg, p.max_epochs), _training_limit(cfg)
    settings = {"places": _plain(p), "epochs": epochs, "limit": limit, "seed": int(cfg.seed)}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = os.path.join(os.path.abspath(str(cfg.task.cache_dir)), f"places-{key}")
    model = image_tiny(num_classes=int(p.num_places))
    weights, record_path = os.path.join(folder, "places.pt"), os.path.join(folder, "record.json")
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with FileLock(folder + ".lock"):
        if os.path.isfile(weights) and os.path.isfile(record_path):
            model.load_state_dict(io.load_tensors(weights, what="cached place classifier"))
            with open(record_path) as fh:
                record = json.load(fh)
            log.info("place classifier: trained before, from the cache %s", folder)
            return model.eval(), record
        log.info("training the place classifier on the embedded photographs (once; %s)", folder)
        images, labels = place_crops(
            None, int(p.num_places), int(p.train_per_class), int(p.size), int(cfg.seed)
        )
        torch.manual_seed(int(cfg.seed))  # the initialisation too: a setting, one network
        model = image_tiny(num_classes=int(p.num_places))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(PLACES365_MEAN).view(1, 3, 1, 1)) / torch.tensor(PLACES365_STD).view(
            1, 3, 1, 1
        )
        y = torch.from_numpy(labels)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(p.lr))
        generator = torch.Generator().manual_seed(int(cfg.seed))
        batch = int(p.batch_size)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for step, start in enumerate(range(0, len(x), batch)):
                if limit is not None and step >= limit:
                    break
                pick = order[start : start + batch]
                loss = F.cross_entropy(model(x[pick]), y[pick])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        held_out, held_labels = place_crops(
            None, int(p.num_places), int(p.test_per_class), int(p.size), int(cfg.seed) + 1
        )
        classifier = PlaceClassifier(
            model, EMBEDDED_PLACES, int(p.size), PLACES365_MEAN, PLACES365_STD
        )
        acc = float((classifier.predict(torch.from_numpy(held_out)) == held_labels).mean())
        record = {"val/acc": acc, "epochs": epochs, "images": int(len(x)), "folder": folder}
        os.makedirs(folder, exist_ok=True)
        io.torch_save(model.state_dict(), weights)
        io.write_json(record_path, record)
    log.info("place classifier: held-out accuracy %.3f on crops of the photographs", acc)
    return model, record


def place_classifier(cfg: Any) -> tuple[PlaceClassifier, dict[str, Any]]:
    """The per-frame place classifier ``task.places`` names, and what it is."""
    p = cfg.task.places
    arch = str(p.arch)
    if arch == "tiny":
        model, record = train_tiny_places(cfg)
        names = EMBEDDED_PLACES[: int(p.num_places)]
        classifier = PlaceClassifier(
            model, names, int(p.size), PLACES365_MEAN, PLACES365_STD, device_of(cfg)
        )
        return classifier, {
            "classifier": f"image_tiny trained on {len(names)} embedded place photographs",
            **record,
        }
    if not p.get("weights"):
        raise StbiasError(
            f"task.places.arch={arch} needs task.places.weights (the release's "
            f"{arch}_places365.pth.tar); arch=tiny trains one on the embedded photographs"
        )
    model = places365(arch=arch, weights=str(p.weights), num_classes=int(p.num_classes))
    names = _category_names(p.get("categories"), int(p.num_classes))
    classifier = PlaceClassifier(
        model, names, int(p.size), PLACES365_MEAN, PLACES365_STD, device_of(cfg)
    )
    return classifier, {"classifier": f"{arch} Places365", "weights": str(p.weights)}


def _category_names(path: str | None, count: int) -> list[str]:
    """Class names from ``categories_places365.txt`` (``/a/airfield 0`` lines), else numbers."""
    if not path:
        return [f"place {i}" for i in range(count)]
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise StbiasError(f"task.places.categories={path!r} does not exist")
    with open(path) as fh:
        names = [line.split()[0].strip("/")[2:] for line in fh if line.strip()]
    if len(names) != count:
        raise StbiasError(f"{path} names {len(names)} classes; the classifier has {count}")
    return names


# Models: the action model and the video / image models of Table A.4 ---------------------------


def trained_model(cfg: Any, node: Any) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``node`` built with its checkpoint, or trained once on the embedded P+F+M without one
    (:func:`stbias.studies.quickstart.ensure_trained`); returns the model, the model node it was
    built from and what trained it."""
    node = copy.deepcopy(node)
    trained: dict[str, Any] = {}
    if not node.get("checkpoint"):
        with open_dict(node):
            node.pretrained = False
        trained = quickstart.ensure_trained(cfg, node)
        with open_dict(node):
            node.checkpoint = trained["checkpoint"]
    model = build_model(node).eval()
    return model, node, {k: trained.get(k) for k in ("val/acc", "checkpoint") if k in trained}


def _model_node(cfg: Any, name: str) -> Any:
    """The node of model option ``name`` at the clip geometry of the study's ``model``."""
    if name == str(cfg.model.name):
        return copy.deepcopy(cfg.model)
    node = option_node("model", name)
    with open_dict(node):
        node.input = copy.deepcopy(cfg.model.input)
    return node


def _as_clips(images: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float static clips ``(N, 3, frames, size, size)`` in [0, 1]."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.unsqueeze(2).expand(-1, -1, int(frames), -1, -1).contiguous()


# Fig. A.12 and Table A.3 ---------------------------------------------------------------------


def _clips(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A batch of what :func:`score_videos` reads: the clips, their labels and ids."""
    return {
        "video": torch.stack([torch.as_tensor(s["video"]) for s in samples]),
        "label": [int(s["label"]) for s in samples],
        "id": [str(s.get("id", s.get("index", ""))) for s in samples],
        "skipped": sum(int(s.get("skipped", 0)) for s in samples),
    }


@torch.no_grad()
def score_videos(
    model: nn.Module, places: PlaceClassifier, dataset: Any, batch_size: int, loader: Any = None
) -> tuple[list[dict[str, Any]], int]:
    """One row per clip of ``dataset``: label, the action model's prediction, the dominant place
    and the common place score of its frames; and the count of unreadable videos skipped.

    Args:
        loader: ``DataLoader`` keyword arguments (workers, ...); clips ``(T, H, W, 3)`` uint8.
    """
    spec = model_info(model).spec
    device = places.device
    batches = DataLoader(dataset, batch_size=batch_size, collate_fn=_clips, **(loader or {}))
    rows, skipped = [], 0
    for batch in batches:
        videos = batch["video"]  # (B, T, H, W, 3)
        clips = videos.to(device).permute(0, 4, 1, 2, 3).float() / 255.0
        predicted = model(pack_inputs(clips, spec)).argmax(1).cpu().numpy()
        frame_places = places.predict(videos.flatten(0, 1)).reshape(len(videos), -1)
        skipped += int(batch["skipped"])
        for clip_id, label, pred, frames in zip(
            batch["id"], batch["label"], predicted, frame_places
        ):
            place, score = common_place(frames)
            rows.append(
                {
                    "id": clip_id,
                    "label": label,
                    "predicted": int(pred),
                    "correct": bool(int(pred) == label),
                    "place": place,
                    "place_name": places.names[place] if place < len(places.names) else str(place),
                    "score": score,
                    "frames": int(len(frames)),
                }
            )
    return rows, skipped


def table_a3(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table A.3: per group (common, rare) the places, videos and the action model's accuracy."""
    dominant = [int(r["place"]) for r in rows]
    common = set(common_places(dominant))
    out = []
    for group, member in (("common", True), ("rare", False)):
        chosen = [r for r in rows if (int(r["place"]) in common) == member]
        names = sorted({str(r["place_name"]) for r in chosen})
        out.append(
            {
                "group": group,
                "places": len(names),
                "videos": len(chosen),
                "accuracy": float(np.mean([r["correct"] for r in chosen])) if chosen else None,
                "place_names": ", ".join(names),
            }
        )
    return out


def fig_a12(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fig. A.12's points: the share of videos whose common place score is ``>= x``."""
    shares = score_curve([r["score"] for r in rows], THRESHOLDS)
    return [{"score": float(x), "share": float(s)} for x, s in zip(THRESHOLDS, shares)]


# Table A.4 ------------------------------------------------------------------------------------


def _features(entry: Mapping[str, Any], model: nn.Module, part: torch.Tensor, detach: bool = True):
    """Pooled features ``(B, C)`` of uint8 images ``part`` ``(B, H, W, 3)`` (on the model's
    device): a video model's at ``entry['layer']`` on static clips of ``entry['frames']`` frames
    (the model's clip length when null), an image model's on the images; ``detach=False`` keeps
    the graph (fine-tuning)."""
    info = model_info(model)
    if info is None:  # a torchvision image backbone (fc removed)
        x = part.permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(PLACES365_MEAN, device=part.device).view(1, 3, 1, 1)
        std = torch.tensor(PLACES365_STD, device=part.device).view(1, 3, 1, 1)
        return model((x - mean) / std).flatten(1)
    frames = entry.get("frames") or info.spec.frames
    inputs = pack_inputs(_as_clips(part, int(frames), int(info.spec.size)), info.spec)
    layer = str(entry.get("layer") or list(info.layers)[-1])
    if layer not in info.layers:
        raise StbiasError(
            f"task.linear_probe: unknown layer {layer!r} of {info.name}; layers: "
            f"{', '.join(info.layers)}"
        )
    tap = LayerTap(model, {layer: info.layers[layer]}, detach=detach, stop_early=True).attach()
    try:
        outputs = tap.run(inputs)
    finally:
        tap.remove()
    return pool_outputs(outputs, info.layout)[layer]


@torch.no_grad()
def probe_features(entry: Mapping[str, Any], model: nn.Module, images: torch.Tensor, batch: int):
    """Pooled features ``(N, C)`` of ``images`` uint8 ``(N, H, W, 3)`` (see :func:`_features`),
    ``batch`` images at a time, as float64 numpy."""
    device = next(model.parameters()).device
    out = [
        _features(entry, model, images[start : start + batch].to(device))
        for start in range(0, len(images), batch)
    ]
    return torch.cat(out).double().cpu().numpy()


def fine_tune_probe(
    entry: Mapping[str, Any],
    model: nn.Module,
    train: tuple[torch.Tensor, np.ndarray],
    test: tuple[torch.Tensor, np.ndarray],
    start: LinearProbe,
    settings: Any,
    seed: int,
) -> tuple[np.ndarray, float]:
    """Table A.4's non-fixed regime: every weight of ``model`` trained together with the linear
    layer on its pooled features, which starts as ``start`` (the fixed regime's classifier on the
    same network: its standardisation and weights; a linear probe, then fine-tuning), by Adam on
    cross-entropy for ``settings.epochs`` epochs of ``settings.batch_size`` images (seeded order).
    Returns the predictions on the test images and their top-1. The network stays in eval mode:
    every weight is trained (batch-norm scales and shifts included) while batch-norm keeps the
    running statistics it came with, as fine-tuning with small batches does, and dropout stays
    off. ``model`` is changed in place."""
    (train_x, train_y), (test_x, test_y) = train, test
    device = next(model.parameters()).device
    batch = int(settings.batch_size)
    model.eval()
    mean = torch.as_tensor(start.mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(start.std, dtype=torch.float32, device=device)
    head = nn.Linear(start.weight.shape[1], start.weight.shape[0]).to(device)
    with torch.no_grad():  # a class with no training image keeps a logit that never wins
        head.weight.copy_(torch.as_tensor(start.weight, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(np.maximum(start.bias, -1e4), dtype=torch.float32))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=float(settings.lr))
    labels = torch.as_tensor(train_y, dtype=torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    for _ in range(int(settings.epochs)):
        for idx in torch.randperm(len(train_x), generator=generator).split(batch):
            features = _features(entry, model, train_x[idx].to(device), detach=False)
            loss = F.cross_entropy(head((features - mean) / std), labels[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        scores = [
            head((_features(entry, model, test_x[i : i + batch].to(device)) - mean) / std)
            for i in range(0, len(test_x), batch)
        ]
    predictions = torch.cat(scores).argmax(1).cpu().numpy()
    return predictions, float((predictions == np.asarray(test_y)).mean())


def probe_model(cfg: Any, entry: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The network of one ``task.linear_probe.models`` entry and what it is."""
    if entry.get("image_arch"):
        model = image_backbone(arch=str(entry["image_arch"]), weights=str(entry["weights"]))
        return model.eval(), {"kind": "2D", "weights": f"file:{entry['weights']}"}
    if not entry.get("model"):
        raise StbiasError(
            f"task.linear_probe.models entry {dict(entry)} names neither model (a model option) "
            "nor image_arch (a torchvision image model with weights)"
        )
    node = _model_node(cfg, str(entry["model"]))
    if entry.get("checkpoint"):
        with open_dict(node):
            node.checkpoint = str(entry["checkpoint"])
    model, node, trained = trained_model(cfg, node)
    kind = "2D" if entry.get("frames") == 1 else "3D"
    if entry.get("inflate"):
        model = inflate(model, int(entry["inflate"])).eval()
        kind = "3D (inflated)"
    return model, {"kind": kind, "weights": f"file:{node.checkpoint}", **trained}


def a4_key(row: Mapping[str, Any]) -> str:
    """A Table A.4 row's name in the logged values: the model, and the regime when fine-tuned."""
    return str(row["model"]) + ("" if row.get("fixed_weights", True) else " fine-tuned")


def table_a4(cfg: Any) -> list[dict[str, Any]]:
    """Table A.4: top-1 on held-out place images, one row per ``task.linear_probe.models`` entry
    (the same images, probe and seed for every one): a linear classifier on frozen features, or
    for ``fixed_weights: false`` that classifier and the network trained on (its top-1 with fixed
    weights kept as ``fixed_top1``)."""
    lp = cfg.task.linear_probe
    root = lp.get("places_root") or None
    size = int(lp.size or cfg.model.input.size)
    train_x, train_y = place_crops(root, int(lp.num_places), int(lp.train_per_class), size, 10)
    test_x, test_y = place_crops(root, int(lp.num_places), int(lp.test_per_class), size, 11)
    train_t, test_t = torch.from_numpy(train_x), torch.from_numpy(test_x)
    rows = []
    for entry in _plain(lp.models):
        model, about = probe_model(cfg, entry)
        model = model.to(device_of(cfg))
        batch = int(lp.batch_size)
        fixed = entry.get("fixed_weights", True) is not False
        row = {
            "model": str(entry.get("label") or entry.get("model") or entry.get("image_arch")),
            "kind": about["kind"],
            "pretraining": str(entry.get("pretraining") or ""),
            "fixed_weights": fixed,
            "train_images": int(len(train_y)),
            "test_images": int(len(test_y)),
        }
        features = [probe_features(entry, model, t, batch) for t in (train_t, test_t)]
        fit = linear_probe(
            features[0],
            train_y,
            features[1],
            test_y,
            seed=int(cfg.seed),
            c=float(lp.c),
            tol=float(lp.tol),
            max_iter=int(lp.max_iter),
        )
        row.update(
            features=int(features[0].shape[1]),
            probe_iterations=fit.iterations,
            probe_converged=fit.converged,
        )
        predictions, acc = fit.predictions, fit.accuracy
        if not fixed:  # from the fixed regime's classifier, every weight trained
            predictions, acc = fine_tune_probe(
                entry, model, (train_t, train_y), (test_t, test_y), fit, lp.fine_tune, int(cfg.seed)
            )
            row.update(fixed_top1=fit.accuracy, fine_tune_epochs=int(lp.fine_tune.epochs))
        row.update(top1=acc, predictions=[int(p) for p in predictions])
        rows.append(row)
        regime = "fixed weights" if fixed else "fine-tuned"
        log.info("Table A.4: %s (%s, %s): top-1 %.3f", row["model"], about["kind"], regime, acc)
        if not fit.converged:
            log.warning(
                "Table A.4: the linear probe of %s did not converge in task.linear_probe.max_iter="
                "%d iterations (gradient above tol=%g): its top-1 depends on the optimizer's "
                "path; raise max_iter",
                row["model"],
                int(lp.max_iter),
                float(lp.tol),
            )
    return rows


# The study -------------------------------------------------------------------------------------


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fig. A.12, Table A.3 and Table A.4 for ``model`` on ``dataset``; see the module docstring."""
    folder = output_dir()
    places, place_record = place_classifier(cfg)
    model, node, trained = trained_model(cfg, cfg.model)
    model = model.to(places.device)
    videos_cfg = cfg.dataset
    if trained:  # trained here: its own P+F+M's held-out split
        videos_cfg = quickstart.train_config(cfg, node).dataset
    dataset = build_dataset(
        videos_cfg,
        model_info(model).spec,
        split=str(cfg.task.split),
        num_samples=None if cfg.task.videos is None else int(cfg.task.videos),
    )
    _, loader = split_loader_options(_plain(videos_cfg))
    loader = loader_kwargs(
        loader.get("num_workers", 0),
        loader.get("prefetch_factor"),
        loader.get("pin_memory", "auto"),
        places.device.type,
    )
    rows, skipped = score_videos(model, places, dataset, int(cfg.task.batch_size), loader)
    curve, a3 = fig_a12(rows), table_a3(rows)
    a4 = table_a4(cfg) if cfg.task.linear_probe.models else []
    record = {
        "task": "scene_bias",
        "num_clips": len(rows),
        "skipped_clips": skipped,
        "places": place_record,
        "action_model": {"name": str(node.name), "weights": f"file:{node.checkpoint}", **trained},
        "tables": {"fig_a12": curve, "table_a3": a3, "table_a4": a4},
    }
    io.write_csv(os.path.join(folder, "videos.csv"), rows)
    io.write_json(os.path.join(folder, "scene_bias.json"), record["tables"])
    io.write_text(os.path.join(folder, "table_a3.md"), table_a3_markdown(a3) + "\n")
    if a4:
        io.write_text(os.path.join(folder, "table_a4.md"), table_a4_markdown(a4) + "\n")
    write_results(folder, record, cfg)
    model_name, dataset_name = choice(cfg, "model"), choice(cfg, "dataset")
    title = f"Scene bias, {model_name} on {dataset_name}"
    figures = save_figure(appendix_a_figure(curve, a3, a4, title), os.path.join(folder, "scene"))
    values = {f"scene/acc/{r['group']}": r["accuracy"] for r in a3 if r["accuracy"] is not None}
    values.update({f"scene/top1/{a4_key(r)}": r["top1"] for r in a4})
    publish(
        cfg.get("logger"),
        folder,
        "scene_bias",
        model_name,
        dataset_name,
        config=record_config(record),
        summary=values,
        images={"scene/figure": figures},
    )
    log.info("%s", table_a3_markdown(a3))
    if a4:
        log.info("%s", table_a4_markdown(a4))
    log.info("figure: %s", figures[0])
    return record, {"figures": figures}


# Paper figure (stbias.figures): the study's run read back and drawn ---------------------------


def _tables(table: pd.DataFrame) -> dict[str, Any]:
    """The tables of the study's run among the runs of ``table``."""
    return read_run(run_dirs(table, "scene_bias")[0]).get("tables") or {}


def appendix_a(table: pd.DataFrame, title: str | None = None):
    """Fig. A.12 (the common place score curve) and the accuracies of Tables A.3 and A.4."""
    tables = _tables(table)
    return appendix_a_figure(
        tables.get("fig_a12") or [],
        tables.get("table_a3") or [],
        tables.get("table_a4") or [],
        title,
    )


def table_a3_target(table: pd.DataFrame, title: str | None = None):
    """Table A.3: places, videos and the action model's accuracy, common vs rare places."""
    return table_a3_figure(_tables(table).get("table_a3") or [], title)


def table_a4_target(table: pd.DataFrame, title: str | None = None):
    """Table A.4: top-1 of the linear probe on frozen features, per model."""
    rows = _tables(table).get("table_a4") or []
    if not rows:
        raise StbiasError("the scene-bias run probed no model (task.linear_probe.models is empty)")
    return table_a4_figure(rows, title)
