"""Embedded synthetic video object segmentation data: one object over a photograph, with masks.

Two kinds, generated on the fly from the photographs that ship in scikit-image and scikit-learn
(see :mod:`stbias.data.sources`), deterministically from ``(seed, split, index)``:

* ``camouflage`` — the object is cut from the background itself, a little way (0.6 to 1.2 object
  radii) from where it starts, so it has the local texture, scale and colours and a single frame
  barely shows it; it always moves, so its motion (the optical flow) gives it away. Placed
  uniformly over the frame: a diffuse center bias.
* ``salient`` — the object is cut from a *different* photograph and its brightness is pushed
  away from the background's, so one frame shows it; it moves in half of the clips and stands
  still in the others. Placed around the frame centre: a strong center bias.

The object is a smooth random blob (a circle whose radius varies with three low harmonics of the
angle) translating rigidly at constant velocity, bouncing off the frame borders; its texture moves
with it over a static background. Every option (object size, speed, probability of moving,
placement) can be set on either kind, e.g. ``dataset=salient dataset.placement=uniform`` separates
the center bias from the appearance cue.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stbias.data.brushmnist import split_seed
from stbias.data.flow import LUMA
from stbias.data.sources import _embedded_photo
from stbias.errors import StbiasError

KINDS = ("camouflage", "salient")
PLACEMENTS = ("uniform", "centre")
# textured photographs (the flat or nearly black ones, e.g. moon, page, hubble, are left out)
TEXTURES = (
    "brick",
    "grass",
    "gravel",
    "coffee",
    "chelsea",
    "china",
    "flower",
    "immunohistochemistry",
    "rocket",
    "stereo_motorcycle",
)
_LUMA = np.array(LUMA, dtype=np.float32)
# grey levels between the mean brightness of a salient object and of its background
_MIN_CONTRAST = 60.0


_MIN_CROP = 0.4  # the smallest crop, as a fraction of the photograph's shorter side


@functools.lru_cache(maxsize=4 * len(TEXTURES))
def _photo(name: str, size: int) -> np.ndarray:
    """The photograph scaled so that its smallest crop is ``size`` pixels (crops stay cheap)."""
    photo = _embedded_photo(name)
    scale = size / (_MIN_CROP * min(photo.shape[:2]))
    if scale >= 1:
        return photo
    h, w = (max(int(round(n * scale)), size) for n in photo.shape[:2])
    return cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)


def _crop(photo: np.ndarray, side: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` crop of ``photo`` at a random place, resized to ``size``."""
    h, w = photo.shape[:2]
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def blob_mask(radius: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random blob inside a ``(2r + 1)`` square: ``r(θ) = r (1 + Σ a_k cos(kθ + φ_k))``."""
    side = 2 * radius + 1
    yy, xx = np.mgrid[:side, :side].astype(np.float32) - radius
    theta, dist = np.arctan2(yy, xx), np.hypot(yy, xx)
    k = np.arange(2, 5, dtype=np.float32)
    amplitude = rng.uniform(0.0, 0.12, size=3).astype(np.float32)
    phase = rng.uniform(0.0, 2 * np.pi, size=3).astype(np.float32)
    harmonics = np.cos(k[:, None, None] * theta + phase[:, None, None])
    wobble = (amplitude[:, None, None] * harmonics).sum(0)
    edge = radius * (1.0 + wobble) / (1.0 + amplitude.sum())
    return (dist <= edge).astype(np.uint8)


def _reflect(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions folded back into ``[low, high]`` (bouncing off both ends)."""
    span = high - low
    if span <= 0:
        return np.full_like(p, low)
    q = np.mod(p - low, 2 * span)
    return low + np.where(q > span, 2 * span - q, q)


class SyntheticVOS(Dataset):
    """``camouflage`` or ``salient`` clips: ``video`` ``(T, H, W, 3)`` and ``mask`` ``(T, H, W)``.

    Args:
        kind: ``camouflage`` or ``salient`` (see the module docstring).
        split: ``train``, ``val`` or ``test`` (each its own random stream).
        num_frames: frames per clip.
        sampling_rate: the object moves ``sampling_rate`` times as far between two frames.
        size: frame side.
        num_samples: dataset length.
        object_size: the object's diameter as a fraction of the frame side, ``[low, high]``.
        speed: the object's speed in frame sides per (unsampled) frame, ``[low, high]``.
        moving: probability that the object moves (else it stands still); default 1 for
            ``camouflage``, 0.5 for ``salient``.
        placement: ``uniform`` over the frame or ``centre`` (normal around the centre); default
            ``uniform`` for ``camouflage``, ``centre`` for ``salient``.
        spread: standard deviation of the ``centre`` placement, in frame sides.
        seed: with the split and index, seeds every choice of a clip.
        name: the dataset's name in results and clip ids (default ``kind``).

    Samples also hold ``label`` (= ``index``: each clip is its own sequence), ``id``, ``index``,
    ``moving`` (0/1) and ``centre`` ``(T, 2)``, the object's centre (y, x) in pixels. With
    ``uniform`` placement the centre may lie anywhere in the frame (the border cuts the object);
    with ``centre`` the whole object stays in view.
    """

    def __init__(
        self,
        kind: str = "camouflage",
        split: str = "train",
        *,
        num_frames: int = 2,
        sampling_rate: int = 1,
        size: int = 64,
        num_samples: int = 2000,
        object_size: tuple[float, float] = (0.25, 0.45),
        speed: tuple[float, float] = (0.04, 0.1),
        moving: float | None = None,
        placement: str | None = None,
        spread: float = 0.12,
        seed: int = 0,
        name: str | None = None,
    ):
        if kind not in KINDS:
            raise StbiasError(f"unknown synthetic VOS kind {kind!r}; valid: {', '.join(KINDS)}")
        camouflage = kind == "camouflage"
        moving = (1.0 if camouflage else 0.5) if moving is None else moving
        placement = ("uniform" if camouflage else "centre") if placement is None else placement
        if split not in ("train", "val", "test"):
            raise StbiasError(f"unknown split {split!r}; valid: train, val, test")
        if placement not in PLACEMENTS:
            raise StbiasError(f"unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
        self.object_size = tuple(float(v) for v in object_size)
        self.speed = tuple(float(v) for v in speed)
        if len(self.object_size) != 2 or not 0 < self.object_size[0] <= self.object_size[1] < 1:
            raise StbiasError(
                f"object_size must be [low, high] with 0 < low <= high < 1; got {object_size}"
            )
        if len(self.speed) != 2 or not 0 <= self.speed[0] <= self.speed[1]:
            raise StbiasError(f"speed must be [low, high] with 0 <= low <= high; got {speed}")
        if not 0.0 <= float(moving) <= 1.0:
            raise StbiasError(f"moving is a probability in [0, 1]; got {moving}")
        if int(num_frames) < 1 or int(sampling_rate) < 1 or int(size) < 16 or int(num_samples) < 1:
            raise StbiasError(
                "num_frames, sampling_rate and num_samples must be >= 1 and size >= 16; got "
                f"{num_frames}, {sampling_rate}, {num_samples}, {size}"
            )
        if float(spread) <= 0:
            raise StbiasError(f"spread must be > 0; got {spread}")
        self.kind, self.split = kind, split
        self.name = str(name or kind)
        self.num_frames, self.sampling_rate = int(num_frames), int(sampling_rate)
        self.size, self.num_samples = int(size), int(num_samples)
        self.moving, self.placement, self.spread = float(moving), placement, float(spread)
        self.seed = int(seed)
        self.channels = 3

    def __len__(self) -> int:
        return self.num_samples

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index`` (nothing is rendered)."""
        return {"id": f"{self.name}_{self.split}_{index}", "label": int(index)}

    def _bounds(self, radius: int) -> tuple[float, float]:
        """Where the object's centre may go: anywhere in the frame (``uniform``: objects may be
        cut by the border) or where the whole object is in view (``centre``)."""
        if self.placement == "uniform":
            return 0.0, float(self.size - 1)
        return float(radius), float(self.size - 1 - radius)

    def _start(self, radius: int, rng: np.random.Generator) -> np.ndarray:
        low, high = self._bounds(radius)
        if self.placement == "uniform":
            return rng.uniform(low, high, size=2)
        return np.clip(rng.normal((self.size - 1) / 2, self.spread * self.size, size=2), low, high)

    def _salient_texture(
        self, name: str, background: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """A crop of another photograph, its brightness pushed away from the background's."""
        others = [t for t in TEXTURES if t != name]
        other = _photo(others[int(rng.integers(len(others)))], self.size)
        side = int(min(other.shape[:2]) * rng.uniform(_MIN_CROP, 1.0))
        texture = _crop(other, side, self.size, rng).astype(np.float32)
        bg_luma = float((background.astype(np.float32) @ _LUMA).mean())
        luma = float((texture @ _LUMA).mean())
        if abs(luma - bg_luma) < _MIN_CONTRAST:
            target = bg_luma + _MIN_CONTRAST if bg_luma < 128 else bg_luma - _MIN_CONTRAST
            texture += target - luma
        return np.clip(texture, 0, 255).astype(np.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng(
            [self.seed, split_seed(self.split), KINDS.index(self.kind), index]
        )
        name = TEXTURES[int(rng.integers(len(TEXTURES)))]
        photo = _photo(name, self.size)
        side = int(min(photo.shape[:2]) * rng.uniform(_MIN_CROP, 1.0))
        background = _crop(photo, side, self.size, rng)
        if rng.random() < 0.5:
            background = np.ascontiguousarray(background[:, ::-1])
        radius = max(2, int(round(self.size * rng.uniform(*self.object_size) / 2)))
        shape = blob_mask(radius, rng)
        moving = bool(rng.random() < self.moving)
        start = self._start(radius, rng)
        if self.kind == "camouflage":
            # the background itself, a little way from where the object starts: locally the
            # same texture, scale and colours
            texture, angle = background, rng.uniform(0, 2 * np.pi)
            offset = rng.uniform(0.6, 1.2) * radius * np.array([np.sin(angle), np.cos(angle)])
            origin = np.round(start + offset).astype(int) - radius
        else:
            texture = self._salient_texture(name, background, rng)
            origin = rng.integers(0, self.size - 2 * radius, size=2)
        y0, x0 = (int(np.clip(v, 0, self.size - 2 * radius - 1)) for v in origin)
        patch = texture[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].copy()
        steps = np.arange(self.num_frames, dtype=np.float64)[:, None] * self.sampling_rate
        velocity = np.zeros(2)
        if moving:
            angle = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(*self.speed) * self.size
            velocity = speed * np.array([np.sin(angle), np.cos(angle)])
        centres = _reflect(start + steps * velocity, *self._bounds(radius))
        frames = np.broadcast_to(background, (self.num_frames, *background.shape)).copy()
        masks = np.zeros((self.num_frames, self.size, self.size), dtype=np.uint8)
        for t, (cy, cx) in enumerate(np.round(centres).astype(int)):
            # the part of the object's square inside the frame
            top, left = cy - radius, cx - radius
            y0, y1 = max(top, 0), min(top + 2 * radius + 1, self.size)
            x0, x1 = max(left, 0), min(left + 2 * radius + 1, self.size)
            part = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
            inside = shape[part].astype(bool)
            frames[t, y0:y1, x0:x1][inside] = patch[part][inside]
            masks[t, y0:y1, x0:x1] = shape[part]
        return {
            "video": torch.from_numpy(frames),
            "mask": torch.from_numpy(masks),
            "label": int(index),
            "id": f"{self.name}_{self.split}_{index}",
            "index": int(index),
            "moving": int(moving),
            "centre": torch.from_numpy(centres.astype(np.float32)),
        }
