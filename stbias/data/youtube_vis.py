"""YouTube-VIS (Yang et al., ICCV'19; the 2019 and 2021 releases) in its released layout.

``<root>/<split>/JPEGImages/<video id>/<frame>.jpg`` and the split's annotation file, one of
``<root>/<split>/instances.json`` (2021, 2022), ``<root>/<split>.json`` (2019: ``train.json``,
``valid.json``) or ``<root>/annotations/instances_<split>_sub.json`` (VisTR's sub-splits). The
file is COCO-like: ``videos`` (``id``, ``file_names`` relative to ``JPEGImages``, ``height``,
``width``), ``annotations`` (``video_id``, ``category_id``, ``segmentations``: one RLE per frame,
``null`` where the instance is absent) and ``categories`` (``id``, ``name``). RLEs are decoded
here in numpy (uncompressed ``counts`` lists and COCO's compressed strings alike), without
pycocotools. Splits without annotations (``valid``, ``test``) give clips without instances.

One sample per video: ``num_frames`` frames ``sampling_rate`` apart (``temporal``: ``centre``,
``random`` or ``uniform``, looping a short video, see :func:`stbias.data.clips.temporal_indices`),
the shorter side resized to ``short_side`` (default ``size``) and a ``size`` square cropped
(``crop``). Keys as :mod:`stbias.data.vis_synthetic`'s: ``video``, ``instance_masks``
``(N_max, T, H, W)`` bool, ``instance_labels`` ``(N_max,)`` (the released ``category_id``, 1..40
in 2019; -1 for padding), ``instance_boxes``, ``mask``, ``label`` (= ``index``), ``id`` (the video
id), ``index`` and ``frame_indices``. A video with more than ``max_instances`` instances keeps
the largest ones (by area over the clip).
"""

from __future__ import annotations

import json
import os
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stbias.data.clips import check_mode, crop_box, resize_short_side, temporal_indices
from stbias.data.vis_synthetic import mask_boxes
from stbias.errors import StbiasError

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid"}
LAYOUT = (
    "<root>/<split>/JPEGImages/<video id>/<frame>.jpg and <root>/<split>/instances.json (2021) "
    "or <root>/<split>.json (2019) or <root>/annotations/instances_<split>_sub.json"
)


def _counts_from_string(text: str) -> list[int]:
    """COCO's compressed RLE string to run lengths (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE (``{"size": [h, w], "counts": list or str}``) as a bool mask ``(h, w)``.

    Runs alternate background and foreground, starting with background, over the pixels in
    column-major order.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as err:
        raise StbiasError(f"not an RLE (size [h, w] and counts): {str(rle)[:80]}") from err
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = np.asarray(_counts_from_string(counts) if isinstance(counts, str) else counts, np.int64)
    if (runs < 0).any() or runs.sum() != h * w:
        raise StbiasError(f"RLE counts cover {int(runs.sum())} pixels, its size [{h}, {w}] {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape(w, h).T


def _annotation_file(root: str, split: str) -> str:
    candidates = [
        os.path.join(root, split, "instances.json"),
        os.path.join(root, f"{split}.json"),
        os.path.join(root, "annotations", f"instances_{split}_sub.json"),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    shown = " or ".join(candidates)
    raise StbiasError(f"youtube_vis: no annotation file {shown}; expected layout: {LAYOUT}")


class YouTubeVIS(Dataset):
    """YouTube-VIS clips with instance masks; see the module docstring.

    Args:
        root: the dataset folder.
        split: ``train``, ``valid`` (``val``) or ``test``.
        num_frames: frames per clip.
        sampling_rate: the step between the clip's frames.
        size: side of the square crop.
        short_side: the shorter side frames are resized to before the crop (default ``size``).
        temporal: ``centre``, ``random`` or ``uniform``.
        crop: ``centre`` or ``random``.
        max_instances: rows of the instance arrays (the model's instance count).
        seed: with the index, seeds the ``random`` choices.
    """

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        *,
        num_frames: int = 36,
        sampling_rate: int = 1,
        size: int = 300,
        short_side: int | None = None,
        temporal: str = "centre",
        crop: str = "centre",
        max_instances: int = 10,
        seed: int = 0,
    ):
        if root is None or str(root) == "":
            raise StbiasError(f"youtube_vis: dataset.root is not set; expected layout: {LAYOUT}")
        root = os.path.expanduser(str(root))
        if not os.path.isdir(root):
            raise StbiasError(f"youtube_vis: root {root!r} not found; expected layout: {LAYOUT}")
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise StbiasError(
                f"unknown youtube_vis split {split!r}; valid: train, valid (val), test"
            )
        self.frames_dir = os.path.join(root, split, "JPEGImages")
        if not os.path.isdir(self.frames_dir):
            raise StbiasError(
                f"youtube_vis: frames {self.frames_dir!r} not found; expected layout: {LAYOUT}"
            )
        if int(num_frames) < 1 or int(sampling_rate) < 1 or int(size) < 1 or int(max_instances) < 1:
            raise StbiasError(
                "num_frames, sampling_rate, size and max_instances must be >= 1; got "
                f"{num_frames}, {sampling_rate}, {size}, {max_instances}"
            )
        self.annotation_file = _annotation_file(root, split)
        with open(self.annotation_file) as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
            raise StbiasError(
                f"{self.annotation_file}: no 'videos' list; expected layout: {LAYOUT}"
            )
        self.videos = data["videos"]
        self.categories = {int(c["id"]): str(c["name"]) for c in data.get("categories") or []}
        self.num_classes = max(self.categories, default=0) + 1
        self.tracks: dict[int, list[dict[str, Any]]] = {int(v["id"]): [] for v in self.videos}
        for ann in data.get("annotations") or []:
            self.tracks.setdefault(int(ann["video_id"]), []).append(ann)
        self.split, self.root = split, root
        self.num_frames, self.sampling_rate = int(num_frames), int(sampling_rate)
        self.size = int(size)
        self.short_side = int(short_side) if short_side else self.size
        self.temporal = check_mode(temporal, ("centre", "random", "uniform"), "temporal sampling")
        self.crop = check_mode(crop, ("centre", "random"), "crop")
        self.max_instances, self.seed = int(max_instances), int(seed)
        self.channels = 3

    def __len__(self) -> int:
        return len(self.videos)

    def _video_id(self, index: int) -> str:
        names = self.videos[index]["file_names"]
        return os.path.dirname(names[0]) or str(self.videos[index]["id"])

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index`` (nothing is read)."""
        return {"id": self._video_id(index), "label": int(index)}

    def _frame(self, name: str) -> np.ndarray:
        path = os.path.join(self.frames_dir, name)
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise StbiasError(f"youtube_vis: cannot read frame {path}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        video = self.videos[index]
        names = list(video["file_names"])
        rng = np.random.default_rng([self.seed, index])
        picked = temporal_indices(
            len(names), self.num_frames, self.sampling_rate, self.temporal, rng=rng
        )
        frames = resize_short_side(
            np.stack([self._frame(names[i]) for i in picked]), self.short_side
        )
        h, w = frames.shape[1:3]
        y, x = crop_box(h, w, self.size, self.crop, rng)
        crop = (slice(None), slice(y, y + self.size), slice(x, x + self.size))
        tracks = self.tracks.get(int(video["id"]), [])
        masks = np.zeros((len(tracks), self.num_frames, self.size, self.size), dtype=bool)
        for k, ann in enumerate(tracks):
            segs = ann.get("segmentations") or []
            full = np.zeros((self.num_frames, *video_size(video, segs)), dtype=np.uint8)
            for t, i in enumerate(picked):
                if i < len(segs) and segs[i]:
                    full[t] = decode_rle(segs[i])
            resized = resize_short_side(full, self.short_side, cv2.INTER_NEAREST)
            if resized.shape[1:3] != (h, w):
                raise StbiasError(
                    f"youtube_vis: masks of video {self._video_id(index)} are "
                    f"{full.shape[1:]} but its frames {tuple(frames.shape[1:3])} after resizing"
                )
            masks[k] = resized[crop].astype(bool)
        order = np.argsort(-masks.reshape(len(tracks), -1).sum(1), kind="stable")
        keep = np.sort(order[: self.max_instances])
        instance_masks = np.zeros((self.max_instances, *masks.shape[1:]), dtype=bool)
        instance_masks[: len(keep)] = masks[keep]
        labels = np.full(self.max_instances, -1, dtype=np.int64)
        labels[: len(keep)] = [int(tracks[k]["category_id"]) for k in keep]
        return {
            "video": torch.from_numpy(np.ascontiguousarray(frames[crop])),
            "instance_masks": torch.from_numpy(instance_masks),
            "instance_labels": torch.from_numpy(labels),
            "instance_boxes": torch.from_numpy(mask_boxes(instance_masks)),
            "mask": torch.from_numpy(instance_masks.any(0).astype(np.uint8)),
            "label": int(index),
            "id": self._video_id(index),
            "index": int(index),
            "frame_indices": torch.from_numpy(np.asarray(picked, dtype=np.int64)),
        }


def video_size(video: dict[str, Any], segmentations: list[Any]) -> tuple[int, int]:
    """``(height, width)`` of a video's frames: its own entry, else its first RLE's size."""
    if video.get("height") and video.get("width"):
        return int(video["height"]), int(video["width"])
    for seg in segmentations:
        if seg:
            return int(seg["size"][0]), int(seg["size"][1])
    raise StbiasError(f"youtube_vis: video {video.get('id')} gives no height and width")


def youtube_vis(**kwargs) -> YouTubeVIS:
    """The builder ``conf/dataset/youtube_vis.yaml`` names (keyword arguments as the class)."""
    return YouTubeVIS(**kwargs)
